"""run_tcp over real sockets: agreement with run_local, handshake checks, failures, TLS.

Each test runs both parties in this process (the server in a thread) unless it needs a process
to die (SIGKILL test). Every failure test checks the error type, that its message says what
happened, and that it came well within the timeout (never a hang).
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nimbus.spec  # noqa: F401  (registers presets and message types)
from nimbus.registry import implementation
from nimbus.runtime import Transcript, run_local
from nimbus.runtime.tcp import (
    BYE, DATA, ERROR, FRAME_HEADER, HELLO, TcpResult, TlsConfig, _Hello, connect, listen, run_tcp,
)
from nimbus.spec.errors import (
    DecodeError, FrameTooLarge, HandshakeError, ParameterError, PeerDisconnected, PeerTimeout, ProtocolError,
    RemoteError, TransportError,
)
from nimbus.spec.cost import Network
from nimbus.spec.params import get_preset
from nimbus.spec.prg import PRG
from nimbus.spec.proto import CLIENT, SERVER, Ctx
from nimbus.spec.sharing import ShareLinear
from nimbus._version import PROTOCOL_VERSION

pytestmark = pytest.mark.net

TINY = get_preset("tiny")
BERT = get_preset("bert-base")


# -- helpers ---------------------------------------------------------------------------------------
class Thread(threading.Thread):
    """A thread that keeps its target's result or exception."""

    def __init__(self, fn, *a, **kw):
        super().__init__(daemon=True)
        self.fn, self.a, self.kw = fn, a, kw
        self.result = self.error = None

    def run(self):
        try:
            self.result = self.fn(*self.a, **self.kw)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.error = e

    def outcome(self, timeout=30):
        self.join(timeout)
        assert not self.is_alive(), "party thread hung"
        return self.result, self.error


def tcp_pair(client_gen_fn, server_gen_fn, *, params=TINY, cparams=None, sparams=None, timeout=20.0,
             ctls=None, stls=None, cnet=None, snet=None, session="s1", csession=None, **kw):
    """Run ``server_gen_fn()`` behind a listener in a thread and ``client_gen_fn()`` here.

    Returns ``((client_result, client_error), (server_result, server_error))``.
    """
    with listen("127.0.0.1", 0, params=sparams or params, timeout=timeout, tls=stls, network=snet, **kw) as lst:
        port = lst.address[1]

        def server():
            with lst.accept(session_id=session, timeout=timeout) as conn:
                return run_tcp(server_gen_fn(), conn)

        th = Thread(server)
        th.start()

        def client():
            with connect("127.0.0.1", port, params=cparams or params, session_id=csession or session,
                         timeout=timeout, tls=ctls, network=cnet) as conn:
                return run_tcp(client_gen_fn(), conn)

        c = Thread(client)
        c.run()
        return (c.result, c.error), th.outcome(timeout + 10)


def ctxs(impl="reference", params=TINY, seed="tcp"):
    im = implementation(impl)
    return (Ctx(CLIENT, params, PRG.for_tests(f"{seed}/client"), im),
            Ctx(SERVER, params, PRG.for_tests(f"{seed}/server"), im))


def multi_round_client(ctx, x, k=4):
    """input -> reshare -> k x (open of a shifted sharing) -> reveal; several rounds each way."""
    sh = ctx.impl.sharing
    bits = ctx.params.linear.bits
    r = yield from sh.input_client(ctx.sub("input"), x)
    r = yield from sh.reshare_client(ctx.sub("reshare"), r)
    opened = []
    for i in range(k):
        y = yield from sh.open_client(ctx.sub(f"open{i}"), r)
        opened.append(y)
        r = ctx.impl.ring.add(r, ctx.uniform(f"shift{i}", r.shape, bits), bits)
    z = yield from sh.reveal_client(ctx.sub("reveal"), r)
    return np.stack(opened + [z])


