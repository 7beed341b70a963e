"""Reference protocols of the non-linear *functions*: GELU, Softmax (exp, reciprocal), on top of
the primitives of ``nimbus.reference.nonlinear``. Exact semantics: ``nimbus.spec.nonlinear_fn``.

Conventions: inputs are shares in the linear ring (``params.linear``) at scale ``2^in_frac``;
the work happens in the ring of the approximation table's entry (``ring_bits``/``frac_bits``,
the paper's Z_2^32 with 13 fraction bits); outputs are shares in the linear ring at scale
``2^params.linear.frac``.
"""

from __future__ import annotations

import numpy as np

from nimbus.spec import nonlinear_fn as F
from nimbus.spec.errors import ParameterError, ShapeError
from nimbus.spec.nonlinear import ring_mask
from nimbus.spec.proto import Ctx, Proto

from . import nonlinear as P

__all__ = ["to_small", "to_linear", "poly_eval", "pow2chain", "piecewise", "reciprocal", "gelu",
           "softmax", "tanh", "gelu_client", "gelu_server", "softmax_client", "softmax_server",
           "tanh_client", "tanh_server", "rsqrt", "scale_by_server", "layernorm", "layernorm_client",
           "layernorm_server", "reciprocal_client", "reciprocal_server", "rsqrt_client", "rsqrt_server"]


def _const(ctx: Ctx, value: int, n: int, bits: int) -> np.ndarray:
    """Shares of a public constant: the client holds it, the server zero."""
    v = np.uint64(int(value) % (1 << bits)) if ctx.is_client else np.uint64(0)
    return np.full(n, v, dtype=np.uint64)


def to_small(ctx: Ctx, ot, X: np.ndarray, in_frac: int, l: int, f: int) -> Proto[np.ndarray]:
    """Linear ring (scale 2^in_frac) -> Z_2^l (scale 2^f): exact truncation by in_frac - f fused
    with the down-cast (the wrap vanishes mod 2^l; only the carry is computed).
    [NIMBUS24, §4.3]"""
    L = ctx.params.linear.bits
    k = in_frac - f
    if k < 0:
        raise ShapeError(f"input scale 2^{in_frac} is coarser than the table's 2^{f}")
    X = np.ascontiguousarray(X, dtype=np.uint64).reshape(-1)
    if k == 0:
        return X & ring_mask(l)  # same scale: a plain down-cast (exact, local)
    if L - k >= l:
        return (yield from P.downcast_trunc(ctx.sub("down"), ot, X, L, k, l, "exact"))
    return (yield from P.trunc(ctx.sub("down"), ot, X, L, k, "exact"))  # same ring (l == L)


def to_linear(ctx: Ctx, ot, y: np.ndarray, l: int, f: int, f_out: int) -> Proto[np.ndarray]:
    """Z_2^l at scale 2^f -> linear ring at 2^f_out (f_out >= f): signed extension by the
    known-MSB wrap (|y| < 2^(l-2)), then a local shift. [NIMBUS24, §4.3; Cheetah, §5]"""
    L = ctx.params.linear.bits
    if l < L:
        y = yield from P.trunc_upcast(ctx.sub("up"), ot, y, l, 0, L, "msb")
    return (y << np.uint64(f_out - f)) & ring_mask(L)


def poly_eval(ctx: Ctx, ot, x: np.ndarray, coeffs, l: int, f: int, mode: str) -> Proto[np.ndarray]:
    """Horner's rule exactly as ``approx.fxp``: acc = q_d; acc = trunc(acc * x) + q_k, the first
    product public-times-shared (local), the others secure products. [NIMBUS24, §4.2]"""
    n, mk = x.size, ring_mask(l)
    c = [int(q) for q in coeffs]
    acc = (x * np.uint64(c[-1] % (1 << l))) & mk  # 1. q_d * x: local
    for k in range(len(c) - 2, -1, -1):
        if k < len(c) - 2:  # 2. acc * x: one secure product
            acc = yield from P.mul(ctx.sub(f"mul{k}"), ot, acc, x, l)
        t = yield from P.trunc(ctx.sub(f"tr{k}"), ot, acc, l, f, mode)  # 3. exact floor
        acc = (t + _const(ctx, c[k], n, l)) & mk
    return acc


