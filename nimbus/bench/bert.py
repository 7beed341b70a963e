"""End-to-end benchmark of secure BERT inference: ``python -m nimbus.bench.bert --out DIR`` (also
``nimbus bench``).

    python -m nimbus.bench.bert --out DIR [--model bert-base|minilm|tiny|PATH] [--layers K]
        [--tokens 128 32 1] [--repeat R] [--mode local|tcp] [--network lan wan ...] [--cache C]

Builds the model (``bert-base``: a random BERT with ``BertConfig()`` sizes and a 2-label head, no
download; ``minilm``: the sentiment classifier of ``nimbus.demo``; ``tiny``: hidden 32, for tests;
or a checkpoint directory), ``--layers K`` keeps the first K encoder layers. Runs the setup into a
cache (``--cache``, default ``DIR/cache-<model>``; a valid cache is reused), then online queries of
random token ids (drawn from the labelled test PRG) of each length: one session per query,
``--warmup`` sessions first (default 1, excluded), then the medians of ``--repeat`` sessions. When
the client's expanded matrices do not fit in memory (BERT-base, 12 layers: ~55 GB), each query
streams them from the cache; that time is recorded (``stream_s``) and reported.

``--mode local``: both parties in this process (``run_local``; per-party compute from the
transcript, no waiting). ``--mode tcp``: the server in a second process, both over loopback shaped
to each ``--network`` preset; the server's own compute/waiting come back from its process.

Writes ``DIR/results.json`` (schema ``nimbus-bench-bert/1``) and ``DIR/report.md``: per category
bytes each way, flights (round trips = flights / 2), compute per party, waiting, the measured wall
and the projection on each network preset (``nimbus.report.projections``), the difference to the
measured wall where a run was shaped to that preset; per-layer round trips; the setup amortisation
against the SPU/BumbleBee baseline measured on this machine (../shared/NIMBUS.md). PNG plots when
matplotlib is installed (``pip install 'nimbus-2pc[bench]'``; ``nimbus.bench.plots``), with
``--study STUDY.json`` also accuracy vs approximation table from ``python -m nimbus.approx.study``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Threads of OpenMP runtimes sleep while they wait (as in nimbus.bench.linear): on the shared 2-core
# machine the default spinning made a BERT-base layer 5.8x slower (docs/bench.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from nimbus.cli import EXIT_OK, command  # noqa: E402

#: rows of the report's step table
STEP_ROWS = 20
#: Environment variables that change the timings (recorded in results.json).
TIMING_ENV = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")

__all__ = ["main", "run_bench", "configure", "cmd_bench", "build_model", "report", "SCHEMA", "BASELINE"]

SCHEMA = "nimbus-bench-bert/1"
MODELS = ("bert-base", "minilm", "tiny")
TINY = dict(hidden=32, heads=2, ffn=64, layers=1, vocab=64, max_positions=32, perturb=True)
#: SPU 0.9.5 CHEETAH (BumbleBee) on this machine, BERT-base, 128 tokens, loopback, 2 cores
#: (../shared/NIMBUS.md, "The baseline measured on our own machine"): per encoder layer and 12 layers.
BASELINE = {"source": "NIMBUS.md: SecretFlow SPU 0.9.5 CHEETAH (BumbleBee), BERT-base, 128 tokens, loopback, 2 cores",
            "tokens": 128, "layer_s": 104.0, "layer_bytes": 1.59e9, "layer_round_trips": 500,
            "model12_s": 1270.0, "model12_bytes": 19.1e9}
PER_LAYER_RT_TARGET = 100


# -- the model -------------------------------------------------------------------------------------------
def build_model(model: str, layers: int | None = None, seed: int = 0):
    """``(weights, name)`` of ``model`` (a name in :data:`MODELS` or a checkpoint directory),
    keeping only the first ``layers`` encoder layers when given."""
    from nimbus.models import hf, synthetic

    if model == "bert-base":
        c = synthetic.BERT_BASE_CONFIG
        w = synthetic.random_bert(hidden=c["hidden_size"], heads=c["num_attention_heads"], ffn=c["intermediate_size"],
                                  layers=layers or c["num_hidden_layers"], vocab=c["vocab_size"],
                                  max_positions=c["max_position_embeddings"], labels=2, seed=seed)
        name = "bert-base-random"
    elif model == "tiny":
        w = synthetic.random_bert(**dict(TINY, layers=layers or TINY["layers"]), labels=2, seed=seed)
        name = "tiny-random"
    else:
        if model == "minilm":
            from nimbus.demo import ensure_classifier

            path = ensure_classifier(lambda s: print(s, file=sys.stderr))
            name = "minilm-sentiment"
        else:
            path = Path(model).expanduser()
            name = path.name
        w = hf.load_model(path)
    if layers is not None and layers != len(w.layers):
        if not 1 <= layers <= len(w.layers):
            raise SystemExit(f"--layers {layers}: the model has {len(w.layers)} encoder layers")
        w = dataclasses.replace(w, layers=tuple(w.layers[:layers]), shape=dataclasses.replace(w.shape, layers=layers))
    return w, f"{name}-L{len(w.layers)}"


def _server(spec: dict):
    from nimbus.api import Server, load_secret
    from nimbus.spec import model as M

    w, name = build_model(spec["model"], spec["layers"], spec["seed"])
    return Server(w, params=spec["params"], secret=load_secret(spec["key_file"]),
                  config=M.SecureConfig(**spec["config"]), name=name)


def _server_main(spec_json: str) -> None:
    """The server process of ``--mode tcp``: listen on a free loopback port (printed), serve
    ``connections`` connections, write each one's category table to ``out/server-<k>.json``."""
    from nimbus.report import category_table, step_table
    from nimbus.runtime import listen, run_tcp, tune_party_process

    from .memory import peak_rss, reset_peak_rss

    spec = json.loads(spec_json)
    srv = _server(spec)
    if spec["tune"]:
        tune_party_process()
    out = Path(spec["out"])
    with listen("127.0.0.1", 0, params=srv.params, network=spec["network"], timeout=spec["timeout"]) as lst:
        print(lst.address[1], flush=True)
        for k in range(spec["connections"]):
            with lst.accept(timeout=None) as conn:
                reset_peak_rss()
                res = run_tcp(srv.connection(), conn)
                tmp = out / f"server-{k}.json.part"
                tmp.write_text(json.dumps({"table": category_table(res.transcript), "wall_s": res.wall_s,
                                           "steps": step_table(res.transcript), "peak_rss": peak_rss(),
                                           "layer_steps": step_table(res.transcript, 2, fold=False)}))
                os.replace(tmp, out / f"server-{k}.json")


