"""OT-extension benchmark: COTs per second and bits per COT for IKNP and Ferret.

Usage: ``python -m nimbus.bench.ot --out DIR [--n 20000000] [--threads 1 2] [--preset bert-base]``.
Writes ``DIR/ot.json`` (machine-readable) and ``DIR/ot.md`` (report).

Both parties run in this process through ``run_local`` (they alternate, so each kernel gets the
whole machine): "COT/s (both parties)" is COTs delivered per wall-clock second with both parties'
work done on this machine; "COT/s (two machines)" assumes each party on its own machine
(the larger of the two parties' compute times). Threads are numba threads inside the kernels.
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
import time
from pathlib import Path

# Both parties share this machine: idle OpenMP workers must sleep, not spin (STACK.md). Set
# before the first parallel kernel starts the OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numba  # noqa: E402
import numpy as np

from nimbus.registry import implementation
from nimbus.runtime import run_local
from nimbus.spec import NETWORKS, get_preset
from nimbus.spec.cost import Cost
from nimbus.spec.prg import PRG
from nimbus.spec.proto import CLIENT, SERVER, Ctx

__all__ = ["main", "bench_kind", "bench_kernels"]

CHUNK = 1 << 20  # COTs per take() call, as a consumer would ask


def _contexts(params, impl, seed):
    im = implementation(impl)
    return (Ctx(CLIENT, params, PRG.for_tests(f"bench/{seed}/c"), im),
            Ctx(SERVER, params, PRG.for_tests(f"bench/{seed}/s"), im))


def _drain(end, n):
    got = 0
    while got < n:
        k = min(CHUNK, n - got)
        yield from end.take(k)
        got += k
    return got


def bench_kind(kind: str, n: int, repeats: int, params) -> dict:
    """Set up an s2c instance of ``kind`` and time the generation of n random COTs."""
    c, s = _contexts(params, "optimized", kind)
    ot = implementation("optimized").ot
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
        "kind": kind, "n": n, "repeats": repeats, "threads": numba.get_num_threads(),
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


def bench_kernels(params, repeats: int) -> dict:
    """Where the time goes: CPU seconds per million COTs of each kernel (one party's view)."""
    from nimbus.spec import ot as S
    o = implementation("optimized").ot
    g = PRG.for_tests("bench-kernels")
    lv = params.ot.main
    seeds = g.uniform("s", (lv.t, 2), 64)
    x = g.uniform("x", (lv.k, 2), 64)
    alpha = g.uniform("a", lv.t, lv.h).astype(np.int64)
    m = params.ot.iknp_batch
    keys = g.uniform("k", (128, 2, 2), 64).view(np.uint8).reshape(128, 2, 16)
    r = np.packbits(g.bits("r", m), bitorder="little")
    delta = g.uniform("d", 2, 64) | np.array([1, 0], np.uint64)
    out: dict[str, list] = {}

    def t(name, per, fn):
        fn()
        for _ in range(repeats):
            p0 = time.process_time()
            fn()
            out.setdefault(name, []).append((time.process_time() - p0) / per * 1e12)

    state = {}
    t("ferret.ggm_expand (sender)", lv.n, lambda: state.update(ls=o.ggm_expand(seeds, lv.h)))
    known = state["ls"][1][np.arange(lv.t)[:, None], np.arange(lv.h)[None, :], 0]
    t("ferret.ggm_reconstruct (receiver)", lv.n, lambda: o.ggm_reconstruct(known, alpha, lv.h))
    noise = state["ls"][0].reshape(-1, 2)
    t("ferret.lpn_encode (each party)", lv.n, lambda: o.lpn_encode(x, noise, S.lpn_seed(lv), params.ot.d))
    t("ferret.xor_sum+normal form", lv.n, lambda: (o.xor_sum(state["ls"][0]), state["ls"][0] & S.LSB_CLEAR))
    t("iknp.receiver_expand", m, lambda: state.update(ut=o.iknp_receiver_expand(keys, r, 1)))
    u = state["ut"][0]
    t("iknp.sender_expand", m, lambda: o.iknp_sender_expand(keys[:, 0], delta, u, 1))
    t("iknp.transpose_bits", m, lambda: o.transpose_bits(u))
    t("ccr_hash (per hash)", m, lambda: o.ccr_hash(np.zeros((m, 2), np.uint64), np.zeros((m, 2), np.uint64)))
    return {k: statistics.median(v) for k, v in out.items()}


def _report(res: dict) -> str:
    lines = ["# OT-extension benchmark", "",
             f"Machine: {res['machine']}; load average at start {res['loadavg']}; numba {numba.__version__}.",
             f"Preset `{res['preset']}`: IKNP batch {res['params']['iknp_batch']}, Ferret main level "
             f"{res['params']['main']}, setup level {res['params']['setup']}.", "",
             "Both parties run in one process (`run_local`); medians of the repeats. 'wall' = COTs per "
             "wall-clock second with both parties on this machine; 'cpu' = per CPU-second of this "
             "process (less sensitive to other users of the machine); 'two machines' = each party on "
             "its own machine (max of the parties' compute).", "",
             "| kind | threads | COT/s both (wall) | COT/s both (cpu) | COT/s two machines | bits/COT | "
             "lan s per 10M | wan s per 10M |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        sc = 1e7 / r["n"]
        lines.append(f"| {r['kind']} | {r['threads']} | {r['cot_per_s_both_parties_wall'] / 1e6:.1f} M | "
                     f"{r['cot_per_s_both_parties_cpu'] / 1e6:.1f} M | {r['cot_per_s_two_machines'] / 1e6:.1f} M | "
                     f"{r['bits_per_cot']:.3f} | {r['projected_s']['lan'] * sc:.3f} | {r['projected_s']['wan'] * sc:.3f} |")
    lines += ["", "Setup (one instance, both parties, one thread or as run):", "",
              "| kind | wall s | bytes c2s | bytes s2c | rounds | lan s | wan s |", "|---|---|---|---|---|---|---|"]
    seen = set()
    for r in res["runs"]:
        if r["kind"] in seen:
            continue
        seen.add(r["kind"])
        su = r["setup"]
        lines.append(f"| {r['kind']} | {su['wall_s']:.3f} | {su['bytes_c2s']} | {su['bytes_s2c']} | {su['rounds']} | "
                     f"{r['setup_projected_s']['lan']:.3f} | {r['setup_projected_s']['wan']:.3f} |")
    lines += ["", "Where the time goes (CPU microseconds per million COTs, one thread, one party's kernel):", "",
              "| kernel | us per 1M |", "|---|---|"]
    for k, v in res["kernels_us_per_million"].items():
        lines.append(f"| {k} | {v:,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--n", type=int, default=20_000_000, help="COTs per timed run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--kinds", nargs="+", default=["iknp", "ferret"])
    ap.add_argument("--preset", default="bert-base")
    a = ap.parse_args(argv)
    params = get_preset(a.preset)
    a.out.mkdir(parents=True, exist_ok=True)
    res = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
           "loadavg": os.getloadavg(), "preset": a.preset,
           "params": {"iknp_batch": params.ot.iknp_batch, "main": vars(params.ot.main), "setup": vars(params.ot.setup),
                      "d": params.ot.d},
           "runs": []}
    numba.set_num_threads(1)
    res["kernels_us_per_million"] = bench_kernels(params, a.repeats)
    for th in a.threads:
        numba.set_num_threads(min(th, numba.config.NUMBA_NUM_THREADS))
        for kind in a.kinds:
            r = bench_kind(kind, a.n, a.repeats, params)
            res["runs"].append(r)
            print(f"{kind:6s} threads={th}: {r['cot_per_s_both_parties_wall'] / 1e6:6.1f} M COT/s wall, "
                  f"{r['cot_per_s_both_parties_cpu'] / 1e6:6.1f} M COT/s cpu, "
                  f"{r['cot_per_s_two_machines'] / 1e6:6.1f} M COT/s two machines, {r['bits_per_cot']:.3f} bits/COT",
                  flush=True)
    res["loadavg_end"] = os.getloadavg()
    (a.out / "ot.json").write_text(json.dumps(res, indent=1, default=str))
    (a.out / "ot.md").write_text(_report(res))
    return res


if __name__ == "__main__":
    main()