def pow2chain(ctx: Ctx, ot, x: np.ndarray, n: int, l: int, f: int, faithful: bool = False) -> Proto[np.ndarray]:
    """BumbleBee's exp: t = 2^f + floor(x / 2^n), then n times t = floor(t^2 / 2^f)
    [BumbleBee, §5]. Known-MSB truncations: for x <= 0 in the piece, 0 <= t <= 2^f."""
    mode = "msb1" if faithful else "msb"
    t = yield from P.trunc(ctx.sub("scale"), ot, x, l, n, "exact")
    t = (t + _const(ctx, 1 << f, x.size, l)) & ring_mask(l)
    for i in range(n):
        t = yield from P.square(ctx.sub(f"sq{i}"), ot, t, l)
        t = yield from P.trunc(ctx.sub(f"tr{i}"), ot, t, l, f, mode)
    return t


def piecewise(ctx: Ctx, ot, x: np.ndarray, entry: dict, domain_hi: int | None = None,
              faithful: bool = False) -> Proto[np.ndarray]:
    """A table entry on shares: one batched DReLU for all breakpoints ([x >= lo_j]), piece
    indicators by XOR (the tests are monotone), every piece's value, one batched mux.
    [NIMBUS24, §4.2; BumbleBee, §5]"""
    l, f = int(entry["ring_bits"]), int(entry["frac_bits"])
    mk, n = ring_mask(l), x.size
    pieces = entry["pieces"]
    bps = [int(p["lo"]) for p in pieces[1:]]
    # 1. s_j = [x >= bp_j] for every breakpoint, one DReLU batch
    d = np.concatenate([(x - _const(ctx, b, n, l)) & mk for b in bps]) if bps else np.zeros(0, np.uint64)
    s = (yield from P.drelu(ctx.sub("cmp"), ot, d, l)).reshape(len(bps), n) if bps else None
    # 2. indicator of piece j: s_j ^ s_{j+1} (s_0 = 1, s_P = 0)
    one = np.full(n, 1 if ctx.is_client else 0, dtype=np.uint8)
    zero = np.zeros(n, dtype=np.uint8)
    bounds = [one] + ([s[j] for j in range(len(bps))] if bps else []) + [zero]
    sel, val = [], []
    for j, pc in enumerate(pieces):  # 3. the values of the non-zero pieces
        kind = pc["kind"]
        if kind == "zero":
            continue
        if kind == "identity":
            v = x
        elif kind == "const":
            v = _const(ctx, int(pc["value"]), n, l)
        elif kind == "poly":
            mode = F.horner_trunc_mode(entry, j, domain_hi, faithful)
            v = yield from poly_eval(ctx.sub(f"poly{j}"), ot, x, pc["coeffs"], l, f, mode)
        elif kind == "pow2chain":
            v = yield from pow2chain(ctx.sub(f"chain{j}"), ot, x, int(pc["n"]), l, f, faithful)
        else:
            raise ShapeError(f"piece kind {kind!r} is not supported on shares")
        sel.append(bounds[j] ^ bounds[j + 1])
        val.append(v)
    if not sel:
        return np.zeros(n, dtype=np.uint64)
    z = yield from P.mux(ctx.sub("sel"), ot, np.concatenate(sel), np.concatenate(val), l)  # 4.
    return z.reshape(len(sel), n).sum(axis=0, dtype=np.uint64) & mk


