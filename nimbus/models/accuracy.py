"""Accuracy through the secure path: secure inference vs float64 vs the fixed-point semantics.

    python -m nimbus.models.accuracy --n 2000 --secure 40 --out results/accuracy    # the classifier
    python -m nimbus.models.accuracy --embedding --n 500 --secure 10 --out results/embed

Classifier mode: the MiniLM sentiment classifier (``nimbus.models.classifier``) on the first ``n``
held-out Rotten Tomatoes snippets (embedding mode: the packaged all-MiniLM-L6-v2 as an embedding
model, mean pooling, no head; cosine of secure vs float embeddings).

Two measurements, both reported:

1. every snippet through ``nimbus.spec.model.ideal_forward``, the exact fixed-point semantics of
   the secure graph (what a secure query reconstructs to, bit for bit), against float64:
   accuracy, top-1 agreement, max and mean |logit difference| (or cosines);
2. the first ``--secure`` snippets through the secure protocol itself (both parties in this
   process, ``run_local``: the protocol code, messages and randomness of the TCP path; one OT
   session), each checked bit for bit against (1), with the same metrics over those snippets.

(2) costs about a minute of CPU per snippet on a 2-core machine (GELU's products and the
client-side outer products dominate at short lengths), so (1) is what makes 500+ snippets
affordable in one sitting; the bit-exact check of (2) is what ties (1) to the protocol. Writes
``results.json`` and ``report.md`` in ``--out``. ``--resume`` continues interrupted secure runs
from ``progress.jsonl`` (re-checking every earlier result against this run's semantics, and
reusing ``fixed_point.json`` when it was made with the same model, graph and parameters), so the
secure runs can accumulate over several sittings; ``--tcp`` runs the server in a second process.
``--shard K/N`` runs only the snippets with index = K mod N (results in ``progress-K-of-N.jsonl``),
so N processes can share the work on N cores once the client cache is set up (they map one
expanded copy of the matrices, ``Client(preload="shared")``); a later ``--resume``
without ``--shard`` gathers and re-checks every ``progress*.jsonl`` and writes the full report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["run", "main"]


def _embedding_model_dir(out: Path) -> Path:
    """The packaged MiniLM as an embedding checkpoint (mean pooling recorded in config.json)."""
    import shutil

    from . import hf

    src, dst = hf.minilm_dir(), out / "minilm-embedding"
    if not (dst / "config.json").exists():
        dst.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.is_file():
                shutil.copy(f, dst / f.name)
        cfg = json.loads((dst / "config.json").read_text())
        cfg["nimbus_pooling"] = "mean"
        (dst / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    return dst


def server_main(model_dir: str, port: int, key_file: str, config_json: str) -> None:
    """The server process of ``--tcp``: serve one session, then exit."""
    from nimbus.api import Server
    from nimbus.spec.model import SecureConfig

    srv = Server(model_dir, key_file=key_file, config=SecureConfig.from_json(config_json.encode()))
    srv.serve("127.0.0.1", port, max_connections=1, timeout=3600.0, log=lambda s: None)


def _infer_tcp(client, model_dir: Path, key_file: Path, config, queries, on_result) -> None:
    """Both parties as processes over loopback (unshaped): the server in a child process."""
    import os
    import subprocess

    from nimbus.demo import _free_port

    port = _free_port()
    code = ("from nimbus.models.accuracy import server_main; "
            f"server_main({str(model_dir)!r}, {port}, {str(key_file)!r}, {config.to_json().decode()!r})")
    env = dict(os.environ, OMP_WAIT_POLICY="passive")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        client.infer(queries, "127.0.0.1", port, retry_s=300, timeout=3600.0, on_result=on_result)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()


def run(out: Path, n: int = 500, embedding: bool = False, cache_dir: Path | None = None, resume: bool = False,
        model_dir: Path | None = None, progress: bool = True, secure: int | None = None,
        config: "SecureConfig | None" = None, tcp: bool = False, shard: tuple[int, int] | None = None) -> dict:
    """Evaluate the first ``n`` held-out snippets with the exact fixed-point semantics of the
    secure graph and the float model, and run the first ``secure`` of them (default: all n)
    through the secure protocol, checking each result against the fixed-point semantics
    (``tcp``: the server in a second process over loopback, so the parties use two cores;
    ``shard=(k, m)``: only the snippets i with i % m == k, recorded in ``progress-k-of-m.jsonl``)."""
    if shard is not None and not (len(shard) == 2 and 0 <= shard[0] < shard[1]):
        raise ValueError(f"shard must be (k, m) with 0 <= k < m, got {shard!r}")
    args = (out, n, embedding, cache_dir, resume, model_dir, progress, secure, config, tcp, shard)
    if shard is None:
        return _run(*args)
    import numba  # m shards share the cores: numba's parallel kernels get cores / m threads each

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, (os.cpu_count() or 1) // shard[1])))
    try:
        return _run(*args)
    finally:
        numba.set_num_threads(before)


def _run(out, n, embedding, cache_dir, resume, model_dir, progress, secure, config, tcp, shard) -> dict:
    from nimbus.api import Client, Server
    from nimbus.demo import DEMO_HOME, ensure_classifier
    from nimbus.spec.model import decode_output, ideal_forward

    from . import data, plain

    out.mkdir(parents=True, exist_ok=True)
    if model_dir is None:
        model_dir = _embedding_model_dir(DEMO_HOME) if embedding else ensure_classifier()
    secure = n if secure is None else min(int(secure), n)
    cache_dir = Path(cache_dir or (DEMO_HOME / ("embedding-client" if embedding else "demo-client")))
    key_file = cache_dir.parent / (cache_dir.name + "-server.key")
    server = Server(model_dir, key_file=key_file, **({"config": config} if config else {}))
    held = data.load_splits().heldout
    texts, labels = list(held.texts[:n]), held.labels[:n]
    w = server.weights
    from .hf import load_tokenizer

    tok = load_tokenizer(model_dir, max_len=128)
    ids = [tok.encode(t) for t in texts]
    rows = []
    t0 = time.perf_counter()
    key = {"fingerprint": server.fixed.fingerprint.hex(), "config": server.state.config.to_json().decode(),
           "params": server.params.name}
    if resume:  # reuse the semantics of an earlier run of this model and graph (they are deterministic)
        rows = _reuse_semantics(out / "fixed_point.json", key, ids, n)
    it = range(len(rows), n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, unit="snippet", desc="fixed-point semantics", disable=None)
    for i in it:  # 1. the exact fixed-point semantics of the secure graph, and float64
        fo = plain.forward(w, ids[i][None])
        ideal = ideal_forward(server.fixed, server.params, ids[i])
        vals = decode_output(server.arch, server.params, ideal)
        row = {"i": i, "tokens": int(ids[i].size), "ids": ids[i].tolist(), "ideal": ideal.tolist()}
        if embedding:
            f = fo.pooled[0]
            row["cosine"] = float(vals @ f / np.linalg.norm(vals) / np.linalg.norm(f))
        else:
            row.update(label=int(labels[i]), float_logits=fo.logits[0].tolist(), ideal_logits=vals.tolist())
        rows.append(row)
    sim_s = time.perf_counter() - t0
    fp = out / f"fixed_point.json.{os.getpid()}.tmp"  # atomic: shards may write it at the same time
    fp.write_text(json.dumps(  # kept even if the secure runs are interrupted
        {"summary": _summary_sim(rows, embedding), "rows": rows, "simulation_s": sim_s, **key}))
    fp.replace(out / "fixed_point.json")
    setup = None
    sec_rows = []
    if secure:
        client = Client(cache_dir, preload="shared" if shard is not None else None)  # shards share one copy
        try:
            fp_ok = client.state().fingerprint == server.fixed.fingerprint
        except Exception:  # no or stale cache
            fp_ok = False
        client.close()
        if not fp_ok and shard is not None:  # N shards setting up one cache at once would corrupt it
            raise SystemExit(f"{cache_dir}: no client cache for this model; set it up first "
                             "(run once without --shard), then start the shards")
        if not fp_ok:
            r = client.setup_local(server, progress=progress)
            setup = {"bytes_s2c": r.bytes_s2c, "seconds": r.seconds, "cache_bytes": r.cache_bytes}
        prog = out / ("progress.jsonl" if shard is None else f"progress-{shard[0]}-of-{shard[1]}.jsonl")
        if not resume:  # a fresh run forgets earlier results (a shard only its own)
            for f in ([prog] if shard is not None else out.glob("progress*.jsonl")):
                f.unlink(missing_ok=True)
        sec_rows = []
        if resume:  # every earlier result, from any shard, re-checked against this run's semantics
            for f in sorted(out.glob("progress*.jsonl")):
                for x in f.read_text().splitlines():
                    try:
                        r = json.loads(x) if x.strip() else None
                        if r is not None and not (isinstance(r, dict) and {"i", "tokens", "bit_exact", "secure"} <= r.keys()):
                            raise ValueError("missing fields")
                    except ValueError as e:
                        raise SystemExit(f"{f}: unreadable result line ({e}); delete it to run that snippet again") from None
                    if r is not None:
                        sec_rows.append(dict(r, file=f.name))
        seen = set()
        for r in sec_rows:
            k = r.get("i")
            ok = isinstance(k, int) and 0 <= k < n and k not in seen and r.get("tokens") == int(ids[k].size)
            if ok:
                want = decode_output(server.arch, server.params, np.asarray(rows[k]["ideal"], np.uint64))
                ok = r["bit_exact"] == (np.asarray(r["secure"]).tolist() == want.tolist())
            if not ok:
                raise SystemExit(f"{out / r['file']}: snippet {r.get('i')} does not match this model and graph "
                                 "configuration (or is recorded twice); run without --resume (or with another --out)")
            seen.add(k)
        sec_rows = sorted((r for r in sec_rows if r["i"] < secure), key=lambda r: r["i"])
        for r in sec_rows:
            r.pop("file")
        todo = [i for i in range(secure) if i not in seen and (shard is None or i % shard[1] == shard[0])]
        with open(prog, "a") as pf:
            bar = None
            if progress and todo:
                from tqdm import tqdm

                bar = tqdm(total=len(todo), unit="snippet", desc="secure inference", disable=None)
            last = [time.perf_counter()]

            def on_result(k, res):  # 2. each secure result, checked against the semantics
                i = todo[k]
                now = time.perf_counter()
                r = {"i": i, "tokens": int(ids[i].size), "seconds": now - last[0],
                     "bit_exact": res.output.tolist() == rows[i]["ideal"], "secure": res.values.tolist()}
                last[0] = now
                sec_rows.append(r)
                pf.write(json.dumps(r) + "\n")
                pf.flush()
                if bar is not None:
                    bar.update(1)

            if todo and tcp:
                _infer_tcp(client, model_dir, key_file, server.state.config, [ids[i] for i in todo], on_result)
            elif todo:
                client.infer_local(server, [ids[i] for i in todo], on_result=on_result)
            if bar is not None:
                bar.close()
    res = {"mode": "embedding" if embedding else "classifier", "model": str(model_dir),
           "fixed_point_semantics": _summary_sim(rows, embedding), "secure": _summary_secure(rows, sec_rows, embedding),
           "setup": setup, "simulation_s": sim_s, "config": server.state.config.to_json().decode(),
           "params": server.params.name, "transport": "tcp (two processes, loopback)" if tcp else "in process"}
    (out / "results.json").write_text(json.dumps(res, indent=1))
    (out / "report.md").write_text(_markdown(res))
    return res


def _reuse_semantics(path: Path, key: dict, ids: list, n: int) -> list[dict]:
    """The rows of an earlier ``fixed_point.json`` made with the same model fingerprint, graph
    configuration and parameters, for the same token ids (at most ``n``); [] otherwise."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if any(old.get(k) != v for k, v in key.items()):
        return []
    rows = []
    for r in old.get("rows", [])[:n]:
        if r.get("i") != len(rows) or r.get("ids") != ids[len(rows)].tolist():
            break
        rows.append(r)
    return rows


