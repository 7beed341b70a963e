"""Rigorous error certificates for table entries (sympy / mpmath; no interval erf needed).

For each piece with fixed-point input domain [x0, x1] (the reals lo/2^f .. (hi-1)/2^f, clipped
to the caller's domain) we bound  max |p_fxp(x) - f(x)|  over every fixed-point x in it:

  |p_fxp(x) - f(x)| <= sup_[x0,x1] |p_q - f|  +  R

- p_q is the polynomial with the *quantised* coefficients, in exact real arithmetic. Its
  continuous error e = p_q - f is sampled at step h with mpmath (50 digits); between samples
  |e| <= max(|e(x_i)|, |e(x_i+1)|) + h^2/8 sup|e''| (the linear-interpolation remainder), and
  sup|e''| <= max_i |e''(x_i)| + h/2 (sup|p'''| + sup|f'''|), with sup|f'''| from
  `Target.d3_bound` (exact critical points via sympy for GELU).
- R is the fixed-point rounding of the Horner evaluation: each of the d truncations loses
  delta in [0, 2^-f), and the loss at step k is multiplied by x^k afterwards, so
  R = 2^-f * sum_{k<d} X^k with X = max(|x0|, |x1|).
- Tails (zero / identity / const pieces) are exact in fixed point; the function-specific
  monotonicity argument (`Target.tail_sup`) bounds them beyond `tail_from`, and any stretch
  between the breakpoint and `tail_from` is sampled as above.
- Overflow: the certificate checks that every Horner product stays inside the signed ring
  for inputs in the piece (`overflow_margin_bits` > 0), so the modular semantics equals the
  real one there.
"""

from __future__ import annotations

from fractions import Fraction

import mpmath as mp
import numpy as np

from . import fxp
from .functions import TARGETS, Target

__all__ = ["DPS", "STEP_LOG2", "round_up", "certify_exhaustive", "observed_max", "piece_domain", "sampled_sup", "rounding_bound",
           "overflow_margin_bits", "certify_piece", "certify_entry", "weighted_error"]

DPS = 50
STEP_LOG2 = 7       # sampling step h = 2^-7


def round_up(v: float, digits: int = 4) -> float:
    """v rounded *up* to `digits` significant decimal digits (stable across platforms)."""
    if v == 0 or not np.isfinite(v):
        return v
    e = int(np.floor(np.log10(abs(v)))) - digits + 1
    return float(Fraction(int(np.ceil(v / 10.0**e * (1 + 1e-15))), 1) * Fraction(10) ** e)


def piece_domain(piece: dict, frac_bits: int, domain=(-np.inf, np.inf)) -> tuple[float, float]:
    """Real interval spanned by the piece's fixed-point inputs, clipped to the caller's domain."""
    lo, hi = piece.get("lo"), piece.get("hi")
    x0 = -np.inf if lo is None else lo / 2**frac_bits
    x1 = np.inf if hi is None else (hi - 1) / 2**frac_bits
    return max(x0, domain[0]), min(x1, domain[1])


def _poly_mp(coeffs, frac_bits):
    c = [mp.mpf(q) / mp.mpf(2) ** frac_bits for q in coeffs]
    return c, (lambda x: mp.polyval(c[::-1], x)), (
        lambda x: sum(k * (k - 1) * c[k] * x ** (k - 2) for k in range(2, len(c))))


def _tail_fn(piece: dict, frac_bits: int):
    kind = piece["kind"]
    if kind == "zero":
        return [mp.mpf(0)], (lambda x: mp.mpf(0)), (lambda x: mp.mpf(0))
    if kind == "identity":
        return [mp.mpf(0), mp.mpf(1)], (lambda x: x), (lambda x: mp.mpf(0))
    v = mp.mpf(piece["value"]) / mp.mpf(2) ** frac_bits
    return [v], (lambda x: v), (lambda x: mp.mpf(0))


def _p3_bound(c, X: float) -> float:
    return float(sum(abs(c[k]) * k * (k - 1) * (k - 2) * mp.mpf(X) ** (k - 3) for k in range(3, len(c))))