# -- measurements ----------------------------------------------------------------------------------------
def _tokens(arch, n: int, label: str):
    """``n`` random token ids in [0, vocab) from the labelled test PRG (public benchmark input)."""
    from nimbus.spec.prg import PRG

    return PRG.for_tests(f"nimbus/bench/bert/{label}").uniform_mod("tokens", (n,), arch.vocab).astype("int64")


def _median_tree(items: list):
    """Field-wise median of equally shaped nested dicts of numbers."""
    first = items[0]
    if isinstance(first, dict):
        return {k: _median_tree([it[k] for it in items]) for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        m = statistics.median(items)
        return int(m) if all(isinstance(x, int) for x in items) and float(m).is_integer() else m
    return first


def _layer_flights(tr, layers: int) -> list[int]:
    """Flights carrying messages labelled with encoder layer i (``.../layer<i>/...``)."""
    depths = [set() for _ in range(layers)]
    for e in tr.entries:
        for part in e.label.split("/"):
            if part.startswith("layer") and part[5:].isdigit() and int(part[5:]) < layers:
                depths[int(part[5:])].add(e.depth)
                break
    return [len(d) for d in depths]


def _merge_server(table: dict, server: dict | None, new_rows: bool = False) -> dict:
    """The client's table (categories or steps) with the server's timing columns (TCP: each party
    times only itself; the client's own server columns are zero). ``new_rows``: a row only the
    server has (a step of its own) is added."""
    from nimbus.report import KINDS

    for k, srow in (server or {}).items():
        if k not in table and not new_rows:
            continue
        row = table.setdefault(k, {f"{kind}_s": {"client": 0.0, "server": 0.0} for kind in KINDS})
        for kind in KINDS:
            row[f"{kind}_s"]["server"] = srow[f"{kind}_s"]["server"]
    return table


def _finish(table: dict, networks, measured: float | None, shaped: str | None) -> dict:
    from nimbus.report import projections

    for cat, row in table.items():
        row["round_trips"] = row["flights"] / 2
        row["projected_s"] = projections(row, networks)
    tot = table["total"]
    tot["measured_s"] = measured
    tot["projection_error_s"] = ({shaped: tot["projected_s"][shaped] - measured}
                                 if shaped and measured is not None else {})
    return table


class _Peer:
    """The server process of one network preset in ``--mode tcp``."""

    def __init__(self, spec: dict, connections: int, network: str, workdir: Path):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        for f in self.dir.glob("server-*.json"):
            f.unlink()
        spec = dict(spec, connections=connections, network=network, out=str(self.dir))
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        self.proc = subprocess.Popen([sys.executable, "-c", "import sys; from nimbus.bench.bert import _server_main; "
                                      "_server_main(sys.argv[1])", json.dumps(spec)], stdout=subprocess.PIPE, env=env,
                                     text=True)
        line = self.proc.stdout.readline()
        if not line.strip():
            self.proc.wait(timeout=30)
            raise RuntimeError(f"the benchmark's server process failed (exit {self.proc.returncode})")
        self.port = int(line)
        self.k = 0

    def table(self, timeout: float = 600.0) -> tuple[dict, dict]:
        """The next connection's category table, and its steps, layer steps and peak RSS."""
        path = self.dir / f"server-{self.k}.json"
        t0 = time.monotonic()
        while not path.exists():
            if self.proc.poll() is not None and not path.exists():
                raise RuntimeError(f"the benchmark's server process exited ({self.proc.returncode})")
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"no server report {path}")
            time.sleep(0.02)
        self.k += 1
        rep = json.loads(path.read_text())
        return rep["table"], {k: rep.get(k) for k in ("steps", "layer_steps", "peak_rss")}

    def close(self):
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _cache_valid(client, server, key_file: Path) -> bool:
    from nimbus.spec.errors import CacheError

    if not key_file.exists():
        return False
    try:
        client.arch  # parameter set and protocol version of the cache
        meta = json.loads((client.dir / "model.json").read_text())
    except (CacheError, OSError, ValueError):
        return False
    return meta.get("fingerprint") == server.fixed.fingerprint.hex() and (client.dir / meta.get("cache", "")).is_file()