def multi_round_server(ctx, shape, k=4):
    sh = ctx.impl.sharing
    bits = ctx.params.linear.bits
    s = yield from sh.input_server(ctx.sub("input"), shape)
    s = yield from sh.reshare_server(ctx.sub("reshare"), s)
    opened = []
    for i in range(k):
        y = yield from sh.open_server(ctx.sub(f"open{i}"), s)
        opened.append(y)
        s = ctx.impl.ring.add(s, ctx.uniform(f"shift{i}", s.shape, bits), bits)
    yield from sh.reveal_server(ctx.sub("reveal"), s)
    return np.stack(opened)


def per_direction(tr: Transcript):
    return {d: [e for e in tr.entries if e.direction == d] for d in ("c2s", "s2c")}


# -- agreement with run_local ----------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["reference", "optimized"])
def test_run_tcp_matches_run_local(impl):
    x = np.arange(24, dtype=np.uint64).reshape(4, 6) * np.uint64(2711) % np.uint64(1 << 16)
    c, s = ctxs(impl)
    local = run_local(multi_round_client(c.sub("p"), x), multi_round_server(s.sub("p"), x.shape))
    assert local.transcript.rounds >= 5  # input/reshare, 4 opens in sequence, reveal

    (cres, cerr), (sres, serr) = tcp_pair(lambda: multi_round_client(ctxs(impl)[0].sub("p"), x),
                                          lambda: multi_round_server(ctxs(impl)[1].sub("p"), x.shape))
    assert cerr is None and serr is None, (cerr, serr)
    assert isinstance(cres, TcpResult) and cres.role == CLIENT and sres.role == SERVER
    # identical outputs
    assert np.array_equal(cres.output, local.client) and np.array_equal(sres.output, local.server)
    assert np.array_equal(cres.output[0], x)  # and they are right
    # identical transcripts: digest, per-direction entries (label, type, bytes, depth), costs
    d = local.transcript.digest()
    assert cres.transcript.digest() == d == sres.transcript.digest()
    assert per_direction(cres.transcript) == per_direction(local.transcript) == per_direction(sres.transcript)
    assert cres.transcript.cost() == local.transcript.cost() == sres.transcript.cost()
    assert cres.transcript.rounds == local.transcript.rounds == sres.transcript.rounds
    assert cres.transcript.cost("p/open2") == local.transcript.cost("p/open2")
    # framing is counted apart from message bytes: one header per message each side saw
    assert cres.transcript.framing_bytes == FRAME_HEADER.size * len(local.transcript.entries)
    # compute and waiting time are attributed to this party's labels
    assert cres.transcript.compute_time(CLIENT) > 0 and cres.transcript.compute_time(SERVER) == 0
    assert sres.transcript.compute_time(SERVER) > 0
    assert set(cres.transcript.waiting[CLIENT]) <= {e.label for e in local.transcript.entries}
    assert sres.transcript.waiting_time(SERVER, "p/input") > 0  # the server waits for the input first
    # process CPU time per label, over the same labels as the compute time (none for the peer)
    for res, role in ((cres, CLIENT), (sres, SERVER)):
        tr = res.transcript
        assert set(tr.cpu[role]) == set(tr.compute[role]) and not tr.cpu[CLIENT if role == SERVER else SERVER]
        assert all(t >= 0 for t in tr.cpu[role].values()) and tr.cpu_time(role) > 0


def _ahead(v):
    from nimbus.spec.ot import FerretAhead
    return FerretAhead(data=bytes([v]))


def _msg(v):
    return ShareLinear(share=np.array([v], dtype=np.uint64))


def overtaken_sender(ctx):
    yield ctx.sub("a1").send(_ahead(1))  # ASYNC: may overtake
    yield ctx.sub("n").send(_msg(7))
    yield ctx.sub("a2").send(_ahead(2))
    m = yield ctx.sub("back").recv(ShareLinear)
    return int(m.share[0])


def overtaken_receiver(ctx, take_all=True):
    from nimbus.spec.ot import FerretAhead
    m = yield ctx.sub("n").recv(ShareLinear)  # the two ASYNC messages wait aside
    yield ctx.sub("back").send(_msg(int(m.share[0]) + 1))
    a = yield ctx.sub("a1").recv(FerretAhead)
    b = (yield ctx.sub("a2").recv(FerretAhead)) if take_all else None
    return a.data + (b.data if b else b"")