def reciprocal(ctx: Ctx, ot, S: np.ndarray, entry: dict, J: int, iters: int, mode: str) -> Proto[np.ndarray]:
    """1/S for 2^-1 <= S < 2^J (scale 2^f): normalise S' = S 2^-p in [1/2, 1) with
    p = sum_j [S >= 2^j] (one DReLU batch, B2A of the one-hot of p, one product), the table's
    initial approximation on [1/2, 1), Newton y <- y (2 - S' y), then y 2^-p.
    Semantics: ``nimbus.spec.nonlinear_fn.ideal_reciprocal``. [SIRNN, §4.2; CrypTFlow2]"""
    l, f = int(entry["ring_bits"]), int(entry["frac_bits"])
    if not 1 <= J <= l - f - 3:  # the known-MSB truncations after (de)normalisation need this
        raise ParameterError(f"reciprocal: J = {J} outside [1, {l - f - 3}] for Z_2^{l} with {f} fraction bits")
    mk, n = ring_mask(l), S.size
    # 1. thermometer t_j = [S >= 2^j] (real), j = 0..J-1
    d = np.concatenate([(S - _const(ctx, 1 << (f + j), n, l)) & mk for j in range(J)])
    t = (yield from P.drelu(ctx.sub("norm"), ot, d, l)).reshape(J, n)
    # 2. one-hot of p = sum t_j: o_p = t_{p-1} ^ t_p (t_{-1} = 1, t_J = 0); B2A; P = sum o_p 2^(J-p)
    one = np.full(n, 1 if ctx.is_client else 0, dtype=np.uint8)
    th = [one] + [t[j] for j in range(J)] + [np.zeros(n, np.uint8)]
    oh = np.concatenate([th[p] ^ th[p + 1] for p in range(J + 1)])
    (oa,) = yield from P.b2a(ctx.sub("b2a"), ot, [(oh, l)])
    oa = oa.reshape(J + 1, n)
    Pw = np.zeros(n, dtype=np.uint64)
    for p in range(J + 1):
        Pw = (Pw + oa[p] * np.uint64(1 << (J - p))) & mk
    # 3. S' = floor(S 2^(J-p) / 2^J)
    Sp = yield from P.mul(ctx.sub("nmul"), ot, S, Pw, l)
    Sp = yield from P.trunc(ctx.sub("ntr"), ot, Sp, l, J, mode)
    # 4. initial approximation on [1/2, 1), then Newton
    y = yield from poly_eval(ctx.sub("init"), ot, Sp, entry["pieces"][0]["coeffs"], l, f, mode)
    two = _const(ctx, 2 << f, n, l)
    for it in range(iters):
        e = yield from P.mul(ctx.sub(f"nm{it}a"), ot, Sp, y, l)
        e = yield from P.trunc(ctx.sub(f"nt{it}a"), ot, e, l, f, mode)
        e = (two - e) & mk
        y = yield from P.mul(ctx.sub(f"nm{it}b"), ot, y, e, l)
        y = yield from P.trunc(ctx.sub(f"nt{it}b"), ot, y, l, f, mode)
    # 5. y 2^-p = floor(y 2^(J-p) / 2^J)
    r = yield from P.mul(ctx.sub("dmul"), ot, y, Pw, l)
    return (yield from P.trunc(ctx.sub("dtr"), ot, r, l, J, mode))


def _unary(ctx: Ctx, ot, X: np.ndarray, in_frac, table: str, function: str,
           trunc: str = "exact") -> Proto[np.ndarray]:
    """A table function of one shared tensor: to the small ring, pieces, back."""
    params = ctx.params
    in_frac = params.linear.frac if in_frac is None else int(in_frac)
    entry = F.entry_for(table, function, params)
    l, f = int(entry["ring_bits"]), int(entry["frac_bits"])
    shp = np.shape(X)
    X = P._ring(X, params.linear.bits, "x")
    x = yield from to_small(ctx, ot, X, in_frac, l, f)  # 1. to the small ring (exact)
    y = yield from piecewise(ctx.sub(function), ot, x, entry, None, F.is_faithful(trunc))  # 2. pieces
    Y = yield from to_linear(ctx, ot, y, l, f, params.linear.frac)  # 3. back, scale 2^frac
    return Y.reshape(shp)


