"""Non-linear functions (GELU, tanh, Softmax): reconstruction = ideal functionality bit for bit
(``trunc="exact"``) or within the declared error (``faithful``), the ideal = ``approx.fxp``'s
semantics, declared cost = measured, reference = optimized (outputs and transcript digests)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from nimbus.approx import fxp
from nimbus.conformance.assertions import assert_same
from nimbus.registry import implementation
from nimbus.runtime import run_local
from nimbus.spec import CLIENT, PRG, SERVER, Ctx, get_preset
from nimbus.spec import nonlinear as S
from nimbus.spec import nonlinear_fn as F
from nimbus.spec.errors import ShapeError

BERT = get_preset("bert-base")


def _few(k: int):
    """k / 40 of the profile's examples (each example is a full two-party run)."""
    return settings(max_examples=max(3, settings.default.max_examples * k // 40))
L, FL = BERT.linear.bits, BERT.linear.frac


def run(impl, fn, c_args, s_args, seed="fn", ckw=None, **kw):
    im = implementation(impl)
    mod = im.nonlinear
    oc, osv = S.IdealCotSession.pair(seed.encode())
    c = Ctx(CLIENT, BERT, PRG.for_tests(f"{seed}/c"), im).sub(fn)
    s = Ctx(SERVER, BERT, PRG.for_tests(f"{seed}/s"), im).sub(fn)
    return run_local(getattr(mod, f"{fn}_client")(c, oc, *c_args, **kw, **(ckw or {})),
                     getattr(mod, f"{fn}_server")(s, osv, *s_args, **kw))


def shares(x_int: np.ndarray, seed: int = 0):
    X = np.asarray(x_int, dtype=np.int64).view(np.uint64)
    r = np.random.default_rng(seed).integers(0, 1 << 63, X.shape, dtype=np.uint64) * np.uint64(2) + np.uint64(seed & 1)
    return X, r, X - r


def breakpoints(table: str, function: str) -> list[int]:
    e = F.entry_for(table, function, BERT)
    return [int(p["lo"]) for p in e["pieces"][1:]]


def inputs(table: str, function: str, in_frac: int):
    """Signed inputs at scale 2^in_frac: 0, the extremes of the domain, every breakpoint +-1 ulp."""
    k = in_frac - 13
    lim = (1 << 30) - 1  # |x| < 2^(l-2) after the down-cast
    pts = [0, 1, -1, lim, -lim]
    for b in breakpoints(table, function):
        pts += [b - 1, b, b + 1]
    edge = st.sampled_from(pts).map(lambda v: v << k) | st.integers(-(lim << k), lim << k)
    return hnp.arrays(np.int64, st.integers(1, 8), elements=edge | st.integers(-(8 << in_frac), 8 << in_frac))


@pytest.mark.parametrize("fn,table", [("gelu", "nimbus-prototype"), ("gelu", "ours-minilm-global"),
                                      ("tanh", "ours-minilm-global")])
@pytest.mark.parametrize("in_frac", [FL, 2 * FL])
@_few(12)
@given(data=st.data())
def test_unary_bit_exact(impl, fn, table, in_frac, data):
    x = data.draw(inputs(table, fn, in_frac))
    X, xc, xs = shares(x, data.draw(st.integers(0, 7)))
    r = run(impl, fn, (xc,), (xs,), in_frac=in_frac, table=table)
    want = F.ideal_unary(X, BERT, in_frac, table, fn)
    assert_same(r.client + r.server, want, {"x": x, "in_frac": in_frac, "table": table})
    assert r.transcript.cost() == F.unary_cost(BERT, x.shape, in_frac, table, fn)


@pytest.mark.parametrize("fn,table", [("gelu", "nimbus-prototype"), ("tanh", "ours-minilm-global")])
@_few(8)
@given(data=st.data())
def test_unary_faithful_within_declared_error(impl, fn, table, data):
    x = data.draw(inputs(table, fn, FL))
    X, xc, xs = shares(x, 1)
    r = run(impl, fn, (xc,), (xs,), table=table, trunc="faithful")
    want = F.ideal_unary(X, BERT, FL, table, fn).view(np.int64)
    dev = np.abs((r.client + r.server).view(np.int64) - want).max() / 2.0**FL
    assert dev <= F.unary_faithful_bound(BERT, table, fn), (x, dev)
    assert r.transcript.cost() == F.unary_cost(BERT, x.shape, FL, table, fn, "faithful")


def test_ideal_gelu_is_approx_fxp():
    """The ideal functionality is approx.fxp.evaluate_fxp on the down-cast input, scaled."""
    e = F.entry_for("nimbus-prototype", "gelu", BERT)
    xs = list(range(-20000, 20000, 37)) + [b + d for b in breakpoints("nimbus-prototype", "gelu") for d in (-1, 0, 1)]
    X = (np.array(xs, dtype=np.int64) << 5).view(np.uint64)
    got = F.ideal_gelu(X, BERT).view(np.int64)
    want = np.array([fxp.evaluate_fxp(e, v) << 5 for v in xs], dtype=np.int64)
    assert np.array_equal(got, want)


@pytest.mark.slow
def test_gelu_bumblebee_baseline(impl):
    x = np.array([0, -1, 1 << 18, -(5 << 18), -(5 << 18) - 1, 3 << 18, (3 << 18) - 1, -516423, 12345], np.int64)
    X, xc, xs = shares(x)
    r = run(impl, "gelu", (xc,), (xs,), table="bumblebee")
    assert_same(r.client + r.server, F.ideal_gelu(X, BERT, table="bumblebee"))
    assert r.transcript.cost() == F.gelu_cost(BERT, x.shape, table="bumblebee")


def softmax_inputs():
    return st.tuples(st.integers(1, 3), st.integers(1, 12)).flatmap(
        lambda s: hnp.arrays(np.int64, s, elements=st.integers(-(20 << FL), 20 << FL)
                             | st.sampled_from([0, 1 << FL, -(20 << FL)])))


@_few(15)
@given(x=softmax_inputs(), equal=st.booleans(), masked=st.booleans())
def test_softmax_exact(impl, x, equal, masked):
    if equal:
        x[:] = x.reshape(-1)[0]  # all-equal rows
    mask = None
    if masked:  # the client's private additive mask: the last key of every row is padding
        mask = np.zeros(x.shape[-1])
        mask[-1] = -1e4 if x.shape[-1] > 1 else 0.0
    X, xc, xs = shares(x, 3)
    r = run(impl, "softmax", (xc,), (xs,), ckw={"mask": mask}, trunc="exact")
    assert_same(r.client + r.server, F.ideal_softmax(X, BERT, mask=mask), {"x": x, "mask": mask})
    assert r.transcript.cost() == F.softmax_cost(BERT, x.shape, trunc="exact")


@_few(10)
@given(x=softmax_inputs())
def test_softmax_faithful_within_declared_error(impl, x):
    X, xc, xs = shares(x, 5)
    r = run(impl, "softmax", (xc,), (xs,), trunc="faithful")
    got = (r.client + r.server).view(np.int64)
    want = F.ideal_softmax(X, BERT).view(np.int64)
    bound = F.softmax_faithful_bound(x.shape[-1])
    assert np.abs(got - want).max() <= bound * (1 << FL), (x, np.abs(got - want).max())
    assert r.transcript.cost() == F.softmax_cost(BERT, x.shape, trunc="faithful")


def test_softmax_mask_only_for_the_client():
    X, xc, xs = shares(np.zeros((1, 4), np.int64))
    with pytest.raises(ShapeError):
        run("reference", "softmax", (xc,), (xs,), mask=np.zeros(4))


@pytest.mark.parametrize("fn,args", [("gelu", {}), ("tanh", {}), ("softmax", {"trunc": "faithful"})])
def test_reference_and_optimized_identical(fn, args):
    x = ((np.arange(24, dtype=np.int64) - 12) * 40503) .reshape(2, 12)
    X, xc, xs = shares(x, 1)
    a = run("reference", fn, (xc,), (xs,), **args)
    b = run("optimized", fn, (xc,), (xs,), **args)
    assert_same((a.client, a.server), (b.client, b.server), {"fn": fn})
    assert a.transcript.digest() == b.transcript.digest()


def test_round_budgets():
    """Round trips at the benchmark shapes (declared; the benchmark measures the same)."""
    assert F.gelu_cost(BERT, (128, 3072)).round_trips <= 20
    assert F.softmax_cost(BERT, (12, 128, 128)).round_trips <= 60
    assert F.layernorm_cost(BERT, (128, 768)).round_trips <= 20


@_few(8)
@given(x=st.tuples(st.integers(1, 3), st.integers(2, 24)).flatmap(
    lambda s: hnp.arrays(np.int64, s, elements=st.integers(-(60 << FL), 60 << FL) | st.sampled_from([0, 1, -1]))),
    const=st.booleans(), low=st.integers(0, (1 << FL) - 1), fused=st.booleans())
def test_layernorm_exact(impl, x, const, low, fused):
    """Bit for bit the ideal at the input scale 2^F, and at 2^2F (a linear layer's output: its
    truncation fused into the down-casts); declared = measured."""
    if const:
        x[:] = x.reshape(-1)[0]  # var = 0: eps keeps rsqrt defined
    in_frac = 2 * FL if fused else None
    if fused:  # the same values at 2^2F, with arbitrary low bits
        x = x * (1 << FL) + (np.arange(x.size).reshape(x.shape) * low) % (1 << FL)
    X, xc, xs = shares(x, 2)
    r = run(impl, "layernorm", (xc,), (xs,), in_frac=in_frac)
    assert_same(r.client + r.server, F.ideal_layernorm(X, BERT, in_frac=in_frac), {"x": x})
    assert r.transcript.cost() == F.layernorm_cost(BERT, x.shape, in_frac=in_frac)


def test_layernorm_accuracy_and_beta():
    rng = np.random.default_rng(4)
    xr = rng.normal(0.5, 3.0, (2, 64))
    xr[0, :3] = 40.0  # outlier features
    X, xc, xs = shares(np.floor(xr * (1 << FL)).astype(np.int64), 4)
    beta = np.linspace(-1, 1, 64)
    r = run("optimized", "layernorm", (xc,), (xs,), ckw=None, beta=None)
    ref = (xr - xr.mean(-1, keepdims=True)) / np.sqrt(xr.var(-1, keepdims=True) + 1e-12)
    assert np.abs((r.client + r.server).view(np.int64) / 2.0**FL - ref).max() < 1e-2  # r at 2^-13: |z| 2^-13 / r
    a = run("reference", "layernorm", (xc,), (xs,))
    assert a.transcript.digest() == r.transcript.digest()
    im = implementation("optimized")
    oc, osv = S.IdealCotSession.pair(b"beta")
    c = Ctx(CLIENT, BERT, PRG.for_tests("b/c"), im).sub("ln")
    s = Ctx(SERVER, BERT, PRG.for_tests("b/s"), im).sub("ln")
    rb = run_local(im.nonlinear.layernorm_client(c, oc, xc), im.nonlinear.layernorm_server(s, osv, xs, beta=beta))
    assert_same(rb.client + rb.server, F.ideal_layernorm(X, BERT, beta=beta))


def test_layernorm_gamma_by_protocol(impl):
    """The server's gamma multiplied with a protocol (the client only knows that there is one)."""
    rng = np.random.default_rng(6)
    xr = rng.normal(0.0, 2.0, (2, 32))
    X, xc, xs = shares(np.floor(xr * (1 << FL)).astype(np.int64), 6)
    gamma, beta = np.linspace(0.5, 2.0, 32), np.linspace(-1, 1, 32)
    im = implementation(impl)
    oc, osv = S.IdealCotSession.pair(b"gamma")
    c = Ctx(CLIENT, BERT, PRG.for_tests("g/c"), im).sub("ln")
    s = Ctx(SERVER, BERT, PRG.for_tests("g/s"), im).sub("ln")
    r = run_local(im.nonlinear.layernorm_client(c, oc, xc, gamma=True),
                  im.nonlinear.layernorm_server(s, osv, xs, beta=beta, gamma=gamma))
    assert_same(r.client + r.server, F.ideal_layernorm(X, BERT, beta=beta, gamma=gamma))
    assert r.transcript.cost() == F.layernorm_cost(BERT, X.shape, gamma=True)
    ref = (xr - xr.mean(-1, keepdims=True)) / np.sqrt(xr.var(-1, keepdims=True)) * gamma + beta
    assert np.abs((r.client + r.server).view(np.int64) / 2.0**FL - ref).max() < 1e-2


@_few(8)
@given(data=st.data(), bits=st.integers(8, 64))
def test_scale_by_server_digits(data, bits):
    """x * g mod 2^bits for the server's g by its two's complement digits (the sign digit and the
    range ends included), reference == optimized bit for bit, declared bytes = sent bytes."""
    from nimbus.reference._nl_functions import scale_by_server

    D = data.draw(st.integers(1, bits))
    lo, hi = -(1 << (D - 1)), (1 << (D - 1)) - 1
    n = data.draw(st.integers(1, 9))
    g = np.array(data.draw(st.lists(st.integers(lo, hi) | st.sampled_from([lo, hi, 0, -1 if D > 1 else 0]),
                                    min_size=n, max_size=n)), dtype=np.int64)
    x = np.array(data.draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=n, max_size=n)), dtype=np.uint64)
    mk = (1 << bits) - 1
    xc = np.array(data.draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=n, max_size=n)), dtype=np.uint64)
    xs = (x - xc) & np.uint64(mk)
    outs = []
    for impl in ("reference", "optimized"):
        im = implementation(impl)
        oc, osv = S.IdealCotSession.pair(b"sbs")
        c = Ctx(CLIENT, BERT, PRG.for_tests("sbs/c"), im).sub("g")
        s = Ctx(SERVER, BERT, PRG.for_tests("sbs/s"), im).sub("g")
        r = run_local(scale_by_server(c, oc, xc, None, bits, D), scale_by_server(s, osv, xs, g, bits, D))
        want = [(int(a) * int(b)) & mk for a, b in zip(x, g)]
        assert ((r.client + r.server) & np.uint64(mk)).tolist() == want
        assert r.transcript.cost() == S._f_acot([(n, bits - i) for i in range(D)], []).cost()
        outs.append((r.client.tolist(), r.server.tolist()))
    assert outs[0] == outs[1]