def test_async_messages_wait_aside_in_order():
    """An ASYNC message (the OT layer's look-ahead) sent before others is set aside while its
    receiver waits for another type, and handed over in order when asked for; its depth counts
    when it is taken; a run that leaves one aside fails."""
    c, s = ctxs()
    res = run_local(overtaken_receiver(c), overtaken_sender(s))
    assert res.outputs == (b"\x01\x02", 8)
    assert [e.msg_type for e in res.transcript.entries if e.direction == "s2c"] == ["FerretAhead", "ShareLinear", "FerretAhead"]
    assert res.transcript.rounds == 2  # the reply depends on the normal message only
    c, s = ctxs()
    with pytest.raises(ProtocolError, match="undelivered"):
        run_local(overtaken_receiver(c, take_all=False), overtaken_sender(s))


def test_async_messages_over_tcp_match_run_local():
    """ASYNC messages set aside over TCP: same outputs, and each party's transcript lists them in
    wire order with the receiver's label (as ``run_local``); one left aside is an error."""
    c, s = ctxs()
    local = run_local(overtaken_receiver(c.sub("p")), overtaken_sender(s.sub("p")))
    (cres, cerr), (sres, serr) = tcp_pair(lambda: overtaken_receiver(ctxs()[0].sub("p")),
                                          lambda: overtaken_sender(ctxs()[1].sub("p")))
    assert cerr is None and serr is None, (cerr, serr)
    assert (cres.output, sres.output) == local.outputs == (b"\x01\x02", 8)
    assert cres.transcript.digest() == sres.transcript.digest() == local.transcript.digest()
    assert per_direction(cres.transcript) == per_direction(local.transcript) == per_direction(sres.transcript)
    (cres, cerr), _ = tcp_pair(lambda: overtaken_receiver(ctxs()[0].sub("p"), take_all=False),
                               lambda: overtaken_sender(ctxs()[1].sub("p")))
    assert isinstance(cerr, ProtocolError)  # the ASYNC message not taken is reported


def test_both_implementations_agree_over_tcp():
    x = np.full((3, 3), 7, dtype=np.uint64)
    digests, outs = set(), []
    for impl in ("reference", "optimized"):
        (cres, cerr), (sres, serr) = tcp_pair(lambda: multi_round_client(ctxs(impl)[0], x, k=2),
                                              lambda: multi_round_server(ctxs(impl)[1], x.shape, k=2))
        assert cerr is None and serr is None
        digests |= {cres.transcript.digest(), sres.transcript.digest()}
        outs.append(cres.output)
    assert len(digests) == 1 and np.array_equal(outs[0], outs[1])


def script_party(ctx, script):
    """Follow ``script`` = [(who sends: "c2s" | "s2c" | "both", elements)], one sub-context per step."""
    got = []
    for i, (kind, n) in enumerate(script):
        c = ctx.sub(f"s{i}")
        sends = kind == "both" or (kind == "c2s") == ctx.is_client
        if sends:
            yield c.send(ShareLinear(share=c.uniform("v", (n,), ctx.params.linear.bits)))
        if kind == "both" or not sends:
            got.append((yield c.recv(ShareLinear)).share)
    return got


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["c2s", "s2c", "both"]), st.integers(0, 300)), min_size=1, max_size=10))
def test_any_message_pattern_gives_the_same_transcript_as_run_local(script):
    c, s = ctxs(seed="script")
    local = run_local(script_party(c, script), script_party(s, script))
    (cres, cerr), (sres, serr) = tcp_pair(lambda: script_party(ctxs(seed="script")[0], script),
                                          lambda: script_party(ctxs(seed="script")[1], script), timeout=10)
    assert cerr is None and serr is None, (cerr, serr)
    for mine, theirs in ((cres.output, local.client), (sres.output, local.server)):
        assert len(mine) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(mine, theirs))
    assert cres.transcript.digest() == sres.transcript.digest() == local.transcript.digest()
    assert per_direction(cres.transcript) == per_direction(local.transcript) == per_direction(sres.transcript)
    assert cres.transcript.rounds == local.transcript.rounds


