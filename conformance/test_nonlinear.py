"""Non-linear primitives: reconstruction = ideal functionality (bit for bit, or within the declared
truncation error), declared cost = measured cost, reference = optimized (outputs and digests).

Correlated randomness: the ideal random-COT session (``IdealCotSession``: F_COT), so these tests
check the non-linear layer alone; the OT layer has its own suite.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from nimbus.conformance.assertions import assert_same
from nimbus.registry import implementation
from nimbus.runtime import run_local
from nimbus.spec import CLIENT, PRG, SERVER, Ctx, get_preset
from nimbus.spec import nonlinear as S
from nimbus.spec.errors import ParameterError, ProtocolError, ShapeError
from nimbus.spec.protocols import get_protocol

TINY, BERT = get_preset("tiny"), get_preset("bert-base")
#: half the profile's examples per test (each example is a full two-party run)
_FEW = settings(max_examples=max(5, settings.default.max_examples // 2))
PARAMS = [TINY, BERT]


def run(impl, name, params, c_args, s_args, seed="nl", **kw):
    """Run the registered protocol ``nonlinear.<name>`` on fresh ideal-COT sessions."""
    im = implementation(impl)
    spec = get_protocol(f"nonlinear.{name}")
    mod = im.nonlinear
    oc, osv = S.IdealCotSession.pair(seed.encode())
    c = Ctx(CLIENT, params, PRG.for_tests(f"{seed}/c"), im).sub(name)
    s = Ctx(SERVER, params, PRG.for_tests(f"{seed}/s"), im).sub(name)
    return run_local(getattr(mod, spec.client)(c, oc, *c_args, **kw), getattr(mod, spec.server)(s, osv, *s_args, **kw))


def edge(bits):
    m = (1 << bits) - 1
    return [0, 1, m, 1 << (bits - 1), (1 << (bits - 1)) - 1, 1 << (bits - 2), m - (1 << (bits - 2)) + 1]


def ring_vec(bits, max_n=12, lim=None):
    top = (1 << bits) - 1
    el = st.one_of(st.integers(0, top), st.sampled_from(edge(bits)))
    if lim is not None:  # signed values with |v| < lim
        el = st.integers(-lim + 1, lim - 1).map(lambda v: v % (1 << bits))
    return hnp.arrays(np.uint64, st.integers(1, max_n), elements=el.map(np.uint64))


def share(draw_or_rng, x, bits):
    r = np.asarray(draw_or_rng, dtype=np.uint64) & S.ring_mask(bits)
    return r, (x - r) & S.ring_mask(bits)


def recon(r, bits):
    return (r.client + r.server) & S.ring_mask(bits)


def masks(data, n, bits):
    return data.draw(hnp.arrays(np.uint64, n, elements=st.integers(0, (1 << bits) - 1).map(np.uint64)))


def bits_of(data, n):
    return data.draw(hnp.arrays(np.uint8, n, elements=st.integers(0, 1)))


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: p.name)
@_FEW
@given(data=st.data())
def test_millionaire_and_wrap(impl, params, data):
    l = params.nonlinear.bits
    a, b = data.draw(ring_vec(l)), None
    b = data.draw(hnp.arrays(np.uint64, a.shape, elements=st.sampled_from(edge(l)).map(np.uint64)) | st.just(a))
    m = data.draw(st.sampled_from([1, 2, 4, 6]))
    r = run(impl, "millionaire", params, (a, l, m), (b, l, m))
    assert_same(r.client ^ r.server, S.ideal_millionaire(a, b), {"a": a, "b": b, "m": m})
    assert r.transcript.cost() == S.millionaire_cost(params, [(a.size, l)], m)
    xc, xs = share(masks(data, a.size, l), a, l)
    r = run(impl, "wrap", params, (xc, l), (xs, l))
    assert_same(r.client ^ r.server, S.ideal_wrap(xc, xs, l))
    assert r.transcript.cost() == S.wrap_cost(params, a.shape, l)


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: p.name)
@_FEW
@given(data=st.data())
def test_drelu_msb(impl, params, data):
    l = params.nonlinear.bits
    x = data.draw(ring_vec(l))
    xc, xs = share(masks(data, x.size, l), x, l)
    r = run(impl, "drelu", params, (xc, l), (xs, l))
    assert_same(r.client ^ r.server, S.ideal_drelu(x, l), {"x": x})
    assert r.transcript.cost() == S.drelu_cost(params, x.shape, l)
    r = run(impl, "msb", params, (xc, l), (xs, l))
    assert_same(r.client ^ r.server, S.ideal_msb(x, l))


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: p.name)
@_FEW
@given(data=st.data())
def test_and_b2a_mux(impl, params, data):
    l = params.nonlinear.bits
    x = data.draw(ring_vec(l))
    n = x.size
    bc, bs, cc, cs = (bits_of(data, n) for _ in range(4))
    r = run(impl, "and", params, (bc, cc), (bs, cs))
    assert_same(r.client ^ r.server, S.ideal_and(bc ^ bs, cc ^ cs))
    assert r.transcript.cost() == S.and_cost(params, n)
    r = run(impl, "b2a", params, (bc, l), (bs, l))
    assert_same(recon(r, l), S.ideal_b2a(bc ^ bs, l))
    assert r.transcript.cost() == S.b2a_cost(params, x.shape, l)
    xc, xs = share(masks(data, n, l), x, l)
    r = run(impl, "mux", params, (bc, xc, l), (bs, xs, l))
    assert_same(recon(r, l), S.ideal_mux(bc ^ bs, x, l))
    assert r.transcript.cost() == S.mux_cost(params, x.shape, l)


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: p.name)
@_FEW
@given(data=st.data())
def test_mul_square(impl, params, data):
    l = params.nonlinear.bits
    x = data.draw(ring_vec(l, 6))
    y = data.draw(hnp.arrays(np.uint64, x.shape, elements=st.sampled_from(edge(l)).map(np.uint64)))
    xc, xs = share(masks(data, x.size, l), x, l)
    yc, ys = share(masks(data, x.size, l), y, l)
    r = run(impl, "mul", params, (xc, yc, l), (xs, ys, l))
    assert_same(recon(r, l), S.ideal_mul(x, y, l), {"x": x, "y": y})
    assert r.transcript.cost() == S.mul_cost(params, x.shape, l)
    r = run(impl, "square", params, (xc, l), (xs, l))
    assert_same(recon(r, l), S.ideal_square(x, l))
    assert r.transcript.cost() == S.square_cost(params, x.shape, l)


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: p.name)
@_FEW
@given(data=st.data())
def test_mul_rows(impl, params, data):
    """x (rows, n) times a per-row y: equals the broadcast product, one vector ACOT per row and
    bit of y (the declared cost: rows * bits choice bits, the correction bytes of mul)."""
    l = data.draw(st.sampled_from([params.nonlinear.bits, 29, 64]))
    rows, n = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 9))
    el = st.one_of(st.integers(0, (1 << l) - 1), st.sampled_from(edge(l))).map(np.uint64)
    x = data.draw(hnp.arrays(np.uint64, (rows, n), elements=el))
    y = data.draw(hnp.arrays(np.uint64, rows, elements=el))
    xc, xs = share(masks(data, (rows, n), l), x, l)
    yc, ys = share(masks(data, rows, l), y, l)
    r = run(impl, "mul_rows", params, (xc, yc, l), (xs, ys, l))
    assert_same(recon(r, l), S.ideal_mul_rows(x, y, l), {"x": x, "y": y, "l": l})
    assert_same(recon(r, l), S.ideal_mul(x, np.repeat(y, n).reshape(rows, n), l))
    assert r.transcript.cost() == S.mul_rows_cost(params, x.shape, l)
    c = S.mul_rows_cost(params, x.shape, l)
    assert c.c2s <= S.mul_cost(params, x.shape, l).c2s and c.rounds == 2


def test_mul_rows_pads_are_distinct_per_block_and_key():
    """The vector-ACOT streams: distinct words across blocks, keys and COT indices (tweaks)."""
    from nimbus.reference.nonlinear import vacot_pads
    keys = np.zeros((3, 2), np.uint64)  # equal keys: only the tweaks separate the streams
    p = vacot_pads(keys, 0, 9, 32)
    assert len(set(p.reshape(-1).tolist())) == p.size
    assert not np.array_equal(vacot_pads(keys, 0, 9, 32), vacot_pads(keys, 3, 9, 32))


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: p.name)
@pytest.mark.parametrize("mode", S.TRUNC_MODES)
@_FEW
@given(data=st.data())
def test_trunc_and_fused_upcast(impl, params, mode, data):
    l, L = params.nonlinear.bits, params.linear.bits
    f = data.draw(st.integers(1, params.nonlinear.frac + 1))
    x = data.draw(ring_vec(l, 8, None if mode == "exact" else 1 << (l - 2)))
    xc, xs = share(masks(data, x.size, l), x, l)
    case = {"x": x, "xc": xc, "f": f, "mode": mode}
    r = run(impl, "trunc", params, (xc, l, f, mode), (xs, l, f, mode))
    err = (S.ideal_trunc(x, l, f) - recon(r, l)) & S.ring_mask(l)
    assert set(np.unique(err).tolist()) <= ({0, 1} if mode == "msb1" else {0}), case
    assert r.transcript.cost() == S.trunc_cost(params, x.shape, l, f, mode)
    g = data.draw(st.integers(0, f))
    r = run(impl, "trunc_upcast", params, (xc, l, g, L, mode), (xs, l, g, L, mode))
    err = (S.ideal_trunc_upcast(x, l, g, L) - recon(r, L)) & S.ring_mask(L)
    assert set(np.unique(err).tolist()) <= ({0, 1} if mode == "msb1" and g else {0}), case
    assert r.transcript.cost() == S.trunc_upcast_cost(params, x.shape, l, g, L, mode)


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: p.name)
@pytest.mark.parametrize("mode", ["exact", "local"])
@_FEW
@given(data=st.data())
def test_downcast_trunc(impl, params, mode, data):
    l, L = params.nonlinear.bits, params.linear.bits
    f = data.draw(st.integers(0, L - l))
    x = data.draw(ring_vec(L, 8))
    xc, xs = share(masks(data, x.size, L), x, L)
    r = run(impl, "downcast_trunc", params, (xc, L, f, l, mode), (xs, L, f, l, mode))
    err = (S.ideal_downcast_trunc(x, L, f, l) - recon(r, l)) & S.ring_mask(l)
    assert set(np.unique(err).tolist()) <= ({0, 1} if mode == "local" else {0}), {"x": x, "f": f}
    assert r.transcript.cost() == S.downcast_trunc_cost(params, x.shape, L, f, l, mode)


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: p.name)
@_FEW
@given(data=st.data())
def test_max(impl, params, data):
    """Values in the domain [-2^(l-2), 2^(l-2)), both ends included; odd lengths and lengths
    whose tournament levels end in smaller groups; ties (values from a tiny set) and all-equal
    rows."""
    l = params.nonlinear.bits
    rows = data.draw(st.integers(1, 3))
    n = data.draw(st.integers(1, 9) | st.sampled_from([11, 13, 17, 21, 33, 128, 129]))
    lim = 1 << (l - 2)
    vals = st.integers(-lim, lim - 1) | st.sampled_from([0, -1, 1, -lim, lim - 1])
    if data.draw(st.booleans()):
        vals = st.sampled_from([-lim, -1, 0, 1, lim - 1]) | st.integers(-2, 1)  # many ties
    x = data.draw(hnp.arrays(np.int64, (rows, n), elements=vals)).view(np.uint64) & S.ring_mask(l)
    if data.draw(st.booleans()):
        x[:] = x[0, 0]  # all-equal rows
    xc, xs = share(masks(data, x.shape, l), x, l)
    r = run(impl, "max", params, (xc, l), (xs, l))
    assert_same(recon(r, l), S.ideal_max(x, l), {"x": x})
    assert r.transcript.cost() == S.max_cost(params, x.shape, l)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 128, 129])
def test_max_edge_rows(impl, n):
    """Row maxima bit for bit at the tournament's edges: all-equal rows, ties at the first and
    last positions (the winner is the first maximum), the domain's most negative and largest
    values, one maximum at each end."""
    l = BERT.nonlinear.bits
    lo, hi = -(1 << (l - 2)), (1 << (l - 2)) - 1
    rows = [np.full(n, v) for v in (lo, hi, 0, -1)]
    rows += [np.where(np.arange(n) % 2 == 0, 3, -3), np.where(np.arange(n) % 3 == 2, hi, lo)]
    for pos in (0, n - 1, n // 2):
        v = np.full(n, lo)
        v[pos] = hi
        rows.append(v)
        w = np.arange(n) - n
        w[pos] = w[-1] = 7  # a tie for the maximum, one of them last
        rows.append(w)
    x = np.stack(rows).astype(np.int64).view(np.uint64) & S.ring_mask(l)
    xc = (np.arange(x.size, dtype=np.uint64).reshape(x.shape) * np.uint64(0x9E3779B97F4A7C15)) & S.ring_mask(l)
    r = run(impl, "max", BERT, (xc, l), ((x - xc) & S.ring_mask(l), l))
    assert_same(recon(r, l), S.ideal_max(x, l), {"x": x})
    assert r.transcript.cost() == S.max_cost(BERT, x.shape, l)


def test_max_schedule():
    """Every schedule reduces its row to one element; a row of 128 takes fewer flights than the
    binary tree's 43, for at most 2.2x its bytes (c2s 2121660 + s2c 7583676 at (1536, 128))."""
    for n in range(1, 301):
        m = n
        for k in S.max_schedule(n):
            assert 2 <= k <= m, (n, S.max_schedule(n))
            m = -(-m // k)
        assert m == 1, (n, S.max_schedule(n))
    assert S.max_schedule(1) == () and S.max_schedule(2) == (2,)
    c = S.max_cost(BERT, (1536, 128), 32)
    assert c.rounds < 43 and c.c2s + c.s2c <= 2.2 * (2121660 + 7583676), c


_DIGEST_CASES = [
    ("millionaire", lambda x, l: ((x, l), (x[::-1].copy(), l))),
    ("drelu", lambda x, l: ((x, l), (x[::-1].copy(), l))),
    ("mux", lambda x, l: (((x & np.uint64(1)).astype(np.uint8), x, l), ((x >> np.uint64(3) & np.uint64(1)).astype(np.uint8), x, l))),
    ("mul", lambda x, l: ((x, x, l), (x, x[::-1].copy(), l))),
    ("mul_rows", lambda x, l: ((x.reshape(3, 5), x[:3].copy(), l), (x[::-1].reshape(3, 5).copy(), x[5:8].copy(), l))),
    ("square", lambda x, l: ((x, l), (x, l))),
    ("trunc", lambda x, l: ((x, l, 13, "exact"), (x, l, 13, "exact"))),
    ("trunc_upcast", lambda x, l: ((x, l, 5, 64, "msb"), (x >> np.uint64(4), l, 5, 64, "msb"))),
    ("max", lambda x, l: ((x.reshape(3, 5) >> np.uint64(3), l), (x.reshape(3, 5) >> np.uint64(4), l))),
]


@pytest.mark.parametrize("name,args", _DIGEST_CASES, ids=[c[0] for c in _DIGEST_CASES])
def test_reference_and_optimized_identical(name, args):
    x = (np.arange(15, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) & S.ring_mask(32)
    ca, sa = args(x, 32)
    r = run("reference", name, BERT, ca, sa)
    o = run("optimized", name, BERT, ca, sa)
    assert_same((r.client, r.server), (o.client, o.server), {"protocol": name})
    assert r.transcript.digest() == o.transcript.digest()


def test_bad_inputs_raise_the_same_errors(impl):
    x = np.zeros(3, dtype=np.uint64)
    with pytest.raises(ShapeError):
        run(impl, "drelu", BERT, (x.astype(np.int64), 32), (x, 32))
    with pytest.raises(ShapeError):
        run(impl, "b2a", BERT, (np.full(3, 2, np.uint8), 32), (np.zeros(3, np.uint8), 32))
    with pytest.raises(ParameterError):
        run(impl, "trunc", BERT, (x, 32, 13, "nope"), (x, 32, 13, "nope"))
    with pytest.raises(ParameterError):
        run(impl, "millionaire", BERT, (x, 32, 7), (x, 32, 7))
    with pytest.raises(ShapeError):  # y must be one value per row of x
        run(impl, "mul_rows", BERT, (x.reshape(1, 3), x, 32), (x.reshape(1, 3), x, 32))


def test_cost_schedule_declared():
    """The comparison tree: log2(leaves) AND rounds; DReLU on Z_2^32 with m = 4 is 5 flights."""
    assert S.tree_levels(8) == [7, 3, 1]
    assert S.drelu_cost(BERT, (10,), 32).rounds == 5
    assert S.mux_cost(BERT, (10,), 32).rounds == 2


@pytest.mark.parametrize("kind", ["iknp", "ferret"])
def test_with_the_real_ot_session(impl, kind):
    """The protocols run on the OT layer's session (not only on F_COT): outputs are correct and
    the bytes under the protocol's label are the declared ones (refills are charged to the
    session's label; they may add flights between ours)."""
    im = implementation(impl)
    P = TINY
    c, s = Ctx(CLIENT, P, PRG.for_tests("rc"), im), Ctx(SERVER, P, PRG.for_tests("rs"), im)
    ses = run_local(im.ot.ot_setup_client(c.sub("ot"), kind), im.ot.ot_setup_server(s.sub("ot"), kind))
    l = P.nonlinear.bits
    rng = np.random.default_rng(5)
    x = rng.integers(0, 1 << l, 200, dtype=np.uint64)
    xc = rng.integers(0, 1 << l, 200, dtype=np.uint64)
    xs = (x - xc) & S.ring_mask(l)
    r = run_local(im.nonlinear.mul_client(c.sub("m"), ses.client, xc, xc, l),
                  im.nonlinear.mul_server(s.sub("m"), ses.server, xs, xs, l))
    assert_same((r.client + r.server) & S.ring_mask(l), S.ideal_square(x, l))
    r = run_local(im.nonlinear.drelu_client(c.sub("d"), ses.client, xc, l),
                  im.nonlinear.drelu_server(s.sub("d"), ses.server, xs, l))
    assert_same(r.client ^ r.server, S.ideal_drelu(x, l))
    got, want = r.transcript.cost("d"), S.drelu_cost(P, x.shape, l)
    assert (got.c2s, got.s2c) == (want.c2s, want.s2c) and got.rounds >= want.rounds


def _then_finish(gen, ot):
    out = yield from gen
    yield from ot.finish()
    return out


def test_ferret_look_ahead_gives_the_same_cots(impl):
    """Look-ahead refills (``ahead=True``: the sender's trees travel as ``FerretAhead`` one
    refill early) change when messages travel, not the COTs: a product that needs many refills
    gives the same shares and the same bytes under its label; the session ends with
    ``finish()``, without which the run ends with the look-ahead message undelivered."""
    im = implementation(impl)
    P, l = TINY, TINY.nonlinear.bits
    x = PRG.for_tests("ahead/x").uniform("x", 700, l)
    y = PRG.for_tests("ahead/y").uniform("y", 700, l)

    def session(ahead):
        c, s = Ctx(CLIENT, P, PRG.for_tests("ac"), im), Ctx(SERVER, P, PRG.for_tests("as"), im)
        ses = run_local(im.ot.ot_setup_client(c.sub("ot"), "ferret", ahead),
                        im.ot.ot_setup_server(s.sub("ot"), "ferret", ahead))
        return c, s, ses.client, ses.server

    outs = {}
    for ahead in (False, True):
        c, s, oc, osv = session(ahead)
        r = run_local(_then_finish(im.nonlinear.mul_client(c.sub("m"), oc, x, y, l), oc),
                      _then_finish(im.nonlinear.mul_server(s.sub("m"), osv, y, x, l), osv))
        outs[ahead] = (r.client, r.server, r.transcript.cost("m"))
        types = {e.msg_type for e in r.transcript.entries}
        assert ("FerretAhead" in types) == ahead and ("FerretSpcot" in types) != ahead
        assert oc.sender.iterations > 2 and oc.receiver.in_flight == 0 == osv.receiver.in_flight
    assert_same(outs[True][:2], outs[False][:2])
    want = S.mul_cost(P, x.shape, l)
    assert outs[True][2] == outs[False][2] and (outs[True][2].c2s, outs[True][2].s2c) == (want.c2s, want.s2c)
    xy = (x + y) & S.ring_mask(l)  # the client holds (x, y), the server (y, x): both factors are x + y
    assert_same((outs[True][0] + outs[True][1]) & S.ring_mask(l), S.ideal_mul(xy, xy, l))
    c, s, oc, osv = session(True)
    with pytest.raises(ProtocolError, match="undelivered"):
        run_local(im.nonlinear.mul_client(c.sub("m"), oc, x, y, l), im.nonlinear.mul_server(s.sub("m"), osv, y, x, l))
