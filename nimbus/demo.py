"""``nimbus demo``: what runs securely today, on the packaged MiniLM, both parties on this machine.

Until the secure BERT graph lands (the end-to-end issue), the demo runs the first half of
MiniLM's layer-0 feed-forward block on a real sentence, securely, as two processes over TCP
shaped to a network preset:

1. ``net-check``: the shaped loopback link reaches the preset's bandwidth and latency;
2. setup: the server encrypts ``W1`` (384 x 1536) under its RLWE key and streams it; the client
   keeps the ciphertexts (the client-side outer product's one-time phase);
3. online: OT session (Ferret), then ``GELU(X W1 + b1)`` on additive shares of ``X`` -- the FFN
   input of the sentence, shared as it would be mid-inference -- with the client-side outer
   product (noise-flooded, whole-query 2^-40) and Nimbus's GELU; the result is revealed to the
   client only;
4. the client compares the secure result with the plaintext float64 layer and with the spec's
   ideal fixed-point functionality (which it must equal bit for bit).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np

__all__ = ["run_demo", "server_main", "server_proto", "client_proto", "party_context", "SENTENCE"]

SENTENCE = "A gripping, beautifully shot film that never lets go."
_PORT_ENV = "NIMBUS_DEMO_PORT"


def _shapes():
    from nimbus.spec.linear import WeightShape

    return [WeightShape("h1", 384, 1536)]


def _layer0_ffn_input(text: str) -> tuple[np.ndarray, object]:
    """X (tokens x 384): the input of layer 0's first FFN matrix, in float64, and the weights."""
    from nimbus.models import hf, plain

    w = hf.load_model()
    ids = hf.load_tokenizer().encode(text)[None]
    valid = np.ones(ids.shape, dtype=bool)
    nl = plain.Nonlinear()
    x = plain._embed(w, ids, nl)
    lw = w.layers[0]
    h = plain.layer_norm(x + plain._attention(0, x, lw, valid, w.shape.heads, nl), lw.ln1_gamma,
                         lw.ln1_beta, w.shape.eps)
    return h[0], lw


def _fixed(params, X, lw):
    from nimbus.spec import fixedpoint as fxp

    R = params.linear
    x = fxp.encode(X, R)
    W1 = fxp.encode(lw.w1, R)
    b1 = fxp.encode(lw.b1, type(R)(R.bits, 2 * R.frac))  # the bias at the product's scale 2^(2f)
    return x, W1, b1


def _share(params, x, seed: bytes):
    from nimbus.spec.prg import PRG
    from nimbus.spec.sharing import ideal_share

    r = PRG(seed).uniform("demo/x_c", x.shape, params.linear.bits)
    return ideal_share(x, r, params.linear)


def server_proto(ctx, W1, b1, x_s, shapes):
    im = ctx.impl
    sk, _pk = yield from im.linear.server_setup(ctx.sub("setup"), {"h1": W1}, shapes)
    ot = yield from im.ot.ot_setup_server(ctx.sub("ot"))
    y_s = yield from im.linear.cop_server(ctx.sub("Linear_h1"), x_s, W1, b1, sk)
    g_s = yield from im.nonlinear.gelu_server(ctx.sub("GELU"), ot, y_s, 2 * ctx.params.linear.frac)
    yield from im.sharing.reveal_server(ctx.sub("reveal"), g_s)


def client_proto(ctx, x_c, shapes):
    im = ctx.impl
    st = yield from im.linear.client_setup(ctx.sub("setup"), shapes)
    ot = yield from im.ot.ot_setup_client(ctx.sub("ot"))
    u = yield from im.linear.cop_client(ctx.sub("Linear_h1"), x_c, st["weights"]["h1"], st["pk"], shapes[0].d_out)
    g_c = yield from im.nonlinear.gelu_client(ctx.sub("GELU"), ot, u, 2 * ctx.params.linear.frac)
    return (yield from im.sharing.reveal_client(ctx.sub("reveal"), g_c))


