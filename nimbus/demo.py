"""``nimbus demo``: secure inference with the real MiniLM sentiment classifier, both parties on
this machine as two processes over loopback (shaped to a network preset).

1. The classifier: frozen all-MiniLM-L6-v2 + a logistic head trained on Rotten Tomatoes
   (``nimbus.models.classifier``; built once, ~1 min, cached in ~/.cache/nimbus).
2. A server process (``nimbus.api.Server``) loads it, converts it to fixed point and serves.
3. The client process (this one) runs the setup once: the server's weights and word-embedding
   table, encrypted under the server's key, streamed into the client's cache (~10 GB for MiniLM,
   a few minutes; kept for later runs, which skip it).
4. One inference session over a few sentences: every sentence runs through the whole secure
   graph (private embedding lookup, 6 encoder layers, pooling, head); only the client sees the
   logits. They are printed beside the plaintext float64 model's, and compared bit for bit with
   the exact fixed-point semantics (``nimbus.spec.model.ideal_forward``): the demo fails if any
   differs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["SENTENCES", "DEMO_HOME", "run_demo", "server_main", "ensure_classifier"]

SENTENCES = (
    "A gripping, beautifully shot film that never lets go.",
    "Tedious, overlong and painfully unfunny.",
    "The cast is charming, but the script is a mess.",
)
DEMO_HOME = Path.home() / ".cache" / "nimbus"


def ensure_classifier(out=print) -> Path:
    """The classifier checkpoint directory (built on first use)."""
    from nimbus.approx.study import DEFAULT_MODEL_DIR, ensure_classifier as _ensure

    if not (DEFAULT_MODEL_DIR / "config.json").exists():
        out("building the classifier (frozen MiniLM + logistic head on Rotten Tomatoes; ~1 min, once) ...")
    return Path(_ensure(DEFAULT_MODEL_DIR))


def server_main(model_dir: str, port: int, network: str | None, key_file: str, connections: int) -> None:
    """The server process: serve ``connections`` connections, then exit."""
    from nimbus.api import Server

    srv = Server(model_dir, key_file=key_file)
    srv.serve("127.0.0.1", port, network=network, max_connections=connections,
              log=lambda s: print(f"[server] {s}", flush=True))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cache_ok(client, fingerprint: bytes) -> bool:
    from nimbus.spec.errors import CacheError

    try:
        st = client.state()
    except CacheError:
        return False
    ok = st.fingerprint == fingerprint
    client.close()
    return ok


def run_demo(network: str = "lan", check_network: bool = False, model_dir=None, cache_dir=None,
             sentences=SENTENCES, out=print) -> int:
    """Run the demo; returns 0 when every secure result equals the exact fixed-point semantics."""
    from nimbus.api import Client, Server
    from nimbus.models import plain
    from nimbus.spec.model import decode_output, ideal_forward

    if check_network:
        from nimbus.runtime.netem import net_check

        out(f"== network self-check: two processes over loopback shaped to '{network}'")
        out(net_check(network, nbytes=20_000_000, rounds=50).report())
    model_dir = Path(model_dir) if model_dir else ensure_classifier(out)
    cache_dir = Path(cache_dir) if cache_dir else DEMO_HOME / "demo-client"
    key_file = str((cache_dir.parent / (cache_dir.name + "-server.key")))
    # the client's view of the plaintext model is only for the side-by-side comparison
    local = Server(model_dir, key_file=key_file)
    client = Client(cache_dir)
    need_setup = not _cache_ok(client, local.fixed.fingerprint)
    port = _free_port()
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_WAIT_POLICY="passive")
    code = ("from nimbus.demo import server_main; "
            f"server_main({str(model_dir)!r}, {port}, {network!r}, {key_file!r}, {2 if need_setup else 1})")
    out(f"== secure inference: {local.arch.name} ({local.arch.layers} layers, hidden {local.arch.hidden}, "
        f"labels {', '.join(local.arch.labels)}), two processes over loopback shaped to '{network}'")
    server = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        if need_setup:
            out("-- setup (once per model): the server's encrypted weights -> the client's cache")
            r = client.setup("127.0.0.1", port, network=network, retry_s=120, progress=True)
            out(f"   {r.bytes_s2c / 1e9:.2f} GB received in {r.seconds:.1f} s; cache {r.cache_bytes / 1e9:.2f} GB "
                f"at {r.path}")
        else:
            out(f"-- setup: the cache in {cache_dir} matches the server's model (skipped)")
        out(f"-- online: {len(sentences)} sentences, one session")
        run = client.infer(list(sentences), "127.0.0.1", port, network=network, retry_s=120)
        server.wait(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
    tok = client.tokenizer()
    w = local.weights
    ok = True
    out(f"\n{'sentence':<56}{'secure':>20}{'plaintext':>20}")
    for s, p in zip(sentences, run.predictions):
        ids = tok.encode(s)
        f = plain.forward(w, ids[None]).logits[0]
        ideal = ideal_forward(local.fixed, local.params, ids)
        same = np.array_equal(ideal, p.output)
        ok &= same
        pf = np.exp(f - f.max()) / np.exp(f - f.max()).sum()
        lab_f = local.arch.labels[int(np.argmax(f))]
        out(f"{s[:54]:<56}{p.label:>8} p={p.probabilities[1]:.3f}{lab_f:>11} p={pf[1]:.3f}"
            + ("" if same else "   <- differs from the fixed-point semantics!"))
        out(f"{'':<56}logits {' '.join(f'{v:+.4f}' for v in p.logits)} vs {' '.join(f'{v:+.4f}' for v in f)}"
            f" (fixed point: {' '.join(f'{v:+.4f}' for v in decode_output(local.arch, local.params, ideal))})")
    tr = run.transcript
    c = tr.cost()
    out(f"\nonline: {run.wall_s:.1f} s wall for {len(sentences)} sentences on '{network}' (one OT session), "
        f"{c.c2s / 1e6:.1f} MB client->server, {c.s2c / 1e6:.1f} MB server->client, {tr.rounds} flights")
    out(f"secure results == exact fixed-point semantics, bit for bit: {ok}")
    out("per-category breakdown: nimbus infer --report (see docs/guide.md)")
    return 0 if ok else 1
