"""THE fixed-point evaluation semantics of an approximation table entry (bit for bit).

This lives in the spec (the tables are data that ``nimbus.approx`` generates and the spec reads;
``nimbus.approx.fxp`` re-exports it for the fitting and certification code).

Representation: a value v is held as a signed integer s in [-2^(l-1), 2^(l-1)) meaning
s / 2^f, where l = `ring_bits` and f = `frac_bits` of the entry. Shares live in Z_{2^l}; the
signed lift of a ring element u is `lift(u) = ((u + 2^(l-1)) mod 2^l) - 2^(l-1)`.

Evaluation of an entry at the input x (any integer; it is lifted first):

1. Piece selection. Pieces are listed in increasing order and tile the signed range;
   piece i applies iff `lo_i <= x < hi_i` (a missing `lo` is -inf, a missing `hi` is +inf).
   Breakpoints are integers at scale 2^f, compared as signed l-bit values.
2. Piece kinds:
   - "zero": 0.   "identity": x.   "const": the integer `value`.
   - "poly" with integer coefficients q_0..q_d at scale 2^f (ascending order), Horner form:
         acc = q_d
         for k = d-1 down to 0:  acc = lift( trunc(acc * x) + q_k )
     where trunc(v) = lift(v) >> f, an arithmetic shift (floor division by 2^f) applied to the
     product *reduced mod 2^l*: the protocol multiplies in Z_{2^l} and then truncates exactly
     (faithful truncation, no 1-bit error). The first step, q_d * x, is a public-constant
     product (local in 2PC); every later step is one secure product of two shared values.
     Degree d costs d truncations and d-1 secure multiplications.
   - "pow2chain" with parameter n (BumbleBee's exp): t = lift(2^f + (x >> n)); then n times
     t = trunc(t * t). (That is (1 + x/2^n)^(2^n).)
3. The result is the signed integer `lift(acc)` at scale 2^f.

`evaluate_fxp` is the definition (pure Python integers). `evaluate_fxp_array` is a vectorised
numpy twin on int64, tested equal to it for every l <= 64 (int64 arithmetic wraps mod 2^64,
and 2^l divides 2^64, so reducing the wrapped product to l bits is exact).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = [
    "SEMANTICS", "lift", "lift_array", "trunc", "select_piece", "evaluate_fxp", "evaluate_fxp_array",
    "to_fxp", "from_fxp",
]

SEMANTICS = {
    "id": "nimbus-fxp-v1",
    "definition": "nimbus.approx.fxp.evaluate_fxp",
    "text": [
        "values: signed integers s in [-2^(l-1), 2^(l-1)) meaning s/2^f; l = ring_bits, f = frac_bits",
        "lift(u) = ((u + 2^(l-1)) mod 2^l) - 2^(l-1); the input is lifted first",
        "piece i applies iff lo_i <= x < hi_i (missing lo: -inf, missing hi: +inf)",
        "zero: 0; identity: x; const: value",
        "poly q_0..q_d (scale 2^f, ascending): acc = q_d; for k = d-1..0: "
        "acc = lift((lift(acc * x) >> f) + q_k)   (>> is floor: exact truncation mod 2^l)",
        "pow2chain n: t = lift(2^f + (x >> n)); n times: t = lift(t * t) >> f",
        "result: lift(acc)",
    ],
}


def lift(u: int, ring_bits: int) -> int:
    """Signed representative of u mod 2^ring_bits."""
    half = 1 << (ring_bits - 1)
    return ((u + half) % (1 << ring_bits)) - half


def trunc(v: int, ring_bits: int, frac_bits: int) -> int:
    """Exact truncation of a ring product: lift(v) >> frac_bits (floor)."""
    return lift(v, ring_bits) >> frac_bits


def select_piece(entry: Mapping[str, Any], x: int) -> Mapping[str, Any]:
    """The piece whose [lo, hi) contains the signed input x."""
    for piece in entry["pieces"]:
        lo, hi = piece.get("lo"), piece.get("hi")
        if (lo is None or x >= lo) and (hi is None or x < hi):
            return piece
    raise ValueError(f"pieces do not cover x = {x}")


def _poly(coeffs, x: int, l: int, f: int) -> int:
    acc = int(coeffs[-1])
    for q in reversed(coeffs[:-1]):
        acc = lift(trunc(acc * x, l, f) + int(q), l)
    return acc


def _pow2chain(n: int, x: int, l: int, f: int) -> int:
    t = lift((1 << f) + (x >> n), l)
    for _ in range(n):
        t = trunc(t * t, l, f)
    return t


def evaluate_fxp(entry: Mapping[str, Any], x_int: int) -> int:
    """Evaluate a table entry at the fixed-point input x_int; THE semantics (see module doc)."""
    l, f = int(entry["ring_bits"]), int(entry["frac_bits"])
    x = lift(int(x_int), l)
    piece = select_piece(entry, x)
    kind = piece["kind"]
    if kind == "zero":
        return 0
    if kind == "identity":
        return x
    if kind == "const":
        return lift(int(piece["value"]), l)
    if kind == "poly":
        return lift(_poly(piece["coeffs"], x, l, f), l)
    if kind == "pow2chain":
        return lift(_pow2chain(int(piece["n"]), x, l, f), l)
    raise ValueError(f"unknown piece kind {kind!r}")


# ----------------------------------------------------------------------------- vectorised twin

def _lift_a(u: np.ndarray, l: int) -> np.ndarray:
    if l >= 64:
        return u  # int64 arithmetic is already mod 2^64 two's complement
    half, mask = np.int64(1 << (l - 1)), np.int64((1 << l) - 1)
    return ((u + half) & mask) - half


def lift_array(u: np.ndarray, ring_bits: int) -> np.ndarray:
    """`lift` on an int64 array (wrapping int64 arithmetic is mod 2^64)."""
    return _lift_a(np.asarray(u, dtype=np.int64), ring_bits)


def _mul_a(a: np.ndarray, b: np.ndarray, l: int) -> np.ndarray:
    # int64 products wrap mod 2^64, and 2^l divides 2^64: the lift to l bits is exact.
    return _lift_a(a * b, l)


def _horner32(coeffs, x: np.ndarray, f: int) -> np.ndarray:
    """l = 32 fast path: int32 arrays wrap mod 2^32 on add and on the int64 -> int32 cast."""
    x32 = x.astype(np.int32)
    acc = np.full(x.shape, lift(coeffs[-1], 32), dtype=np.int32)
    with np.errstate(over="ignore"):
        for q in reversed(coeffs[:-1]):
            acc = (acc.astype(np.int64) * x32).astype(np.int32)
            acc >>= f
            acc += np.int32(lift(q, 32))
    return acc.astype(np.int64)


def _piece_a(piece, x: np.ndarray, l: int, f: int) -> np.ndarray:
    kind = piece["kind"]
    if kind == "poly" and l == 32:
        return _horner32([int(q) for q in piece["coeffs"]], x, f)
    if kind == "zero":
        return np.zeros_like(x)
    if kind == "identity":
        return x.copy()
    if kind == "const":
        return np.full_like(x, lift(int(piece["value"]), l))
    if kind == "poly":
        c = [int(q) for q in piece["coeffs"]]
        acc = np.full_like(x, c[-1])
        for q in reversed(c[:-1]):
            acc = _lift_a((_mul_a(acc, x, l) >> f) + np.int64(q), l)
        return acc
    if kind == "pow2chain":
        t = _lift_a(np.int64(1 << f) + (x >> int(piece["n"])), l)
        for _ in range(int(piece["n"])):
            t = _mul_a(t, t, l) >> f
        return t
    raise ValueError(f"unknown piece kind {kind!r}")


def evaluate_fxp_array(entry: Mapping[str, Any], x_int: np.ndarray) -> np.ndarray:
    """Vectorised `evaluate_fxp` on an int64 array (same results, see module doc).

    Every piece is evaluated on the whole array (the semantics is total: wrapped values are
    well defined) and the results are selected by the piece masks, last piece first."""
    l, f = int(entry["ring_bits"]), int(entry["frac_bits"])
    x = _lift_a(np.asarray(x_int, dtype=np.int64), l)
    out = None
    for piece in reversed(entry["pieces"]):
        val = _piece_a(piece, x, l, f)
        if out is None:
            out = val
            continue
        hi = piece.get("hi")
        if hi is not None:
            out = np.where(x < hi, val, out)
        else:
            out = val
    return out


def to_fxp(x: np.ndarray, ring_bits: int, frac_bits: int) -> np.ndarray:
    """Float -> fixed point as the protocol's truncating down-cast does: floor(x * 2^f),
    saturated to the signed range (simulation only; real shares wrap)."""
    half = 2.0 ** min(ring_bits - 1, 62)   # 2^62: stays exact when cast to int64
    return np.clip(np.floor(np.asarray(x, dtype=np.float64) * 2.0**frac_bits), -half, half - 1).astype(np.int64)


def from_fxp(y: np.ndarray, frac_bits: int) -> np.ndarray:
    return np.asarray(y, dtype=np.float64) / 2.0**frac_bits