def party_context(role: str):
    import nimbus
    from nimbus.spec import PRG, Ctx, get_preset

    return Ctx(role, get_preset("bert-base").require_secure(), PRG.from_os(), nimbus.implementation("optimized"))


def server_main(port: int, network: str | None, share_seed: bytes) -> None:
    """The server process: owns W1, b1 (and, for the demo, its share of X)."""
    from nimbus.runtime import listen, run_tcp

    ctx = party_context("server")
    X, lw = _layer0_ffn_input(SENTENCE)
    x, W1, b1 = _fixed(ctx.params, X, lw)
    _, x_s = _share(ctx.params, x, share_seed)
    with listen("127.0.0.1", port, params=ctx.params, network=network, timeout=120) as lst:
        conn = lst.accept(timeout=120)
        with conn:
            run_tcp(server_proto(ctx, W1, b1, x_s, _shapes()), conn)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_demo(network: str = "lan", check_network: bool = True, out=print) -> int:
    """Run the demo; returns 0 when the secure result equals the ideal functionality."""
    from nimbus.runtime import connect, run_tcp
    from nimbus.runtime.netem import net_check
    from nimbus.spec.fixedpoint import decode
    from nimbus.spec.nonlinear_fn import ideal_gelu

    if check_network:
        out(f"== 1. network self-check: two processes over loopback shaped to '{network}'")
        out(net_check(network, nbytes=20_000_000, rounds=50).report())
    share_seed = os.urandom(32)
    port = _free_port()
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_WAIT_POLICY="passive")
    code = f"from nimbus.demo import server_main; server_main({port}, {network!r}, bytes.fromhex({share_seed.hex()!r}))"
    server = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        ctx = party_context("client")
        X, lw = _layer0_ffn_input(SENTENCE)
        x, _, _ = _fixed(ctx.params, X, lw)
        x_c, _ = _share(ctx.params, x, share_seed)
        out(f"\n== 2-3. secure GELU(X W1 + b1) of MiniLM layer 0 on {X.shape[0]} tokens of: {SENTENCE!r}")
        conn = connect("127.0.0.1", port, params=ctx.params, session_id=os.urandom(16), network=network,
                       timeout=300, retry_s=60)
        t0 = time.perf_counter()
        with conn:
            res = run_tcp(client_proto(ctx, x_c, _shapes()), conn)
        wall = time.perf_counter() - t0
        server.wait(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
    tr = res.transcript
    out(f"{'phase':<12}{'client->server':>16}{'server->client':>16}{'rounds':>8}{'client CPU s':>14}")
    for label in ("setup", "ot", "Linear_h1", "GELU", "reveal"):
        c = tr.cost(label)
        out(f"{label:<12}{c.c2s:>16,}{c.s2c:>16,}{c.rounds:>8}{tr.compute_time('client', label):>14.2f}")
    out(f"wall time, both phases, on '{network}': {wall:.1f} s")
    # 4. compare
    _, W1, b1 = _fixed(ctx.params, X, lw)
    from nimbus import implementation

    ring = implementation("optimized").ring
    Y = ring.add(ring.matmul(x, W1, 64), np.ascontiguousarray(np.broadcast_to(b1, (x.shape[0], W1.shape[1]))), 64)
    ideal = ideal_gelu(Y, ctx.params, in_frac=2 * ctx.params.linear.frac)
    secure = decode(res.output, ctx.params.linear)
    from nimbus.models.plain import gelu_exact

    plain = gelu_exact(X @ lw.w1 + lw.b1)
    same = np.array_equal(res.output, ideal)
    out("\n== 4. secure vs plaintext (first token, first 6 of 1536 outputs)")
    out("secure   : " + " ".join(f"{v:8.4f}" for v in secure[0, :6]))
    out("plaintext: " + " ".join(f"{v:8.4f}" for v in plain[0, :6]))
    out(f"max |secure - float64| = {np.abs(secure - plain).max():.4f} (the GELU table's certified bound "
        f"plus fixed-point rounding); mean = {np.abs(secure - plain).mean():.5f}")
    out(f"secure result == ideal fixed-point functionality, bit for bit: {same}")
    return 0 if same else 1
