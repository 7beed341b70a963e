"""The target functions: float and high-precision forms, derivative bounds, tail bounds.

Each `Target` gives f in numpy float64 (`np_f`), f and f'' in mpmath (`mp_f`, `mp_d2`), a
rigorous bound on sup |f'''| over an interval (`d3_bound`), and `tail_sup(side, t)`: a rigorous
bound of |f(x) - g(x)| for all x beyond t on that side, where g is the tail piece the tables use
there (0, x, -1 or 1), valid when t is beyond `tail_from`. The derivations are in the
docstrings of the helpers and the tests check them numerically.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import mpmath as mp
import numpy as np
import sympy as sp

__all__ = ["Target", "TARGETS", "gelu_d3_sup", "gelu_np"]


def gelu_np(x: np.ndarray) -> np.ndarray:
    """GELU with the exact erf, float64 (through torch, a declared dependency)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    return (t * 0.5 * (1.0 + torch.special.erf(t * 0.7071067811865476))).numpy()


@lru_cache(maxsize=1)
def gelu_d3_sup() -> float:
    """sup over R of |GELU'''(x)| = |phi(x) (x^3 - 4x)|.

    derivation: GELU'' = phi (2 - x^2), GELU''' = phi (x^3 - 4x), GELU'''' = phi (-x^4 + 7x^2 - 4);
    the critical points of GELU''' are the exact roots x^2 = (7 +- sqrt 33)/2 (sympy), and
    GELU''' -> 0 at infinity, so the sup is the largest |GELU'''| among them (rounded up).
    """
    x = sp.symbols("x", real=True)
    phi = sp.exp(-x**2 / 2) / sp.sqrt(2 * sp.pi)
    g = x * (1 + sp.erf(x / sp.sqrt(2))) / 2
    d3, d4 = sp.simplify(sp.diff(g, x, 3)), sp.diff(g, x, 4)
    roots = sp.solve(sp.simplify(d4 / phi), x)
    vals = [abs(sp.N(d3.subs(x, r), 30)) for r in roots]
    return float(max(vals)) * (1 + 1e-12)


def _mp_gelu(x):
    return x * (1 + mp.erf(x / mp.sqrt(2))) / 2


def _mp_gelu_d2(x):
    return mp.npdf(x) * (2 - x * x)


def _gelu_tail(side: str, t: float) -> float:
    """|GELU(x)| for x <= t (left, vs 0) or |x - GELU(x)| = |GELU(-x)| for x >= t (right).

    derivation: for y <= -1, d/dy(-y Phi(y)) = -Phi(y) - y phi(y) > phi(y)(|y| - 1/|y|) >= 0 by
    the Mills-ratio bound Phi(y) < phi(y)/|y|, so |GELU| is increasing on (-inf, -1] and the
    sup beyond t is its value at t (t <= -1 left, t >= 1 right, by symmetry).
    """
    y = t if side == "left" else -t
    if y > -1:
        raise ValueError("GELU tail bound needs the tail to start beyond |x| >= 1")
    return float(abs(_mp_gelu(mp.mpf(y)))) * (1 + 1e-12)


def _tanh_tail(side: str, t: float) -> float:
    """|tanh(x) -+ 1| is monotone decreasing away from 0: its sup beyond t is at t."""
    if (side == "left" and t > 0) or (side == "right" and t < 0):
        raise ValueError("tanh tail must lie on its own side of 0")
    return float(1 - mp.tanh(abs(mp.mpf(t)))) * (1 + 1e-12)


def _exp_tail(side: str, t: float) -> float:
    """exp is increasing: sup of |exp(x) - 0| for x <= t is exp(t)."""
    if side != "left":
        raise ValueError("exp has only a left (zero) tail")
    return float(mp.exp(t)) * (1 + 1e-12)


@dataclass(frozen=True)
class Target:
    name: str
    np_f: Callable[[np.ndarray], np.ndarray]
    mp_f: Callable
    mp_d2: Callable
    d3_bound: Callable[[float, float], float]
    tail_sup: Callable[[str, float], float] | None
    tail_from: tuple[float, float]   # left tails need t <= [0], right tails t >= [1]


TARGETS: dict[str, Target] = {
    "gelu": Target("gelu", gelu_np, _mp_gelu, _mp_gelu_d2, lambda a, b: gelu_d3_sup(),
                   _gelu_tail, (-1.0, 1.0)),
    "exp": Target("exp", np.exp, mp.exp, mp.exp, lambda a, b: float(mp.exp(b)) * (1 + 1e-12),
                  _exp_tail, (np.inf, np.inf)),
    "tanh": Target("tanh", np.tanh, mp.tanh, lambda x: -2 * mp.tanh(x) * mp.sech(x) ** 2,
                   lambda a, b: 2.0, _tanh_tail, (0.0, 0.0)),
    # 1/x and 1/sqrt(x) on positive intervals: f''' = -6/x^4 and -15/8 x^(-7/2), largest at a.
    "reciprocal": Target("reciprocal", lambda x: 1.0 / x, lambda x: 1 / x, lambda x: 2 / x**3,
                         lambda a, b: 6.0 / a**4 * (1 + 1e-12), None, (0.0, 0.0)),
    "rsqrt": Target("rsqrt", lambda x: 1.0 / np.sqrt(x), lambda x: 1 / mp.sqrt(x),
                    lambda x: mp.mpf(3) / 4 * x ** mp.mpf(-2.5),
                    lambda a, b: 15.0 / 8.0 * a ** -3.5 * (1 + 1e-12), None, (0.0, 0.0)),
}