def sampled_sup(target: Target, g, g2, c, x0: float, x1: float) -> tuple[float, dict]:
    """Rigorous sup over [x0, x1] of |g - f| by sampling plus the interpolation remainder."""
    with mp.workdps(DPS):
        n = max(2, int(np.ceil((x1 - x0) * 2**STEP_LOG2)) + 1)
        xs = [mp.mpf(x0) + (mp.mpf(x1) - mp.mpf(x0)) * i / (n - 1) for i in range(n)]
        h = (x1 - x0) / (n - 1)
        e = [abs(g(x) - target.mp_f(x)) for x in xs]
        e2 = max(abs(g2(x) - target.mp_d2(x)) for x in xs)
        d3 = _p3_bound(c, max(abs(x0), abs(x1))) + target.d3_bound(x0, x1)
        m2 = float(e2) + h / 2 * d3
        worst = max(max(e[i], e[i + 1]) for i in range(n - 1))
        bound = float(worst) + h * h / 8 * m2
    return bound * (1 + 1e-12) + 1e-30, {"samples": n, "h": h, "sup_e2": m2, "sampled_max": float(worst)}


def rounding_bound(piece: dict, frac_bits: int, X: float) -> float:
    """2^-f * sum_{k<d} X^k for a Horner poly (d truncations), 0 for exact pieces."""
    if piece["kind"] != "poly":
        return 0.0
    d = len(piece["coeffs"]) - 1
    return float(sum(Fraction(X) ** k for k in range(d)) / 2**frac_bits)


def overflow_margin_bits(piece: dict, ring_bits: int, frac_bits: int, X: float) -> float:
    """log2(2^(l-1) / max |acc * x| at scale 2^2f) over Horner steps; > 0 means no wrap."""
    if piece["kind"] != "poly":
        return float("inf")
    c = [abs(Fraction(q, 2**frac_bits)) for q in piece["coeffs"]]
    worst, acc = Fraction(0), c[-1]
    for k in range(len(c) - 2, -1, -1):
        worst = max(worst, acc * Fraction(X))
        acc = acc * Fraction(X) + c[k] + Fraction(1, 2**frac_bits)
    if worst == 0:
        return float("inf")
    return float(np.log2(2.0 ** (ring_bits - 1 - 2 * frac_bits) / float(worst)))


def _tail_bound(target: Target, piece, fb, side: str, x0: float, x1: float):
    """Sampled stretch up to tail_from, then the monotone tail bound."""
    c, g, g2 = _tail_fn(piece, fb)
    t = target.tail_from[0] if side == "left" else target.tail_from[1]
    edge = x1 if side == "left" else x0
    if (side == "left" and edge <= t) or (side == "right" and edge >= t):
        return target.tail_sup(side, edge), {"tail_at": edge}
    seg = (t, edge) if side == "left" else (edge, t)
    b, info = sampled_sup(target, g, g2, c, *seg)
    return max(b, target.tail_sup(side, t)), {"tail_at": t, **info}


def certify_piece(entry: dict, piece: dict, target: Target, domain=(-np.inf, np.inf)) -> dict:
    """Certificate of one piece (see module doc)."""
    l, fb = entry["ring_bits"], entry["frac_bits"]
    x0, x1 = piece_domain(piece, fb, domain)
    ends = [None if np.isinf(v) else int(round(v * 2**fb)) for v in (x0, x1)]
    out = {"kind": piece["kind"], "domain": [x0, x1], "inputs": ends}  # inputs: inclusive, at 2^f
    if piece["kind"] not in ("poly", "zero", "identity", "const"):
        return {**out, **certify_exhaustive(entry, piece, target, x0, x1)}
    if np.isinf(x0) or np.isinf(x1):
        side = "left" if np.isinf(x0) else "right"
        b, info = _tail_bound(target, piece, fb, side, x0, x1)
        return {**out, "bound": b, "bound_approx": b, "bound_rounding": 0.0, **info}
    X = max(abs(x0), abs(x1))
    c, g, g2 = _poly_mp(piece["coeffs"], fb) if piece["kind"] == "poly" else _tail_fn(piece, fb)
    b, info = sampled_sup(target, g, g2, c, x0, x1)
    r = rounding_bound(piece, fb, X)
    return {**out, "bound": b + r, "bound_approx": b, "bound_rounding": r,
            "overflow_margin_bits": overflow_margin_bits(piece, l, fb, X), **info}