def _git_commit() -> dict:
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return {"commit": head.stdout.strip() or None, "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _machine() -> dict:
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "memory_bytes": mem, "python": platform.python_version(),
            "loadavg_start": list(os.getloadavg()), "env": {k: os.environ.get(k) for k in TIMING_ENV}}


def run_bench(a: argparse.Namespace, log=print) -> dict:
    """Run the benchmark described by the parsed options ``a``; returns the results (also written)."""
    from nimbus import __version__
    from nimbus.api import Client, load_secret
    from nimbus.report import category_table, step_table
    from nimbus.runtime import run_local

    from .memory import peak_rss, reset_peak_rss
    from nimbus.spec import model as M
    from nimbus.spec.cost import NETWORKS

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    networks = list(a.network or NETWORKS)
    for n in networks:
        if n not in NETWORKS:
            raise SystemExit(f"unknown network preset {n!r}; known: {', '.join(NETWORKS)}")
    tables = {} if not getattr(a, "table", None) else {"gelu_table": a.table, "exp_table": a.table}
    config = M.SecureConfig(ot_kind=a.ot, **tables)
    from nimbus.spec.params import get_preset

    try:
        config.check(get_preset(a.params))  # what the server checks when it is built, before any work
    except Exception as e:
        raise SystemExit(f"--table {a.table}: {e}" if tables else str(e)) from None
    data = {"schema": SCHEMA, "machine": _machine(), **_git_commit(), "nimbus": __version__,
            "options": {"model": a.model, "layers": a.layers, "tokens": list(a.tokens), "repeat": a.repeat,
                        "warmup": a.warmup, "preload": a.preload, "mode": a.mode, "networks": networks, "seed": a.seed,
                        "tune": a.tune,
                        "study": str(Path(a.study).resolve()) if getattr(a, "study", None) else None,
                        "session": "one session per query (hello and OT setup included in each)"}}
    t0 = time.perf_counter()
    w, name = build_model(a.model, a.layers, a.seed)
    cache = Path(a.cache).expanduser() if a.cache else out / f"cache-{name}"
    key_file = cache.parent / (cache.name + ".server.key")
    valid_key = key_file.exists()
    from nimbus.api import Server

    server = Server(w, params=a.params, secret=load_secret(key_file), config=config, name=name)
    build_s = time.perf_counter() - t0
    arch = server.arch
    data["params"] = {"name": server.params.name, "he": getattr(server.params.he, "name", None)}
    data["config"] = dataclasses.asdict(config)
    data["model"] = {"name": name, "source": a.model, "arch": dataclasses.asdict(arch), "build_s": build_s,
                     "fingerprint": server.fixed.fingerprint.hex(), "max_tokens": M.max_tokens(server.params, arch)}
    for n in a.tokens:
        if not 1 <= n <= data["model"]["max_tokens"]:
            raise SystemExit(f"--tokens {n}: must be in [1, {data['model']['max_tokens']}]")
    log(f"model {name}: {arch.layers} layers, hidden {arch.hidden}, vocab {arch.vocab} (built in {build_s:.1f} s)")
    client = Client(cache, params=server.params, impl=server.impl, preload=a.preload)
    spec = {"model": a.model, "layers": a.layers, "seed": a.seed, "params": server.params.name,
            "key_file": str(key_file), "config": dataclasses.asdict(config), "timeout": a.timeout,
            "tune": a.tune}

    # -- setup
    setup_file = cache.parent / (cache.name + ".setup.json")
    reuse = valid_key and _cache_valid(client, server, key_file)
    if reuse:
        size = sum(f.stat().st_size for f in cache.iterdir() if f.is_file())
        try:  # the figures of the run that made the cache, when it was this benchmark
            made = json.loads(setup_file.read_text())
        except (OSError, ValueError):
            made = {}
        data["setup"] = {**made, "reused": True, "cache_dir": str(cache), "cache_bytes": size}
        log(f"setup: reusing the valid cache {cache} ({size / 1e9:.3f} GB)")
    else:
        peer = None
        if a.mode == "tcp":
            peer = _Peer(spec, 1, networks[0], out / "server")
        try:
            if peer is None:
                r = client.setup_local(server)
            else:
                r = client.setup("127.0.0.1", peer.port, network=networks[0], progress=False, timeout=a.timeout,
                                 retry_s=60)
                peer.table()
        finally:
            if peer is not None:
                peer.close()
        data["setup"] = {"reused": False, "cache_dir": str(cache), "bytes_s2c": r.bytes_s2c, "bytes_c2s": r.bytes_c2s,
                         "seconds": r.seconds, "cache_bytes": r.cache_bytes,
                         "network": networks[0] if a.mode == "tcp" else None,
                         "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         "loadavg": list(os.getloadavg())}
        setup_file.write_text(json.dumps({k: v for k, v in data["setup"].items() if k != "reused"}, indent=1))
        log(f"setup: {r.bytes_s2c / 1e9:.3f} GB s2c, {r.seconds:.1f} s, cache {r.cache_bytes / 1e9:.3f} GB")
    (out / "results.json").write_text(json.dumps(data, indent=1))

    # -- online
    if a.tune:
        from nimbus.runtime import tune_party_process

        data["machine"]["tuning"] = tune_party_process()
    runs = []
    shaped = networks if a.mode == "tcp" else [None]
    for net in shaped:
        peer = _Peer(spec, len(a.tokens) * (a.repeat + a.warmup), net, out / "server") if net else None
        try:
            for n in a.tokens:
                samples = []
                for rep in range(a.repeat + a.warmup):
                    toks = _tokens(arch, n, f"{n}/{rep}")
                    queries = client.encode([toks])
                    reset_peak_rss()
                    tw, st0 = time.perf_counter(), client.stream_seconds
                    if peer is None:
                        res = run_local(client.session(queries), server.connection())
                        tr, out_ = res.transcript, res.client
                        stable = None
                    else:
                        from nimbus.runtime import connect, run_tcp

                        with connect("127.0.0.1", peer.port, params=server.params, session_id=os.urandom(16),
                                     network=net, timeout=a.timeout, retry_s=60) as conn:
                            res = run_tcp(client.session(queries), conn)
                        tr, out_ = res.transcript, res.output
                    wall, streamed = time.perf_counter() - tw, client.stream_seconds - st0
                    mine = peak_rss()
                    stable, sx = peer.table() if peer else (None, {})
                    if rep < a.warmup:
                        log(f"  {net or 'local'} {n} tokens: warm-up {wall:.2f} s (excluded)")
                        continue
                    steps = {k: _merge_server(step_table(tr, *args), sx.get(k), new_rows=True)
                             for k, args in (("steps", ()), ("layer_steps", (2, False)))}
                    peak = {"client": mine, "server": sx.get("peak_rss")} if peer else {"both": mine}
                    table = _merge_server(category_table(tr), stable)
                    samples.append({"wall_s": wall, "stream_s": streamed, "categories": table,
                                    "peak_rss_bytes": peak, **steps,
                                    "layer_flights": _layer_flights(tr, arch.layers)})
                    log(f"  {net or 'local'} {n} tokens: {wall:.2f} s, {tr.cost().total_bytes / 1e6:.1f} MB, "
                        f"{tr.rounds} flights")
                med = _median_tree([s["categories"] for s in samples])
                wall = statistics.median(s["wall_s"] for s in samples)
                lf = samples[0]["layer_flights"]
                runs.append({"tokens": n, "network": net, "repeats": len(samples),
                             "wall_s": wall, "wall_samples_s": [s["wall_s"] for s in samples],
                             "stream_s": statistics.median(s["stream_s"] for s in samples),
                             "categories": _finish(med, networks, wall, net),
                             "steps": samples[0]["steps"], "layer_steps": samples[0]["layer_steps"],
                             "peak_rss_bytes": _median_tree([s["peak_rss_bytes"] for s in samples]),
                             "layers": {"flights": lf, "round_trips": [f / 2 for f in lf],
                                        "max_round_trips": max(lf) / 2 if lf else 0,
                                        "target_round_trips": PER_LAYER_RT_TARGET}})
                data["runs"] = runs
                (out / "results.json").write_text(json.dumps(data, indent=1))
        finally:
            if peer is not None:
                peer.close()
    client.close()
    data["runs"] = runs
    data["amortisation"] = amortisation(data)
    data["machine"]["loadavg_end"] = list(os.getloadavg())
    data["plots"] = plots(data, out)
    (out / "results.json").write_text(json.dumps(data, indent=1))
    (out / "report.md").write_text(report(data))
    return data


# -- analysis --------------------------------------------------------------------------------------------
def _baseline_for(layers: int) -> dict:
    if layers == 12:
        return {"seconds": BASELINE["model12_s"], "bytes": BASELINE["model12_bytes"], "basis": "12 layers measured"}
    return {"seconds": BASELINE["layer_s"] * layers, "bytes": BASELINE["layer_bytes"] * layers,
            "basis": f"{layers} x one measured layer"}


def amortisation(data: dict) -> dict | None:
    """Queries after which setup + online beats the baseline's online cost (BERT-base sizes and
    ``BASELINE['tokens']`` tokens only; time on this machine's loopback and bytes)."""
    arch = data["model"]["arch"]
    if (arch["hidden"], arch["ffn"], arch["heads"]) != (768, 3072, 12):
        return None
    runs = [r for r in data.get("runs", []) if r["tokens"] == BASELINE["tokens"] and r["network"] is None]
    runs = runs or [r for r in data.get("runs", []) if r["tokens"] == BASELINE["tokens"]]
    st = data.get("setup", {})
    if not runs or "seconds" not in st:
        return None
    r = runs[0]
    base = _baseline_for(arch["layers"])
    tot = r["categories"]["total"]
    online_s, online_b = r["wall_s"], tot["bytes_c2s"] + tot["bytes_s2c"]
    setup_b = st["bytes_s2c"] + st["bytes_c2s"]

    def breakeven(setup, online, baseline):
        if online >= baseline:
            return None
        import math

        return max(1, math.ceil(setup / (baseline - online)))

    return {"baseline": dict(base, source=BASELINE["source"]), "tokens": BASELINE["tokens"], "network": r["network"],
            "online_s": online_s, "online_bytes": online_b, "setup_s": st["seconds"], "setup_bytes": setup_b,
            "queries_time": breakeven(st["seconds"], online_s, base["seconds"]),
            "queries_bytes": breakeven(setup_b, online_b, base["bytes"])}


def plots(data: dict, out: Path) -> list[str]:
    """PNG plots (matplotlib when installed, the ``bench`` extra; otherwise none), drawn by
    :mod:`nimbus.bench.plots`: per run, per-category stacked bars of the time per query on each
    network preset (compute vs network) and as measured, with the bytes per category
    (``categories-<tokens>-<local|preset>.png``); the setup amortisation curves in time and bytes
    (``amortisation.png``); with ``--study STUDY.json``, accuracy vs approximation table
    (``accuracy-approx.png``). Returns the file names (in ``out``)."""
    from nimbus.bench import plots as P

    return P.bench_plots(data, out, study=data.get("options", {}).get("study"))


def _mb(b) -> str:
    return f"{b / 1e6:.2f}"


def report(data: dict) -> str:
    """The markdown report of :func:`run_bench`'s results."""
    m, o, arch = data["machine"], data["options"], data["model"]["arch"]
    nets = o["networks"]
    L = [f"# Secure BERT inference benchmark: {data['model']['name']}", "",
         f"Commit {data.get('commit')}{' (dirty tree)' if data.get('dirty') else ''}; nimbus {data.get('nimbus')}; "
         f"parameters `{data['params']['name']}`; OT `{data['config']['ot_kind'] or 'preset default'}`; "
         f"GELU table `{data['config'].get('gelu_table')}`, exp table `{data['config'].get('exp_table')}`.",
         f"Machine: {m['processor']}, {m['cpus']} CPUs (shared), load average {m['loadavg_start']} at start, "
         f"{m.get('loadavg_end')} at end.",
         f"Model: {arch['layers']} layers, hidden {arch['hidden']}, {arch['heads']} heads, ffn {arch['ffn']}, "
         f"vocab {arch['vocab']}, labels {len(arch['labels'])}.",
         f"Mode `{o['mode']}`; {o['session']}; {o.get('warmup', 1)} warm-up session(s) per length excluded"
         f"{' (numba caches warm from earlier runs)' if o.get('warmup', 1) == 0 else ''}; medians of {o['repeat']} "
         "repeats. Projections: slower party's compute + slower direction's bytes / bandwidth + flights x latency.",
         ""]
    st = data.get("setup", {})
    L += ["## Setup (once per model and server key)", ""]
    if st.get("reused"):
        L.append(f"Reused the valid cache `{st['cache_dir']}` ({st['cache_bytes'] / 1e9:.3f} GB)"
                 + (f"; it was made at {st.get('measured')} (load {st.get('loadavg')}) as follows." if "seconds" in st
                    else "."))
    if "seconds" in st:
        L.append(f"{(st['bytes_s2c'] + st['bytes_c2s']) / 1e9:.3f} GB ({_mb(st['bytes_s2c'])} MB server->client), "
                 f"{st['seconds']:.1f} s ({st['network'] or 'in process'}), cache {st['cache_bytes'] / 1e9:.3f} GB.")
    L.append("")
    for r in data.get("runs", []):
        tot = r["categories"]["total"]
        L += [f"## {r['tokens']} tokens, {'in process' if r['network'] is None else 'TCP shaped to ' + r['network']}", "",
              f"Measured wall {r['wall_s']:.2f} s (median of {r['repeats']}: "
              f"{', '.join(f'{x:.2f}' for x in r['wall_samples_s'])}); "
              f"{(tot['bytes_c2s'] + tot['bytes_s2c']) / 1e6:.2f} MB; {tot['flights']} flights "
              f"= {tot['round_trips']:.1f} round trips. Per encoder layer round trips: "
              f"{', '.join(f'{x:g}' for x in r['layers']['round_trips'])} (target <= {r['layers']['target_round_trips']}).",
              ""]
        pk = r.get("peak_rss_bytes") or {}
        if any(pk.values()):
            who = ", ".join(f"{k if k != 'both' else 'both parties (one process)'} "
                            f"{v / 1e9:.2f} GB" for k, v in pk.items() if v)
            L += [f"Peak resident memory during the query (the high-water mark reset at its start; what the "
                  f"process already held counts): {who}.", ""]
        if r.get("stream_s"):
            L += [f"The client's expanded matrices did not fit in memory: {r['stream_s']:.2f} s of its Linear "
                  "compute is streaming them from the cache (reading, verifying, expanding) during the query; "
                  "a client with the memory to preload them skips this (`--preload`).", ""]
        if tot["projection_error_s"]:
            (n, d), = tot["projection_error_s"].items()
            L += [f"Projection on `{n}` {tot['projected_s'][n]:.2f} s vs measured {r['wall_s']:.2f} s "
                  f"(difference {d:+.2f} s).", ""]
        L.append("| category | c2s MB | s2c MB | flights | RT | client s | server s | client CPU s | server CPU s "
                 "| wait c s | wait s s | " + " | ".join(f"{n} s" for n in nets) + " |")
        L.append("|---" * (11 + len(nets)) + "|")
        for c, row in r["categories"].items():
            cpu = row.get("cpu_s", {"client": float("nan"), "server": float("nan")})
            L.append(f"| {c} | {_mb(row['bytes_c2s'])} | {_mb(row['bytes_s2c'])} | {row['flights']} | "
                     f"{row['round_trips']:g} | {row['compute_s']['client']:.3f} | {row['compute_s']['server']:.3f} | "
                     f"{cpu['client']:.3f} | {cpu['server']:.3f} | "
                     f"{row['waiting_s']['client']:.3f} | {row['waiting_s']['server']:.3f} | "
                     + " | ".join(f"{row['projected_s'][n]:.3f}" for n in nets) + " |")
        L += ["", "Where the time goes (projected; compute = slower party, network = the rest):", "",
              "| network | total s | compute s | network s | network share |", "|---|---|---|---|---|"]
        comp = max(tot["compute_s"]["client"], tot["compute_s"]["server"])
        for n in nets:
            p = tot["projected_s"][n]
            L.append(f"| {n} | {p:.2f} | {comp:.2f} | {p - comp:.2f} | {100 * (p - comp) / p if p else 0:.0f}% |")
        L.append("")
        steps = sorted(r.get("steps", {}).items(), key=lambda kv: -max(kv[1]["compute_s"].values()))[:STEP_ROWS]
        if steps:
            L += [f"The {len(steps)} steps with the most compute (summed over layers; CPU = process CPU "
                  "seconds, all threads: CPU > compute means the party kept more than one core busy):", "",
                  "| step | client s | client CPU s | client waits s | server s | server CPU s | server waits s |",
                  "|---|---|---|---|---|---|---|"]
            for k, v in steps:
                L.append(f"| {k} | " + " | ".join(f"{v[c][role]:.2f}" for role in ("client", "server")
                                                   for c in ("compute_s", "cpu_s", "waiting_s")) + " |")
            L.append("")
    am = data.get("amortisation")
    L += ["## Setup amortisation", ""]
    if am:
        b = am["baseline"]
        qt = am["queries_time"]
        qb = am["queries_bytes"]
        L += [f"Baseline online cost ({b['basis']}): {b['seconds']:.0f} s, {b['bytes'] / 1e9:.2f} GB per "
              f"{am['tokens']}-token query ({b['source']}).",
              f"Nimbus: setup {am['setup_s']:.1f} s / {am['setup_bytes'] / 1e9:.2f} GB once, then "
              f"{am['online_s']:.2f} s / {am['online_bytes'] / 1e9:.3f} GB per query.",
              f"Setup + online beats the baseline after {qt if qt else 'never (online is slower)'} "
              f"quer{'y' if qt == 1 else 'ies'} in time and after {qb if qb else 'never'} in bytes."]
        if o["mode"] == "local":
            L.append("(In `local` mode the time is both parties' compute taken in turn in one process; the "
                     "baseline ran two processes on the two cores: compare with a `--mode tcp` run.)")
        L.append("")
    else:
        L += ["Not computed: needs the setup figures (a fresh setup, or a cache this benchmark made) and a "
              "128-token run of a model with BERT-base layer sizes (the baseline's workload).", ""]
    if data.get("plots"):
        L += ["Plots: " + ", ".join(f"`{p}`" for p in data["plots"]), ""]
    else:
        L += ["Plots: none (matplotlib is not installed).", ""]
    return "\n".join(L)


# -- command line ----------------------------------------------------------------------------------------
def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (results.json, report.md)")
    p.add_argument("--model", default="bert-base", metavar="NAME|PATH",
                   help="bert-base (random, BertConfig() sizes), minilm (the demo classifier), tiny, or a checkpoint dir")
    p.add_argument("--layers", type=int, default=None, metavar="K", help="keep only the first K encoder layers")
    p.add_argument("--tokens", type=int, nargs="+", default=[128, 32, 1], metavar="N", help="query lengths")
    p.add_argument("--repeat", type=int, default=3, metavar="R", help="measured sessions per length (after a warm-up)")
    p.add_argument("--warmup", type=int, default=1, metavar="W",
                   help="warm-up sessions per length, excluded (default 1; 0 for long full-model runs with warm JIT caches)")
    p.add_argument("--mode", choices=("local", "tcp"), default="local",
                   help="local: both parties in this process; tcp: two processes over shaped loopback")
    p.add_argument("--network", nargs="+", default=None, metavar="PRESET",
                   help="network presets to project on (and, with --mode tcp, to shape to); default all")
    p.add_argument("--cache", default=None, metavar="DIR", help="the client's cache (default DIR/cache-<model>)")
    p.add_argument("--params", default="bert-base", help="parameter preset (default bert-base)")
    p.add_argument("--ot", default="", choices=("", "ferret", "iknp"),
                   help="COT extension of the sessions (default: the preset's)")
    p.add_argument("--table", default=None, metavar="NAME",
                   help="approximation table of GELU and exp (default: the graph's, tuned on MiniLM; "
                        "ours-bert-base-random-global is calibrated on this random BERT-base's activations)")
    p.add_argument("--preload", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the expanded matrices in memory (default: when they fit)")
    p.add_argument("--seed", type=int, default=0, help="torch seed of the random model weights")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S", help="TCP peer timeout")
    p.add_argument("--tune", action=argparse.BooleanOptionalAction, default=True,
                   help="party-process settings (nimbus.runtime.tuning: keep freed memory, freeze the loaded heap; "
                        "what nimbus serve / infer do); --no-tune for the allocator's defaults")
    p.add_argument("--study", default=None, metavar="STUDY.json",
                   help="an accuracy study (python -m nimbus.approx.study --out): also plot accuracy-approx.png")


@command("bench", "benchmark secure BERT inference end to end (results.json + report.md)", configure)
def cmd_bench(args: argparse.Namespace) -> int:
    """Setup and online queries of a (random or given) BERT model, per-category bytes, flights,
    compute and projections on the network presets (see nimbus.bench.bert)."""
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    data = run_bench(args, log=lambda s: print(s, flush=True))
    print(report(data))
    return EXIT_OK


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    configure(ap)
    return cmd_bench(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