def _summary_sim(rows: list[dict], embedding: bool) -> dict:
    if embedding:
        cos = np.array([r["cosine"] for r in rows])
        return {"n": len(rows), "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min())}
    y = np.array([r["label"] for r in rows])
    flt = np.array([r["float_logits"] for r in rows])
    fix = np.array([r["ideal_logits"] for r in rows])
    d = np.abs(fix - flt)
    return {"n": len(rows), "accuracy": float((fix.argmax(1) == y).mean()),
            "accuracy_float": float((flt.argmax(1) == y).mean()),
            "agreement_with_float": float((fix.argmax(1) == flt.argmax(1)).mean()),
            "max_abs_logit_diff": float(d.max()), "mean_abs_logit_diff": float(d.mean())}


def _summary_secure(rows: list[dict], sec: list[dict], embedding: bool) -> dict:
    if not sec:
        return {"n": 0}
    out = {"n": len(sec), "bit_exact_with_fixed_point_semantics": int(sum(r["bit_exact"] for r in sec)),
           "median_query_s": float(np.median([r["seconds"] for r in sec])),
           "median_tokens": float(np.median([r["tokens"] for r in sec]))}
    if embedding:
        return out
    y = np.array([rows[r["i"]]["label"] for r in sec])
    flt = np.array([rows[r["i"]]["float_logits"] for r in sec])
    s = np.array([r["secure"] for r in sec])
    d = np.abs(s - flt)
    out.update(accuracy=float((s.argmax(1) == y).mean()), accuracy_float=float((flt.argmax(1) == y).mean()),
               agreement_with_float=float((s.argmax(1) == flt.argmax(1)).mean()),
               max_abs_logit_diff=float(d.max()), mean_abs_logit_diff=float(d.mean()))
    return out


def _markdown(res: dict) -> str:
    lines = [f"# Secure inference accuracy ({res['mode']})", "", f"Model: `{res['model']}`; parameters "
             f"`{res['params']}`; graph config `{res['config']}`.", ""]
    for title, key in (("Exact fixed-point semantics of the secure graph (`ideal_forward`)", "fixed_point_semantics"),
                       (f"Secure protocol runs ({res.get('transport', 'in process')})", "secure")):
        lines += [f"## {title}", "", "| metric | value |", "|---|---|"]
        for k, v in res[key].items():
            lines.append(f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nimbus.models.accuracy", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=500, help="held-out snippets (default 500)")
    ap.add_argument("--embedding", action="store_true", help="the MiniLM embedding model instead of the classifier")
    ap.add_argument("--cache", type=Path, default=None, help="client cache directory")
    ap.add_argument("--secure", type=int, default=None, metavar="K",
                    help="run the first K snippets through the secure protocol (default: all n)")
    ap.add_argument("--resume", action="store_true", help="continue the secure runs of an interrupted run")
    ap.add_argument("--model", type=Path, default=None, help="checkpoint directory (default: the classifier)")
    ap.add_argument("--tcp", action="store_true",
                    help="run the server in a second process over loopback (the parties use two cores)")
    ap.add_argument("--shard", default=None, metavar="K/N",
                    help="only the snippets with index K mod N (run N of these at once after the setup)")
    a = ap.parse_args(argv)
    shard = None
    if a.shard is not None:
        try:
            shard = tuple(int(x) for x in a.shard.split("/"))
            if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
                raise ValueError
        except ValueError:
            ap.error(f"--shard wants K/N with 0 <= K < N, got {a.shard!r}")
    res = run(a.out, a.n, a.embedding, a.cache, a.resume, a.model, secure=a.secure, tcp=a.tcp, shard=shard)
    print(json.dumps({k: res[k] for k in ("fixed_point_semantics", "secure")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
