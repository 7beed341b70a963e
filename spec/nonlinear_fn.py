"""Non-linear *functions* on shares: exact fixed-point semantics, costs, registry.

Every function maps shares in the linear ring (``params.linear``: Z_2^64) at an explicit input
scale ``2^in_frac`` to shares in the linear ring at scale ``2^params.linear.frac``. In between it
works in the ring of its approximation-table entry (``ring_bits``, ``frac_bits``: Z_2^32 with 13
fraction bits for the Nimbus tables). The ideal functionalities below define the result **bit
for bit** (``trunc="exact"``); ``trunc="faithful"`` lets each truncation be 1 ulp low (Cheetah's
known-MSB truncation without the carry: cheaper, error stated per function).

GELU  (``ideal_gelu``) [NIMBUS24, §4.2]
    x = floor(lift_64(X) / 2^(in_frac - f)) mod 2^l (exact, fused with the down-cast);
    y = ``approx.fxp.evaluate_fxp(entry, x)`` (pieces [lo, hi), Horner, exact floor truncations);
    Y = y * 2^(frac - f) mod 2^64. Domain: |x| < 2^(l-2) (|x| < 131072 for l = 32, f = 13).
Softmax  (``ideal_softmax``) [NIMBUS24, §4.2]
    x as for GELU, plus the client's additive mask (encoded at scale 2^f); m = rowmax(x);
    d = x - m; e = evaluate_fxp(exp entry, d) (zero below the clip point); s = sum_row e (mod 2^l);
    r = ``ideal_reciprocal(s)``; out = floor(lift_l(e * r) / 2^(2f - frac)) mod 2^64 (the last
    truncation fused with the up-cast). Domain: |x| < 2^(l-3); row length n with
    n * max(e) < 2^J, J = ``recip_range(n)``.
Reciprocal  (``ideal_reciprocal``) [SIRNN, §4.2 (thermometer); CrypTFlow2]
    for 2^-1 <= s < 2^J (real), S = s 2^f an integer: seg = #{T in ``recip_thresholds(J, f)``:
    T <= S} (K_j thresholds per octave j, more where 1/s is large); r = floor((A_seg +
    B_seg S) / 2^RC_TR) with the constants of ``recip_segments(J, f)`` (the minimax line of
    2^(2f) / S on the segment at scale 2^RC_TR, + 2^(RC_TR-1) so the floor rounds). No
    normalising product, no Newton step. Error: <= ``RC_ERR_ULP`` ulp of 1/s (checked
    exhaustively over every S of the domain). ``trunc="faithful"`` lets the reciprocal's and
    the last truncations be 1 ulp low; the exp stays exact; the output is within
    ``softmax_faithful_bound`` of the ideal.

The OT session is passed explicitly as the second argument of every party function (see
``nimbus.spec.nonlinear``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from nimbus.spec import polyfxp as _fxp
from nimbus.spec import approx_tables as _tables

from .cost import Cost
from .prg import PRG
from .errors import ParameterError, ShapeError
from .nonlinear import (
    IdealCotSession, Flow, _f_acot, _f_and, _f_downcast, _f_drelu, _f_max, _f_millionaire, _f_mul_rows, _f_mux, _f_trunc, _gilboa,
    ring_mask,
)
from .protocols import ProtocolSpec, register_protocol

__all__ = [
    "DEFAULT_TABLE", "RECIP_TABLE", "TANH_TABLE", "RECIP_ITERS", "SOFTMAX_TRUNC", "FN_TRUNC",
    "softmax_faithful_bound", "softmax_product_bits", "unary_faithful_bound", "entry_for", "horner_trunc_mode", "horner_product_bits", "is_faithful", "encode_mask", "recip_range",
    "ideal_gelu", "ideal_tanh", "ideal_unary", "piecewise_merge_piece", "ideal_softmax", "ideal_reciprocal", "ideal_to_small",
    "RC_BITS", "RC_TR", "RC_ERR_ULP", "recip_octave_segments", "recip_thresholds", "recip_segments",
    "gelu_cost", "tanh_cost", "unary_cost", "softmax_cost",
    "RSQRT_TABLE", "RSQRT_ITERS", "LN_K", "LN_FV", "LN_FD", "LN_PMIN", "LN_PMAX", "rsqrt_entry",
    "ideal_rsqrt", "ideal_layernorm", "layernorm_cost", "ideal_reciprocal_ring", "reciprocal_cost",
    "ideal_rsqrt_ring", "rsqrt_cost", "RSQ_K", "rsq_thresholds", "rsq_segments",
    "LN_GAMMA_BITS", "LN_OUT_BITS", "ln_shifts", "ln_downcast_flow", "ln_prefix", "gamma_digits", "gamma_ring_bits", "encode_gamma", "gamma_flow",
]

DEFAULT_TABLE = "nimbus-prototype"  #: the prototype's coefficients: the initial table
RECIP_TABLE = "ours-minilm-global"  #: the reciprocal's ring and scale (its quadratic on [1/2, 1) is no longer used)
TANH_TABLE = "ours-minilm-global"  #: the prototype has no tanh
RECIP_ITERS = 0  #: (legacy) Newton steps: none (the thermometer's piecewise-linear fit is the approximation)
RC_BITS = 42  #: ring of the per-segment lines R = A + B S (R < 2^39: known MSB)
RC_TR = 24  #: fraction bits of the lines' constants beyond the output's 2^f
RC_FIT_ULP = 0.75  #: fit error per octave, in ulp of 1/s: sets the segments per octave K_j
RC_ERR_ULP = 1.3  #: |r - 2^(2f)/S| <= RC_ERR_ULP (fit + rounding; checked exhaustively in the tests)
RC_RADIX = 3  #: millionaire radix of the thermometer (f + J + 1 bits: 8 leaves for J = 8, 3 AND levels)
RC_TR_RADIX = 6  #: millionaire radix of the final truncation by RC_TR (4 leaves: 2 levels)
FN_TRUNC = ("exact", "faithful")
SOFTMAX_TRUNC = "faithful"


def is_faithful(trunc: str) -> bool:
    if trunc not in FN_TRUNC:
        raise ParameterError(f"trunc must be one of {FN_TRUNC}, got {trunc!r}")
    return trunc == "faithful"


@lru_cache(maxsize=None)
def _entry(table: str, function: str) -> dict:
    return _tables.entry(table, function)


def entry_for(table: str, function: str, params) -> dict:
    """The table entry, checked against the parameter set (its ring must fit the linear ring)."""
    try:
        e = _entry(table, function)
    except (FileNotFoundError, KeyError):
        raise ParameterError(f"table {table!r} has no entry for {function!r}") from None
    if isinstance(e, list):
        raise ParameterError(f"table {table!r} is per layer; pass a global table")
    l, f = int(e["ring_bits"]), int(e["frac_bits"])
    if l > params.linear.bits or f > params.linear.frac or not 0 <= f < l - 2:
        raise ParameterError(f"entry {table}/{function} (Z_2^{l}, f = {f}) does not fit {params.name}")
    return e


def _piece_range(entry: dict, j: int, domain_hi: int | None):
    l = int(entry["ring_bits"])
    pc = entry["pieces"][j]
    lo = pc.get("lo", -(1 << (l - 2)))
    hi = pc.get("hi", (1 << (l - 2)))
    if domain_hi is not None:
        hi = min(hi, domain_hi + 1)
    return int(lo), int(hi)


@lru_cache(maxsize=None)
def _horner_safe(table_key: tuple, domain_hi) -> bool:
    entry, j = _KEYED[table_key]
    l, f = int(entry["ring_bits"]), int(entry["frac_bits"])
    lo, hi = _piece_range(entry, j, domain_hi)
    if hi - lo > 1 << 22:
        return False  # too wide to check exhaustively: use the exact truncation
    # float64 is enough for a bound with this much margin (2^-40 relative)
    x = np.arange(lo, hi, dtype=np.float64)
    c = [float(q) for q in entry["pieces"][j]["coeffs"]]
    acc = np.full_like(x, c[-1])
    lim = float(1 << (l - 2)) * (1 - 2.0**-40)
    for q in reversed(c[:-1]):
        prod = acc * x
        if np.any(np.abs(prod) >= lim):
            return False
        acc = np.floor(prod / 2.0**f) + q
    return True


_KEYED: dict = {}


def horner_trunc_mode(entry: dict, j: int, domain_hi: int | None = None, faithful: bool = False) -> str:
    """Truncation mode of piece j's Horner steps: the known-MSB truncation (``msb``, exact, or
    ``msb1`` when faithful) when every product over the piece's inputs is below 2^(l-2) in
    magnitude (checked exhaustively over the fixed-point inputs), else ``exact``. Inputs outside
    the piece give garbage there, which the piece's multiplexer discards."""
    import json

    key = (json.dumps(entry, sort_keys=True), j)  # by content: never a stale answer for a new dict
    _KEYED[key] = (entry, j)
    if _horner_safe(key, domain_hi):
        return "msb1" if faithful else "msb"
    return "exact"