def weighted_error(entry: dict, x: np.ndarray, w: np.ndarray) -> dict:
    """Distribution-weighted RMS and mean |error| of the fixed-point evaluation."""
    fb = entry["frac_bits"]
    y = fxp.from_fxp(fxp.evaluate_fxp_array(entry, fxp.to_fxp(x, entry["ring_bits"], fb)), fb)
    err = np.abs(y - TARGETS[entry["function"]].np_f(x))
    return {"rms": float(np.sqrt((w * err**2).sum() / w.sum())), "mean_abs": float((w * err).sum() / w.sum())}


def _jumps(entry: dict) -> list[float]:
    """|left value - right value| at each breakpoint, in fixed point."""
    fb = entry["frac_bits"]
    out = []
    for p, q in zip(entry["pieces"], entry["pieces"][1:]):
        b = q["lo"]
        left = fxp.evaluate_fxp({**entry, "pieces": [{**p, "lo": None, "hi": None}]}, b)
        out.append(abs(left - fxp.evaluate_fxp(entry, b)) / 2**fb)
    return out


def certify_entry(entry: dict, domain=None, points=None) -> dict:
    """Certificate of a whole entry: per-piece bounds, overall max, jumps, weighted error."""
    target = TARGETS[entry["function"]]
    domain = tuple(domain) if domain is not None else (-np.inf, np.inf)
    pieces = []
    for p in entry["pieces"]:
        x0, x1 = piece_domain(p, entry["frac_bits"], domain)
        if x0 <= x1:
            pieces.append(certify_piece(entry, p, target, domain))
    for p in pieces:
        for k in ("bound", "bound_approx", "bound_rounding"):
            p[k] = round_up(p[k])
    cert = {"pieces": pieces, "bound": max(p["bound"] for p in pieces), "jumps": _jumps(entry)}
    if points is not None:
        cert["weighted"] = weighted_error(entry, *points)
    return cert


def certify_exhaustive(entry: dict, piece: dict, target: Target, x0: float, x1: float) -> dict:
    """For pieces without an analytic certificate (pow2chain): evaluate every fixed-point input
    of the (finite) domain; f in float64 (relative error 1e-16, covered by a 1e-12 slack)."""
    fb = entry["frac_bits"]
    xs = np.arange(int(np.ceil(x0 * 2**fb)), int(np.floor(x1 * 2**fb)) + 1, dtype=np.int64)
    y = fxp.evaluate_fxp_array(entry, xs) / 2.0**fb
    worst = float(np.abs(y - target.np_f(xs / 2.0**fb)).max()) + 1e-12
    return {"bound": worst, "bound_approx": worst, "bound_rounding": 0.0, "method": "exhaustive",
            "samples": int(xs.size)}


def observed_max(entry: dict, piece_cert: dict, n: int = 10**6, seed: int = 0,
                 tail_window: int = 8) -> float:
    """Max |p_fxp(x) - f(x)| over n random fixed-point inputs of a certified piece plus both
    ends (tails: within `tail_window` of the breakpoint, where their error is largest)."""
    f = entry["frac_bits"]
    lo, hi = piece_cert["inputs"]
    lo = hi - (tail_window << f) if lo is None else lo
    hi = lo + (tail_window << f) if hi is None else hi
    rng = np.random.default_rng(seed)
    x = np.concatenate([[lo, hi], rng.integers(lo, hi + 1, n)]).astype(np.int64)
    y = fxp.evaluate_fxp_array(entry, x) / 2.0**f
    return float(np.abs(y - TARGETS[entry["function"]].np_f(x / 2.0**f)).max())
