"""OT-extension benchmark: COTs per second and bits per COT for IKNP and Ferret.

Usage: ``python -m nimbus.bench.ot --out DIR [--n 20000000] [--threads 1 2] [--modes local tcp]
[--preset bert-base] [--impl optimized]``. Writes ``DIR/ot.json`` (machine-readable) and
``DIR/ot.md`` (report).

Two modes. ``local``: both parties in this process through ``run_local`` (they alternate, so each
kernel gets the whole machine): "COT/s (both parties)" is COTs delivered per wall-clock second with
both parties' work done on this machine; "COT/s (two machines)" assumes each party on its own
machine (the larger of the two parties' compute times). ``tcp``: how parties really run — two
processes (the client a child process, the server this one), one per core, over loopback TCP
(``nimbus.runtime.tcp``), each with ``NUMBA_NUM_THREADS`` = the thread count; "wall" is the
slower party's wall-clock time of the timed ``run_tcp``, "cpu" the two processes' CPU seconds.
Threads are numba threads inside the kernels.
Communication is measured from the transcript (refill messages only, i.e. the extension itself);
bits per COT divide by the COTs the extension generated. Projections use
``nimbus.spec.cost.NETWORKS`` (``Cost.project``). The JIT is warmed first (one refill); medians of
``--repeats`` runs are reported. Setup (base OTs, Ferret bootstrap) is reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Both parties share this machine: idle OpenMP workers must sleep, not spin (STACK.md). Set
# before the first parallel kernel starts the OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numba  # noqa: E402
import numpy as np

from nimbus.registry import Implementation, implementation
from nimbus.runtime import run_local
from nimbus.runtime.tcp import connect, listen, run_tcp
from nimbus.spec import NETWORKS, get_preset
from nimbus.spec.cost import Cost
from nimbus.spec.prg import PRG
from nimbus.spec.proto import CLIENT, SERVER, Ctx

__all__ = ["main", "bench_kind", "bench_kind_tcp", "bench_kernels"]

CHUNK = 1 << 20  # COTs per take() call, as a consumer would ask


def _impl(name: str):
    """A registered implementation, or ``package:name`` (e.g. a saved copy of the kernels to
    compare against: its ``package.ot`` must be a twin of ``nimbus.optimized.ot``)."""
    if ":" in name:
        pkg, nm = name.split(":", 1)
        return Implementation(nm, pkg)
    return implementation(name)


def _contexts(params, impl, seed):
    im = _impl(impl)
    return (Ctx(CLIENT, params, PRG.for_tests(f"bench/{seed}/c"), im),
            Ctx(SERVER, params, PRG.for_tests(f"bench/{seed}/s"), im))


def _drain(end, n):
    got = 0
    while got < n:
        k = min(CHUNK, n - got)
        yield from end.take(k)
        got += k
    return got


def bench_kind(kind: str, n: int, repeats: int, params, impl: str = "optimized") -> dict:
    """Set up an s2c instance of ``kind`` and time the generation of n random COTs."""
    c, s = _contexts(params, impl, kind)
    ot = _impl(impl).ot
    t0, p0 = time.perf_counter(), time.process_time()
    res = run_local(ot.cot_end_setup(c.sub("ot"), "s2c", kind), ot.cot_end_setup(s.sub("ot"), "s2c", kind))
    setup = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - p0,
             "bytes_c2s": res.transcript.cost().c2s, "bytes_s2c": res.transcript.cost().s2c,
             "rounds": res.transcript.cost().rounds}
    rcv, snd = res.client, res.server
    warm = params.ot.main.n if kind == "ferret" else params.ot.iknp_batch
    run_local(_drain(rcv, warm), _drain(snd, warm))  # warm the JIT and the buffers
    runs = []
    for _ in range(repeats):
        g0 = snd.generated
        t0, p0 = time.perf_counter(), time.process_time()
        r = run_local(_drain(rcv, n), _drain(snd, n))
        wall, cpu = time.perf_counter() - t0, time.process_time() - p0
        cost = r.transcript.cost()
        comp = {role: r.transcript.compute_time(role) for role in (CLIENT, SERVER)}
        runs.append({"wall_s": wall, "cpu_s": cpu, "compute_s": comp, "cost": cost,
                     "generated": snd.generated - g0})
    wall = statistics.median(x["wall_s"] for x in runs)
    cpu = statistics.median(x["cpu_s"] for x in runs)
    two = statistics.median(max(x["compute_s"].values()) for x in runs)
    mid = sorted(runs, key=lambda x: x["wall_s"])[len(runs) // 2]
    cost: Cost = mid["cost"]
    bits = 8 * cost.total_bytes / max(1, mid["generated"])
    return {
        "kind": kind, "mode": "local", "impl": impl, "n": n, "repeats": repeats, "threads": numba.get_num_threads(),
        "cot_per_s_both_parties_wall": n / wall, "cot_per_s_both_parties_cpu": n / cpu,
        "cot_per_s_two_machines": n / two,
        "wall_s": wall, "cpu_s": cpu, "compute_s_max_party": two,
        "compute_s_by_party": mid["compute_s"],
        "bits_per_cot": bits, "bytes_c2s": cost.c2s, "bytes_s2c": cost.s2c, "rounds": cost.rounds,
        "generated": mid["generated"],
        "projected_s": {net: Cost(cost.c2s, cost.s2c, cost.rounds).project(net, two) for net in NETWORKS},
        "setup": setup,
        "setup_projected_s": {net: Cost(setup["bytes_c2s"], setup["bytes_s2c"], setup["rounds"]).project(
            net, setup["cpu_s"]) for net in NETWORKS},
    }


def _tcp_party(role: str, conn, kind: str, n: int, repeats: int, params, impl: str) -> list:
    """One party of :func:`bench_kind_tcp`: setup, warm-up, then the timed runs, all on ``conn``.
    Returns per run (wall s, cpu s, compute s of this party)."""
    c, s = _contexts(params, impl, kind)
    ctx = c if role == CLIENT else s
    ot = _impl(impl).ot
    end = run_tcp(ot.cot_end_setup(ctx.sub("ot"), "s2c", kind), conn).output
    warm = params.ot.main.n if kind == "ferret" else params.ot.iknp_batch
    run_tcp(_drain(end, warm), conn)
    runs = []
    for _ in range(repeats):
        g0 = end.generated
        t0, p0 = time.perf_counter(), time.process_time()
        r = run_tcp(_drain(end, n), conn)
        runs.append((time.perf_counter() - t0, time.process_time() - p0, r.transcript.compute_time(role),
                     r.transcript.cost().total_bytes, end.generated - g0))
    return runs


def bench_kind_tcp(kind: str, n: int, repeats: int, params, threads: int, impl: str = "optimized",
                   preset: str = "bert-base") -> dict:
    """Both parties as two processes over loopback TCP (the client a child process with
    ``NUMBA_NUM_THREADS=threads``); medians of ``repeats`` timed runs of n COTs each."""
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    with listen("127.0.0.1", 0, params=params, timeout=300) as lst:
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_WAIT_POLICY="passive")
        child = subprocess.Popen(
            [sys.executable, "-m", "nimbus.bench.ot", "--tcp-client", str(lst.address[1]), "--kinds", kind,
             "--n", str(n), "--repeats", str(repeats), "--preset", preset, "--impl", impl],
            stdout=subprocess.PIPE, env=env)
        try:
            with lst.accept(session_id=f"bench-{kind}", timeout=300) as conn:
                srv = _tcp_party(SERVER, conn, kind, n, repeats, params, impl)
            out, _ = child.communicate(timeout=300)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(10)
    if child.returncode:
        raise RuntimeError(f"benchmark client process failed (exit {child.returncode})")
    cli = json.loads(out.decode().strip().splitlines()[-1])
    wall = statistics.median(max(a[0], b[0]) for a, b in zip(srv, cli))
    cpu = statistics.median(a[1] + b[1] for a, b in zip(srv, cli))
    two = statistics.median(max(a[2], b[2]) for a, b in zip(srv, cli))
    bits = 8 * sum(a[3] for a in srv) / max(1, sum(a[4] for a in srv))
    return {"kind": kind, "mode": "tcp", "impl": impl, "n": n, "repeats": repeats, "threads": threads,
            "cot_per_s_both_parties_wall": n / wall, "cot_per_s_both_parties_cpu": n / cpu,
            "cot_per_s_two_machines": n / two, "wall_s": wall, "cpu_s": cpu, "compute_s_max_party": two,
            "bits_per_cot": bits, "server_runs": srv, "client_runs": cli}


def _tcp_client(port: int, kind: str, n: int, repeats: int, preset: str, impl: str) -> None:
    params = get_preset(preset)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    with connect("127.0.0.1", port, params=params, session_id=f"bench-{kind}", timeout=300, retry_s=30) as conn:
        runs = _tcp_party(CLIENT, conn, kind, n, repeats, params, impl)
    print(json.dumps(runs), flush=True)


def bench_kernels(params, repeats: int, impls=("optimized",)) -> dict:
    """Where the time goes: CPU microseconds per million COTs of each kernel (one party's view),
    per implementation: ``{impl: {kernel: best of repeats}}``. The implementations alternate
    kernel by kernel and repeat by repeat, so they see the same load; the best of the repeats is
    the figure least disturbed by other users of the machine."""
    from nimbus.spec import ot as S
    g = PRG.for_tests("bench-kernels")
    lv = params.ot.main
    seeds = g.uniform("s", (lv.t, 2), 64)
    x = g.uniform("x", (lv.k, 2), 64)
    alpha = g.uniform("a", lv.t, lv.h).astype(np.int64)
    m = params.ot.iknp_batch
    keys = g.uniform("k", (128, 2, 2), 64).view(np.uint8).reshape(128, 2, 16)
    r = np.packbits(g.bits("r", m), bitorder="little")
    delta = g.uniform("d", 2, 64) | np.array([1, 0], np.uint64)
    mods = {impl: _impl(impl).ot for impl in impls}
    ref = mods[impls[0]]
    leaves, sums = ref.ggm_expand(seeds, lv.h)
    known = sums[np.arange(lv.t)[:, None], np.arange(lv.h)[None, :], 0]
    noise = leaves.reshape(-1, 2)
    u = ref.iknp_receiver_expand(keys, r, 1)[0]
    z = np.zeros((m, 2), np.uint64)
    kernels = [
        ("ferret.ggm_expand (sender)", lv.n, lambda o: o.ggm_expand(seeds, lv.h)),
        ("ferret.ggm_reconstruct (receiver)", lv.n, lambda o: o.ggm_reconstruct(known, alpha, lv.h)),
        ("ferret.lpn_encode (each party)", lv.n, lambda o: o.lpn_encode(x, noise, S.lpn_seed(lv), params.ot.d)),
        ("ferret.xor_sum+normal form", lv.n, lambda o: (o.xor_sum(leaves), leaves & S.LSB_CLEAR)),
        ("iknp.receiver_expand", m, lambda o: o.iknp_receiver_expand(keys, r, 1)),
        ("iknp.sender_expand", m, lambda o: o.iknp_sender_expand(keys[:, 0], delta, u, 1)),
        ("iknp.transpose_bits", m, lambda o: o.transpose_bits(u)),
        ("ccr_hash (per hash)", m, lambda o: o.ccr_hash(z, z)),
    ]
    out: dict[str, dict[str, list]] = {impl: {} for impl in impls}
    for name, per, fn in kernels:
        for o in mods.values():
            fn(o)  # warm-up (JIT, buffers)
        for _ in range(repeats):
            for impl, o in mods.items():
                p0 = time.process_time()
                fn(o)
                out[impl].setdefault(name, []).append((time.process_time() - p0) / per * 1e12)
    return {impl: {k: min(v) for k, v in d.items()} for impl, d in out.items()}


def _report(res: dict) -> str:
    lines = ["# OT-extension benchmark", "",
             f"Machine: {res['machine']}; load average at start {res['loadavg']}; numba {numba.__version__}.",
             f"Preset `{res['preset']}`: IKNP batch {res['params']['iknp_batch']}, Ferret main level "
             f"{res['params']['main']}, setup level {res['params']['setup']}.", "",
             "Both parties run in one process (`run_local`); medians of the repeats. 'wall' = COTs per "
             "wall-clock second with both parties on this machine; 'cpu' = per CPU-second of this "
             "process (less sensitive to other users of the machine); 'two machines' = each party on "
             "its own machine (max of the parties' compute).", "",
             "Mode `tcp`: the two parties as two processes over loopback TCP, one per core (how they "
             "really run); 'wall' = the slower party's wall time, 'cpu' = both processes' CPU seconds.", "",
             "| kind | mode | impl | threads | COT/s both (wall) | COT/s both (cpu) | COT/s two machines | bits/COT | "
             "lan s per 10M | wan s per 10M |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        sc = 1e7 / r["n"]
        proj = r.get("projected_s")
        lan = f"{proj['lan'] * sc:.3f}" if proj else "-"
        wan = f"{proj['wan'] * sc:.3f}" if proj else "-"
        lines.append(f"| {r['kind']} | {r['mode']} | {r['impl']} | {r['threads']} | "
                     f"{r['cot_per_s_both_parties_wall'] / 1e6:.1f} M | "
                     f"{r['cot_per_s_both_parties_cpu'] / 1e6:.1f} M | {r['cot_per_s_two_machines'] / 1e6:.1f} M | "
                     f"{r['bits_per_cot']:.3f} | {lan} | {wan} |")
    lines += ["", "Setup (one instance, both parties, one thread or as run):", "",
              "| kind | wall s | bytes c2s | bytes s2c | rounds | lan s | wan s |", "|---|---|---|---|---|---|---|"]
    seen = set()
    for r in res["runs"]:
        if r["kind"] in seen or "setup" not in r:
            continue
        seen.add(r["kind"])
        su = r["setup"]
        lines.append(f"| {r['kind']} | {su['wall_s']:.3f} | {su['bytes_c2s']} | {su['bytes_s2c']} | {su['rounds']} | "
                     f"{r['setup_projected_s']['lan']:.3f} | {r['setup_projected_s']['wan']:.3f} |")
    for impl, ker in res["kernels_us_per_million"].items():
        lines += ["", f"Where the time goes, `{impl}` (CPU microseconds per million COTs, one thread, one "
                  "party's kernel, best of the repeats):", "", "| kernel | us per 1M |", "|---|---|"]
        for k, v in ker.items():
            lines.append(f"| {k} | {v:,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--n", type=int, default=20_000_000, help="COTs per timed run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--kinds", nargs="+", default=["iknp", "ferret"])
    ap.add_argument("--modes", nargs="+", default=["local", "tcp"], choices=["local", "tcp"])
    ap.add_argument("--impl", nargs="+", default=["optimized"],
                    help="implementations to compare: registered names or package:name")
    ap.add_argument("--no-kernels", action="store_true", help="skip the per-kernel breakdown")
    ap.add_argument("--preset", default="bert-base")
    ap.add_argument("--tcp-client", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.tcp_client is not None:  # the child process of bench_kind_tcp
        _tcp_client(a.tcp_client, a.kinds[0], a.n, a.repeats, a.preset, a.impl[0])
        return {}
    if a.out is None:
        ap.error("--out is required")
    params = get_preset(a.preset)
    a.out.mkdir(parents=True, exist_ok=True)
    res = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
           "loadavg": os.getloadavg(), "preset": a.preset,
           "params": {"iknp_batch": params.ot.iknp_batch, "main": vars(params.ot.main), "setup": vars(params.ot.setup),
                      "d": params.ot.d},
           "runs": [], "kernels_us_per_million": {}}
    numba.set_num_threads(1)
    if not a.no_kernels:
        res["kernels_us_per_million"] = bench_kernels(params, max(a.repeats, 5), tuple(a.impl))
    for th in a.threads:
        for kind in a.kinds:
            for mode in a.modes:
                for impl in a.impl:  # implementations interleaved: compared under the same load
                    load = os.getloadavg()[0]
                    if mode == "local":
                        numba.set_num_threads(min(th, numba.config.NUMBA_NUM_THREADS))
                        r = bench_kind(kind, a.n, a.repeats, params, impl)
                    else:
                        r = bench_kind_tcp(kind, a.n, a.repeats, params, th, impl, a.preset)
                    r["loadavg_before"] = load
                    res["runs"].append(r)
                    print(f"{kind:6s} {mode:5s} threads={th} {impl}: "
                          f"{r['cot_per_s_both_parties_wall'] / 1e6:6.1f} M COT/s wall, "
                          f"{r['cot_per_s_both_parties_cpu'] / 1e6:6.1f} M COT/s cpu, "
                          f"{r['cot_per_s_two_machines'] / 1e6:6.1f} M COT/s two machines, "
                          f"{r['bits_per_cot']:.3f} bits/COT (load {load:.1f})", flush=True)
    res["loadavg_end"] = os.getloadavg()
    (a.out / "ot.json").write_text(json.dumps(res, indent=1, default=str))
    (a.out / "ot.md").write_text(_report(res))
    return res

if __name__ == "__main__":
    main()