def test_layernorm_gamma_at_its_bounds(impl):
    """gamma at the ends of its range (|gamma| < 32) on rows with an outlier (|x_hat| near
    sqrt(n - 1)): bit for bit the ideal; a larger gamma is refused by the server and the import."""
    n = 64
    xr = np.zeros((2, n))
    xr[0, 0] = 50.0  # |x_hat| = sqrt(63) at the outlier
    xr[1] = np.linspace(-3, 3, n)
    X, xc, xs = shares(np.floor(xr * (1 << FL)).astype(np.int64), 8)
    gamma = np.where(np.arange(n) % 2, 31.999, -31.999)
    im = implementation(impl)
    oc, osv = S.IdealCotSession.pair(b"gb")
    c = Ctx(CLIENT, BERT, PRG.for_tests("gb/c"), im).sub("ln")
    s = Ctx(SERVER, BERT, PRG.for_tests("gb/s"), im).sub("ln")
    r = run_local(im.nonlinear.layernorm_client(c, oc, xc, gamma=True),
                  im.nonlinear.layernorm_server(s, osv, xs, gamma=gamma))
    assert_same(r.client + r.server, F.ideal_layernorm(X, BERT, gamma=gamma))
    ref = (xr - xr.mean(-1, keepdims=True)) / np.sqrt(xr.var(-1, keepdims=True)) * gamma
    assert np.abs((r.client + r.server).view(np.int64) / 2.0**FL - ref).max() < 0.2  # 32 x the gamma-free bound
    with pytest.raises(ShapeError, match="gamma"):
        F.ideal_layernorm(X, BERT, gamma=gamma * 1.01)
    with pytest.raises(ShapeError, match="gamma"):
        F.encode_gamma(np.full(n, -32.0), n, BERT)


