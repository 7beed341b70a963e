"""Reference protocols of the non-linear *functions*: GELU, Softmax (exp, reciprocal), on top of
the primitives of ``nimbus.reference.nonlinear``. Exact semantics: ``nimbus.spec.nonlinear_fn``.

Conventions: inputs are shares in the linear ring (``params.linear``) at scale ``2^in_frac``;
the work happens in the ring of the approximation table's entry (``ring_bits``/``frac_bits``,
the paper's Z_2^32 with 13 fraction bits); outputs are shares in the linear ring at scale
``2^params.linear.frac``.
"""

from __future__ import annotations

import math

import numpy as np

from nimbus.spec import nonlinear_fn as F
from nimbus.spec.errors import ParameterError, ShapeError
from nimbus.spec.nonlinear import ring_mask
from nimbus.spec.proto import Ctx, Proto

from . import nonlinear as P

__all__ = ["to_small", "to_linear", "poly_eval", "pow2chain", "piecewise", "reciprocal", "gelu",
           "softmax", "tanh", "gelu_client", "gelu_server", "softmax_client", "softmax_server",
           "tanh_client", "tanh_server", "rsqrt", "rsqrt_core", "segment_lines", "downcast_pair", "scale_by_server", "apply_gamma", "layernorm", "layernorm_client",
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


def poly_eval(ctx: Ctx, ot, x: np.ndarray, coeffs, l: int, f: int, mode: str, kbits=None,
              extra=None) -> Proto[np.ndarray]:
    """Horner's rule exactly as ``approx.fxp``: acc = q_d; acc = trunc(acc * x) + q_k, the first
    product public-times-shared (local), the others secure products. ``kbits`` (from
    ``horner_product_bits``): product k in Z_2^kbits (shares reduced; exact as |acc x| <
    2^(kbits-2)), its truncation fused with the extension back to Z_2^l. ``extra``: millionaire
    groups run in the first truncation's batch; then returns ``(acc, their outputs)``.
    [NIMBUS24, §4.2; SIRNN]"""
    n, mk = x.size, ring_mask(l)
    c = [int(q) for q in coeffs]
    acc = (x * np.uint64(c[-1] % (1 << l))) & mk  # 1. q_d * x: local
    ex = None
    for k in range(len(c) - 2, -1, -1):
        if k < len(c) - 2:  # 2. acc * x: one secure product (in Z_2^kb when the bound allows)
            kb = kbits[len(c) - 3 - k] if kbits else l
            km = ring_mask(kb)
            acc = yield from P.mul(ctx.sub(f"mul{k}"), ot, acc & km, x & km, kb)
            t = yield from P.trunc_upcast(ctx.sub(f"tr{k}"), ot, acc, kb, f, l, mode)  # 3. exact floor
        elif extra is not None:  # 3. exact floor, with the caller's comparisons in its batch
            t, ex = yield from P.trunc(ctx.sub(f"tr{k}"), ot, acc, l, f, mode, extra=extra)
        else:
            t = yield from P.trunc(ctx.sub(f"tr{k}"), ot, acc, l, f, mode)  # 3. exact floor
        acc = (t + _const(ctx, c[k], n, l)) & mk
    return acc if extra is None else (acc, ex)


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
    """A table entry on shares: one batched DReLU for all breakpoints ([x >= lo_j]), run in the
    millionaire batch of the first polynomial piece's first truncation (``F.piecewise_merges``:
    the same rounds as that truncation), piece indicators by XOR (the tests are monotone),
    every piece's value, one batched mux. [NIMBUS24, §4.2; BumbleBee, §5]"""
    l, f = int(entry["ring_bits"]), int(entry["frac_bits"])
    mk, n = ring_mask(l), x.size
    pieces = entry["pieces"]
    bps = [int(p["lo"]) for p in pieces[1:]]
    # 1. s_j = [x >= bp_j] for every breakpoint: one DReLU group (run below)
    d = np.concatenate([(x - _const(ctx, b, n, l)) & mk for b in bps]) if bps else np.zeros(0, np.uint64)
    merge = F.piecewise_merge_piece(entry, domain_hi, faithful) if bps else None
    carry = None
    vals = {}
    for j, pc in enumerate(pieces):  # 2. the values of the non-zero pieces
        kind = pc["kind"]
        if kind == "zero":
            continue
        if kind == "identity":
            v = x
        elif kind == "const":
            v = _const(ctx, int(pc["value"]), n, l)
        elif kind == "poly":
            mode = F.horner_trunc_mode(entry, j, domain_hi, faithful)
            if j == merge:  # the breakpoints' DReLU rides in this piece's first millionaire
                v, (carry,) = yield from poly_eval(ctx.sub(f"poly{j}"), ot, x, pc["coeffs"], l, f, mode,
                                                   F.horner_product_bits(entry, j, domain_hi),
                                                   extra=[P.drelu_group(ctx, d, l)])
            else:
                v = yield from poly_eval(ctx.sub(f"poly{j}"), ot, x, pc["coeffs"], l, f, mode,
                                         F.horner_product_bits(entry, j, domain_hi))
        elif kind == "pow2chain":
            v = yield from pow2chain(ctx.sub(f"chain{j}"), ot, x, int(pc["n"]), l, f, faithful)
        else:
            raise ShapeError(f"piece kind {kind!r} is not supported on shares")
        vals[j] = v
    if bps and merge is None:  # no truncation to ride in: a DReLU batch of its own
        (carry,) = yield from P.millionaire(ctx.sub("cmp"), ot, [P.drelu_group(ctx, d, l)])
    s = P.drelu_finish(ctx, d, l, carry).reshape(len(bps), n) if bps else None
    # 3. indicator of piece j: s_j ^ s_{j+1} (s_0 = 1, s_P = 0)
    one = np.full(n, 1 if ctx.is_client else 0, dtype=np.uint8)
    zero = np.zeros(n, dtype=np.uint8)
    bounds = [one] + ([s[j] for j in range(len(bps))] if bps else []) + [zero]
    sel = [bounds[j] ^ bounds[j + 1] for j in vals]
    val = list(vals.values())
    if not sel:
        return np.zeros(n, dtype=np.uint64)
    z = yield from P.mux(ctx.sub("sel"), ot, np.concatenate(sel), np.concatenate(val), l)  # 4.
    return z.reshape(len(sel), n).sum(axis=0, dtype=np.uint64) & mk


def reciprocal(ctx: Ctx, ot, S: np.ndarray, entry: dict, J: int, mode: str) -> Proto[np.ndarray]:
    """1/S for 2^-1 <= S < 2^J (scale 2^f, Z_2^l) by a thermometer and a piecewise-linear fit:
    ONE millionaire batch for [S >= T_i] over ``recip_thresholds(J, f)`` (in Z_2^(f+J+2), where
    |S - T_i| fits), S up-cast into Z_2^RC_BITS (one ACOT, known MSB), ONE mux batch in which the
    segment's one-hot bit selects its line A_s + B_s S (local: public constants), the sum, and
    one known-MSB truncation by RC_TR. 14 flights (64 with normalisation and 2 Newton steps).
    Semantics: ``nimbus.spec.nonlinear_fn.ideal_reciprocal``. [SIRNN, §4.2-4.3 (thermometer
    of comparisons); CrypTFlow2 (millionaire, mux)]"""
    l, f = int(entry["ring_bits"]), int(entry["frac_bits"])
    if not 1 <= J <= l - f - 3:  # the up-cast's known MSB needs S < 2^(l-2)
        raise ParameterError(f"reciprocal: J = {J} outside [1, {l - f - 3}] for Z_2^{l} with {f} fraction bits")
    n = S.size
    T = F.recip_thresholds(J, f)
    consts = F.recip_segments(J, f)
    cb = f + J + 2  # |S - T| < 2^(f+J+1)
    cmk = ring_mask(cb)
    # 1. thermometer t_i = [S >= T_i] = 1 ^ msb(S - T_i) in Z_2^cb (S's shares reduced: S < 2^(f+J))
    Sc = S & cmk
    d = np.concatenate([(Sc - _const(ctx, t, n, cb)) & cmk for t in T])
    (carry,) = yield from P.millionaire(ctx.sub("cmp"), ot, [P.drelu_group(ctx, d, cb)], F.RC_RADIX)
    t = P.drelu_finish(ctx, d, cb, carry).reshape(len(T), n)
    # 2. S into Z_2^RC_BITS (0 <= S < 2^(l-2): the known-MSB extension)
    RB = F.RC_BITS
    S2 = yield from P.trunc_upcast(ctx.sub("up"), ot, S, l, 0, RB, "msb")
    # 3. one-hot of the segment (s = #thresholds <= S), each selecting A_s + B_s S
    xs = [(_const(ctx, A, n, RB) + np.uint64(B % (1 << RB)) * S2) & ring_mask(RB) for A, B in consts]
    R = yield from segment_lines(ctx.sub("sel"), ot, t, xs, RB)
    # 4. r = floor(R / 2^RC_TR) (0 <= R < 2^(RC_BITS-3): known MSB), back in Z_2^l (r < 2^(f+2))
    r = yield from P.trunc(ctx.sub("rtr"), ot, R, RB, F.RC_TR, mode, F.RC_TR_RADIX)
    return r & ring_mask(l)


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
    rl, rf = int(rent["ring_bits"]), int(rent["frac_bits"])
    if (l, f) != (rl, rf):  # 5b. into the reciprocal's ring (BumbleBee's exp: Z_2^64 at 2^-18)
        e = yield from P.downcast_trunc(ctx.sub("e2r"), ot, e, l, f - rf, rl, "exact")
    mk = ring_mask(rl)
    e2 = e.reshape(rows.shape)
    s = e2.sum(axis=1, dtype=np.uint64) & mk  # 6. row sums (local)
    J = F.recip_range(shp[-1], ent)
    r = yield from reciprocal(ctx.sub("recip"), ot, s, rent, J, "msb1" if faithful else "msb")  # 7. one per row
    kb = F.softmax_product_bits(params, shp[-1], table)  # |e r| < 2^(kb-2): Z_2^kb suffices
    km = ring_mask(kb)
    # 8. broadcast product e * (1/s): one vector ACOT per row and bit of r
    pr = (yield from P.mul_rows(ctx.sub("bmul"), ot, e2 & km, r & km, kb)).reshape(-1)
    # 9. fused truncation + up-cast: floor(e r / 2^(2f - frac)) straight into the linear ring
    out = yield from P.trunc_upcast(ctx.sub("out"), ot, pr, kb, 2 * rf - params.linear.frac,
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
    ``table="bumblebee"``: BumbleBee's exp (1 + x/2^8)^(2^8) in Z_2^64 (the baseline), down-cast
    exactly into the reciprocal's ring. The broadcast product runs in Z_2^29
    (``softmax_product_bits``), the Horner products in ``horner_product_bits`` (same outputs).
    Pre-conditions: |x| < 2^(l-3-f); row length n < 2^(J-1) (see ``recip_range``).
    Returns: shares of ``ideal_softmax`` in the linear ring at scale 2^linear.frac.
    Cost: ``nonlinear_fn.softmax_cost``. Each party learns nothing.
    """
    return (yield from softmax(ctx, ot, x_c, in_frac, mask, table, trunc))


def softmax_server(ctx: Ctx, ot, x_s: np.ndarray, in_frac: int | None = None, mask=None,
                   table: str = F.DEFAULT_TABLE, trunc: str = F.SOFTMAX_TRUNC) -> Proto[np.ndarray]:
    """Server side of :func:`softmax_client` (``mask`` must be None: the server has none)."""
    return (yield from softmax(ctx, ot, x_s, in_frac, mask, table, trunc))


def segment_lines(ctx: Ctx, ot, t: np.ndarray, xs, bits: int) -> Proto[np.ndarray]:
    """sum_s [segment = s] xs[s] for a thermometer t (T, n) of boolean shares [v >= T_i]
    (increasing thresholds): the one-hot o_s = t_(s-1) ^ t_s (t_(-1) = 1, t_T = 0) selects the
    segment's value by ONE mux batch in Z_2^bits, then a local sum (rsqrt's and the reciprocal's
    per-segment lines). [SIRNN, §4.3; CrypTFlow2, §4.3]"""
    n = t.shape[1]
    one = np.full(n, 1 if ctx.is_client else 0, dtype=np.uint8)
    th = [one] + [t[i] for i in range(t.shape[0])] + [np.zeros(n, np.uint8)]
    oh = np.concatenate([th[s] ^ th[s + 1] for s in range(t.shape[0] + 1)])
    R = yield from P.mux(ctx, ot, oh, np.concatenate(xs), bits)
    return R.reshape(len(xs), n).sum(axis=0, dtype=np.uint64) & ring_mask(bits)


def rsqrt_core(ctx: Ctx, ot, V: np.ndarray, G: float) -> Proto[np.ndarray]:
    """r = ``nonlinear_fn._rsq_core(V, G, f)`` on shares of V in the linear ring (1 <= V < 2^41):
    ONE millionaire batch for the thermometer [V >= T_i] (all thresholds at once, in Z_2^43,
    radix 3) and the carry of V's known-MSB truncation by 10; the truncation's ACOTs; one mux
    batch where segment s's one-hot bit selects A_s + B_s floor(V / 2^sh_s) (local: public
    constants); the sum; one exact truncation by TR. 18 flights. [SIRNN, §4.3 (thermometer);
    CrypTFlow2 (millionaire, mux)]"""
    L = ctx.params.linear.bits
    f = ctx.params.nonlinear.frac
    mk, n = ring_mask(L), V.size
    T = F.rsq_thresholds()
    consts = F.rsq_segments(float(G), f)
    cb = F.RSQ_CMP_BITS
    cmk = ring_mask(cb)
    # 1. thermometer inputs V - T_i in Z_2^cb (shares of V reduced: V < 2^41), DReLU = 1 ^ msb
    Vs = V & cmk
    d = np.concatenate([(Vs - _const(ctx, t, n, cb)) & cmk for t in T])
    # 2. known-MSB truncation of V by SH (as ``P.trunc(.., "msb")``): the carry of the low bits
    sh = F.RSQ_TIER_SH
    off = 1 << (L - 2)
    u = (V + np.uint64(off)) & mk if ctx.is_client else V
    lowf = ring_mask(sh)
    vl = u & lowf if ctx.is_client else lowf - (u & lowf)
    cth, carry = yield from P.millionaire(ctx.sub("cmp"), ot, [P.drelu_group(ctx, d, cb), (vl, sh)], F.RSQ_RADIX)
    t = P.drelu_finish(ctx, d, cb, cth).reshape(len(T), n)
    mb = ((u >> np.uint64(L - 1)) & np.uint64(1)).astype(np.uint8)  # w = msb_c OR msb_s
    w, c = yield from P.b2a(ctx.sub("tr"), ot, [(mb, sh, "or"), (carry, L)])
    V1 = ((u >> np.uint64(sh)) + c - (w << np.uint64(L - sh))) & mk
    if ctx.is_client:
        V1 = (V1 - np.uint64(off >> sh)) & mk
    # 3. one-hot of the segment (s = #thresholds <= V), each selecting A_s + B_s v'_s
    xs = [(_const(ctx, A, n, L) + np.uint64(B % (1 << L)) * (V1 if s_ else V)) & mk for A, B, s_ in consts]
    R = yield from segment_lines(ctx.sub("sel"), ot, t, xs, L)
    # 4. r = floor(R / 2^TR) (R < 2^61: known MSB, exact)
    return (yield from P.trunc(ctx.sub("rtr"), ot, R, L, F.RSQ_TR, "msb", F.RSQ_TR_RADIX))


def rsqrt(ctx: Ctx, ot, v: np.ndarray) -> Proto[np.ndarray]:
    """1/sqrt(v) in the linear ring at scale 2^f (``ideal_rsqrt``): :func:`rsqrt_core` with
    V = v, G = 2^(f/2). 18 flights (was 82: normalisation, quadratic, 2 Newton steps)."""
    f = ctx.params.nonlinear.frac
    return (yield from rsqrt_core(ctx, ot, v, math.sqrt(2.0) ** f))


def scale_by_server(ctx: Ctx, ot, x: np.ndarray, g, bits: int, digits: int) -> Proto[np.ndarray]:
    """Shares of x * g mod 2^bits for the server's plaintext integers g (same shape as x),
    -2^(digits-1) <= g < 2^(digits-1): digit i of g (two's complement; the top digit weighs
    -2^(digits-1)) chooses the client's share at width bits - i, so ``digits`` COTs per value
    instead of ``bits`` (one-sided Gilboa, the server as receiver); the server multiplies its own
    share locally. Each party learns nothing (OT choice corrections and OT-masked shares).
    [SIRNN, §3.1; Gilboa 1999]"""
    K = ctx.impl.nonlinear
    mk = ring_mask(bits)
    if not 1 <= digits <= bits:
        raise ShapeError(f"scale_by_server needs 1 <= digits <= bits, got {digits}, {bits}")
    x = np.ascontiguousarray(x, dtype=np.uint64).reshape(-1) & mk
    if ctx.is_client:  # 1. my share (negated for the sign digit) as the correlation of every digit
        send = [(x if i < digits - 1 else (np.uint64(0) - x)) & ring_mask(bits - i) for i in range(digits)]
        ys, _ = yield from P.acot(ctx, ot, send=[(c, bits - i) for i, c in enumerate(send)])
        z = np.zeros(x.size, dtype=np.uint64)
    else:  # 1. the digits of g choose
        g = np.asarray(g, dtype=np.int64).reshape(-1)
        if g.size != x.size:
            raise ShapeError("g must have one entry per shared value")
        lim = 1 << (digits - 1)
        if g.size and (g.max() >= lim or g.min() < -lim):
            raise ShapeError(f"g out of the {digits}-digit range")
        gu = g.view(np.uint64)
        gb = K.bits_lsb_first(gu & ring_mask(digits), digits)
        _, ys = yield from P.acot(ctx, ot, recv=[(gb[:, i], bits - i) for i in range(digits)])
        z = (x * gu) & mk  # 2. g x_s, locally
    for i in range(digits):  # 3. + sum_i 2^i (digit i's ACOT outputs)
        z = (z + (ys[i] << np.uint64(i))) & mk
    return z


def apply_gamma(ctx: Ctx, ot, x: np.ndarray, g) -> Proto[np.ndarray]:
    """floor(x * g / 2^F) in the linear ring for shared x with |x| < 2^(F + LN_OUT_BITS) and the
    server's encoded gamma g (``encode_gamma``; the client passes None): the product in
    Z_2^gamma_ring_bits (shares reduced locally; exact there), its truncation fused with the
    up-cast. Cost: ``nonlinear_fn.gamma_flow``."""
    params = ctx.params
    L, Fr = params.linear.bits, params.linear.frac
    k, D = F.gamma_ring_bits(params), F.gamma_digits(params)
    pr = yield from scale_by_server(ctx.sub("gamma"), ot, x, g, k, D)
    if k < L:
        return (yield from P.trunc_upcast(ctx.sub("gtr"), ot, pr, k, Fr, L, "msb"))
    return (yield from P.trunc(ctx.sub("gtr"), ot, pr, L, Fr, "msb"))


def downcast_pair(ctx: Ctx, ot, X: np.ndarray, bits: int, ks, out_bits: int, m: int = 4) -> Proto[list]:
    """floor(lift(X) / 2^k) mod 2^out_bits for each k in ks, the carries of all of them by ONE
    millionaire batch (+ one AND batch) and ONE ACOT batch. The smallest k0 gets its carry
    c_k0 from a millionaire on its k0 low bits; a larger k (where 2 (k - k0) < k,
    ``F.ln_prefix``) from the bits [k0, k) only: c_k = [A > B] ^ ([A == B] & c_k0), A and B the
    parties' blocks of those bits (as in the millionaire's tree), [A == B] = 1 ^ [A > B] ^ [B > A]
    from two comparisons of w = k - k0 bits in the same batch. Where bits - k >= out_bits the
    wrap vanishes mod 2^out_bits (as ``P.downcast_trunc(.., "exact")``); otherwise the
    pre-condition |X| < 2^(bits-2) gives it from the shares' top bits (known MSB, as
    ``P.trunc(.., "msb")``), B2A'd in the same ACOT batch at out_bits - (bits - k) bits.
    Cost: ``ln_downcast_flow``. [NIMBUS24, §4.3; Cheetah, §5; CrypTFlow2, §4.1]"""
    X = np.ascontiguousarray(X, dtype=np.uint64).reshape(-1)
    msb = any(bits - k < out_bits for k in ks)
    off = np.uint64(1 << (bits - 2 if msb else bits - 1))
    u = (X + off) & ring_mask(bits) if ctx.is_client else X  # 1. shift to a non-negative value
    for k in ks:
        if not 1 <= k < bits - 1:
            raise ParameterError(f"downcast_pair cannot truncate Z_2^{bits} by {k}")
    k0 = min(ks)
    pre = [k for k in ks if F.ln_prefix(k0, k)]  # carries derived from c_k0
    full = [k for k in ks if k not in pre]
    groups = []
    for k in full:  # 2. carry = [a > 2^k - 1 - b] on the k low bits
        lowk = ring_mask(k)
        groups.append((u & lowk if ctx.is_client else lowk - (u & lowk), k))
    for k in pre:  # [A > B] and [B > A] on the bits [k0, k)
        w = k - k0
        lw = ring_mask(w)
        blk = (u >> np.uint64(k0)) & lw
        a = blk if ctx.is_client else lw - blk
        groups += [(a, w), (lw - a, w)]
    res = yield from P.millionaire(ctx.sub("cmp"), ot, groups, m)
    cm = dict(zip(full, res[:len(full)]))
    if pre:  # 2b. c_k = gt ^ (eq & c_k0), eq = 1 ^ gt ^ lt: one AND batch
        gts, lts = res[len(full)::2], res[len(full) + 1::2]
        one = np.uint8(1 if ctx.is_client else 0)
        eqs = [g ^ t ^ one for g, t in zip(gts, lts)]
        z = yield from P.and_bits(ctx.sub("pre"), ot, np.concatenate(eqs), np.tile(cm[k0], len(pre)))
        n = u.size
        for i, k in enumerate(pre):
            cm[k] = gts[i] ^ z[i * n:(i + 1) * n]
    carries = [cm[k] for k in ks]
    wk = [k for k in ks if bits - k < out_bits]  # 3. their B2A, and the wraps (w = msb_c OR msb_s)
    mb = ((u >> np.uint64(bits - 1)) & np.uint64(1)).astype(np.uint8)
    ar = yield from P.b2a(ctx.sub("b2a"), ot, [(c, out_bits) for c in carries]
                          + [(mb, out_bits - bits + k, "or") for k in wk])
    cs, ws = ar[:len(ks)], ar[len(ks):]
    wmap = dict(zip(wk, ws))
    out = []
    for k, c in zip(ks, cs):  # 4. floor(u / 2^k) = (u_c >> k) + (u_s >> k) + c - w 2^(bits-k)
        z = (u >> np.uint64(k)) + c
        if k in wmap:
            z = z - (wmap[k] << np.uint64(bits - k))
        if ctx.is_client:
            z = z - (off >> np.uint64(k))
        out.append(z & ring_mask(out_bits))
    return out


def layernorm(ctx: Ctx, ot, X: np.ndarray, eps: float = 1e-12, beta=None, gamma=None,
              in_frac: int | None = None) -> Proto[np.ndarray]:
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
    E = F._ln_consts(params, n, eps)
    kv, kd = F.ln_shifts(params, n, in_frac)
    x = X.reshape(-1, n)
    rows = x.shape[0]
    # 1. u = n x - sum x = n (x - mean): exact and local, no truncation for the mean
    u = ((x * np.uint64(n) - x.sum(axis=1, dtype=np.uint64)[:, None]) & mk).reshape(-1)
    # 2. dv = floor(u / 2^kv), dd = floor(u / 2^kd) in Z_2^l: one carry batch, one ACOT batch
    dv, dd = yield from downcast_pair(ctx.sub("dc"), ot, u, L, (kv, kd), l, F.LN_DC_RADIX)
    # 3. V = sum dv^2 + E (= C (var + eps)): squares in Z_2^l, extended, summed
    q = yield from P.square(ctx.sub("sq"), ot, dv, l)
    q = yield from P.trunc_upcast(ctx.sub("qup"), ot, q, l, 0, L, "msb")
    V = (q.reshape(rows, n).sum(axis=1, dtype=np.uint64) + _const(ctx, E, rows, L)) & mk
    r = yield from rsqrt_core(ctx.sub("rsqrt"), ot, V, math.sqrt(n) * 2.0 ** F.LN_FV)  # 4. per row
    # 5. out = floor(dd * r / 2^(FD+f-F)), the truncation fused with the up-cast
    pr = (yield from P.mul_rows(ctx.sub("mul"), ot, dd.reshape(rows, n), r & smk, l)).reshape(-1)
    out = yield from P.trunc_upcast(ctx.sub("out"), ot, pr, l, F.LN_FD + f - Fr, L, "msb")
    if gamma is not None:  # 6. the server's gamma (the client passes gamma=True: public structure)
        g = None
        if not ctx.is_client:
            g = np.tile(F.encode_gamma(gamma, n, params), rows)
        elif gamma is not True:
            raise ShapeError("the client passes gamma=True (gamma is the server's plaintext)")
        out = yield from apply_gamma(ctx, ot, out, g)
    if beta is not None:  # 7. the server's beta: added to its share
        if ctx.is_client:
            raise ShapeError("beta is the server's plaintext weight")
        out = (out.reshape(rows, n) + F._beta(beta, n, Fr).view(np.uint64)[None, :]) & mk
    return out.reshape(shp)


def layernorm_client(ctx: Ctx, ot, x_c: np.ndarray, eps: float = 1e-12, beta=None, gamma=None,
                     in_frac: int | None = None) -> Proto[np.ndarray]:
    """LayerNorm over the last axis: (x - mean) / sqrt(var + eps) [SIRNN, §4.3; NIMBUS24, §5].

    Runs on: client. Private inputs: x_c (linear ring, scale 2^in_frac, F <= in_frac <= 2F;
    default F = linear.frac; 2F straight from a linear layer: its truncation is fused into
    LayerNorm's down-casts). Public: shape, eps, in_frac.
    gamma and beta are the server's plaintext weights: where the output only feeds a linear
    layer, fold gamma into it (W' = diag(gamma) W: exact over the reals); otherwise (BERT's
    residual path) the server passes ``gamma`` (array) and the client ``gamma=True`` (the
    structure is public): a one-sided product in the linear ring and a truncation. ``beta`` is
    added to the server's share. Pre-conditions: |x - mean| < 512, n <= 1024.
    Returns: shares of ``ideal_layernorm`` in the linear ring at scale 2^linear.frac (bit for bit).
    Cost: ``nonlinear_fn.layernorm_cost``: 32 flights at 128x768 (36 with a truncation for the
    mean: u = n x - sum x needs none; from 2^2F also 32, where a linear layer's truncation of 7
    more flights is absorbed). Each party learns nothing.
    """
    return (yield from layernorm(ctx, ot, x_c, eps, beta, gamma, in_frac))


def layernorm_server(ctx: Ctx, ot, x_s: np.ndarray, eps: float = 1e-12, beta=None, gamma=None,
                     in_frac: int | None = None) -> Proto[np.ndarray]:
    """Server side of :func:`layernorm_client` (``beta``, ``gamma``: its plaintext LayerNorm
    weights, optional)."""
    return (yield from layernorm(ctx, ot, x_s, eps, beta, gamma, in_frac))


def reciprocal_client(ctx: Ctx, ot, s_c: np.ndarray, J: int, trunc: str = "exact") -> Proto[np.ndarray]:
    """Reciprocal of a shared s in the non-linear ring (scale 2^f), 2^-1 <= s < 2^J.
    Runs on: client. Public: J, trunc. Returns shares of ``ideal_reciprocal_ring`` (faithful:
    each truncation may be 1 ulp low). Cost: ``reciprocal_cost``. Reference: [SIRNN, §4.2]."""
    params = ctx.params
    s_c = P._ring(s_c, params.nonlinear.bits, "s")
    rent = F.entry_for(F.RECIP_TABLE, "reciprocal", params)
    mode = "msb1" if F.is_faithful(trunc) else "msb"
    return (yield from reciprocal(ctx, ot, s_c.reshape(-1), rent, int(J), mode)).reshape(s_c.shape)


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