def test_connection_runs_several_protocols_and_listener_serves_several_sessions():
    x = np.ones((2, 2), dtype=np.uint64)
    with listen("127.0.0.1", 0, params=TINY, timeout=10) as lst:
        port = lst.address[1]

        def server():
            sessions = []
            for _ in range(3):
                with lst.accept(timeout=10) as conn:  # any session id
                    a = run_tcp(multi_round_server(ctxs()[1].sub("a"), x.shape, k=1), conn)
                    b = run_tcp(multi_round_server(ctxs()[1].sub("b"), x.shape, k=1), conn)
                    sessions.append((conn.session_id, a.transcript.digest(), b.transcript.digest()))
            return sessions

        th = Thread(server)
        th.start()
        mine = []
        for i in range(3):
            with connect("127.0.0.1", port, params=TINY, session_id=f"sess-{i}", timeout=10) as conn:
                c = ctxs()[0]
                a = run_tcp(multi_round_client(c.sub("a"), x, k=1), conn)
                b = run_tcp(multi_round_client(c.sub("b"), x, k=1), conn)
                mine.append((f"sess-{i}".encode(), a.transcript.digest(), b.transcript.digest()))
        theirs, err = th.outcome()
        assert err is None and theirs == mine


def test_sending_does_not_stall_compute():
    """A 2 MB message on a 50 Mbit/s link takes 320 ms on the wire; the generator gets control
    back at once and computes (here: sleeps 320 ms) while the writer thread sends, so the reply
    comes after ~max(wire, compute) + 2 latencies, not wire + compute."""
    big = np.zeros(250_000, dtype=np.uint64)  # 2 MB in Z_2^64
    slow = Network("slow", 50e6, 0.010)
    wire, compute, lat = 2_000_000 * 8 / 50e6, 0.32, 0.010
    stamps = {}

    def client():
        ctx = ctxs(params=BERT)[0]
        t0 = time.perf_counter()
        yield ctx.send(ShareLinear(share=big))
        stamps["send_returned"] = time.perf_counter() - t0
        time.sleep(compute)
        msg = yield ctx.recv(ShareLinear)
        stamps["reply"] = time.perf_counter() - t0
        return msg.share.size

    def server():
        ctx = ctxs(params=BERT)[1]
        msg = yield ctx.recv(ShareLinear)
        yield ctx.send(ShareLinear(share=msg.share[:1]))
        return None

    (cres, cerr), (_, serr) = tcp_pair(client, server, params=BERT, cnet=slow, snet=slow)
    assert cerr is None and serr is None
    # the send returned after encoding and hashing only, not after the transfer
    assert stamps["send_returned"] < 0.25 * wire, stamps
    # from then on, transfer and compute overlapped: ~max(wire, compute) + 2 lat, not their sum
    after = stamps["reply"] - stamps["send_returned"]
    assert wire + 2 * lat * 0.9 <= after < wire + 0.6 * compute, stamps


# -- handshake -------------------------------------------------------------------------------------
def _handshake_errors(**kw):
    (c, cerr), (s, serr) = tcp_pair(lambda: iter(()), lambda: iter(()), timeout=5, **kw)
    return cerr, serr


def test_handshake_rejects_different_parameter_sets_on_both_sides():
    t0 = time.monotonic()
    cerr, serr = _handshake_errors(cparams=TINY, sparams=BERT)
    for e in (cerr, serr):
        assert isinstance(e, HandshakeError), e
        assert "parameter sets differ" in str(e) and "'tiny'" in str(e) and "'bert-base'" in str(e)
    assert time.monotonic() - t0 < 3


def test_handshake_rejects_different_sessions_and_equal_roles():
    cerr, serr = _handshake_errors(session="alpha", csession="beta")
    for e in (cerr, serr):
        assert isinstance(e, HandshakeError) and "session ids differ" in str(e) and "'beta'" in str(e)

    with listen("127.0.0.1", 0, role=CLIENT, params=TINY, timeout=5) as lst:
        th = Thread(lambda: lst.accept(timeout=5))
        th.start()
        with pytest.raises(HandshakeError, match="both parties claim the role 'client'"):
            connect("127.0.0.1", lst.address[1], role=CLIENT, params=TINY, session_id="s", timeout=5)
        _, err = th.outcome()
        assert isinstance(err, HandshakeError) and "role" in str(err)


