"""Weighted least-squares fitting with a search over breakpoints and degrees.

Objective (the paper's): minimise  sum_i w_i (f(x_i) - g(x_i))^2  over the piecewise function g,
where (x_i, w_i) is the calibrated density (histogram bin midpoints and atoms, normalised) mixed
with a small uniform floor `floor_eps` on `floor_range`, so inputs rarer than the calibration
text still get a sane approximation. g is  left tail | polynomial of degree d on [a, b) | right
tail, with tails fixed per function (GELU: 0 | p | x; exp: 0 | p on [c, 0]; tanh: -1 | p | 1).

Search: every (a, b, d) on the breakpoint grids is scored in O(1) from prefix sums of weighted
moments (batched normal equations); the best few are re-scored by a direct weighted least-squares
solve. The winner's coefficients are then computed as exact rationals (`fractions.Fraction`,
normal equations over the exact dyadic x_i, the rational weights count/total and the binary values of f(x_i)),
rounded half-to-even to `frac_bits`, and finally nudged by +-1 ulp per coefficient (coordinate
descent) when that lowers the same objective evaluated with the bit-exact fixed-point semantics.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np

from . import fxp
from .functions import TARGETS

__all__ = ["FitSpec", "SPECS", "grid", "weighted_points", "search", "exact_coeffs", "fit_single",
           "quantise", "make_entry", "fit_entry"]


def grid(lo: float, hi: float, step_log2: int = 4) -> np.ndarray:
    """Breakpoint candidates lo, lo + 2^-step_log2, ..., hi (dyadic, exact in fixed point)."""
    n = int(round((hi - lo) * 2**step_log2))
    return lo + np.arange(n + 1) / 2.0**step_log2


@dataclass(frozen=True)
class FitSpec:
    """What to fit: target, tail kinds, degrees, breakpoint grids, density floor, domain."""

    target: str
    left: str | None            # "zero" | "const-1" | None (no left tail)
    right: str | None           # "identity" | "const1" | None
    degrees: tuple[int, ...]
    left_grid: tuple[float, ...]
    right_grid: tuple[float, ...]
    floor_range: tuple[float, float]
    floor_eps: float = 0.01
    domain: tuple[float, float] | None = None   # inputs the caller guarantees (exp: x <= 0)


SPECS: dict[str, FitSpec] = {
    "gelu": FitSpec("gelu", "zero", "identity", (1, 2), tuple(grid(-6, -0.5)), tuple(grid(0, 4)),
                    (-8.0, 8.0)),
    "exp": FitSpec("exp", "zero", None, (1, 2, 3), tuple(grid(-12, -1)), (), (-16.0, 0.0),
                   domain=(-np.inf, 0.0)),
    "tanh": FitSpec("tanh", "const-1", "const1", (1, 2, 3), tuple(grid(-5, -0.5)),
                    tuple(grid(0.5, 5)), (-4.0, 4.0), floor_eps=0.05),
}


def _tail_value(kind: str | None, x: np.ndarray) -> np.ndarray:
    return {"zero": np.zeros_like(x), "identity": x, "const-1": -np.ones_like(x),
            "const1": np.ones_like(x), None: np.full_like(x, np.nan)}[kind]


def weighted_points(x: np.ndarray, counts: np.ndarray, spec: FitSpec, bin_log2: int = 6):
    """Mix the calibrated (x, integer counts) with a uniform floor on spec.floor_range;
    sorted by x. Returns (x, float weights, the same weights as exact Fractions)."""
    lo, hi = spec.floor_range
    xf = lo + (np.arange(int((hi - lo) * 2**bin_log2)) + 0.5) / 2.0**bin_log2
    if spec.domain is not None:
        xf = xf[(xf >= spec.domain[0]) & (xf <= spec.domain[1])]
    eps = Fraction(spec.floor_eps).limit_denominator(1000)
    total = int(sum(int(c) for c in counts))
    wq = [Fraction(int(c), total) * (1 - eps) for c in counts] + [eps / len(xf)] * len(xf)
    xs = np.concatenate([x, xf])
    order = np.argsort(xs, kind="stable")
    return xs[order], np.array([float(wq[i]) for i in order]), [wq[i] for i in order]


def _prefix(x, w, v, p):
    return np.concatenate([[0.0], np.cumsum(w * x**p * v)])


def search(x: np.ndarray, w: np.ndarray, spec: FitSpec, top: int = 8) -> tuple[float, float, int, float]:
    """Best (a, b, degree, objective); b = +inf when the spec has no right tail."""
    f = TARGETS[spec.target].np_f(x)
    dl = np.concatenate([[0.0], np.cumsum(w * (f - _tail_value(spec.left, x)) ** 2)])
    dr = (np.concatenate([[0.0], np.cumsum(w * (f - _tail_value(spec.right, x)) ** 2)])
          if spec.right else None)
    ia = np.searchsorted(x, np.array(spec.left_grid), side="left")
    bs = np.array(spec.right_grid) if spec.right else np.array([np.inf])
    ib = np.searchsorted(x, bs, side="left")
    cands = []
    for d in spec.degrees:
        mom = [_prefix(x, w, 1.0, k) for k in range(2 * d + 1)]
        rhs = [_prefix(x, w, f, k) for k in range(d + 1)]
        ff = _prefix(x, w, f * f, 0)
        A, B = np.meshgrid(ia, ib, indexing="ij")
        G = np.stack([np.stack([mom[j + k][B] - mom[j + k][A] for k in range(d + 1)], -1)
                      for j in range(d + 1)], -2)
        t = np.stack([rhs[k][B] - rhs[k][A] for k in range(d + 1)], -1)
        G = G + np.eye(d + 1) * 1e-18
        sol = np.linalg.solve(G, t[..., None])[..., 0]
        res = ff[B] - ff[A] - (t * sol).sum(-1)
        right = (dr[-1] - dr[B]) if dr is not None else 0.0
        obj = dl[A] + res + right
        obj[A >= B] = np.inf
        for flat in np.argsort(obj, axis=None)[:top]:
            i, j = np.unravel_index(flat, obj.shape)
            cands.append((float(spec.left_grid[i]), float(bs[j]), d))
    scored = [(c[0], c[1], c[2], _direct_objective(x, w, f, spec, *c)) for c in cands]
    return min(scored, key=lambda s: (s[3], s[2], s[0], s[1]))


def _direct_objective(x, w, f, spec, a, b, d) -> float:
    mid = (x >= a) & (x < b)
    coef = np.polynomial.polynomial.polyfit(x[mid], f[mid], d, w=np.sqrt(w[mid]))
    err = np.where(x < a, f - _tail_value(spec.left, x), 0.0)
    err = np.where(mid, f - np.polynomial.polynomial.polyval(x, coef), err)
    if spec.right:
        err = np.where(x >= b, f - _tail_value(spec.right, x), err)
    return float((w * err**2).sum())


def exact_coeffs(x: np.ndarray, wq: Sequence[Fraction], fx: np.ndarray, d: int) -> list[Fraction]:
    """Exact rational WLS solution on the given points (normal equations, Gauss-Jordan)."""
    xq = [Fraction(float(v)) for v in x]
    fq = [Fraction(float(v)) for v in fx]
    mom = [sum(wi * xi**k for wi, xi in zip(wq, xq)) for k in range(2 * d + 1)]
    rhs = [sum(wi * xi**k * fi for wi, xi, fi in zip(wq, xq, fq)) for k in range(d + 1)]
    m = [[mom[j + k] for k in range(d + 1)] + [rhs[j]] for j in range(d + 1)]
    for c in range(d + 1):
        piv = next(r for r in range(c, d + 1) if m[r][c] != 0)
        m[c], m[piv] = m[piv], m[c]
        m[c] = [v / m[c][c] for v in m[c]]
        for r in range(d + 1):
            if r != c and m[r][c] != 0:
                m[r] = [vr - m[r][c] * vc for vr, vc in zip(m[r], m[c])]
    return [m[k][-1] for k in range(d + 1)]


def quantise(c: Fraction, frac_bits: int) -> int:
    """round(c * 2^frac_bits), ties to even (exact)."""
    return round(c * (1 << frac_bits))


def _tail_piece(kind: str, ring_bits: int, frac_bits: int) -> dict:
    if kind in ("zero", "identity"):
        return {"kind": kind}
    return {"kind": "const", "value": (-1 if kind == "const-1" else 1) << frac_bits}


def make_entry(spec: FitSpec, a: float, b: float, coeffs: Sequence[int], ring_bits: int,
               frac_bits: int, exact: Sequence[Fraction] | None = None) -> dict:
    """A table entry (see `fxp`) for left tail | poly on [a, b) | right tail."""
    lo, hi = int(a * 2**frac_bits), (int(b * 2**frac_bits) if np.isfinite(b) else None)
    poly = {"kind": "poly", "coeffs": [int(q) for q in coeffs]}
    if exact is not None:
        poly["coeffs_exact"] = [f"{c.numerator}/{c.denominator}" for c in exact]
    pieces = []
    if spec.left:
        pieces.append({"hi": lo, **_tail_piece(spec.left, ring_bits, frac_bits)})
        poly["lo"] = lo
    if hi is not None:
        poly["hi"] = hi
    pieces.append(poly)
    if spec.right and hi is not None:
        pieces.append({"lo": hi, **_tail_piece(spec.right, ring_bits, frac_bits)})
    return {"function": spec.target, "ring_bits": ring_bits, "frac_bits": frac_bits,
            "pieces": pieces}


def _fxp_objective(entry: dict, x: np.ndarray, w: np.ndarray, f: np.ndarray) -> float:
    fb = entry["frac_bits"]
    y = fxp.from_fxp(fxp.evaluate_fxp_array(entry, fxp.to_fxp(x, entry["ring_bits"], fb)), fb)
    return float((w * (y - f) ** 2).sum())


def _nudge(entry: dict, x, w, f, rounds: int = 2) -> dict:
    """Coordinate descent of the poly coefficients by +-1 ulp on the fixed-point objective."""
    poly = next(p for p in entry["pieces"] if p["kind"] == "poly")
    best = _fxp_objective(entry, x, w, f)
    for _ in range(rounds):
        for k in range(len(poly["coeffs"])):
            for step in (1, -1):
                poly["coeffs"][k] += step
                val = _fxp_objective(entry, x, w, f)
                if val < best:
                    best = val
                else:
                    poly["coeffs"][k] -= step
    return entry


def fit_entry(hist_points: tuple[np.ndarray, np.ndarray], spec: FitSpec, ring_bits: int = 32,
              frac_bits: int = 13) -> tuple[dict, dict]:
    """Search, solve exactly, quantise, nudge. Returns (entry, fit report)."""
    x, w, wq = weighted_points(*hist_points, spec)
    a, b, d, obj = search(x, w, spec)
    f = TARGETS[spec.target].np_f(x)
    mid = (x >= a) & (x < b)
    exact = exact_coeffs(x[mid], [q for q, m in zip(wq, mid) if m], f[mid], d)
    entry = make_entry(spec, a, b, [quantise(c, frac_bits) for c in exact], ring_bits, frac_bits, exact)
    entry = _nudge(entry, x, w, f)
    report = {"breakpoints": [a] + ([b] if np.isfinite(b) else []), "degree": d,
              "objective_float": obj, "objective_fxp": _fxp_objective(entry, x, w, f)}
    return entry, report


def fit_single(target: str, domain: tuple[float, float], degree: int, ring_bits: int = 32,
               frac_bits: int = 13) -> tuple[dict, dict]:
    """One polynomial on `domain` under a uniform density (initial approximations, e.g. of
    1/x or 1/sqrt(x) after the caller normalised the input into `domain`)."""
    lo, hi = domain
    n = int((hi - lo) * 2**8)
    x = lo + (np.arange(n) + 0.5) / 2.0**8
    wq = [Fraction(1, n)] * n
    w = np.full(n, 1.0 / n)
    f = TARGETS[target].np_f(x)
    exact = exact_coeffs(x, wq, f, degree)
    entry = {"function": target, "ring_bits": ring_bits, "frac_bits": frac_bits,
             "pieces": [{"kind": "poly", "coeffs": [quantise(c, frac_bits) for c in exact],
                         "coeffs_exact": [f"{c.numerator}/{c.denominator}" for c in exact]}]}
    entry = _nudge(entry, x, w, f)
    return entry, {"domain": list(domain), "degree": degree, "objective_fxp": _fxp_objective(entry, x, w, f)}