@lru_cache(maxsize=None)
def _horner_bits(table_key: tuple, domain_hi) -> tuple | None:
    entry, j = _KEYED[table_key]
    l, f = int(entry["ring_bits"]), int(entry["frac_bits"])
    lo, hi = _piece_range(entry, j, domain_hi)
    c = [int(q) for q in entry["pieces"][j]["coeffs"]]
    if hi - lo > 1 << 22 or len(c) < 3:
        return None
    x = np.arange(lo, hi, dtype=np.int64)
    X = int(np.abs(x).max())
    acc = np.full(x.shape, c[-1], dtype=np.int64)
    err = 0  # |faithful acc - exact acc| (ulp): e_k <= e_(k+1) X / 2^f + 2 (unary_faithful_bound)
    out = []
    for k in range(len(c) - 2, -1, -1):
        prod = acc * x  # exact: the piece passed _horner_safe (|prod| < 2^(l-2))
        if k < len(c) - 2:  # a secure product: the smallest ring that holds it with a known MSB
            m = int(np.abs(acc).max() + err) * X
            out.append(min(l, max(f + 3, m.bit_length() + 2)))
        acc = (prod >> np.int64(f)) + c[k]
        err = -(-err * X // (1 << f)) + 2
    return tuple(out)


def horner_product_bits(entry: dict, j: int, domain_hi: int | None = None) -> tuple | None:
    """Ring widths of piece j's secure Horner products (steps k = d-2 .. 0), or None (use the
    entry's ring): the smallest k with max |acc x| < 2^(k-2) over the piece's fixed-point inputs
    (checked exhaustively, with the faithful mode's accumulated error as margin). The product is
    computed in Z_2^k from the shares reduced mod 2^k (exact: |acc x| < 2^(k-2)) and the Horner
    truncation is fused with the extension back to Z_2^l (``trunc_upcast``): Gilboa costs
    k(k+1)/2 instead of l(l+1)/2 bits per element each way. Only for pieces whose Horner steps use
    the known-MSB truncation (``horner_trunc_mode`` != exact)."""
    import json

    if horner_trunc_mode(entry, j, domain_hi) == "exact":
        return None
    key = (json.dumps(entry, sort_keys=True), j)
    _KEYED[key] = (entry, j)
    return _horner_bits(key, domain_hi)


def encode_mask(mask, shape, l: int, f: int) -> np.ndarray:
    """The client's additive attention mask (reals) at scale 2^f in Z_2^l, broadcast to x."""
    m = np.asarray(mask, dtype=np.float64)
    if m.size and (m.max() > 0 or m.min() < -(1 << (l - 4 - f))):
        raise ShapeError(f"mask values must lie in [-2^{l - 4 - f}, 0]")
    v = np.floor(m * (1 << f) + 0.5).astype(np.int64)
    return (np.broadcast_to(v, shape).reshape(-1).view(np.uint64) & ring_mask(l)).copy()


def recip_range(n: int, entry: dict) -> int:
    """J with every softmax row sum below 2^J: sum < n * max exp <= 2n (the exp tables stay
    below 2 on (-inf, 0]), so J = ceil(log2 n) + 1."""
    return max(1, math.ceil(math.log2(max(n, 1)))) + 1


# -- ideal functionalities --------------------------------------------------------------------------
def _lift(v: np.ndarray, l: int) -> np.ndarray:
    return _fxp.lift_array(np.asarray(v, dtype=np.int64), l)


def _floor_div(v: np.ndarray, l: int, k: int) -> np.ndarray:
    return _lift(v, l) >> np.int64(k)


def ideal_to_small(X, in_frac: int, params, l: int, f: int) -> np.ndarray:
    """floor(lift_L(X) / 2^(in_frac - f)) lifted into Z_2^l (signed int64)."""
    L = params.linear.bits
    s = _floor_div(np.asarray(X, dtype=np.uint64).view(np.int64), L, in_frac - f)
    return _lift(s, l)


def _to_ring(v: np.ndarray, bits: int) -> np.ndarray:
    return np.asarray(v, dtype=np.int64).view(np.uint64) & ring_mask(bits)


def softmax_faithful_bound(n: int = 0, params=None) -> float:
    """Declared |faithful - exact| of softmax outputs (reals). The exp is exact in both modes;
    faithful truncations (each 1 ulp low at most) sit in the reciprocal's last truncation
    (|dr| <= 2^-f; the thermometer and the lines are exact) and the final product's: e <= 1.04
    (exp tables) gives |e dr| <= 1.04 * 2^-f, plus the final truncation's 2^-frac: bound
    2 * 2^-f + 2^-frac (about 2.5e-4 for f = 13)."""
    f, fo = 13, 18
    if params is not None:
        f, fo = params.nonlinear.frac, params.linear.frac
    return 2 * 2.0**-f + 2.0**-fo


def ideal_gelu(X, params, in_frac: int | None = None, table: str = DEFAULT_TABLE) -> np.ndarray:
    """The secret output of ``gelu`` (ring elements of the linear ring)."""
    return ideal_unary(X, params, in_frac, table, "gelu")


def ideal_tanh(X, params, in_frac: int | None = None, table: str = TANH_TABLE) -> np.ndarray:
    """The secret output of ``tanh`` (as GELU, with the table's tanh entry)."""
    return ideal_unary(X, params, in_frac, table, "tanh")


def ideal_unary(X, params, in_frac, table: str, function: str) -> np.ndarray:
    """x = floor(X / 2^(in_frac - f)) in Z_2^l; y = evaluate_fxp(entry, x); Y = y 2^(frac - f)."""
    in_frac = params.linear.frac if in_frac is None else in_frac
    e = entry_for(table, function, params)
    l, f = int(e["ring_bits"]), int(e["frac_bits"])
    x = ideal_to_small(X, in_frac, params, l, f)
    y = _fxp.evaluate_fxp_array(e, x)
    return _to_ring(y << np.int64(params.linear.frac - f), params.linear.bits)


def recip_octave_segments(j: int, f: int) -> int:
    """K_j, the segments of octave j (s in [2^j, 2^(j+1))): the minimax line of 1/s on a segment
    of ratio rho = 2^(1/K) is within (sqrt(rho) - 1)^2 / (2 rho) of it, relatively; 1/s is at
    most 2^(f-j) ulp there, so K_j is the smallest K with that times 2^(f-j) <= RC_FIT_ULP
    (37 segments for j = -1 down to 3 for j = 7 at f = 13)."""
    K = 1
    while True:
        rho = 2.0 ** (1.0 / K)
        if (math.sqrt(rho) - 1) ** 2 / (2 * rho) * 2.0 ** (f - j) <= RC_FIT_ULP:
            return K
        K += 1


@lru_cache(maxsize=None)
def recip_thresholds(J: int, f: int) -> tuple:
    """The thermometer's thresholds for S = s 2^f in [2^(f-1), 2^(f+J)): per octave j = -1 ..
    J-1, ceil(2^(f + j + i/K_j)) for i = 1 .. K_j (exact integer roots; the octave boundaries
    2^(f+j+1) are among them), without the domain's end; distinct, increasing. Segment s
    (s = number of thresholds <= S) is [T_(s-1), T_s) with T_(-1) = 2^(f-1)."""
    out = []
    for j in range(-1, J):
        K = recip_octave_segments(j, f)
        for i in range(1, K + 1):
            if j == J - 1 and i == K:
                break
            t = _iroot_ceil(K * (f + j) + i, K)
            if not out or t > out[-1]:
                out.append(t)
    return tuple(out)


@lru_cache(maxsize=None)
def recip_segments(J: int, f: int) -> tuple:
    """Per segment s: (A_s, B_s) with R = A_s + B_s S ~ 2^RC_TR 2^(2f) / S (+ 2^(RC_TR-1), so
    that the floor by 2^RC_TR rounds to nearest): the minimax line of the convex C / S on
    [lo, hi] (C = 2^(2f)): slope b = -C / (lo hi), tangent point c = sqrt(lo hi), the secant moved
    by half the gap. Deterministic: IEEE arithmetic and sqrt only, then rounding to integers."""
    T = recip_thresholds(J, f)
    bounds = [1 << (f - 1)] + list(T) + [1 << (f + J)]
    C, sc = 2.0 ** (2 * f), 2.0 ** RC_TR
    out = []
    for s in range(len(T) + 1):
        lo, hi = float(bounds[s]), float(bounds[s + 1])
        b = -C / (lo * hi)
        c = math.sqrt(lo * hi)
        gap = C / c - (C / lo + b * (c - lo))  # <= 0: the curve is below its secant
        a = C / lo - b * lo + gap / 2
        A = int(math.floor(a * sc + 0.5)) + (1 << (RC_TR - 1))
        B = int(math.floor(b * sc + 0.5))
        if not 0 < A < (1 << (RC_BITS - 2)) or not 0 <= A + B * bounds[s + 1] < (1 << (RC_BITS - 3)):
            raise ParameterError("reciprocal constants out of range")
        out.append((A, B))
    return tuple(out)


def ideal_reciprocal(s: np.ndarray, entry: dict, J: int) -> np.ndarray:
    """See the module docstring; s and the result are signed int64 at scale 2^f (the entry's
    frac_bits). Domain 2^(f-1) <= s < 2^(f+J); garbage outside."""
    f = int(entry["frac_bits"])
    S = np.asarray(s, dtype=np.int64)
    seg = np.searchsorted(np.array(recip_thresholds(J, f), dtype=np.int64), S, side="right")
    c = np.array(recip_segments(J, f), dtype=np.int64)
    return (c[seg, 0] + c[seg, 1] * S) >> np.int64(RC_TR)


@lru_cache(maxsize=None)
def _softmax_prod_bits(table: str, J: int, l: int, f: int, rl: int, rf: int) -> int:
    ent = _entry(table, "exp")
    rent = _entry(RECIP_TABLE, "reciprocal")
    lo = min((int(p.get("lo", 0)) for p in ent["pieces"] if p["kind"] != "zero"), default=0)
    if -lo > 1 << 23:
        return rl
    e = _fxp.evaluate_fxp_array(ent, np.arange(lo, 1, dtype=np.int64))
    if (l, f) != (rl, rf):
        e = e >> np.int64(f - rf)
    e_max, e0 = int(np.abs(e).max()), int(e[-1])
    if e0 < 1 << (rf - 1):
        return rl
    top = min(1 << (rf + J), e0 + (1 << 16))
    r = ideal_reciprocal(np.arange(e0, top, dtype=np.int64), rent, J)
    r_max = int(np.abs(r).max())
    if top < 1 << (rf + J):  # larger sums: 1/s with a factor 2 of margin (the error is <= 2 ulp)
        r_max = max(r_max, 2 * (1 << (2 * rf)) // top + 16)
    bound = e_max * (r_max + 16)  # + 16 ulp: the faithful reciprocal's error (<= 6)
    return min(rl, max(2 * rf - 15, bound.bit_length() + 2))


def softmax_product_bits(params, n: int, table: str = DEFAULT_TABLE) -> int:
    """Ring width of softmax's broadcast product e * r: the smallest k with |e r| < 2^(k-2) for
    every exp value e (the entry, exhaustively) and every r = reciprocal(s), s >= e(0) (the row
    maximum has d = 0, so s >= e(0); exhaustively for s < e(0) + 2^16, above by 2/s), plus 16 ulp. The
    product is computed in Z_2^k from the shares reduced mod 2^k (exact) and its truncation is
    fused with the extension into the linear ring: 28 instead of 32 bits for the Nimbus tables
    (Gilboa: 406 instead of 528 bits per element each way)."""
    ent = entry_for(table, "exp", params)
    rent = entry_for(RECIP_TABLE, "reciprocal", params)
    return _softmax_prod_bits(table, recip_range(n, ent), int(ent["ring_bits"]), int(ent["frac_bits"]),
                              int(rent["ring_bits"]), int(rent["frac_bits"]))


def ideal_softmax(X, params, in_frac: int | None = None, mask=None, table: str = DEFAULT_TABLE) -> np.ndarray:
    """The secret output of ``softmax`` with ``trunc="exact"`` (ring elements, linear ring)."""
    in_frac = params.linear.frac if in_frac is None else in_frac
    ent = entry_for(table, "exp", params)
    rent = entry_for(RECIP_TABLE, "reciprocal", params)
    l, f = int(ent["ring_bits"]), int(ent["frac_bits"])
    X = np.asarray(X, dtype=np.uint64)
    shp = X.shape
    x = ideal_to_small(X, in_frac, params, l, f).reshape(-1)
    if mask is not None:
        x = _lift(x + encode_mask(mask, shp, l, f).astype(np.int64), l)
    rows = x.reshape(-1, shp[-1])
    d = _lift(rows - rows.max(axis=1, keepdims=True), l)
    e = _fxp.evaluate_fxp_array(ent, d)
    rl, rf = int(rent["ring_bits"]), int(rent["frac_bits"])
    if (l, f) != (rl, rf):  # the exp's ring -> the reciprocal's (BumbleBee: exact down-cast)
        e = _lift(e >> np.int64(f - rf), rl)
    s = _lift(e.sum(axis=1), rl)
    r = ideal_reciprocal(s, rent, recip_range(shp[-1], ent))
    out = _floor_div(e * r[:, None], rl, 2 * rf - params.linear.frac)
    return _to_ring(out, params.linear.bits).reshape(shp)


# -- costs (mirroring the protocols' message flow) ---------------------------------------------------
def _f_mul(n: int, bits: int) -> Flow:
    g = _gilboa(n, bits, 0)
    return _f_acot(g, g)


def _f_to_small(params, n: int, in_frac: int, l: int, f: int) -> Flow:
    L, k = params.linear.bits, in_frac - f
    if k == 0:
        return Flow()
    if L - k >= l:
        return _f_downcast(n, k, l, "exact", 4)
    return _f_trunc(n, L, k, "exact", k, L, 4)


def _f_to_linear(params, n: int, l: int) -> Flow:
    L = params.linear.bits
    return _f_trunc(n, l, 0, "msb", L - l, L, 4) if l < L else Flow()


def _f_poly(n: int, coeffs, l: int, f: int, mode: str, kbits=None, extra=()) -> Flow:
    fl = Flow()
    d = len(coeffs) - 1
    for k in range(d - 1, -1, -1):
        if k < d - 1:
            kb = kbits[d - 2 - k] if kbits else l
            fl = fl + _f_mul(n, kb) + _f_trunc(n, kb, f, mode, l - kb + f, l, 4)
        else:
            fl = fl + _f_trunc(n, l, f, mode, f, l, 4, extra)
    return fl


def piecewise_merge_piece(entry: dict, domain_hi=None, faithful: bool = False) -> int | None:
    """The piece whose first Horner truncation carries the breakpoints' DReLU in its millionaire
    batch: the first polynomial piece (degree >= 1) whose truncation mode has a millionaire
    (``exact``, or ``msb`` by f > 0 bits); None: the DReLU runs alone, after the pieces."""
    f = int(entry["frac_bits"])
    for j, pc in enumerate(entry["pieces"]):
        if pc["kind"] == "poly" and len(pc["coeffs"]) >= 2 and f > 0 \
                and horner_trunc_mode(entry, j, domain_hi, faithful) in ("exact", "msb"):
            return j
    return None


def _f_piecewise(n: int, entry: dict, domain_hi=None, faithful=False) -> Flow:
    l, f = int(entry["ring_bits"]), int(entry["frac_bits"])
    pieces = entry["pieces"]
    cmp = [(n * (len(pieces) - 1), l - 1)] if len(pieces) > 1 else []
    merge = piecewise_merge_piece(entry, domain_hi, faithful) if cmp else None
    fl = Flow()
    nz = 0
    for j, pc in enumerate(pieces):
        if pc["kind"] == "zero":
            continue
        nz += 1
        if pc["kind"] == "poly":
            fl = fl + _f_poly(n, pc["coeffs"], l, f, horner_trunc_mode(entry, j, domain_hi, faithful),
                              horner_product_bits(entry, j, domain_hi), cmp if j == merge else ())
        elif pc["kind"] == "pow2chain":
            fl = fl + _f_trunc(n, l, int(pc["n"]), "exact", int(pc["n"]), l, 4)
            for _ in range(int(pc["n"])):
                fl = fl + _f_acot(_gilboa(n, l, 1), []) + _f_trunc(n, l, f, "msb1" if faithful else "msb", f, l, 4)
    if cmp and merge is None:
        fl = fl + _f_millionaire(cmp, 4)
    return fl + (_f_mux(n * nz, l) if nz else Flow())


def _f_reciprocal(n: int, entry: dict, J: int, mode: str) -> Flow:
    l, f = int(entry["ring_bits"]), int(entry["frac_bits"])
    nT = len(recip_thresholds(J, f))
    fl = _f_millionaire([(n * nT, f + J + 1)], RC_RADIX)  # the thermometer
    fl = fl + _f_trunc(n, l, 0, "msb", RC_BITS - l, RC_BITS, 4)  # S up-cast into Z_2^RC_BITS
    fl = fl + _f_mux(n * (nT + 1), RC_BITS)  # the segment's line
    return fl + _f_trunc(n, RC_BITS, RC_TR, mode, RC_TR, RC_BITS, RC_TR_RADIX)


def _n(shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def gelu_cost(params, shape, in_frac: int | None = None, table: str = DEFAULT_TABLE, trunc: str = "exact") -> Cost:
    """GELU: down-cast (carry only), one DReLU batch, the Horner chain, one mux, up-cast."""
    return unary_cost(params, shape, in_frac, table, "gelu", trunc)


def tanh_cost(params, shape, in_frac: int | None = None, table: str = TANH_TABLE, trunc: str = "exact") -> Cost:
    """tanh: as GELU with the tanh entry."""
    return unary_cost(params, shape, in_frac, table, "tanh", trunc)


def unary_cost(params, shape, in_frac, table: str, function: str, trunc: str = "exact") -> Cost:
    in_frac = params.linear.frac if in_frac is None else in_frac
    e = entry_for(table, function, params)
    l, f, n = int(e["ring_bits"]), int(e["frac_bits"]), _n(tuple(shape))
    pw = _f_piecewise(n, e, None, is_faithful(trunc))
    return (_f_to_small(params, n, in_frac, l, f) + pw + _f_to_linear(params, n, l)).cost()


def unary_faithful_bound(params, table: str, function: str) -> float:
    """Declared |faithful - exact| (reals, output units) of a table function: a Horner step's
    error e_k = acc'_k - acc_k satisfies |e_k| <= |e_(k+1)| X + 2 ulp (the floor of a shifted
    product moves by at most |e X| + 1, and the omitted carry by 1; e_(d-1) <= 1), X the largest
    |x| of the piece; pieces whose Horner steps use the exact truncation contribute 0."""
    e = entry_for(table, function, params)
    f = int(e["frac_bits"])
    worst = 0.0
    for j, pc in enumerate(e["pieces"]):
        if pc["kind"] != "poly" or horner_trunc_mode(e, j, None, True) != "msb1":
            continue
        lo, hi = _piece_range(e, j, None)
        X = max(abs(lo), abs(hi)) / 2.0**f
        b = 1.0
        for _ in range(len(pc["coeffs"]) - 2):
            b = b * X + 2
        worst = max(worst, b)
    return worst * 2.0**-f


def softmax_cost(params, shape, in_frac: int | None = None, table: str = DEFAULT_TABLE,
                 trunc: str = SOFTMAX_TRUNC) -> Cost:
    """Softmax: down-cast, max tree, exp pieces, one reciprocal per row, broadcast product (one
    vector ACOT per row and bit of the reciprocal), fused truncation + up-cast."""
    in_frac = params.linear.frac if in_frac is None else in_frac
    faithful = is_faithful(trunc)
    ent = entry_for(table, "exp", params)
    rent = entry_for(RECIP_TABLE, "reciprocal", params)
    l, f = int(ent["ring_bits"]), int(ent["frac_bits"])
    shape = tuple(shape)
    n, cols = _n(shape), shape[-1]
    rows = n // cols
    mode = "msb1" if faithful else "msb"
    fl = _f_to_small(params, n, in_frac, l, f) + _f_max(rows, cols, l, 4)
    fl = fl + _f_piecewise(n, ent, 0)
    rl, rf = int(rent["ring_bits"]), int(rent["frac_bits"])
    if (l, f) != (rl, rf):
        fl = fl + _f_downcast(n, f - rf, rl, "exact", 4)
    fl = fl + _f_reciprocal(rows, rent, recip_range(cols, ent), mode)
    L, sh = params.linear.bits, 2 * rf - params.linear.frac
    kb = softmax_product_bits(params, cols, table)
    fl = fl + _f_mul_rows(rows, cols, kb) + _f_trunc(n, kb, sh, mode, L - kb + sh, L, 4)
    return fl.cost()


def _fn_example(name: str):
    """Example run of ``nonlinear.<name>`` on the F_COT session (small shapes; bert-base-like
    parameter sets only: the tables' ring must fit the linear ring)."""
    def example(params):
        shape = {"gelu": (4, 16), "tanh": (4, 16), "softmax": (2, 16), "layernorm": (2, 64)}[name]
        if name != "layernorm":
            entry_for(DEFAULT_TABLE if name != "tanh" else TANH_TABLE, "exp" if name == "softmax" else name, params)
        elif params.nonlinear.frac + 2 * LN_PMIN < 0:
            raise ParameterError(f"layernorm needs a bert-base-like parameter set, not {params.name}")
        prg = PRG.for_tests(f"nonlinear-example/{name}")
        f = params.linear.frac  # public example inputs: uniform on [-7, 5), then the client's share
        x = (prg.uniform_mod("x", shape, 12 << f).astype(np.int64) - (7 << f)).view(np.uint64)
        xc = prg.uniform("x_c", shape, 64)
        oc, osv = IdealCotSession.pair(b"example/" + name.encode())
        return (oc, xc), (osv, x - xc), {}, (shape,)
    return example


for _name, _ideal, _cost, _ref in (
    ("gelu", ideal_gelu, gelu_cost, "[NIMBUS24, §4.2; BumbleBee, §5 (baseline table)]"),
    ("tanh", ideal_tanh, tanh_cost, "[NIMBUS24, §4.2 (table method); BERT pooler]"),
    ("softmax", ideal_softmax, softmax_cost, "[NIMBUS24, §4.2; SIRNN, §4.2 (reciprocal)]"),
):
    register_protocol(ProtocolSpec(
        name=f"nonlinear.{_name}", component="nonlinear", client=f"{_name}_client",
        server=f"{_name}_server", ideal=_ideal, cost=_cost,
        learns="Each party learns nothing: every message is an OT choice correction, an OT-masked "
               "value or a Beaver opening, uniform given its view.", reference=_ref,
        example=_fn_example(_name),
    ))


# -- LayerNorm -------------------------------------------------------------------------------------
RSQRT_TABLE = "ours-minilm-global"  #: (legacy) quadratic of 1/sqrt(x) on [1/4, 1): no longer used
RSQRT_ITERS = 0  #: Newton steps: none (the thermometer's piecewise-linear fit is the approximation)
LN_K = 30  #: 1/n as round(2^K / n) (the model's mean pooling; LayerNorm needs no mean)
LN_MAX_FEATURES = 1024  #: |z-score| <= sqrt(n - 1) < 32 needs n <= 1024 (LN_FD)
LN_FV = 6  #: fraction bits of x - mean when squared (|x - mean| < 512)
LN_FD = 12  #: fraction bits of x - mean in the final product (|z-score| < 32, true for n <= 1024)
LN_PMIN, LN_PMAX = -6, 14  #: (legacy) the documented input range of rsqrt: v in [2^-13, 4^14)
RSQ_K = 8  #: segments per octave of V (ratio 2^(1/8)): relative fit error <= 3.6e-4
RSQ_VBITS = 41  #: V < 2^41
RSQ_CMP_BITS = 43  #: thermometer comparisons of V - T in Z_2^43 (|V - T| < 2^42)
RSQ_RADIX = 3  #: millionaire radix of the thermometer (14 leaves of 3 bits: 4 AND levels)
RSQ_TIER_J, RSQ_TIER_SH = 30, 10  #: octaves j >= 30 use floor(V / 2^10) in the linear term
RSQ_TR = 36  #: fraction bits of the per-segment constants (R = A + B v' at scale 2^(f + TR))
RSQ_TR_RADIX = 6  #: millionaire radix of the final per-row truncation (6 leaves: 3 levels)
LN_DC_RADIX = 3  #: millionaire radix of LayerNorm's two down-cast carries (fewer bytes, same levels)


def _ln_consts(params, n: int, eps: float):
    """The eps term E = max(1, round(eps C)), C = n c_n^2 2^(2 FV) (V = sum dv^2 + E =
    C (var + eps)); c_n = n / 2^k in (1/2, 1] with k = ceil(log2 n) (``ln_shifts``: u / 2^k =
    c_n (x - mean) for u = n x - sum x, exact, no truncation)."""
    if not 1 <= n <= LN_MAX_FEATURES:  # |z-score| <= sqrt(n - 1) < 32 needs n <= 1024 (LN_FD)
        raise ParameterError(f"LayerNorm over {n} features: supported up to {LN_MAX_FEATURES}")
    k = (n - 1).bit_length()
    C = float(n) * (n / float(1 << k)) ** 2 * 2.0 ** (2 * LN_FV)
    return max(1, int(math.floor(eps * C + 0.5)))


def ln_shifts(params, n: int, in_frac: int | None = None) -> tuple:
    """The truncations of u = n x - sum x (scale 2^in_frac) into dv (2^FV) and dd (2^FD)."""
    in_frac = params.linear.frac if in_frac is None else int(in_frac)
    if not params.linear.frac <= in_frac <= 2 * params.linear.frac:
        raise ShapeError(f"LayerNorm input scale 2^{in_frac} outside [2^F, 2^2F]")
    k = (n - 1).bit_length()
    return in_frac - LN_FV + k, in_frac - LN_FD + k


def _iroot_ceil(i: int, k: int) -> int:
    """The smallest integer T >= 1 with T^k >= 2^i (exact integer arithmetic)."""
    t = max(1, int(2.0 ** (i / k)))
    while t ** k < (1 << i):
        t += 1
    while t > 1 and (t - 1) ** k >= (1 << i):
        t -= 1
    return t


@lru_cache(maxsize=None)
def rsq_thresholds() -> tuple:
    """The thermometer's thresholds: the distinct ceil(2^(i/K)), 0 < i < VBITS K, increasing.
    Segment s (s = number of thresholds <= V) is [T_(s-1), T_s) with T_(-1) = 1 (or 0)."""
    out = []
    for i in range(1, RSQ_VBITS * RSQ_K):
        t = _iroot_ceil(i, RSQ_K)
        if not out or t > out[-1]:
            out.append(t)
    return tuple(out)


def _bisect_tangent(G: float, b: float, lo: float, hi: float) -> float:
    """c in [lo, hi] with g'(c) = b for g(V) = G / sqrt(V) (bisection: IEEE +,*,/,sqrt only)."""
    for _ in range(200):
        c = (lo + hi) / 2
        if -G / (2 * c * math.sqrt(c)) < b:  # g' increases with c
            lo = c
        else:
            hi = c
    return (lo + hi) / 2


@lru_cache(maxsize=None)
def rsq_segments(G: float, f: int) -> tuple:
    """Per segment s: (A_s, B_s, sh_s) with R = A_s + B_s floor(V / 2^sh_s) ~ 2^(f+TR) G/sqrt(V)
    (+ 2^(TR-1), so that the final floor by 2^TR rounds to nearest):
    the minimax line of the convex G/sqrt(V) on [lo, hi] (the secant moved by half the tangent
    gap), sh = 10 for octaves j >= 30 (so B's rounding moves R by < 2^(TR-6)). Deterministic:
    IEEE arithmetic and sqrt only, then rounding to integers."""
    T = rsq_thresholds()
    bounds = [1] + list(T) + [1 << RSQ_VBITS]
    g = lambda v: G / math.sqrt(v)  # noqa: E731
    sc = 2.0 ** (f + RSQ_TR)
    out = []
    for s in range(len(T) + 1):
        lo, hi = float(bounds[s]), float(bounds[s + 1])
        sh = RSQ_TIER_SH if bounds[s] >= (1 << RSQ_TIER_J) else 0
        if hi - lo <= 1:
            a, b = g(lo), 0.0
        else:
            b = (g(hi) - g(lo)) / (hi - lo)
            c = _bisect_tangent(G, b, lo, hi)
            gap = g(c) - (g(lo) + b * (c - lo))
            a = g(lo) - b * lo + gap / 2
        A = int(math.floor(a * sc + 0.5)) + (1 << (RSQ_TR - 1))  # + 1/2: the floor rounds
        B = int(math.floor(b * (1 << sh) * sc + 0.5))
        if not 0 < A < (1 << 61) or abs(B) * (bounds[s + 1] >> sh) >= (1 << 61):
            raise ParameterError("rsqrt constants out of range")
        out.append((A, B, sh))
    return tuple(out)


def _rsq_core(V: np.ndarray, G: float, f: int) -> np.ndarray:
    """r = floor((A_s + B_s floor(V / 2^sh_s)) / 2^TR) for V's segment s (int64, scale 2^f)."""
    V = np.asarray(V, dtype=np.int64)
    seg = np.searchsorted(np.array(rsq_thresholds(), dtype=np.int64), V, side="right")
    c = np.array(rsq_segments(G, f), dtype=np.int64)
    R = c[seg, 0] + c[seg, 1] * (V >> c[seg, 2])
    return R >> np.int64(RSQ_TR)


def rsqrt_entry(params) -> dict:
    """(legacy) The rsqrt table entry evaluated in the linear ring; no longer used by rsqrt."""
    e = dict(entry_for(RSQRT_TABLE, "rsqrt", params))
    e["ring_bits"] = params.linear.bits
    return e


def ideal_rsqrt(v: np.ndarray, params) -> np.ndarray:
    """1/sqrt(v) for v in [2^-f, 4^14) at scale 2^f (f = nonlinear.frac) in the linear ring, by
    a thermometer and a piecewise-linear fit (no normalising product, no Newton step):
    V = v (an integer in [1, 2^41)); s = #{T in ``rsq_thresholds()``: T <= V} (the thresholds
    ceil(2^(i/8)): 8 segments per octave); r = floor((A_s + B_s floor(V / 2^sh_s)) / 2^36) with
    the constants of ``rsq_segments(2^(f/2), f)`` (the minimax line of 2^(f/2) / sqrt(V) on the
    segment, at scale 2^(f+36)). Error against 1/sqrt(v): <= 3.6e-4 relative (the fit) + 2^-f
    (the floor); it was ~2.4e-4 + 2^-f with the quadratic and 2 Newton steps (41 RT; now 9 RT)."""
    f = params.nonlinear.frac
    return _rsq_core(np.asarray(v, dtype=np.int64), math.sqrt(2.0) ** f, f)


def ideal_layernorm(X, params, eps: float = 1e-12, beta=None, gamma=None, in_frac: int | None = None) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) (+ beta, the server's) over the last axis, exact semantics
    (n features, input scale 2^in_frac with F <= in_frac <= 2F (default F = linear.frac; 2F
    right after a linear layer: its truncation is fused in), f = nonlinear.frac), in the linear
    ring at scale 2^F: u = n x - sum x (exact: n (x - mean), no division); k = ceil(log2 n);
    dv = floor(u / 2^(in_frac-FV+k)) in Z_2^l (c_n (x - mean) at 2^FV, c_n = n / 2^k);
    SS = sum dv^2 (squares in Z_2^l, extended, summed); V = SS + E, E = max(1, round(eps C)),
    C = n c_n^2 2^(2FV) (so V = C (var + eps): no truncation for the mean or the variance);
    r = ``_rsq_core(V, G, f)`` with G = sqrt(n) 2^FV, i.e. r ~ 2^f / (c_n sqrt(var + eps))
    (the thermometer's piecewise-linear fit, rounded); dd = floor(u / 2^(in_frac-FD+k)) in
    Z_2^l; out = floor(lift_l(dd r) / 2^(FD+f-F)) (c_n cancels).
    Error against float64: r within 3.6e-4 relative of 1/(c_n sqrt(var + eps)) plus 2^-(f+1),
    dd within 2^-FD: |out - z| <~ 3.6e-4 |z| + 2^-(f+1) |d| + 2^-FD r + 2^-F.
    With the server's gamma: out = floor(out * g / 2^F), g = floor(gamma 2^F + 1/2)
    (a one-sided product in the linear ring; where the output only feeds a linear layer, fold
    gamma into it instead: W' = diag(gamma) W, exact over the reals). beta: + floor(beta 2^F + 1/2)."""
    L, F = params.linear.bits, params.linear.frac
    l, f = params.nonlinear.bits, params.nonlinear.frac
    X = np.asarray(X, dtype=np.uint64)
    shp = X.shape
    n = shp[-1]
    E = _ln_consts(params, n, eps)
    kv, kd = ln_shifts(params, n, in_frac)
    x = X.reshape(-1, n)
    u = (x * np.uint64(n) - x.sum(axis=1, dtype=np.uint64)[:, None]).view(np.int64)  # mod 2^64
    dv = _lift(_floor_div(u, L, kv), l)
    q = _lift(dv * dv, l)
    V = q.sum(axis=1, dtype=np.int64) + E
    r = _rsq_core(V, math.sqrt(n) * 2.0 ** LN_FV, f)
    dd = _lift(_floor_div(u, L, kd), l)
    out = _floor_div(_lift(dd * _lift(r, l)[:, None], l), l, LN_FD + f - F)
    if gamma is not None:
        out = _floor_div(out * encode_gamma(gamma, n, params)[None, :], L, F)
    if beta is not None:
        out = out + _beta(beta, n, F)
    return _to_ring(out, L).reshape(shp)


LN_GAMMA_BITS = 5  #: a LayerNorm weight applied by protocol satisfies |gamma| < 2^5 (public bound)
#: |LayerNorm output| < 2^6 before gamma: the variance comes from dv = floor(64 d), and
#: |dv_i| >= 64 |d_i| - 1 gives sum dv^2 + E >= (64 max|d|)^2 / 2, so |d_i| / sigma <= sqrt(2 n) < 46
#: for n <= 1024 (the exact value is at most sqrt(n - 1)); rsqrt's error (3.6e-4) and floors are far inside.
LN_OUT_BITS = 6


def gamma_digits(params) -> int:
    """Two's complement digits of an encoded gamma g = floor(gamma 2^F + 1/2): |g| < 2^(digits-1)."""
    return params.linear.frac + LN_GAMMA_BITS + 1


def gamma_ring_bits(params) -> int:
    """The ring of the gamma product: |out * g| < 2^(F + LN_OUT_BITS + digits - 1) <= 2^(bits - 2),
    so the product is exact there and its truncation by F fuses with the up-cast (known MSB)."""
    return min(params.linear.bits, 2 * params.linear.frac + LN_OUT_BITS + LN_GAMMA_BITS + 2)


def encode_gamma(gamma, n: int, params) -> np.ndarray:
    """g = floor(gamma 2^F + 1/2) (int64), refused outside |g| < 2^(digits - 1), i.e. |gamma| < 32."""
    g = _beta(gamma, n, params.linear.frac)
    lim = 1 << (gamma_digits(params) - 1)
    if g.size and (g.max() >= lim or g.min() <= -lim):
        raise ShapeError(f"unsupported LayerNorm weight: |gamma| = {float(np.max(np.abs(gamma))):g}; the protocol "
                         f"applies |gamma| < {1 << LN_GAMMA_BITS} (fold it into a linear layer, or rescale the model)")
    return g


def _beta(beta, n: int, F: int) -> np.ndarray:
    b = np.floor(np.asarray(beta, dtype=np.float64).reshape(-1) * (1 << F) + 0.5).astype(np.int64)
    if b.size != n:
        raise ShapeError(f"beta must have {n} entries")
    return b


def _f_rsqrt(n: int, params) -> Flow:
    """rsqrt's flow on n values: ONE millionaire batch (the thermometer's comparisons in
    Z_2^43, radix 3, and the carry of V's known-MSB truncation by 10), the truncation's ACOTs,
    one mux batch (a segment's one-hot bit selects A_s + B_s v'), one exact truncation by 36."""
    L = params.linear.bits
    nT = len(rsq_thresholds())
    fl = _f_millionaire([(n * nT, RSQ_CMP_BITS - 1), (n, RSQ_TIER_SH)], RSQ_RADIX)
    fl = fl + _f_acot([], [(n, RSQ_TIER_SH), (n, L)])
    fl = fl + _f_mux(n * (nT + 1), L)
    return fl + _f_trunc(n, L, RSQ_TR, "msb", RSQ_TR, L, RSQ_TR_RADIX)


def gamma_flow(params, N: int) -> Flow:
    """The server's gamma on N shared values: a one-sided product in Z_2^k (the client sends its
    share at width k - i for digit i of g), then the truncation by F fused with the up-cast."""
    L, F = params.linear.bits, params.linear.frac
    k, D = gamma_ring_bits(params), gamma_digits(params)
    fl = _f_acot([(N, k - i) for i in range(D)], [])
    return fl + (_f_trunc(N, k, F, "msb", L - k + F, L, 4) if k < L else _f_trunc(N, L, F, "msb", F, L, 4))


def ln_prefix(k0: int, k: int) -> bool:
    """Whether ``downcast_pair`` derives the carry of the k low bits from that of the k0 < k low
    bits (two comparisons of k - k0 bits and one AND) instead of a millionaire on k bits."""
    return k0 < k and 2 * (k - k0) < k


def ln_downcast_flow(N: int, shifts, l: int, L: int) -> Flow:
    """The two down-casts of u: ONE millionaire batch for the carries (radix LN_DC_RADIX; the
    larger shift's carry from the smaller one's, ``ln_prefix``: two comparisons of their
    difference, then one AND batch) and ONE ACOT batch for their B2A and, where the wrap does not
    vanish mod 2^l (L - k < l), for the known-MSB wrap at l - (L - k) bits."""
    k0 = min(shifts)
    pre = [k for k in shifts if ln_prefix(k0, k)]
    groups = [(N, k) for k in shifts if k not in pre] + [(N, k - k0) for k in pre for _ in range(2)]
    fl = _f_millionaire(groups, LN_DC_RADIX)
    if pre:
        fl = fl + _f_and(N * len(pre))
    wraps = [(N, l - (L - k)) for k in shifts if L - k < l]
    return fl + _f_acot([], [(N, l) for _ in shifts] + wraps)


def layernorm_cost(params, shape, eps: float = 1e-12, gamma: bool = False, in_frac: int | None = None) -> Cost:
    """LayerNorm: per element two exact down-casts of u = n x - sum x (one millionaire batch,
    one ACOT batch), one square, one up-cast, one product by the per-row rsqrt (vector ACOTs)
    and a fused truncation + up-cast; per row one rsqrt. No truncation for the mean."""
    L, F = params.linear.bits, params.linear.frac
    l, f = params.nonlinear.bits, params.nonlinear.frac
    shape = tuple(shape)
    N, n = _n(shape), shape[-1]
    rows = N // n
    fl = ln_downcast_flow(N, ln_shifts(params, n, in_frac), l, L)
    fl = fl + _f_acot(_gilboa(N, l, 1), []) + _f_trunc(N, l, 0, "msb", L - l, L, 4)
    fl = fl + _f_rsqrt(rows, params)
    fl = fl + _f_mul_rows(rows, n, l)
    sh = LN_FD + f - F
    fl = fl + _f_trunc(N, l, sh, "msb", L - l + sh, L, 4)
    if gamma:
        fl = fl + gamma_flow(params, N)
    return fl.cost()


register_protocol(ProtocolSpec(
    name="nonlinear.layernorm", component="nonlinear", client="layernorm_client", server="layernorm_server",
    ideal=ideal_layernorm, cost=layernorm_cost,
    learns="Each party learns nothing: OT choice corrections, OT-masked values, Beaver openings.",
    reference="[SIRNN, §4.3 (rsqrt by a thermometer); CrypTFlow2; NIMBUS24, §5 (LayerNorm as in prior work)]",
    example=_fn_example("layernorm"),
))


# -- reciprocal and rsqrt as protocols of their own ------------------------------------------------
def ideal_reciprocal_ring(s, params, J: int, trunc: str = "exact") -> np.ndarray:
    """``ideal_reciprocal`` on ring elements of the non-linear ring (scale 2^f): 1/s for
    2^-1 <= s < 2^J. Error against 1/s: the segment's line (<= RC_FIT_ULP) and the rounding:
    <= RC_ERR_ULP ulp (1.6e-4) on the whole domain, checked for every s (relatively larger only
    where 1/s is itself a few ulp, s near 2^J)."""
    rent = entry_for(RECIP_TABLE, "reciprocal", params)
    l = params.nonlinear.bits
    x = _lift(np.asarray(s, dtype=np.uint64).astype(np.int64), l)
    return _to_ring(ideal_reciprocal(x, rent, J), l)


def reciprocal_cost(params, shape, J: int, trunc: str = "exact") -> Cost:
    """Reciprocal: one thermometer millionaire batch (``recip_thresholds``: 123 comparisons per
    value for J = 8), the up-cast of s (one ACOT), one mux batch (the segment's line), one
    known-MSB truncation: 14 flights (was 64 with normalisation and 2 Newton steps)."""
    rent = entry_for(RECIP_TABLE, "reciprocal", params)
    return _f_reciprocal(_n(tuple(shape)), rent, J, "msb1" if is_faithful(trunc) else "msb").cost()


def ideal_rsqrt_ring(v, params) -> np.ndarray:
    """``ideal_rsqrt`` on ring elements of the linear ring (scale 2^f, f = nonlinear.frac):
    1/sqrt(v) for 2^-f <= v < 4^14; relative error <= 3.6e-4 plus the floor's 2^-f (the
    thermometer's piecewise-linear fit, 8 segments per octave)."""
    L = params.linear.bits
    return _to_ring(ideal_rsqrt(np.asarray(v, dtype=np.uint64).view(np.int64), params), L)


def rsqrt_cost(params, shape) -> Cost:
    """rsqrt: one millionaire batch (thermometer + a truncation's carry), its ACOTs, one mux
    batch, one exact truncation (18 flights, 9 RT; was 82 flights)."""
    return _f_rsqrt(_n(tuple(shape)), params).cost()


def _recip_example(name: str):
    def example(params):
        if name == "reciprocal":
            entry_for(RECIP_TABLE, "reciprocal", params)
            l, f = params.nonlinear.bits, params.nonlinear.frac
            s = np.arange(1 << (f - 1), 1 << (f + 7), 1 << (f - 3), dtype=np.uint64)[:64]
            sc = PRG.for_tests("nonlinear-example/reciprocal").uniform("s_c", s.shape, l)
            oc, osv = IdealCotSession.pair(b"example/recip")
            return (oc, sc, 8), (osv, (s - sc) & ring_mask(l), 8), {}, (s.shape, 8)
        if params.nonlinear.frac + 2 * LN_PMIN < 0:
            raise ParameterError(f"rsqrt needs a bert-base-like parameter set, not {params.name}")
        f = params.nonlinear.frac
        v = (np.arange(64, dtype=np.uint64) + np.uint64(1)) << np.uint64(f - 2)
        vc = PRG.for_tests("nonlinear-example/rsqrt").uniform("v_c", v.shape, 64)
        oc, osv = IdealCotSession.pair(b"example/rsqrt")
        return (oc, vc), (osv, v - vc), {}, (v.shape,)
    return example


register_protocol(ProtocolSpec(
    name="nonlinear.reciprocal", component="nonlinear", client="reciprocal_client", server="reciprocal_server",
    ideal=ideal_reciprocal_ring, cost=reciprocal_cost,
    learns="Each party learns nothing: OT choice corrections, OT-masked values, Beaver openings.",
    reference="[SIRNN, §4.2-4.3 (thermometer of comparisons); CrypTFlow2]", example=_recip_example("reciprocal"),
))
register_protocol(ProtocolSpec(
    name="nonlinear.rsqrt", component="nonlinear", client="rsqrt_client", server="rsqrt_server",
    ideal=ideal_rsqrt_ring, cost=rsqrt_cost,
    learns="Each party learns nothing: OT choice corrections, OT-masked values, Beaver openings.",
    reference="[SIRNN, §4.3 (normalisation by 4^p + Newton)]", example=_recip_example("rsqrt"),
))
