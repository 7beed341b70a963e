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
Reciprocal  (``ideal_reciprocal``) [SIRNN, §4.2]
    for 2^-1 <= s < 2^J (real): p = sum_{j<J} [s >= 2^j]; P = 2^(J-p); s' = floor(s P / 2^J)
    (in [1/2, 1)); y = evaluate_fxp(reciprocal entry, s'); RECIP_ITERS Newton steps
    y <- floor(y * lift(2^(f+1) - floor(s' y / 2^f)) / 2^f); r = floor(y P / 2^J).
    ``trunc="faithful"`` (the default: 51 instead of 66 round trips at 12x128x128) lets the
    reciprocal's and the last truncations be 1 ulp low; the exp stays exact; the output is
    within ``softmax_faithful_bound`` of the ideal.

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
    IdealCotSession, Flow, _f_acot, _f_downcast, _f_drelu, _f_max, _f_mux, _f_trunc, _gilboa, ring_mask,
)
from .protocols import ProtocolSpec, register_protocol

__all__ = [
    "DEFAULT_TABLE", "RECIP_TABLE", "TANH_TABLE", "RECIP_ITERS", "SOFTMAX_TRUNC", "FN_TRUNC",
    "softmax_faithful_bound", "unary_faithful_bound", "entry_for", "horner_trunc_mode", "is_faithful", "encode_mask", "recip_range",
    "ideal_gelu", "ideal_tanh", "ideal_unary", "ideal_softmax", "ideal_reciprocal", "ideal_to_small",
    "gelu_cost", "tanh_cost", "unary_cost", "softmax_cost",
    "RSQRT_TABLE", "RSQRT_ITERS", "LN_K", "LN_FV", "LN_FD", "LN_PMIN", "LN_PMAX", "rsqrt_entry",
    "ideal_rsqrt", "ideal_layernorm", "layernorm_cost", "ideal_reciprocal_ring", "reciprocal_cost",
    "ideal_rsqrt_ring", "rsqrt_cost",
]

DEFAULT_TABLE = "nimbus-prototype"  #: the prototype's coefficients: the initial table
RECIP_TABLE = "ours-minilm-global"  #: the initial approximation of 1/x on [1/2, 1)
TANH_TABLE = "ours-minilm-global"  #: the prototype has no tanh
RECIP_ITERS = 2  #: Newton steps (the certificate's ``newton_iterations_to_2^-f``)
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
    faithful truncations (each 1 ulp low at most) sit in the reciprocal and the final product:
    the last Newton step loses <= 1 ulp in (2 - s' y) and <= 1 in y (|dy| <= 3 * 2^-f, y < 2),
    the de-normalisation <= 1 more, the normalisation of s <= 1 ulp of s' (relative 2^(1-f), so
    <= 2 * 2^-f on y <= 2): |dr| <= 6 * 2^-f; e <= 1.04 (exp tables), plus the final
    truncation's 2^-frac: bound 8 * 2^-f + 2^-frac (about 0.001 for f = 13)."""
    f, fo = 13, 18
    if params is not None:
        f, fo = params.nonlinear.frac, params.linear.frac
    return 8 * 2.0**-f + 2.0**-fo


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


def ideal_reciprocal(s: np.ndarray, entry: dict, J: int, iters: int = RECIP_ITERS) -> np.ndarray:
    """See the module docstring; s and the result are signed int64 at scale 2^f."""
    l, f = int(entry["ring_bits"]), int(entry["frac_bits"])
    s = np.asarray(s, dtype=np.int64)
    p = sum((s >= (1 << (f + j))).astype(np.int64) for j in range(J))
    P = np.left_shift(np.int64(1), np.int64(J) - p)
    sp = _floor_div(s * P, l, J)
    y = _fxp.evaluate_fxp_array(entry, sp)
    for _ in range(iters):
        e = _lift((2 << f) - _floor_div(sp * y, l, f), l)
        y = _floor_div(y * e, l, f)
    return _floor_div(y * P, l, J)


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
    s = _lift(e.sum(axis=1), l)
    r = ideal_reciprocal(s, rent, recip_range(shp[-1], ent))
    out = _floor_div(e * r[:, None], l, 2 * f - params.linear.frac)
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


def _f_poly(n: int, coeffs, l: int, f: int, mode: str) -> Flow:
    fl = Flow()
    d = len(coeffs) - 1
    for k in range(d - 1, -1, -1):
        if k < d - 1:
            fl = fl + _f_mul(n, l)
        fl = fl + _f_trunc(n, l, f, mode, f, l, 4)
    return fl


def _f_piecewise(n: int, entry: dict, domain_hi=None, faithful=False) -> Flow:
    l, f = int(entry["ring_bits"]), int(entry["frac_bits"])
    pieces = entry["pieces"]
    fl = _f_drelu(n * (len(pieces) - 1), l, 4) if len(pieces) > 1 else Flow()
    nz = 0
    for j, pc in enumerate(pieces):
        if pc["kind"] == "zero":
            continue
        nz += 1
        if pc["kind"] == "poly":
            fl = fl + _f_poly(n, pc["coeffs"], l, f, horner_trunc_mode(entry, j, domain_hi, faithful))
        elif pc["kind"] == "pow2chain":
            fl = fl + _f_trunc(n, l, int(pc["n"]), "exact", int(pc["n"]), l, 4)
            for _ in range(int(pc["n"])):
                fl = fl + _f_acot(_gilboa(n, l, 1), []) + _f_trunc(n, l, f, "msb1" if faithful else "msb", f, l, 4)
    return fl + (_f_mux(n * nz, l) if nz else Flow())


def _f_reciprocal(n: int, entry: dict, J: int, iters: int, mode: str) -> Flow:
    l, f = int(entry["ring_bits"]), int(entry["frac_bits"])
    fl = _f_drelu(n * J, l, 4) + _f_acot([], [(n * (J + 1), l)]) + _f_mul(n, l) + _f_trunc(n, l, J, mode, J, l, 4)
    fl = fl + _f_poly(n, entry["pieces"][0]["coeffs"], l, f, mode)
    for _ in range(iters):
        fl = fl + _f_mul(n, l) + _f_trunc(n, l, f, mode, f, l, 4) + _f_mul(n, l) + _f_trunc(n, l, f, mode, f, l, 4)
    return fl + _f_mul(n, l) + _f_trunc(n, l, J, mode, J, l, 4)


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
    """Softmax: down-cast, max tree, exp pieces, one reciprocal per row, broadcast product,
    fused truncation + up-cast."""
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
    fl = fl + _f_reciprocal(rows, rent, recip_range(cols, ent), RECIP_ITERS, mode)
    L = params.linear.bits
    fl = fl + _f_mul(n, l) + _f_trunc(n, l, 2 * f - params.linear.frac, mode, L - l + 2 * f - params.linear.frac, L, 4)
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
RSQRT_TABLE = "ours-minilm-global"  #: initial approximation of 1/sqrt(x) on [1/4, 1)
RSQRT_ITERS = 2  #: Newton steps (the certificate's ``newton_iterations_to_2^-f``)
LN_K = 30  #: 1/n as round(2^K / n)
LN_MAX_FEATURES = 1024  #: |z-score| <= sqrt(n - 1) < 2^(l - 1 - LN_FD - ...) holds for n <= 1024
LN_FV = 6  #: fraction bits of x - mean when squared (|x - mean| < 2^(l/2 - 1 - FV) = 512)
LN_FD = 12  #: fraction bits of x - mean in the final product (|z-score| < 32, true for n <= 1024)
LN_PMIN, LN_PMAX = -6, 14  #: v = var + eps in [2^-13, 4^14): v / 4^p in [1/4, 1) for p in [PMIN, PMAX]


def _ln_consts(params, n: int, eps: float):
    if not 1 <= n <= LN_MAX_FEATURES:  # |z-score| <= sqrt(n - 1) < 32 needs n <= 1024 (LN_FD)
        raise ParameterError(f"LayerNorm over {n} features: supported up to {LN_MAX_FEATURES}")
    f = params.nonlinear.frac
    return round((1 << LN_K) / n), max(1, round(eps * (1 << f)))


def rsqrt_entry(params) -> dict:
    """The rsqrt table entry evaluated in the linear ring (same coefficients and f; the Horner
    values stay tiny, so the result equals its evaluation in the entry's own ring)."""
    e = dict(entry_for(RSQRT_TABLE, "rsqrt", params))
    e["ring_bits"] = params.linear.bits
    return e


def ideal_rsqrt(v: np.ndarray, params) -> np.ndarray:
    """1/sqrt(v) for v in [2^-f, 4^PMAX) at scale 2^f (f = nonlinear.frac) in the linear ring:
    p = PMIN + sum_{j in [PMIN, PMAX)} [v >= 4^j]; v' = floor(v 4^(PMAX-p) / 4^PMAX) in [1/4, 1);
    y = evaluate_fxp(rsqrt entry, v'); RSQRT_ITERS Newton steps
    y <- floor(y (3 2^f - floor(v' floor(y^2 / 2^f) / 2^f)) / 2^(f+1)); r = floor(y 2^(PMAX-p) / 2^PMAX)."""
    e = rsqrt_entry(params)
    L, f = params.linear.bits, int(e["frac_bits"])
    v = np.asarray(v, dtype=np.int64)
    p = LN_PMIN + sum((v >= (1 << (f + 2 * j))).astype(np.int64) for j in range(LN_PMIN, LN_PMAX))
    P4 = np.left_shift(np.int64(1), 2 * (LN_PMAX - p))
    vp = _floor_div(v * P4, L, 2 * LN_PMAX)
    y = _fxp.evaluate_fxp_array(e, vp)
    for _ in range(RSQRT_ITERS):
        y2 = _floor_div(y * y, L, f)
        z = _floor_div(vp * y2, L, f)
        y = _floor_div(y * ((3 << f) - z), L, f + 1)
    return _floor_div(y * np.left_shift(np.int64(1), LN_PMAX - p), L, LN_PMAX)


def ideal_layernorm(X, params, eps: float = 1e-12, beta=None, gamma=None) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) (+ beta, the server's) over the last axis, exact semantics:
    in the linear ring at scale 2^F (F = linear.frac): s = sum x; mu = floor(s c / 2^K),
    c = round(2^K / n); d = x - mu; dv = floor(d / 2^(F-FV)) in Z_2^l; q = dv^2 (scale 2^2FV);
    var = floor(sum q * c / 2^K); v = var 2^(f-2FV) + max(1, round(eps 2^f));
    r = ``ideal_rsqrt(v)``; out = floor(lift_l(floor(d / 2^(F-FD)) * r) / 2^(FD+f-F)) in the
    linear ring. With the server's gamma: out = floor(out * g / 2^F), g = floor(gamma 2^F + 1/2)
    (a one-sided product in the linear ring; where the output only feeds a linear layer, fold
    gamma into it instead: W' = diag(gamma) W, exact over the reals). beta: + floor(beta 2^F + 1/2)."""
    L, F = params.linear.bits, params.linear.frac
    l, f = params.nonlinear.bits, params.nonlinear.frac
    X = np.asarray(X, dtype=np.uint64)
    shp = X.shape
    n = shp[-1]
    c, e13 = _ln_consts(params, n, eps)
    x = X.reshape(-1, n).view(np.int64)
    s = x.sum(axis=1, dtype=np.int64)
    mu = _floor_div(s * c, L, LN_K)
    d = x - mu[:, None]
    dv = _floor_div(d, L, F - LN_FV)
    dv = _lift(dv, l)
    q = _lift(dv * dv, l)
    var = _floor_div(q.sum(axis=1, dtype=np.int64) * c, L, LN_K)
    v = var * (1 << (f - 2 * LN_FV)) + e13
    r = ideal_rsqrt(v, params)
    dd = _lift(_floor_div(d, L, F - LN_FD), l)
    out = _floor_div(_lift(dd * _lift(r, l)[:, None], l), l, LN_FD + f - F)
    if gamma is not None:
        out = _floor_div(out * _beta(gamma, n, F)[None, :], L, F)
    if beta is not None:
        out = out + _beta(beta, n, F)
    return _to_ring(out, L).reshape(shp)


def _beta(beta, n: int, F: int) -> np.ndarray:
    b = np.floor(np.asarray(beta, dtype=np.float64).reshape(-1) * (1 << F) + 0.5).astype(np.int64)
    if b.size != n:
        raise ShapeError(f"beta must have {n} entries")
    return b


def _f_rsqrt(n: int, params) -> Flow:
    L, f = params.linear.bits, params.nonlinear.frac
    e = rsqrt_entry(params)
    J = LN_PMAX - LN_PMIN
    fl = _f_drelu(n * J, L, 4) + _f_acot([], [(n * (J + 1), L)])
    fl = fl + _f_mul(n, L) + _f_trunc(n, L, 2 * LN_PMAX, "msb", 2 * LN_PMAX, L, 4)
    fl = fl + _f_poly(n, e["pieces"][0]["coeffs"], L, f, "msb")
    for _ in range(RSQRT_ITERS):
        fl = fl + _f_acot(_gilboa(n, L, 1), []) + _f_trunc(n, L, f, "msb", f, L, 4)
        fl = fl + _f_mul(n, L) + _f_trunc(n, L, f, "msb", f, L, 4)
        fl = fl + _f_mul(n, L) + _f_trunc(n, L, f + 1, "msb", f + 1, L, 4)
    return fl + _f_mul(n, L) + _f_trunc(n, L, LN_PMAX, "msb", LN_PMAX, L, 4)


def layernorm_cost(params, shape, eps: float = 1e-12, gamma: bool = False) -> Cost:
    """LayerNorm: per row two 64-bit truncations (mean, variance) and one rsqrt; per element two
    exact down-casts, one square, one up-cast, one product and a fused truncation + up-cast."""
    L, F = params.linear.bits, params.linear.frac
    l, f = params.nonlinear.bits, params.nonlinear.frac
    shape = tuple(shape)
    N, n = _n(shape), shape[-1]
    rows = N // n
    fl = _f_trunc(rows, L, LN_K, "msb", LN_K, L, 4)
    fl = fl + _f_downcast(N, F - LN_FV, l, "exact", 4) + _f_acot(_gilboa(N, l, 1), [])
    fl = fl + _f_trunc(N, l, 0, "msb", L - l, L, 4) + _f_trunc(rows, L, LN_K, "msb", LN_K, L, 4)
    fl = fl + _f_rsqrt(rows, params)
    fl = fl + _f_downcast(N, F - LN_FD, l, "exact", 4) + _f_mul(N, l)
    sh = LN_FD + f - F
    fl = fl + _f_trunc(N, l, sh, "msb", L - l + sh, L, 4)
    if gamma:  # one-sided product by the server's gamma (server sender, client's bits), truncation
        fl = fl + _f_acot([], [(N, L - i) for i in range(L)]) + _f_trunc(N, L, F, "msb", F, L, 4)
    return fl.cost()


register_protocol(ProtocolSpec(
    name="nonlinear.layernorm", component="nonlinear", client="layernorm_client", server="layernorm_server",
    ideal=ideal_layernorm, cost=layernorm_cost,
    learns="Each party learns nothing: OT choice corrections, OT-masked values, Beaver openings.",
    reference="[SIRNN, §4.3 (rsqrt by normalisation + Newton); CrypTFlow2; NIMBUS24, §5 (LayerNorm as in prior work)]",
    example=_fn_example("layernorm"),
))


# -- reciprocal and rsqrt as protocols of their own ------------------------------------------------
def ideal_reciprocal_ring(s, params, J: int, trunc: str = "exact") -> np.ndarray:
    """``ideal_reciprocal`` on ring elements of the non-linear ring (scale 2^f): 1/s for
    2^-1 <= s < 2^J. Error against 1/s: the table's initial error squared twice by Newton, then
    the fixed-point floor: measured <= 2 ulp (2.4e-4) on the whole range (relative 3% only where
    1/s is itself a few ulp, s near 2^J)."""
    rent = entry_for(RECIP_TABLE, "reciprocal", params)
    l = params.nonlinear.bits
    x = _lift(np.asarray(s, dtype=np.uint64).astype(np.int64), l)
    return _to_ring(ideal_reciprocal(x, rent, J), l)


def reciprocal_cost(params, shape, J: int, trunc: str = "exact") -> Cost:
    """Reciprocal: a J-threshold DReLU batch, B2A, normalising product, the initial polynomial,
    RECIP_ITERS Newton steps (two products each), the de-normalising product."""
    rent = entry_for(RECIP_TABLE, "reciprocal", params)
    return _f_reciprocal(_n(tuple(shape)), rent, J, RECIP_ITERS, "msb1" if is_faithful(trunc) else "msb").cost()


def ideal_rsqrt_ring(v, params) -> np.ndarray:
    """``ideal_rsqrt`` on ring elements of the linear ring (scale 2^f, f = nonlinear.frac):
    1/sqrt(v) for 2^-f <= v < 4^PMAX; relative error about 2^-12 (two Newton steps from the
    table's quadratic on [1/4, 1))."""
    L = params.linear.bits
    return _to_ring(ideal_rsqrt(np.asarray(v, dtype=np.uint64).view(np.int64), params), L)


def rsqrt_cost(params, shape) -> Cost:
    """rsqrt: the 4^p normalisation, the initial polynomial, RSQRT_ITERS Newton steps, the 2^-p."""
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
    reference="[SIRNN, §4.2 (normalisation + Newton); CrypTFlow2]", example=_recip_example("reciprocal"),
))
register_protocol(ProtocolSpec(
    name="nonlinear.rsqrt", component="nonlinear", client="rsqrt_client", server="rsqrt_server",
    ideal=ideal_rsqrt_ring, cost=rsqrt_cost,
    learns="Each party learns nothing: OT choice corrections, OT-masked values, Beaver openings.",
    reference="[SIRNN, §4.3 (normalisation by 4^p + Newton)]", example=_recip_example("rsqrt"),
))