def test_handshake_rejects_other_protocol_version_on_both_sides():
    with listen("127.0.0.1", 0, params=TINY, timeout=5) as lst:
        th = Thread(lambda: lst.accept(timeout=5))
        th.start()
        with pytest.raises(HandshakeError, match="protocol versions differ") as ei:
            connect("127.0.0.1", lst.address[1], params=TINY, session_id="s", timeout=5,
                    _protocol_version=PROTOCOL_VERSION + 1)
        assert f"version {PROTOCOL_VERSION + 1}" in str(ei.value)
        _, err = th.outcome()
        assert isinstance(err, HandshakeError) and "protocol versions differ" in str(err)
        assert f"speaks version {PROTOCOL_VERSION + 1}" in str(err)


def test_listener_survives_a_non_nimbus_peer_and_a_silent_one():
    with listen("127.0.0.1", 0, params=TINY, timeout=1.0) as lst:
        port = lst.address[1]
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(HandshakeError, match="HELLO"):
            lst.accept(timeout=5)
        s.close()
        silent = socket.create_connection(("127.0.0.1", port))
        t0 = time.monotonic()
        with pytest.raises(PeerTimeout, match="HELLO"):
            lst.accept(timeout=5)
        assert time.monotonic() - t0 < 3
        silent.close()
        # still serving
        th = Thread(lambda: lst.accept(timeout=5))
        th.start()
        with connect("127.0.0.1", port, params=TINY, session_id="ok", timeout=5) as conn:
            assert conn.peer == SERVER and conn.session_id == b"ok"
        conn2, err = th.outcome()
        assert err is None
        conn2.close()


# -- bad frames and bad peers, via a hand-written fake peer ---------------------------------------
class FakePeer:
    """A raw-socket client that completes the handshake by hand, then misbehaves."""

    def __init__(self, port, session="fake", params=TINY, max_frame=1 << 20):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        hello = _Hello(PROTOCOL_VERSION, CLIENT, max_frame, params.id, params.name, session.encode(), "fake").pack()
        self.frame(HELLO, hello)
        kind, payload, _ = self.read_frame()
        assert kind == HELLO, kind

    def frame(self, kind, payload=b"", depth=0, length=None):
        self.sock.sendall(FRAME_HEADER.pack(kind, len(payload) if length is None else length, depth) + payload)

    def read_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError(len(buf))
            buf += chunk
        return buf

    def read_frame(self):
        kind, n, depth = FRAME_HEADER.unpack(self.read_exact(FRAME_HEADER.size))
        return kind, self.read_exact(n), depth

    def close(self):
        self.sock.close()


def one_recv_server():
    ctx = ctxs()[1]
    msg = yield ctx.recv(ShareLinear)
    return msg.share


def _serve_against_fake(misbehave, *, timeout=5.0, max_frame=1 << 20):
    """Serve one_recv_server behind a listener; ``misbehave(fake)`` plays the client.

    Returns (the server's error, seconds from the end of the handshake to that error, what
    ``misbehave`` returned)."""
    with listen("127.0.0.1", 0, params=TINY, timeout=timeout, max_frame=max_frame) as lst:
        stamps = {}

        def server():
            with lst.accept(session_id="fake", timeout=5) as conn:
                stamps["start"] = time.monotonic()
                try:
                    return run_tcp(one_recv_server(), conn)
                finally:
                    stamps["end"] = time.monotonic()

        th = Thread(server)
        th.start()
        fake = FakePeer(lst.address[1])
        try:
            extra = misbehave(fake)
        finally:
            fake.close()
        _, err = th.outcome(timeout + 5)
        return err, stamps["end"] - stamps["start"], extra