def gelu(ctx: Ctx, ot, X: np.ndarray, in_frac: int | None = None, table: str = F.DEFAULT_TABLE,
         trunc: str = "exact") -> Proto[np.ndarray]:
    """GELU on shares (party-symmetric; see :func:`gelu_client`)."""
    return (yield from _unary(ctx, ot, X, in_frac, table, "gelu", trunc))


def tanh(ctx: Ctx, ot, X: np.ndarray, in_frac: int | None = None, table: str = F.TANH_TABLE,
         trunc: str = "exact") -> Proto[np.ndarray]:
    """tanh on shares (party-symmetric; see :func:`tanh_client`)."""
    return (yield from _unary(ctx, ot, X, in_frac, table, "tanh", trunc))


def tanh_client(ctx: Ctx, ot, x_c: np.ndarray, in_frac: int | None = None,
                table: str = F.TANH_TABLE, trunc: str = "exact") -> Proto[np.ndarray]:
    """tanh of a shared tensor (BERT pooler): the table's pieces (-1 | odd polynomial | 1).
    Runs on: client. Same conventions, pre-conditions and cost structure as :func:`gelu_client`;
    semantics ``ideal_tanh``; accuracy: the table's certificate (0.075 for ours-minilm-global)."""
    return (yield from tanh(ctx, ot, x_c, in_frac, table, trunc))


def tanh_server(ctx: Ctx, ot, x_s: np.ndarray, in_frac: int | None = None,
                table: str = F.TANH_TABLE, trunc: str = "exact") -> Proto[np.ndarray]:
    """Server side of :func:`tanh_client`."""
    return (yield from tanh(ctx, ot, x_s, in_frac, table, trunc))


def gelu_client(ctx: Ctx, ot, x_c: np.ndarray, in_frac: int | None = None,
                table: str = F.DEFAULT_TABLE, trunc: str = "exact") -> Proto[np.ndarray]:
    """GELU of a shared tensor [NIMBUS24, §4.2].

    Runs on: client. Private inputs: x_c, its share in the linear ring at scale 2^in_frac
    (default ``params.linear.frac``; 2 * frac right after a matmul). Public: shape, table name.
    ``trunc``: ``exact`` (bit for bit ``ideal_gelu``) or ``faithful`` (the Horner truncations
    may be 1 ulp low: within ``unary_faithful_bound`` of it; 21% fewer COTs, 8 fewer flights).
    Pre-conditions: |x| < 2^(l-2-f) (131072 for Z_2^32, f = 13).
    Returns: the client's share of ``ideal_gelu`` in the linear ring at scale 2^linear.frac.
    Cost: ``nonlinear_fn.gelu_cost``. Each party learns nothing (uniform OT messages only).
    """
    return (yield from gelu(ctx, ot, x_c, in_frac, table, trunc))


def gelu_server(ctx: Ctx, ot, x_s: np.ndarray, in_frac: int | None = None,
                table: str = F.DEFAULT_TABLE, trunc: str = "exact") -> Proto[np.ndarray]:
    """Server side of :func:`gelu_client`."""
    return (yield from gelu(ctx, ot, x_s, in_frac, table, trunc))


