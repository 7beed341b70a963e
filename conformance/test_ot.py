"""Conformance of the OT layer: every correlation, both directions, both extensions, costs.

Run with ``python -m pytest conformance/test_ot*.py -q``. Sessions use the ``tiny`` preset, whose
OT parameters (``OT_TEST``) are INSECURE test sizes; the 128-bit sets run in ``test_ot_slow.py``.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nimbus.conformance.assertions import assert_same
from nimbus.conformance.harness import contexts
from nimbus.registry import implementation
from nimbus.runtime import run_local
from nimbus.spec import get_preset
from nimbus.spec import ot as S
from nimbus.spec.errors import ProtocolError, ShapeError
from nimbus.spec.prg import PRG
from nimbus.spec.protocols import get_protocol

P = get_preset("tiny")
KINDS = ("iknp", "ferret")
DIRS = ("s2c", "c2s")


def setup_session(impl, kind, seed="ot-session"):
    c, s = contexts(P, impl, seed)
    res = run_local(implementation(impl).ot.ot_setup_client(c.sub("ot"), kind),
                    implementation(impl).ot.ot_setup_server(s.sub("ot"), kind))
    return res.client, res.server, res


_SESSIONS: dict = {}


@pytest.fixture(params=KINDS)
def session(request, impl):
    key = (impl.name, request.param)
    if key not in _SESSIONS:
        _SESSIONS[key] = setup_session(impl, request.param)[:2]
    return request.param, _SESSIONS[key]


_RUNS = [0]


def run_dir(sess, direction, proto, snd_args=(), rcv_args=(), impl=None, seed=None):
    """Run ``ot.<proto>`` on instance ``direction``; returns (sender out, receiver out, result)."""
    spec = get_protocol(f"ot.{proto}")
    mod = impl.ot
    snd_fn, rcv_fn = getattr(mod, spec.server), getattr(mod, spec.client)
    cs, ss = sess
    _RUNS[0] += 1
    c, s = contexts(P, impl, seed or f"run{_RUNS[0]}")
    if direction == "s2c":
        res = run_local(rcv_fn(c.sub("p"), cs.receiver, *rcv_args), snd_fn(s.sub("p"), ss.sender, *snd_args))
        return res.server, res.client, res
    res = run_local(snd_fn(c.sub("p"), cs.sender, *snd_args), rcv_fn(s.sub("p"), ss.receiver, *rcv_args))
    return res.client, res.server, res


def _bits(g, name, n):
    return g.bits(name, n).astype(np.uint8)


# -- API -------------------------------------------------------------------------------------
def test_api_parity():
    ref, opt = implementation("reference").ot, implementation("optimized").ot
    assert ref.__all__ == opt.__all__
    for name in ref.__all__:
        a, b = getattr(ref, name), getattr(opt, name)
        if callable(a) and not isinstance(a, type):
            assert inspect.signature(a) == inspect.signature(b), name


def test_registry_names_exist(impl):
    for name in ("session", "base", "rcot", "cot", "rot", "ot", "ot_1ofn", "acot"):
        spec = get_protocol(f"ot.{name}")
        assert callable(getattr(impl.ot, spec.client)) and callable(getattr(impl.ot, spec.server))


def test_params_validate():
    S.OT_128.validate()
    S.OT_TEST.validate()
    assert S.OT_128.main.n == S.OT_128.main.t << S.OT_128.main.h
    assert S.OT_128.setup.n >= S.OT_128.main.reserve
    with pytest.raises(Exception):
        S.OtParams("ferret", 256, S.OT_TEST.setup, S.OT_TEST.main).validate()  # insecure, not flagged


# -- base OT ---------------------------------------------------------------------------------
def test_base_ot(impl):
    c, s = contexts(P, impl, "base")
    ch = _bits(PRG.for_tests("base-choice"), "c", 16)
    res = run_local(impl.ot.base_ot_sender(c.sub("b"), 16), impl.ot.base_ot_receiver(s.sub("b"), ch))
    keys, got = res.client, res.server
    assert_same(got, keys[np.arange(16), ch])
    assert not np.array_equal(keys[:, 0], keys[:, 1])
    assert res.transcript.cost() == S.base_ot_cost(P, 16, sender="client")


def test_base_ot_rejects_bad_point(impl):
    c, s = contexts(P, impl, "badpt")
    gen = impl.ot.base_ot_receiver(s.sub("b"), np.zeros(4, np.uint8))
    req = next(gen)
    assert req.msg_type is S.BaseOtA
    with pytest.raises(ProtocolError):
        gen.send(S.BaseOtA(point=b"\xff" * 32))


# -- sessions --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_session_cost(impl, kind):
    _, _, res = setup_session(impl, kind, "cost")
    assert res.transcript.cost() == S.session_cost(P, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_session_roles(impl, kind):
    cs, ss, _ = setup_session(impl, kind, "roles")
    assert ss.sender.direction == "s2c" and ss.sender.is_sender and ss.sender.delta[0] & 1
    assert cs.sender.direction == "c2s" and cs.sender.is_sender
    assert cs.receiver.direction == "s2c" and not cs.receiver.is_sender and cs.receiver.delta is None
    assert not np.array_equal(ss.sender.delta, cs.sender.delta)


# -- correlations ----------------------------------------------------------------------------
@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("n", [1, 700])
def test_rcot(impl, session, direction, n):
    kind, sess = session
    (q, delta), (r, t), res = run_dir(sess, direction, "rcot", (n,), (n,), impl)
    assert_same(t, S.ideal_cot(delta, q, r), {"kind": kind, "n": n})
    assert not (q[:, 0] & np.uint64(1)).any()  # normal form: sender LSB 0
    assert res.transcript.cost("p") == S.rcot_cost(P, n)
    if n > 100:
        assert 0.3 < r.mean() < 0.7 and len({tuple(x) for x in q}) == n


@pytest.mark.parametrize("direction", DIRS)
def test_cot(impl, session, direction):
    kind, sess = session
    n = 300
    b = _bits(PRG.for_tests("cot"), "b", n)
    (q, delta), t, res = run_dir(sess, direction, "cot", (n,), (b,), impl)
    assert_same(t, S.ideal_cot(delta, q, b))
    assert res.transcript.cost("p") == S.cot_cost(P, n, sender=S.sender_of(direction))


@pytest.mark.parametrize("direction", DIRS)
def test_rot(impl, session, direction):
    kind, sess = session
    (k0, k1), (r, kr), res = run_dir(sess, direction, "rot", (200,), (200,), impl)
    assert_same(kr, np.where(r[:, None] == 1, k1, k0))
    assert not (k0 == k1).all(axis=1).any()
    assert res.transcript.cost("p") == S.rot_cost(P, 200)


@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("bits", [1, 13, 64])
def test_ot(impl, session, direction, bits):
    kind, sess = session
    g, n = PRG.for_tests(f"ot{bits}"), 150
    m0, m1, b = g.uniform("m0", n, bits), g.uniform("m1", n, bits), _bits(g, "b", n)
    _, got, res = run_dir(sess, direction, "ot", (m0, m1, bits), (b, bits), impl)
    assert_same(got, S.ideal_ot(m0, m1, b))
    assert res.transcript.cost("p") == S.ot_cost(P, n, bits, sender=S.sender_of(direction))


@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("N,bits", [(2, 1), (16, 2), (5, 32)])
def test_ot_1ofn(impl, session, direction, N, bits):
    kind, sess = session
    g, n = PRG.for_tests(f"1ofn{N}"), 60
    msgs = g.uniform("m", (n, N), bits)
    ch = g.uniform_mod("c", n, N).astype(np.int64)
    _, got, res = run_dir(sess, direction, "ot_1ofn", (msgs, bits), (ch, N, bits), impl)
    assert_same(got, S.ideal_1ofn(msgs, ch))
    assert res.transcript.cost("p") == S.ot_1ofn_cost(P, n, N, bits, sender=S.sender_of(direction))


@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("bits", [1, 12, 32, 64])
def test_acot(impl, session, direction, bits):
    kind, sess = session
    g, n = PRG.for_tests(f"acot{bits}"), 250
    c, b = g.uniform("c", n, bits), _bits(g, "b", n)
    x, y, res = run_dir(sess, direction, "acot", (c, bits), (b, bits), impl)
    assert_same(y, S.ideal_acot(c, b, x, bits))
    assert res.transcript.cost("p") == S.acot_cost(P, n, bits, sender=S.sender_of(direction))


def test_refill_inside_protocol_is_charged_to_instance(impl):
    cs, ss, _ = setup_session(impl, "iknp", "refill")
    n = 3 * S.OT_TEST.iknp_batch + 5
    (q, d), (r, t), res = run_dir((cs, ss), "s2c", "rcot", (n,), (n,), impl)
    assert_same(t, S.ideal_cot(d, q, r))
    k = S.iknp_refill_batches(S.OT_TEST, n)
    assert k == 4
    assert res.transcript.cost("ot/s2c") == S.iknp_refill_cost(P, S.OT_TEST.iknp_batch, "server", batches=k)
    assert res.transcript.cost("p") == S.rcot_cost(P, n)


# -- bad inputs ------------------------------------------------------------------------------
def test_bad_inputs(impl, session):
    kind, (cs, ss) = session
    c, s = contexts(P, impl, "bad")
    with pytest.raises(ShapeError):
        next(impl.ot.cot_receiver(c.sub("a"), cs.receiver, np.array([0, 2])))
    with pytest.raises(ShapeError):
        next(impl.ot.ot_sender(s.sub("b"), ss.sender, np.array([4], np.uint64), np.array([0], np.uint64), 2))
    with pytest.raises(ShapeError):
        next(impl.ot.ot_1ofn_receiver(c.sub("c"), cs.receiver, np.array([3]), 3, 4))
    with pytest.raises(ShapeError):
        next(impl.ot.rcot_sender(c.sub("d"), cs.receiver, 4))  # wrong end


def test_peer_bad_correction_length(impl, session):
    kind, (cs, ss) = session
    c, s = contexts(P, impl, "badlen")
    gen = impl.ot.cot_sender(s.sub("p"), ss.sender, 10)
    req = next(gen)
    while not (hasattr(req, "msg_type") and req.msg_type is S.ChoiceCorrection):
        req = gen.send(None)  # pragma: no cover (no refill expected here)
    with pytest.raises(ProtocolError):
        gen.send(S.ChoiceCorrection(bits=b"\x00"))


# -- reference vs optimized: outputs and transcripts -------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_reference_matches_optimized(kind):
    outs, digests = [], []
    for name in ("reference", "optimized"):
        im = implementation(name)
        cs, ss, res0 = setup_session(im, kind, "diff")
        g = PRG.for_tests("diff-inputs")
        n = 900
        m0, m1, b = g.uniform("m0", n, 20), g.uniform("m1", n, 20), _bits(g, "b", n)
        msgs, ch = g.uniform("m", (40, 16), 4), g.uniform_mod("ch", 40, 16).astype(np.int64)
        c, s = contexts(P, im, "diff-run")
        res = run_local(_client_seq(im, c, cs, b, ch), _server_seq(im, s, ss, m0, m1, msgs))
        outs.append((res.client, res.server))
        digests.append((res0.transcript.digest(), res.transcript.digest()))
    assert_same(outs[0], outs[1], {"kind": kind})
    assert digests[0] == digests[1]


def _client_seq(im, c, cs, b, ch):
    o = im.ot
    r1 = yield from o.rcot_receiver(c.sub("a"), cs.receiver, 1000)
    r2 = yield from o.ot_receiver(c.sub("b"), cs.receiver, b, 20)
    r3 = yield from o.ot_1ofn_receiver(c.sub("c"), cs.receiver, ch, 16, 4)
    r4 = yield from o.acot_sender(c.sub("d"), cs.sender, np.arange(300, dtype=np.uint64), 16)
    r5 = yield from o.rot_sender(c.sub("e"), cs.sender, 50)
    return r1, r2, r3, r4, r5


def _server_seq(im, s, ss, m0, m1, msgs):
    o = im.ot
    r1 = yield from o.rcot_sender(s.sub("a"), ss.sender, 1000)
    yield from o.ot_sender(s.sub("b"), ss.sender, m0, m1, 20)
    yield from o.ot_1ofn_sender(s.sub("c"), ss.sender, msgs, 4)
    r4 = yield from o.acot_receiver(s.sub("d"), ss.receiver, (np.arange(300) % 2).astype(np.uint8), 16)
    r5 = yield from o.rot_receiver(s.sub("e"), ss.receiver, 50)
    return r1, r4, r5


# -- kernels: reference vs optimized -----------------------------------------------------------
_K = settings(max_examples=15, deadline=None)


@_K
@given(words=st.integers(1, 5), seed=st.integers(0, 2**32))
def test_kernel_transpose(words, seed):
    g = PRG.for_tests(f"tr{seed}")
    cols = g.uniform("c", (128, words), 64).view(np.uint8).reshape(128, 8 * words)
    ref, opt = implementation("reference").ot, implementation("optimized").ot
    assert_same(ref.transpose_bits(cols), opt.transpose_bits(cols), {"words": words, "seed": seed})
    t = ref.transpose_bits(cols)  # definition: bit j of block i = bit i of column j
    i, j = 5 % (64 * words), 77
    assert int(t[i, j // 64] >> np.uint64(j % 64)) & 1 == (cols[j, i // 8] >> (i % 8)) & 1


@_K
@given(n=st.integers(0, 300), seed=st.integers(0, 2**32))
def test_kernel_ccr_hash(n, seed):
    g = PRG.for_tests(f"h{seed}")
    x, tw = g.uniform("x", (n, 2), 64), g.uniform("t", (n, 2), 64)
    assert_same(implementation("reference").ot.ccr_hash(x, tw), implementation("optimized").ot.ccr_hash(x, tw))


@_K
@given(t=st.integers(1, 6), h=st.integers(1, 7), seed=st.integers(0, 2**32))
def test_kernel_ggm(t, h, seed):
    g = PRG.for_tests(f"g{seed}")
    seeds = g.uniform("s", (t, 2), 64)
    alpha = g.uniform("a", t, h).astype(np.int64)
    ref, opt = implementation("reference").ot, implementation("optimized").ot
    leaves, sums = ref.ggm_expand(seeds, h)
    assert_same((leaves, sums), opt.ggm_expand(seeds, h))
    bit = (alpha[:, None] >> (h - 1 - np.arange(h))[None, :]) & 1
    known = sums[np.arange(t)[:, None], np.arange(h)[None, :], 1 - bit]
    want = leaves.copy()
    want[np.arange(t), alpha] = 0
    assert_same(ref.ggm_reconstruct(known, alpha, h), want)
    assert_same(opt.ggm_reconstruct(known, alpha, h), want)


@_K
@given(k=st.integers(1, 100), n=st.integers(0, 500), d=st.integers(1, 12), seed=st.integers(0, 2**32))
def test_kernel_lpn(k, n, d, seed):
    g = PRG.for_tests(f"l{seed}")
    x, noise = g.uniform("x", (k, 2), 64), g.uniform("e", (n, 2), 64)
    sd = g.child_seed("seed")[:16]
    ref = implementation("reference").ot.lpn_encode(x, noise, sd, d)
    assert_same(ref, implementation("optimized").ot.lpn_encode(x, noise, sd, d))
    if n:  # linearity: A(x1 xor x2) = Ax1 xor Ax2
        z = np.zeros_like(noise)
        o = implementation("optimized").ot
        assert_same(o.lpn_encode(x, z, sd, d) ^ noise, ref)


@_K
@given(words=st.integers(1, 4), seed=st.integers(0, 2**32))
def test_kernel_iknp(words, seed):
    g = PRG.for_tests(f"ik{seed}")
    m = 64 * words
    keys = g.uniform("k", (128, 2, 2), 64).view(np.uint8).reshape(128, 2, 16)
    r = g.bits("r", m)
    delta = g.uniform("d", 2, 64) | np.array([1, 0], np.uint64)
    db = np.unpackbits(delta.astype("<u8").view(np.uint8), bitorder="little")
    ref, opt = implementation("reference").ot, implementation("optimized").ot
    rp = np.packbits(r, bitorder="little")
    u, t = ref.iknp_receiver_expand(keys, rp, 9)
    assert_same((u, t), opt.iknp_receiver_expand(keys, rp, 9))
    chosen = keys[np.arange(128), db]
    q = ref.iknp_sender_expand(chosen, delta, u, 9)
    assert_same(q, opt.iknp_sender_expand(chosen, delta, u, 9))
    assert_same(t, S.ideal_cot(delta, q, r))


def test_kernel_prg_expand():
    g = PRG.for_tests("prg")
    keys = g.uniform("k", (9, 2), 64).view(np.uint8).reshape(9, 16)
    ref, opt = implementation("reference").ot, implementation("optimized").ot
    for nb, nonce in ((0, 0), (16, 3), (1000, 2**32 - 1)):
        assert_same(ref.prg_expand(keys, nb, nonce), opt.prg_expand(keys, nb, nonce))
    with pytest.raises(ShapeError):
        ref.prg_expand(keys, 16, 2**32)
    with pytest.raises(ShapeError):
        opt.prg_expand(keys, 16, 2**32)


def test_ferret_regular_noise():
    """The receiver's SPCOT noise has exactly one 1 per tree (regular LPN noise)."""
    lv = S.OT_TEST.main
    g = PRG.for_tests("reg")
    seeds = g.uniform("s", (lv.t, 2), 64)
    ref = implementation("reference").ot
    leaves, sums = ref.ggm_expand(seeds, lv.h)
    alpha = g.uniform("a", lv.t, lv.h).astype(np.int64)
    bit = (alpha[:, None] >> (lv.h - 1 - np.arange(lv.h))[None, :]) & 1
    w = ref.ggm_reconstruct(sums[np.arange(lv.t)[:, None], np.arange(lv.h)[None, :], 1 - bit], alpha, lv.h)
    diff = (w != leaves).any(axis=2)
    assert (diff.sum(axis=1) == 1).all() and (diff[np.arange(lv.t), alpha]).all()


def test_missing_libsodium_is_a_clear_error(monkeypatch):
    import ctypes

    from nimbus.reference import _ristretto
    from nimbus.spec.errors import ParameterError

    def no_lib(name, *a, **k):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(_ristretto, "_LIB", None)
    monkeypatch.setattr(ctypes, "CDLL", no_lib)
    with pytest.raises(ParameterError, match="libsodium"):
        _ristretto.lib()


def test_ristretto_validation():
    from nimbus.reference import _ristretto as Rr

    one = Rr.scalar_reduce(bytes([1]) + bytes(63))
    G = Rr.base_mul(one)
    assert Rr.is_valid_point(G) and not Rr.is_valid_point(b"\xff" * 32) and not Rr.is_valid_point(G[:31])
    two = Rr.scalar_reduce(bytes([2]) + bytes(63))
    assert Rr.mul(two, G) == Rr.add(G, G) == Rr.base_mul(two)
    with pytest.raises(ProtocolError):
        Rr.mul(one, bytes(32))  # the identity is rejected