def test_truncated_frame_is_peer_disconnected():
    def misbehave(fake):
        fake.frame(DATA, b"\x01\x01" + b"\x00" * 8, depth=1, length=1000)  # claims 1000, sends 10
        fake.sock.shutdown(socket.SHUT_WR)

    err, dt, _ = _serve_against_fake(misbehave)
    assert isinstance(err, PeerDisconnected), err
    assert "truncated frame" in str(err) and "10 of 1000" in str(err)
    assert dt < 3


def test_oversized_frame_is_rejected_before_allocating_and_the_peer_is_told():
    def misbehave(fake):
        fake.frame(DATA, b"", depth=1, length=0xFFFFFFF0)  # ~4 GiB claimed, nothing sent
        kind, payload, _ = fake.read_frame()  # the server explains before hanging up
        return kind, payload

    err, dt, (kind, payload) = _serve_against_fake(misbehave, max_frame=1 << 16)
    assert isinstance(err, FrameTooLarge), err
    assert "4294967280 bytes" in str(err) and "65536" in str(err)
    assert kind == ERROR and b"FrameTooLarge" in payload
    assert dt < 3


def test_sender_refuses_a_message_larger_than_the_peers_limit():
    def client():
        ctx = ctxs()[0]
        yield ctx.send(ShareLinear(share=np.zeros(100_000, dtype=np.uint64)))  # 200 kB in Z_2^16

    (_, cerr), (_, serr) = tcp_pair(client, one_recv_server, max_frame=1 << 16, timeout=5)
    assert isinstance(cerr, FrameTooLarge) and "maximum frame size of 65536" in str(cerr)
    assert isinstance(serr, RemoteError) and "FrameTooLarge" in str(serr)


def test_garbage_payload_is_decode_error_and_the_peer_learns_why():
    def misbehave(fake):
        fake.frame(DATA, b"\x01\x01\x05", depth=1)  # ShareLinear tag, then a truncated tensor
        return fake.read_frame()

    err, _, (kind, payload, _) = _serve_against_fake(misbehave)
    assert isinstance(err, DecodeError)
    assert kind == ERROR and b"DecodeError" in payload and b"the server failed" in payload


def test_bye_while_data_expected_is_protocol_error():
    def misbehave(fake):
        fake.frame(BYE)
        return fake.read_frame()

    err, _, (kind, payload, _) = _serve_against_fake(misbehave)
    assert isinstance(err, ProtocolError) and "ended its protocol (BYE)" in str(err)
    assert "ShareLinear at label '/'" in str(err)
    assert kind == ERROR


def test_remote_error_frame_is_remote_error():
    err, _, _ = _serve_against_fake(lambda fake: fake.frame(ERROR, b"out of coffee"))
    assert isinstance(err, RemoteError) and "out of coffee" in str(err)


def test_silent_peer_times_out_naming_what_was_awaited():
    err, dt, _ = _serve_against_fake(lambda fake: time.sleep(1.2), timeout=0.5)
    assert isinstance(err, PeerTimeout), err
    assert "ShareLinear at label '/'" in str(err) and "0.5 s" in str(err)
    assert 0.5 <= dt < 1.1  # the timeout (and closing), not the peer's 1.2 s of silence


def test_generator_failure_is_reported_to_the_peer():
    def client():
        ctx = ctxs()[0]
        yield ctx.send(ShareLinear(share=np.zeros(3, dtype=np.uint64)))
        raise ValueError("client-side bug")

    def server():
        ctx = ctxs()[1]
        yield ctx.recv(ShareLinear)
        yield ctx.recv(ShareLinear)

    (_, cerr), (_, serr) = tcp_pair(client, server, timeout=5)
    assert isinstance(cerr, ValueError) and "client-side bug" in str(cerr)
    assert isinstance(serr, RemoteError) and "ValueError: client-side bug" in str(serr)