def softmax(ctx: Ctx, ot, X: np.ndarray, in_frac: int | None = None, mask=None,
            table: str = F.DEFAULT_TABLE, trunc: str = F.SOFTMAX_TRUNC) -> Proto[np.ndarray]:
    """Softmax along the last axis on shares (party-symmetric; see :func:`softmax_client`)."""
    params = ctx.params
    in_frac = params.linear.frac if in_frac is None else int(in_frac)
    ent = F.entry_for(table, "exp", params)
    rent = F.entry_for(F.RECIP_TABLE, "reciprocal", params)
    l, f = int(ent["ring_bits"]), int(ent["frac_bits"])
    mk = ring_mask(l)
    shp = np.shape(X)
    if len(shp) < 1 or shp[-1] < 1:
        raise ShapeError("softmax needs a last axis")
    X = P._ring(X, params.linear.bits, "x")
    x = yield from to_small(ctx, ot, X, in_frac, l, f)  # 1. to the small ring
    if mask is not None:  # 2. the client's private additive mask (its own share only)
        if not ctx.is_client:
            raise ShapeError("only the client holds the attention mask")
        x = (x + F.encode_mask(mask, shp, l, f)) & mk
    rows = x.reshape(-1, shp[-1])
    m = yield from P.maximum(ctx.sub("max"), ot, rows, l)  # 3. row maxima
    d = ((rows - m[:, None]) & mk).reshape(-1)  # 4. x - max <= 0
    faithful = F.is_faithful(trunc)
    e = yield from piecewise(ctx.sub("exp"), ot, d, ent, 0)  # 5. exp, clipped: always exact
    e2 = e.reshape(rows.shape)
    s = e2.sum(axis=1, dtype=np.uint64) & mk  # 6. row sums (local)
    J = F.recip_range(shp[-1], ent)
    r = yield from reciprocal(ctx.sub("recip"), ot, s, rent, J, F.RECIP_ITERS,  # 7. one per row
                              "msb1" if faithful else "msb")
    rb = np.repeat(r, shp[-1])
    pr = yield from P.mul(ctx.sub("bmul"), ot, e, rb, l)  # 8. broadcast product e * (1/s)
    # 9. fused truncation + up-cast: floor(e r / 2^(2f - frac)) straight into the linear ring
    out = yield from P.trunc_upcast(ctx.sub("out"), ot, pr, l, 2 * f - params.linear.frac,
                                    params.linear.bits, "msb1" if faithful else "msb")
    return out.reshape(shp)


def softmax_client(ctx: Ctx, ot, x_c: np.ndarray, in_frac: int | None = None, mask=None,
                   table: str = F.DEFAULT_TABLE, trunc: str = F.SOFTMAX_TRUNC) -> Proto[np.ndarray]:
    """Softmax along the last axis [NIMBUS24, §4.2]: max-subtract, the table's low-degree exp
    (zero below its clip point), row sums, ONE reciprocal per row, broadcast product.

    Runs on: client. Private inputs: x_c (linear ring, scale 2^in_frac); ``mask``: the client's
    private additive attention mask (reals, broadcastable to x; e.g. -1e4 on padding keys), added
    to its own share. Public: shape, table, truncation mode (``exact``: bit-for-bit the ideal;
    ``faithful``: each truncation may be 1 ulp low, cheaper).
    Pre-conditions: |x| < 2^(l-3-f); row length n < 2^(J-1) (see ``recip_range``).
    Returns: shares of ``ideal_softmax`` in the linear ring at scale 2^linear.frac.
    Cost: ``nonlinear_fn.softmax_cost``. Each party learns nothing.
    """
    return (yield from softmax(ctx, ot, x_c, in_frac, mask, table, trunc))


def softmax_server(ctx: Ctx, ot, x_s: np.ndarray, in_frac: int | None = None, mask=None,
                   table: str = F.DEFAULT_TABLE, trunc: str = F.SOFTMAX_TRUNC) -> Proto[np.ndarray]:
    """Server side of :func:`softmax_client` (``mask`` must be None: the server has none)."""
    return (yield from softmax(ctx, ot, x_s, in_frac, mask, table, trunc))