@_few(8)
@given(s=hnp.arrays(np.int64, st.integers(1, 6), elements=st.integers(1 << 12, (1 << 21) - 1)
                    | st.sampled_from([1 << 12, 1 << 13, (1 << 20), (1 << 21) - 1])))
def test_reciprocal_exact(impl, s):
    l = BERT.nonlinear.bits
    x = s.view(np.uint64)
    xc = (np.arange(s.size, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) & S.ring_mask(l)
    r = run(impl, "reciprocal", (xc, 8), ((x - xc) & S.ring_mask(l), 8))
    got = (r.client + r.server) & S.ring_mask(l)
    assert_same(got, F.ideal_reciprocal_ring(x, BERT, 8), {"s": s})
    assert r.transcript.cost() == F.reciprocal_cost(BERT, s.shape, 8)
    assert np.abs(got.astype(np.float64) / 8192 - 8192 / s).max() <= F.RC_ERR_ULP / 8192


@pytest.mark.parametrize("J", [1, 8, 11])
def test_reciprocal_error_certified_exhaustively(J):
    """Every S of the domain [2^(f-1), 2^(f+J)): |ideal_reciprocal - 2^(2f)/S| <= RC_ERR_ULP ulp
    (the fit's RC_FIT_ULP plus rounding); thresholds increase and end inside the domain."""
    f = BERT.nonlinear.frac
    rent = F.entry_for(F.RECIP_TABLE, "reciprocal", BERT)
    T = np.array(F.recip_thresholds(J, f), dtype=np.int64)
    assert np.all(np.diff(T) > 0) and T[0] > 1 << (f - 1) and T[-1] < 1 << (f + J)
    assert all(1 << (f + j) in set(T.tolist()) for j in range(J))  # octave boundaries
    S = np.arange(1 << (f - 1), 1 << (f + J), dtype=np.int64)
    err = np.abs(F.ideal_reciprocal(S, rent, J) - 2.0 ** (2 * f) / S)
    assert err.max() <= F.RC_ERR_ULP


@_few(8)
@given(v=hnp.arrays(np.int64, st.integers(1, 6), elements=st.integers(1, (1 << 41) - 1)
                    | st.sampled_from([1, 2, 1 << 13, 1 << 40, (1 << 41) - 1])))
def test_rsqrt_exact(impl, v):
    X, xc, xs = shares(v, 3)
    r = run(impl, "rsqrt", (xc,), (xs,))
    got = r.client + r.server
    assert_same(got, F.ideal_rsqrt_ring(X, BERT), {"v": v})
    assert r.transcript.cost() == F.rsqrt_cost(BERT, v.shape)
    ref = 1 / np.sqrt(v / 8192.0)
    assert np.all(np.abs(got.view(np.int64) / 8192 - ref) <= 1.5e-3 * ref + 2.5e-4)


def test_softmax_bumblebee_exp(impl):
    """BumbleBee's exp (1 + x/2^8)^(2^8) in Z_2^64 (cut at -14) behind the same softmax: its output
    is down-cast exactly into the reciprocal's ring; bit for bit the ideal, declared = measured."""
    rng = np.random.default_rng(9)
    xr = rng.normal(0.0, 2.0, (2, 16))
    X, xc, xs = shares(np.floor(xr * (1 << FL)).astype(np.int64), 9)
    r = run(impl, "softmax", (xc,), (xs,), table="bumblebee", trunc="exact")
    assert_same(r.client + r.server, F.ideal_softmax(X, BERT, table="bumblebee"))
    assert r.transcript.cost() == F.softmax_cost(BERT, X.shape, table="bumblebee", trunc="exact")
    ref = np.exp(xr - xr.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    assert np.abs((r.client + r.server).view(np.int64) / 2.0**FL - ref).max() < 1e-2