def test_extra_message_after_the_peer_returned_is_protocol_error():
    def client():
        ctx = ctxs()[0]
        yield ctx.send(ShareLinear(share=np.zeros(3, dtype=np.uint64)))
        yield ctx.send(ShareLinear(share=np.zeros(3, dtype=np.uint64)))

    (_, cerr), (_, serr) = tcp_pair(client, one_recv_server, timeout=5)
    assert isinstance(serr, ProtocolError) and "after this server's protocol had returned" in str(serr)
    # the client hears of it unless the server's BYE (sent when its protocol returned) reached the
    # client first: then the client has finished cleanly before the server reads the extra message
    assert cerr is None or isinstance(cerr, RemoteError), cerr


def test_a_generator_yielding_garbage_is_protocol_error_on_both_sides():
    def client():
        yield "not a request"

    (_, cerr), (_, serr) = tcp_pair(client, one_recv_server, timeout=5)
    assert isinstance(cerr, ProtocolError) and "yielded str" in str(cerr)
    assert isinstance(serr, RemoteError) and "ProtocolError" in str(serr)


def test_connect_errors_and_options():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(PeerDisconnected, match="refused"):
        connect("127.0.0.1", port, params=TINY, session_id="x", timeout=5, retry_s=0.3)
    assert 0.25 < time.monotonic() - t0 < 3  # retried for retry_s, then gave up
    with pytest.raises(ParameterError, match="session_id"):
        connect("127.0.0.1", port, params=TINY, session_id="", timeout=5)
    with pytest.raises(ParameterError, match="never hang"):
        connect("127.0.0.1", port, params=TINY, session_id="x", timeout=None)
    with pytest.raises(ParameterError, match="certfile"):
        listen("127.0.0.1", 0, params=TINY, tls=TlsConfig())
    with pytest.raises(ParameterError, match="unknown network preset"):
        listen("127.0.0.1", 0, params=TINY, network="moon")


def test_closed_connection_refuses_use():
    with listen("127.0.0.1", 0, params=TINY, timeout=5) as lst:
        th = Thread(lambda: lst.accept(timeout=5))
        th.start()
        conn = connect("127.0.0.1", lst.address[1], params=TINY, session_id="x", timeout=5)
        peer, _ = th.outcome()
        conn.close()
        conn.close()  # idempotent
        with pytest.raises(TransportError, match="closed"):
            conn.send_data(b"x", 1)
        with pytest.raises(TransportError, match="closed"):
            run_tcp(multi_round_client(ctxs()[0], np.ones(2, np.uint64)), conn)
        # the peer sees the orderly close as a disconnect, not a hang
        with pytest.raises(PeerDisconnected, match="closed the connection"):
            peer.recv_data("anything", timeout=5)
        peer.close()


_KILLED_CLIENT = textwrap.dedent("""
    import sys, numpy as np
    import nimbus.spec
    from nimbus.spec.params import get_preset
    from nimbus.spec.proto import Ctx, CLIENT
    from nimbus.spec.prg import PRG
    from nimbus.spec.sharing import ShareLinear
    from nimbus.registry import implementation
    from nimbus.runtime.tcp import connect, run_tcp
    ctx = Ctx(CLIENT, get_preset("tiny"), PRG.for_tests("k"), implementation("reference"))
    def gen():
        yield ctx.send(ShareLinear(share=np.zeros(3, dtype=np.uint64)))
        print("sent", flush=True)
        yield ctx.recv(ShareLinear)   # never answered: the test kills us here
    with connect("127.0.0.1", int(sys.argv[1]), params=get_preset("tiny"), session_id="kill", timeout=30) as c:
        run_tcp(gen(), c)
""")


def test_peer_killed_mid_run_is_peer_disconnected():
    def server():
        ctx = ctxs()[1]
        yield ctx.recv(ShareLinear)
        yield ctx.recv(ShareLinear)  # the client is killed before it sends this

    with listen("127.0.0.1", 0, params=TINY, timeout=30) as lst:
        child = subprocess.Popen([sys.executable, "-c", _KILLED_CLIENT, str(lst.address[1])],
                                 stdout=subprocess.PIPE, env=dict(os.environ, NUMBA_NUM_THREADS="1"))
        try:
            def serve():
                with lst.accept(session_id="kill", timeout=30) as conn:
                    return run_tcp(server(), conn)

            th = Thread(serve)
            th.start()
            assert child.stdout.readline().strip() == b"sent"
            t0 = time.monotonic()
            child.send_signal(signal.SIGKILL)
            _, err = th.outcome(10)
            assert isinstance(err, PeerDisconnected), err
            assert "client" in str(err) and ("closed the connection" in str(err) or "lost" in str(err)), err
            assert time.monotonic() - t0 < 5  # detected at once, not at the 30 s timeout
        finally:
            child.kill()
            child.wait(5)
            child.stdout.close()