def rsqrt(ctx: Ctx, ot, v: np.ndarray) -> Proto[np.ndarray]:
    """1/sqrt(v) in the linear ring at scale 2^f (``ideal_rsqrt``): normalise by 4^p (one DReLU
    batch, B2A of the one-hot of p), the table's initial approximation on [1/4, 1), Newton
    y <- y (3 - v' y^2) / 2, de-normalise by 2^-p. [SIRNN, §4.3]"""
    params = ctx.params
    L, f = params.linear.bits, params.nonlinear.frac
    mk, n = ring_mask(L), v.size
    e = F.rsqrt_entry(params)
    J = F.LN_PMAX - F.LN_PMIN
    # 1. t_j = [v >= 4^j], j in [PMIN, PMAX)
    d = np.concatenate([(v - _const(ctx, 1 << (f + 2 * j), n, L)) & mk for j in range(F.LN_PMIN, F.LN_PMAX)])
    t = (yield from P.drelu(ctx.sub("norm"), ot, d, L)).reshape(J, n)
    # 2. one-hot of p - PMIN = sum t_j; B2A; P4 = 4^(PMAX - p), Q = 2^(PMAX - p)
    one = np.full(n, 1 if ctx.is_client else 0, dtype=np.uint8)
    th = [one] + [t[j] for j in range(J)] + [np.zeros(n, np.uint8)]
    oh = np.concatenate([th[k] ^ th[k + 1] for k in range(J + 1)])
    (oa,) = yield from P.b2a(ctx.sub("b2a"), ot, [(oh, L)])
    oa = oa.reshape(J + 1, n)
    P4 = np.zeros(n, dtype=np.uint64)
    Q = np.zeros(n, dtype=np.uint64)
    for k in range(J + 1):  # p = PMIN + k
        sh = F.LN_PMAX - (F.LN_PMIN + k)
        P4 = (P4 + oa[k] * np.uint64(1 << (2 * sh))) & mk
        Q = (Q + oa[k] * np.uint64(1 << sh)) & mk
    # 3. v' = floor(v P4 / 4^PMAX) in [1/4, 1)
    vp = yield from P.mul(ctx.sub("nmul"), ot, v, P4, L)
    vp = yield from P.trunc(ctx.sub("ntr"), ot, vp, L, 2 * F.LN_PMAX, "msb")
    # 4. initial approximation, Newton
    y = yield from poly_eval(ctx.sub("init"), ot, vp, e["pieces"][0]["coeffs"], L, f, "msb")
    three = _const(ctx, 3 << f, n, L)
    for it in range(F.RSQRT_ITERS):
        y2 = yield from P.square(ctx.sub(f"sq{it}"), ot, y, L)
        y2 = yield from P.trunc(ctx.sub(f"sqt{it}"), ot, y2, L, f, "msb")
        z = yield from P.mul(ctx.sub(f"vz{it}"), ot, vp, y2, L)
        z = yield from P.trunc(ctx.sub(f"vzt{it}"), ot, z, L, f, "msb")
        y = yield from P.mul(ctx.sub(f"yy{it}"), ot, y, (three - z) & mk, L)
        y = yield from P.trunc(ctx.sub(f"yyt{it}"), ot, y, L, f + 1, "msb")
    # 5. r = floor(y Q / 2^PMAX)
    r = yield from P.mul(ctx.sub("dmul"), ot, y, Q, L)
    return (yield from P.trunc(ctx.sub("dtr"), ot, r, L, F.LN_PMAX, "msb"))


def scale_by_server(ctx: Ctx, ot, x: np.ndarray, g, bits: int) -> Proto[np.ndarray]:
    """Shares of x * g mod 2^bits for the server's plaintext integers g (same shape as x): bit i of
    the client's share selects g at width bits - i (one-sided Gilboa); the server multiplies its
    own share locally. [SIRNN, §3.1]"""
    K = ctx.impl.nonlinear
    mk = ring_mask(bits)
    if ctx.is_client:
        xb = K.bits_lsb_first(x, bits)
        _, ys = yield from P.acot(ctx, ot, recv=[(xb[:, i], bits - i) for i in range(bits)])
        z = np.zeros(x.size, dtype=np.uint64)
    else:
        g = np.asarray(g, dtype=np.uint64).reshape(-1)
        ys, _ = yield from P.acot(ctx, ot, send=[(g, bits - i) for i in range(bits)])
        z = (x * g) & mk
    for i in range(bits):
        z = (z + (ys[i] << np.uint64(i))) & mk
    return z


