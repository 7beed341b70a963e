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

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np

from . import fxp
from .functions import TARGETS

__all__ = ["FitSpec", "ChainSpec", "SPECS", "PRECISE_SPECS", "grid", "weighted_points", "search",
           "exact_coeffs", "fit_single", "quantise", "make_entry", "fit_entry", "search_chain",
           "horner_margin_bits", "make_chain_entry", "fit_chain_entry"]


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


@dataclass(frozen=True)
class ChainSpec:
    """Several consecutive polynomial pieces: left tail | p_1 | ... | p_k | right tail, with
    fixed degrees `degrees[t]` for p_t. Every breakpoint lies on `breaks` (the first one also
    in `left_grid` of `base`, the last one in its `right_grid`; exp: the last piece runs to 0).
    Candidate pieces whose Horner products could leave Z_2^l (conservative bound
    `horner_margin_bits`, real coefficients) by less than `min_margin_bits` are excluded."""

    base: FitSpec
    degrees: tuple[int, ...]
    breaks: tuple[float, ...]
    min_margin_bits: float = 0.5

    @property
    def target(self) -> str:
        return self.base.target

    @property
    def domain(self):
        return self.base.domain


SPECS: dict[str, FitSpec] = {  # the degree-2 / degree-3 tables (ours-minilm-global, -layers)
    "gelu": FitSpec("gelu", "zero", "identity", (1, 2), tuple(grid(-6, -0.5)), tuple(grid(0, 4)),
                    (-8.0, 8.0)),
    "exp": FitSpec("exp", "zero", None, (1, 2, 3), tuple(grid(-12, -1)), (), (-16.0, 0.0),
                   domain=(-np.inf, 0.0)),
    "tanh": FitSpec("tanh", "const-1", "const1", (1, 2, 3), tuple(grid(-5, -0.5)),
                    tuple(grid(0.5, 5)), (-4.0, 4.0), floor_eps=0.05),
}

#: The precise tables (ours-minilm-precise): one degree-6 GELU piece on a wider interval, and
#: exp as two pieces (degree 2, then degree 4 up to 0) with the zero tail pushed out to about -6.
#: (Degree-5 GELU fits as well under the density but leaves a 0.14 jump at its right end.)
PRECISE_SPECS: dict[str, ChainSpec] = {
    "gelu": ChainSpec(FitSpec("gelu", "zero", "identity", (6,), tuple(grid(-6, -0.5)),
                              tuple(grid(0, 5)), (-8.0, 8.0)), (6,), tuple(grid(-6, 5))),
    "exp": ChainSpec(FitSpec("exp", "zero", None, (2, 4), tuple(grid(-12, -1)), (), (-16.0, 0.0),
                             domain=(-np.inf, 0.0)), (2, 4), tuple(grid(-12, 0))),
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
    """Coordinate descent of the poly coefficients by +-1 ulp on the fixed-point objective
    (every poly piece, in order)."""
    best = _fxp_objective(entry, x, w, f)
    for _ in range(rounds):
        for poly in (p for p in entry["pieces"] if p["kind"] == "poly"):
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


def horner_margin_bits(coeffs: np.ndarray, X: np.ndarray, ring_bits: int = 32,
                       frac_bits: int = 13) -> np.ndarray:
    """Vectorised twin of `certify.overflow_margin_bits` for real coefficients (..., d+1),
    ascending, on |x| <= X: log2(2^(l-1-2f) / max_k |acc_k| X)."""
    c = np.nan_to_num(np.abs(coeffs), nan=np.inf)
    acc, worst = c[..., -1], np.zeros(c.shape[:-1])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):   # inf * 0: excluded
        for k in range(c.shape[-1] - 2, -1, -1):
            worst = np.maximum(worst, acc * X)
            acc = acc * X + c[..., k] + 2.0**-frac_bits
        return np.nan_to_num(np.log2(2.0 ** (ring_bits - 1 - 2 * frac_bits) / worst), nan=-np.inf)


def _pair_residuals(x, w, f, idx, reals, d, center, scale, min_bits, last_open):
    """Residual of the weighted LS degree-d fit on [g_i, g_j) for every pair of candidate
    breakpoints (inf where i >= j or the overflow margin is too small). Moments in
    u = (x - center)/scale (better conditioned; the residual does not depend on the basis),
    solved by a batched pseudo-inverse (narrow intervals are nearly singular)."""
    u = (x - center) / scale
    mom = [_prefix(u, w, 1.0, k) for k in range(2 * d + 1)]
    rhs = [_prefix(u, w, f, k) for k in range(d + 1)]
    ff = _prefix(u, w, f * f, 0)
    A, B = np.meshgrid(idx, idx, indexing="ij")
    G = np.stack([np.stack([mom[j + k][B] - mom[j + k][A] for k in range(d + 1)], -1)
                  for j in range(d + 1)], -2)
    # a relative ridge keeps near-empty intervals solvable (they lose anyway: few points)
    order = np.arange(len(idx))[:, None] < np.arange(len(idx))[None, :]
    G = np.where(order[..., None, None], G, np.eye(d + 1))
    t = np.stack([rhs[k][B] - rhs[k][A] for k in range(d + 1)], -1)
    sol = (np.linalg.pinv(G, rcond=1e-13, hermitian=True) @ t[..., None])[..., 0]
    res = ff[B] - ff[A] - (t * sol).sum(-1)
    # back to the x basis: ((x - c)/s)^k = sum_m C(k, m) (-c)^(k-m) x^m / s^k
    T = np.array([[math.comb(k, m) * (-center) ** (k - m) / scale**k if m <= k else 0.0
                   for m in range(d + 1)] for k in range(d + 1)])
    coef = sol @ T
    ra, rb = np.meshgrid(reals, reals, indexing="ij")
    X = np.maximum(np.abs(ra), np.abs(rb))
    if last_open:   # the last column means "to the end of the domain"
        X[:, -1] = np.maximum(np.abs(ra[:, -1]), abs(x[-1]))
    res = np.where(order & (horner_margin_bits(coef, X) >= min_bits), res, np.inf)
    return res