# -- TLS -----------------------------------------------------------------------------------------
def _self_signed(tmp_path, name, cn="localhost"):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def big_open_client(ctx, n):
    return (yield from ctx.impl.sharing.open_client(ctx.sub("open"), ctx.uniform("x", (n,), 64)))


def big_open_server(ctx, n):
    return (yield from ctx.impl.sharing.open_server(ctx.sub("open"), ctx.uniform("x", (n,), 64)))


def test_tls_roundtrip_with_concurrent_bulk_both_ways(tmp_path):
    cert, key = _self_signed(tmp_path, "server")
    n = 400_000  # 3.2 MB each way at once: reader and writer threads both busy on one SSLObject
    c, s = ctxs(params=BERT)
    local = run_local(big_open_client(c, n), big_open_server(s, n))
    seen = {}

    def client():
        with connect("127.0.0.1", port, params=BERT, session_id="tls", timeout=20,
                     tls=TlsConfig.client(cafile=cert, server_hostname="localhost")) as conn:
            seen["tls"] = conn.tls_version
            r1 = run_tcp(big_open_client(ctxs(params=BERT)[0], n), conn)
            r2 = run_tcp(multi_round_client(ctxs(params=BERT)[0].sub("m"), np.ones(5, np.uint64)), conn)
            return r1, r2

    with listen("127.0.0.1", 0, params=BERT, timeout=20, tls=TlsConfig.server(cert, key)) as lst:
        port = lst.address[1]

        def server():
            with lst.accept(timeout=20) as conn:
                r1 = run_tcp(big_open_server(ctxs(params=BERT)[1], n), conn)
                r2 = run_tcp(multi_round_server(ctxs(params=BERT)[1].sub("m"), (5,)), conn)
                return r1, r2

        th = Thread(server)
        th.start()
        (c1, c2) = client()
        (s1, s2), err = th.outcome()
    assert err is None
    assert seen["tls"] in ("TLSv1.2", "TLSv1.3")
    assert np.array_equal(c1.output, local.client) and np.array_equal(s1.output, local.server)
    assert c1.transcript.digest() == s1.transcript.digest() == local.transcript.digest()
    assert c2.transcript.digest() == s2.transcript.digest()
    assert np.array_equal(c2.output[0], np.ones(5, np.uint64))


def test_tls_rejects_an_untrusted_certificate_and_plaintext_peers(tmp_path):
    cert, key = _self_signed(tmp_path, "server")
    other, _ = _self_signed(tmp_path, "other")
    # client trusts another CA: verification fails on the client, the server hears the alert
    cerr, serr = _handshake_errors(stls=TlsConfig.server(cert, key), ctls=TlsConfig.client(cafile=other))
    assert isinstance(cerr, HandshakeError) and "certificate verify failed" in str(cerr)
    assert isinstance(serr, HandshakeError) and "TLS handshake" in str(serr)
    # wrong hostname
    cerr, _ = _handshake_errors(stls=TlsConfig.server(cert, key),
                                ctls=TlsConfig.client(cafile=cert, server_hostname="evil.example"))
    assert isinstance(cerr, HandshakeError) and "evil.example" in str(cerr)
    # TLS on one side only
    cerr, serr = _handshake_errors(stls=TlsConfig.server(cert, key))
    assert isinstance(cerr, HandshakeError) and isinstance(serr, HandshakeError)
    cerr, serr = _handshake_errors(ctls=TlsConfig.client(cafile=cert))
    assert isinstance(cerr, HandshakeError) and "TLS" in str(cerr)
    assert isinstance(serr, HandshakeError) and "TLS" in str(serr)