def layernorm(ctx: Ctx, ot, X: np.ndarray, eps: float = 1e-12, beta=None, gamma=None) -> Proto[np.ndarray]:
    """LayerNorm over the last axis (party-symmetric; see :func:`layernorm_client`)."""
    params = ctx.params
    L, Fr = params.linear.bits, params.linear.frac
    l, f = params.nonlinear.bits, params.nonlinear.frac
    if f + 2 * F.LN_PMIN < 0 or Fr < F.LN_FD or l < 32:
        raise ShapeError(f"layernorm needs a bert-base-like parameter set, not {params.name}")
    shp = np.shape(X)
    X = P._ring(X, L, "x")
    n = shp[-1]
    mk, smk = ring_mask(L), ring_mask(l)
    c, e13 = F._ln_consts(params, n, eps)
    x = X.reshape(-1, n)
    rows = x.shape[0]
    # 1. mean: mu = floor(sum x * c / 2^K) (per row, in the linear ring)
    s = x.sum(axis=1, dtype=np.uint64) & mk
    mu = yield from P.trunc(ctx.sub("mean"), ot, (s * np.uint64(c)) & mk, L, F.LN_K, "msb")
    d = (x - mu[:, None]) & mk
    # 2. variance: dv = floor(d / 2^(F-FV)) in Z_2^l, squared, extended, summed, times 1/n
    dv = yield from P.downcast_trunc(ctx.sub("dv"), ot, d.reshape(-1), L, Fr - F.LN_FV, l, "exact")
    q = yield from P.square(ctx.sub("sq"), ot, dv, l)
    q = yield from P.trunc_upcast(ctx.sub("qup"), ot, q, l, 0, L, "msb")
    ss = q.reshape(rows, n).sum(axis=1, dtype=np.uint64) & mk
    var = yield from P.trunc(ctx.sub("var"), ot, (ss * np.uint64(c)) & mk, L, F.LN_K, "msb")
    v = (var * np.uint64(1 << (f - 2 * F.LN_FV)) + _const(ctx, e13, rows, L)) & mk
    r = yield from rsqrt(ctx.sub("rsqrt"), ot, v)  # 3. one rsqrt per row
    # 4. out = floor(floor(d / 2^(F-FD)) * r / 2^(FD+f-F)), the truncation fused with the up-cast
    dd = yield from P.downcast_trunc(ctx.sub("dd"), ot, d.reshape(-1), L, Fr - F.LN_FD, l, "exact")
    pr = yield from P.mul(ctx.sub("mul"), ot, dd, np.repeat(r & smk, n), l)
    out = yield from P.trunc_upcast(ctx.sub("out"), ot, pr, l, F.LN_FD + f - Fr, L, "msb")
    if gamma is not None:  # 5. the server's gamma (the client passes gamma=True: public structure)
        g = None
        if not ctx.is_client:
            g = np.tile(F._beta(gamma, n, Fr).view(np.uint64), rows)
        elif gamma is not True:
            raise ShapeError("the client passes gamma=True (gamma is the server's plaintext)")
        out = yield from scale_by_server(ctx.sub("gamma"), ot, out, g, L)
        out = yield from P.trunc(ctx.sub("gtr"), ot, out, L, Fr, "msb")
    if beta is not None:  # 6. the server's beta: added to its share
        if ctx.is_client:
            raise ShapeError("beta is the server's plaintext weight")
        out = (out.reshape(rows, n) + F._beta(beta, n, Fr).view(np.uint64)[None, :]) & mk
    return out.reshape(shp)


