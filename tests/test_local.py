"""run_local: deterministic scheduling, depth-based rounds, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import nimbus
from nimbus.runtime import run_local
from nimbus.spec import PRG, Ctx, get_preset
from nimbus.spec.errors import DecodeError, ProtocolError, RandomnessReuseError
from nimbus.spec.sharing import ShareLinear, ShareNonlinear

P = get_preset("tiny")
IMPL = nimbus.implementation("reference")


def ctxs():
    return Ctx("client", P, PRG.for_tests("c"), IMPL), Ctx("server", P, PRG.for_tests("s"), IMPL)


def _msg(v):
    return ShareLinear(share=np.array([v], dtype=np.uint64))


def ping(ctx, n):
    for i in range(n):
        yield ctx.send(_msg(i))
        m = yield ctx.recv(ShareLinear)
        assert int(m.share[0]) == i + 100
    return "done"


def pong(ctx, n):
    for i in range(n):
        m = yield ctx.recv(ShareLinear)
        yield ctx.send(_msg(int(m.share[0]) + 100))
    return n


def test_ping_pong_rounds_and_bytes():
    c, s = ctxs()
    res = run_local(ping(c.sub("pp"), 5), pong(s.sub("pp"), 5))
    assert (res.client, res.server) == ("done", 5)
    cost = res.transcript.cost()
    one = ShareLinear.declared_size(P, share=(1,))
    assert cost.c2s == cost.s2c == 5 * one
    assert cost.rounds == 10 and res.transcript.rounds == 10 and cost.round_trips == 5


def test_simultaneous_sends_are_one_round():
    def both(ctx):
        yield ctx.send(_msg(1))
        yield ctx.send(_msg(2))
        a = yield ctx.recv(ShareLinear)
        b = yield ctx.recv(ShareLinear)
        return int(a.share[0]) + int(b.share[0])

    c, s = ctxs()
    res = run_local(both(c), both(s))
    assert res.outputs == (3, 3) and res.transcript.rounds == 1


def test_deadlock_is_detected():
    def wait(ctx):
        yield ctx.recv(ShareLinear)

    c, s = ctxs()
    with pytest.raises(ProtocolError, match="deadlock"):
        run_local(wait(c.sub("a")), wait(s.sub("a")))


def test_wrong_message_type_is_a_decode_error():
    def send(ctx):
        yield ctx.send(_msg(1))

    def recv(ctx):
        yield ctx.recv(ShareNonlinear)

    c, s = ctxs()
    with pytest.raises(DecodeError, match="expected ShareNonlinear"):
        run_local(send(c), recv(s))


def test_undelivered_message_is_an_error():
    def send(ctx):
        yield ctx.send(_msg(1))

    def nothing(ctx):
        return None
        yield

    c, s = ctxs()
    with pytest.raises(ProtocolError, match="undelivered"):
        run_local(send(c), nothing(s))


def test_exceptions_name_the_party_and_label():
    def boom(ctx):
        yield ctx.send(_msg(1))
        raise ValueError("bad")

    def recv(ctx):
        yield ctx.recv(ShareLinear)

    c, s = ctxs()
    with pytest.raises(ValueError) as ei:
        run_local(boom(c.sub("layer0").sub("gelu")), recv(s.sub("layer0").sub("gelu")))
    assert any("client" in n and "layer0/gelu" in n for n in ei.value.__notes__)


def test_labels_attribute_costs_and_prg_streams_per_label():
    def proto(ctx):
        a = ctx.sub("a")
        r = a.uniform("r", 3, 16)
        yield a.send(ShareLinear(share=r))
        with pytest.raises(RandomnessReuseError):
            a.uniform("r", 3, 16)
        yield ctx.sub("b").send(_msg(2))
        return r

    def sink(ctx):
        yield ctx.sub("a").recv(ShareLinear)
        yield ctx.sub("b").recv(ShareLinear)

    c, s = ctxs()
    res = run_local(proto(c), sink(s))
    tr = res.transcript
    assert tr.cost("a").c2s == ShareLinear.declared_size(P, share=(3,))
    assert tr.cost("b").c2s == ShareLinear.declared_size(P, share=(1,))
    assert set(tr.breakdown()) == {"a", "b"}
    assert tr.project("wan") >= tr.rounds * 0.010


def test_not_a_generator():
    c, s = ctxs()
    with pytest.raises(ProtocolError):
        run_local(42, pong(s, 1))

