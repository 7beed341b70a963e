"""Benchmark of the optimized RLWE layer: ``python -m nimbus.bench.rlwe --out DIR``.

Writes ``DIR/rlwe.json`` (machine-readable) and ``DIR/rlwe.md`` (a short report): NTT and INTT
per prime at N = 4096 and 8192 (one row, and a batch spread over the threads), symmetric and
public-key encryption, decryption, the scalar multiply-accumulate of the outer product (modular
multiply-adds per second), serialised sizes and flooding figures (F, M, statistical distance per
coefficient and per query, noise margin) of the protocol sets; on 1 and 2 threads
(``numba.set_num_threads``). Medians of ``--repeat`` runs after a warm-up. Fixed test seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

# Several processes share this box: spinning OpenMP workers would steal each other's cores
# (STACK.md). Must be set before numba starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["main", "run", "report"]


def _median_time(fn, repeat: int, inner: int = 1) -> float:
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        ts.append((time.perf_counter() - t0) / inner)
    return statistics.median(ts)


def _ntt_bench(n: int, p: int, threads: int, repeat: int) -> dict:
    from nimbus.optimized import _ntt as K

    t = K.tables(n, (p,))
    from nimbus.spec.prg import PRG

    g = PRG.for_tests(f"bench/ntt/{n}/{p}")
    one = g.uniform_mod("one", (1, 1, n), p)
    batch = g.uniform_mod("batch", (16, 1, n), p)
    args = (t["W"], t["Wp"], t["primes"])
    iargs = (t["IW"], t["IWp"], t["primes"], t["ninv"], t["ninvp"])
    inner = 200 if n <= 8192 else 50
    return {
        "n": n, "prime_bits": p.bit_length(), "threads": threads,
        "ntt_us": 1e6 * _median_time(lambda: K.ntt_batch(one, *args), repeat, inner),
        "intt_us": 1e6 * _median_time(lambda: K.intt_batch(one, *iargs), repeat, inner),
        "ntt_batch16_us_per_row": 1e6 * _median_time(lambda: K.ntt_batch(batch, *args), repeat, 20) / 16,
        "intt_batch16_us_per_row": 1e6 * _median_time(lambda: K.intt_batch(batch, *iargs), repeat, 20) / 16,
    }


def _he_bench(he, threads: int, repeat: int, rows: int, k: int) -> dict:
    from nimbus.optimized import rlwe as M
    from nimbus.spec import he as H
    from nimbus.spec.prg import PRG

    l, n = he.plain_bits, he.n
    counter = iter(range(10**9))

    def g():
        return PRG.for_tests(f"bench/{next(counter)}")

    sk = M.keygen(he, g(), "k")
    pk = M.keygen_public(he, sk, g(), "pk")
    m = g().uniform("m", (8, n), l)
    seed = g().child_seed("s")
    c0 = M.encrypt_symmetric(he, sk, m, seed, g(), "e")
    ct = M.expand_seeded(he, seed, c0)
    cts = np.concatenate([ct] * (k // 8))
    x = g().uniform("x", (rows, k), l)
    out = {"he": he.name, "threads": threads, "n": n, "levels": he.levels}
    out["encrypt_sym_ms_per_ct"] = 1e3 * _median_time(lambda: M.encrypt_symmetric(he, sk, m, seed, g(), "e"), repeat) / 8
    out["expand_seed_ms_per_ct"] = 1e3 * _median_time(lambda: M.expand_seeded(he, seed, c0), repeat) / 8
    out["encrypt_pk_ms_per_ct"] = 1e3 * _median_time(lambda: M.encrypt_public(he, pk, m, g(), "p"), repeat) / 8
    sw = M.mod_switch(he, ct, he.response_level or he.levels)
    out["decrypt_ms_per_ct"] = 1e3 * _median_time(lambda: M.decrypt(he, sk, ct), repeat) / 8
    out["decrypt_response_ms_per_ct"] = 1e3 * _median_time(lambda: M.decrypt(he, sk, sw), repeat) / 8
    out["mod_switch_ms_per_ct"] = 1e3 * _median_time(lambda: M.mod_switch(he, ct, he.response_level or 1), repeat) / 8
    out["flood_ms_per_ct"] = 1e3 * _median_time(lambda: M.flood(he, pk, sw, g(), "f"), repeat) / 8
    out["mul_plain_ms_per_ct"] = 1e3 * _median_time(lambda: M.mul_plain(he, ct, m), repeat) / 8
    t = _median_time(lambda: M.mac_scalar(he, cts, x), repeat)
    macs = rows * k * 2 * he.levels * n
    out.update(mac_rows=rows, mac_k=k, mac_s=t, mac_per_s=macs / t)
    rep = H.analyze(he, he.workloads[0][1]) if he.workloads else None
    out["sizes"] = {
        "seeded_ct_bytes": H.seeded_bytes(he, 1) - 2 - 32 - 13,
        "full_ct_bytes": H.ciphertext_bytes(he, 1) - 19,
        "response_ct_bytes": H.ciphertext_bytes(he, 1, he.response_level or he.levels) - 19,
        "log_q": round(he.log_q(), 2), "log_q_response": round(he.log_q(he.response_level or he.levels), 2),
        "prime_bits": list(he.prime_bits()),
        "flood_log2": round(math.log2(he.flood_bound), 2) if he.flood_bound else None,
        "wide_flood": he.flood_bound >= H.WIDE_FLOOD,
        "max_flooded_log2": round(math.log2(he.max_flooded), 2), "stat_bits": he.stat_bits,
        "sd_coeff_log2": round(rep.sd_log2, 2) if rep else None,
        "sd_query_log2": round(rep.sd_query_log2, 2) if rep else None,
        "margin_bits": round(rep.margin_bits, 2) if rep else None,
    }
    return out


def run(repeat: int = 5, threads=(1, 2), rows: int = 16, k: int = 64, quick: bool = False) -> dict:
    import numba

    from nimbus.spec import he as H

    res = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
           "numba": numba.__version__, "numpy": np.__version__, "repeat": repeat, "ntt": [], "he": []}
    try:
        res["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=Path(__file__).resolve().parent).stdout.strip()
    except OSError:
        res["commit"] = None
    # the largest (kept) and the smallest (dropped) prime of the bert-base set
    primes = {n: (max(H.COP64.primes), min(H.COP64.primes)) for n in (4096, 8192)}
    for th in threads:
        if th > numba.config.NUMBA_NUM_THREADS:
            continue
        numba.set_num_threads(th)
        for n in (4096, 8192):
            for p in primes[n]:
                res["ntt"].append(_ntt_bench(n, p, th, repeat))
        for he in ((H.COP64,) if quick else (H.COP64, H.MATMUL64, H.COP40)):
            res["he"].append(_he_bench(he, th, repeat, rows, k))
    return res


def report(res: dict) -> str:
    lines = ["# RLWE benchmark", "",
             f"machine: {res['machine']}, {res['cpus']} CPUs; numba {res['numba']}; commit {res['commit']}; "
             f"medians of {res['repeat']} runs", "",
             "## NTT per prime (us)", "", "| N | prime bits | threads | NTT | INTT | NTT (batch 16, per row) | INTT (batch, per row) |",
             "|---|---|---|---|---|---|---|"]
    for r in res["ntt"]:
        lines.append(f"| {r['n']} | {r['prime_bits']} | {r['threads']} | {r['ntt_us']:.1f} | {r['intt_us']:.1f} | "
                     f"{r['ntt_batch16_us_per_row']:.1f} | {r['intt_batch16_us_per_row']:.1f} |")
    lines += ["", "## Operations (ms per ciphertext) and the COP multiply-accumulate", "",
              "| set | threads | enc (sym) | enc (pk) | dec | dec (response) | mod switch | flood | plain mul | MAC / s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["he"]:
        lines.append(f"| {r['he']} | {r['threads']} | {r['encrypt_sym_ms_per_ct']:.2f} | {r['encrypt_pk_ms_per_ct']:.2f} | "
                     f"{r['decrypt_ms_per_ct']:.2f} | {r['decrypt_response_ms_per_ct']:.2f} | {r['mod_switch_ms_per_ct']:.2f} | "
                     f"{r['flood_ms_per_ct']:.2f} | {r['mul_plain_ms_per_ct']:.2f} | {r['mac_per_s']:.3g} |")
    lines += ["", "## Serialised sizes (payload bytes per ciphertext) and flooding (per query)", "",
              "| set | prime bits | log Q | seeded (setup) | full | response (log Q') | F | M | SD/coeff | SD/query | margin |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    seen = set()
    for r in res["he"]:
        if r["he"] in seen:
            continue
        seen.add(r["he"])
        s = r["sizes"]
        lines.append(f"| {r['he']} | {s['prime_bits']} | {s['log_q']} | {s['seeded_ct_bytes']} | {s['full_ct_bytes']} | "
                     f"{s['response_ct_bytes']} ({s['log_q_response']}) | 2^{s['flood_log2']} | 2^{s['max_flooded_log2']} | "
                     f"2^{s['sd_coeff_log2']} | 2^{s['sd_query_log2']} | {s['margin_bits']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nimbus.bench.rlwe", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output directory (rlwe.json, rlwe.md)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rows", type=int, default=16, help="MAC: output rows (tokens) per call")
    ap.add_argument("--k", type=int, default=64, help="MAC: ciphertexts (terms) per call")
    ap.add_argument("--quick", action="store_true", help="only the bert-base COP set")
    args = ap.parse_args(argv)
    res = run(args.repeat, rows=args.rows, k=args.k, quick=args.quick)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rlwe.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "rlwe.md").write_text(report(res))
    print(report(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