def layernorm_client(ctx: Ctx, ot, x_c: np.ndarray, eps: float = 1e-12, beta=None, gamma=None) -> Proto[np.ndarray]:
    """LayerNorm over the last axis: (x - mean) / sqrt(var + eps) [SIRNN, §4.3; NIMBUS24, §5].

    Runs on: client. Private inputs: x_c (linear ring, scale 2^linear.frac). Public: shape, eps.
    gamma and beta are the server's plaintext weights: where the output only feeds a linear
    layer, fold gamma into it (W' = diag(gamma) W: exact over the reals); otherwise (BERT's
    residual path) the server passes ``gamma`` (array) and the client ``gamma=True`` (the
    structure is public): a one-sided product in the linear ring and a truncation. ``beta`` is
    added to the server's share. Pre-conditions: |x - mean| < 512, var + eps < 4^14, n <= 1024.
    Returns: shares of ``ideal_layernorm`` in the linear ring at scale 2^linear.frac.
    Cost: ``nonlinear_fn.layernorm_cost``. Each party learns nothing.
    """
    return (yield from layernorm(ctx, ot, x_c, eps, beta, gamma))


def layernorm_server(ctx: Ctx, ot, x_s: np.ndarray, eps: float = 1e-12, beta=None, gamma=None) -> Proto[np.ndarray]:
    """Server side of :func:`layernorm_client` (``beta``, ``gamma``: its plaintext LayerNorm
    weights, optional)."""
    return (yield from layernorm(ctx, ot, x_s, eps, beta, gamma))


def reciprocal_client(ctx: Ctx, ot, s_c: np.ndarray, J: int, trunc: str = "exact") -> Proto[np.ndarray]:
    """Reciprocal of a shared s in the non-linear ring (scale 2^f), 2^-1 <= s < 2^J.
    Runs on: client. Public: J, trunc. Returns shares of ``ideal_reciprocal_ring`` (faithful:
    each truncation may be 1 ulp low). Cost: ``reciprocal_cost``. Reference: [SIRNN, §4.2]."""
    params = ctx.params
    s_c = P._ring(s_c, params.nonlinear.bits, "s")
    rent = F.entry_for(F.RECIP_TABLE, "reciprocal", params)
    mode = "msb1" if F.is_faithful(trunc) else "msb"
    return (yield from reciprocal(ctx, ot, s_c.reshape(-1), rent, int(J), F.RECIP_ITERS, mode)).reshape(s_c.shape)


def reciprocal_server(ctx: Ctx, ot, s_s: np.ndarray, J: int, trunc: str = "exact") -> Proto[np.ndarray]:
    """Server side of :func:`reciprocal_client`."""
    return (yield from reciprocal_client(ctx, ot, s_s, J, trunc))


def rsqrt_client(ctx: Ctx, ot, v_c: np.ndarray) -> Proto[np.ndarray]:
    """1/sqrt(v) of a shared v in the linear ring at scale 2^f (f = nonlinear.frac),
    2^-f <= v < 4^14. Runs on: client. Returns shares of ``ideal_rsqrt_ring``.
    Cost: ``rsqrt_cost``. Reference: [SIRNN, §4.3]."""
    params = ctx.params
    if params.nonlinear.frac + 2 * F.LN_PMIN < 0:
        raise ShapeError(f"rsqrt needs a bert-base-like parameter set, not {params.name}")
    v_c = P._ring(v_c, params.linear.bits, "v")
    return (yield from rsqrt(ctx, ot, v_c.reshape(-1))).reshape(v_c.shape)


def rsqrt_server(ctx: Ctx, ot, v_s: np.ndarray) -> Proto[np.ndarray]:
    """Server side of :func:`rsqrt_client`."""
    return (yield from rsqrt_client(ctx, ot, v_s))