def search_chain(x: np.ndarray, w: np.ndarray, spec: ChainSpec) -> tuple[list[float], float]:
    """Best breakpoints [b_0, ..., b_k] (b_k = inf without a right tail) for
    left tail | p_1 on [b_0, b_1) | ... | p_k on [b_(k-1), b_k) | right tail, by dynamic
    programming over the pair residuals. Returns (breakpoints, objective)."""
    base = spec.base
    f = TARGETS[base.target].np_f(x)
    dl = np.concatenate([[0.0], np.cumsum(w * (f - _tail_value(base.left, x)) ** 2)])
    reals = np.array(sorted(set(spec.breaks)))
    last_open = base.right is None
    if last_open:
        reals = np.concatenate([reals, [np.inf]])
    idx = np.searchsorted(x, reals, side="left")
    fin = reals[np.isfinite(reals)]
    center, scale = (fin.max() + fin.min()) / 2, max(1.0, (fin.max() - fin.min()) / 2)
    first_ok = np.isin(reals, np.array(base.left_grid))
    if last_open:
        last_ok = np.isinf(reals)
        right = np.zeros(len(reals))
    else:
        last_ok = np.isin(reals, np.array(base.right_grid))
        dr = np.concatenate([[0.0], np.cumsum(w * (f - _tail_value(base.right, x)) ** 2)])
        right = dr[-1] - dr[idx]
    V = np.where(first_ok, dl[idx], np.inf)
    back = []
    for d in spec.degrees:
        R = _pair_residuals(x, w, f, idx, reals, d, center, scale, spec.min_margin_bits, last_open)
        tot = V[:, None] + R
        back.append(np.argmin(tot, axis=0))
        V = tot[back[-1], np.arange(len(reals))]
    final = np.where(last_ok, V + right, np.inf)
    j = int(np.argmin(final))
    obj = float(final[j])
    if not np.isfinite(obj):
        raise ValueError(f"no feasible chain for {base.target} with degrees {spec.degrees}")
    path = [j]
    for bk in reversed(back):
        path.append(int(bk[path[-1]]))
    return [float(reals[i]) for i in reversed(path)], obj


def make_chain_entry(spec: ChainSpec, breaks: Sequence[float], coeffs: Sequence[Sequence[int]],
                     ring_bits: int, frac_bits: int,
                     exact: Sequence[Sequence[Fraction]] | None = None) -> dict:
    """A table entry for left tail | p_1 | ... | p_k | right tail (breakpoints at 2^f)."""
    base = spec.base
    ints = [int(b * 2**frac_bits) if np.isfinite(b) else None for b in breaks]
    pieces = []
    if base.left:
        pieces.append({"hi": ints[0], **_tail_piece(base.left, ring_bits, frac_bits)})
    for t, q in enumerate(coeffs):
        poly = {"kind": "poly", "coeffs": [int(v) for v in q]}
        if exact is not None:
            poly["coeffs_exact"] = [f"{c.numerator}/{c.denominator}" for c in exact[t]]
        if base.left or t > 0:
            poly["lo"] = ints[t]
        if ints[t + 1] is not None:
            poly["hi"] = ints[t + 1]
        pieces.append(poly)
    if base.right and ints[-1] is not None:
        pieces.append({"lo": ints[-1], **_tail_piece(base.right, ring_bits, frac_bits)})
    return {"function": base.target, "ring_bits": ring_bits, "frac_bits": frac_bits,
            "pieces": pieces}


def fit_chain_entry(hist_points: tuple[np.ndarray, np.ndarray], spec: ChainSpec,
                    ring_bits: int = 32, frac_bits: int = 13) -> tuple[dict, dict]:
    """`fit_entry` for a chain of polynomial pieces: search (dynamic programming), exact
    rational solve per piece, quantise, nudge all coefficients on the fixed-point objective."""
    x, w, wq = weighted_points(*hist_points, spec.base)
    breaks, obj = search_chain(x, w, spec)
    f = TARGETS[spec.target].np_f(x)
    exact, quant = [], []
    for t, d in enumerate(spec.degrees):
        mid = (x >= breaks[t]) & (x < breaks[t + 1])
        e = exact_coeffs(x[mid], [q for q, m in zip(wq, mid) if m], f[mid], d)
        exact.append(e)
        quant.append([quantise(c, frac_bits) for c in e])
    entry = make_chain_entry(spec, breaks, quant, ring_bits, frac_bits, exact)
    entry = _nudge(entry, x, w, f)
    report = {"breakpoints": [b for b in breaks if np.isfinite(b)], "degree": list(spec.degrees),
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
