"""Benchmark of the linear layers: ``python -m nimbus.bench.linear --out DIR``.

Writes ``DIR/linear.json`` and ``DIR/linear.md``: for every BERT-base weight shape (fused QKV
768x2304 and one of the 768x768, 768x3072, 3072x768) at 1, 32 and 128 tokens: online time per
party (compute as recorded by the driver), bytes, rounds, packing utilisation; setup bytes, time
and cache size per matrix; the private embedding lookup for 128 tokens. Optimized implementation,
both parties in one process (``run_local``), fixed test seeds, medians of ``--repeat`` runs after
a warm-up. Options: ``--shapes``, ``--tokens``, ``--params``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

__all__ = ["main", "run_shape", "run_embedding", "report"]

SHAPES = {"qkv": (768, 2304), "o": (768, 768), "h1": (768, 3072), "h2": (3072, 768)}
TARGETS = {"h1@128": {"online_s": 4.0, "stretch_s": 1.6, "bytes": 16e6}, "embed@128": {"online_s": 1.0, "bytes": 20e6}}


def _setup(im, params, W, name):
    from nimbus.conformance.harness import run_pair
    from nimbus.spec import linear as S

    shapes = (S.WeightShape(name, *W.shape),)
    t0 = time.perf_counter()
    res = run_pair(im.linear.client_setup, im.linear.server_setup, params, im, client_args=(shapes,),
                   server_args=({name: W}, shapes), seed=f"bench/{name}", label="setup")
    wall = time.perf_counter() - t0
    tr = res.transcript
    he = params.he
    return res, {
        "setup_bytes": tr.cost().total_bytes, "setup_wall_s": wall,
        "setup_server_s": tr.compute_time("server"), "setup_client_s": tr.compute_time("client"),
        "cache_bytes_seeded": S.setup_bytes(he, shapes[0]),
        "cache_bytes_expanded": int(res.client["weights"][name].nbytes),
        "it_bytes": S.cache_it_bytes(he, shapes[0]),
    }


def run_shape(params, d_in, d_out, tokens, repeat, name="w"):
    from nimbus.conformance.harness import run_pair
    from nimbus.registry import implementation
    from nimbus.spec import linear as S
    from nimbus.spec.prg import PRG

    im = implementation("optimized")
    bits = params.linear.bits
    g = PRG.for_tests(f"bench/linear/{d_in}x{d_out}")
    W = g.uniform("W", (d_in, d_out), bits)
    b = g.uniform("b", (d_out,), bits)
    st, setup = _setup(im, params, W, name)
    store, (sk, pk) = st.client, st.server
    rows = []
    for n in tokens:
        x_c, x_s = g.uniform(f"xc{n}", (n, d_in), bits), g.uniform(f"xs{n}", (n, d_in), bits)
        runs = []
        for rep in range(repeat + 1):
            t0 = time.perf_counter()
            c0 = time.process_time()
            res = run_pair(im.linear.cop_client, im.linear.cop_server, params, im,
                           client_args=(x_c, store["weights"][name], pk, d_out), server_args=(x_s, W, b, sk),
                           seed=f"bench/{n}/{rep}", label="cop")
            wall = time.perf_counter() - t0
            tr = res.transcript
            runs.append({"wall_s": wall, "cpu_s": time.process_time() - c0, "client_s": tr.compute_time("client"), "server_s": tr.compute_time("server")})
            cost = tr.cost()
        runs = runs[1:] if repeat else runs
        lay = S.cop_layout(params.he, n, d_in, d_out)
        rows.append({
            "tokens": n, "d_in": d_in, "d_out": d_out,
            "wall_s": statistics.median(r["wall_s"] for r in runs),
            "client_s": statistics.median(r["client_s"] for r in runs),
            "server_s": statistics.median(r["server_s"] for r in runs),
            "cpu_s_both": statistics.median(r["cpu_s"] for r in runs),
            "c2s_bytes": cost.c2s, "s2c_bytes": cost.s2c, "rounds": cost.rounds,
            "ciphertexts": lay.count, "utilisation": round(lay.utilisation, 4),
            "declared_ok": cost == S.cop_cost(params, n, d_in, d_out),
        })
    del store
    return {"d_in": d_in, "d_out": d_out, **setup, "online": rows}


def run_embedding(params, vocab, hidden, tokens, repeat):
    """Lookup of ``tokens`` ids from a ``vocab``-row table stored in a cache file: the client reads
    and verifies only the records holding its tokens' rows, expands those rows, and runs the
    protocol (the cost does not depend on vocab beyond the file size)."""
    import tempfile

    from nimbus.cache import CacheReader, CacheWriter
    from nimbus.conformance.harness import contexts, run_pair
    from nimbus.registry import implementation
    from nimbus.runtime import run_local
    from nimbus.spec import linear as S
    from nimbus.spec.prg import PRG

    im = implementation("optimized")
    bits = params.linear.bits
    g = PRG.for_tests("bench/embed")
    E = g.uniform("E", (vocab, hidden), bits)
    shapes = (S.WeightShape("embed", vocab, hidden),)
    ids = (g.uniform("ids", (tokens,), 32) % np.uint64(vocab)).astype(np.int64)
    extra = g.uniform("pos", (tokens, hidden), bits)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "embed.nlc"
        c, s = contexts(params, im, "bench/embed")
        w = CacheWriter(path, params, shapes, packer=im.rlwe.pack_bits)
        res = run_local(im.linear.client_setup(c.sub("setup"), shapes, sink=w),
                        im.linear.server_setup(s.sub("setup"), {"embed": E}, shapes))
        w.close()
        sk, pk = res.server
        runs = []
        for rep in range(repeat + 1):
            t0 = time.perf_counter()
            with CacheReader(path, params, unpacker=im.rlwe.unpack_bits) as r:
                uniq, local = np.unique(ids, return_inverse=True)
                sub = r.load_rows("embed", uniq, im)
            load = time.perf_counter() - t0
            out = run_pair(im.linear.embed_client, im.linear.embed_server, params, im,
                           client_args=(local, sub, pk, hidden), server_args=(tokens, extra, sk),
                           seed=f"bench/embed/{rep}", label="embed")
            runs.append({"wall_s": time.perf_counter() - t0, "load_s": load,
                         "client_s": out.transcript.compute_time("client") + load,
                         "server_s": out.transcript.compute_time("server")})
            cost = out.transcript.cost()
    runs = runs[1:] if repeat else runs
    return {"vocab_in_bench": vocab, "hidden": hidden, "tokens": tokens,
            "wall_s": statistics.median(r["wall_s"] for r in runs),
            "load_rows_s": statistics.median(r["load_s"] for r in runs),
            "client_s": statistics.median(r["client_s"] for r in runs),
            "server_s": statistics.median(r["server_s"] for r in runs),
            "c2s_bytes": cost.c2s, "s2c_bytes": cost.s2c, "rounds": cost.rounds,
            "declared_ok": cost == S.embedding_cost(params, tokens, vocab, hidden)}


def S_matmul_he(params):
    from nimbus.spec.linear import matmul_he

    return matmul_he(params)


def run_matmul(params, heads, m, d, p, repeat, label):
    """Shares of A B per head for shared A (heads, m, d), B (heads, d, p): QK^T (d = 64) and PV.
    Each run starts with the session's key step (``linear.matmul_keys``, label ``keys``), reported
    apart: in a session it runs once, not per product."""
    from nimbus.conformance.harness import contexts, run_pair
    from nimbus.registry import implementation
    from nimbus.runtime import run_local
    from nimbus.spec import linear as S
    from nimbus.spec.prg import PRG

    im = implementation("optimized")
    bits = params.linear.bits
    g = PRG.for_tests(f"bench/matmul/{label}")
    ac, as_ = g.uniform("ac", (heads, m, d), bits), g.uniform("as", (heads, m, d), bits)
    bc, bs = g.uniform("bc", (heads, d, p), bits), g.uniform("bs", (heads, d, p), bits)
    sk = run_pair(im.linear.client_setup, im.linear.server_setup, params, im, client_args=((),),
                  server_args=({}, ()), seed="bench/mmkeys", label="setup").server[0]

    def client(ctx):
        keys = yield from im.linear.matmul_keys_client(ctx.sub("keys"))
        return (yield from im.linear.matmul_client(ctx.sub("mm"), ac, bc, keys))

    def server(ctx):
        yield from im.linear.matmul_keys_server(ctx.sub("keys"), sk)
        return (yield from im.linear.matmul_server(ctx.sub("mm"), as_, bs, sk))

    runs = []
    for rep in range(repeat + 1):
        c, s_ = contexts(params, im, f"bench/mm/{label}/{rep}")
        t0, c0 = time.perf_counter(), time.process_time()
        res = run_local(client(c), server(s_))
        tr = res.transcript
        runs.append({"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                     "client_s": tr.compute_time("client", "mm"), "server_s": tr.compute_time("server", "mm"),
                     "keys_client_s": tr.compute_time("client", "keys"),
                     "keys_server_s": tr.compute_time("server", "keys")})
        cost, kcost = tr.cost("mm"), tr.cost("keys")
    runs = runs[1:] if repeat else runs
    he = S.matmul_he(params)
    p1, p2 = S.matmul_plan(he, m, d, p), S.matmul_plan(he, p, d, m)
    packing = S.matmul_packing(p1, p2, heads)
    return {"name": label, "heads": heads, "m": m, "d": d, "p": p,
            "blocks": [p1.rb, p1.db, p1.cb], "pack": [p1.pack, p2.pack],
            "responses": packing.count, "products": packing.products, "key_switches": packing.key_switches,
            **{k: statistics.median(r[k] for r in runs)
               for k in ("wall_s", "cpu_s", "client_s", "server_s", "keys_client_s", "keys_server_s")},
            "c2s_bytes": cost.c2s, "s2c_bytes": cost.s2c, "rounds": cost.rounds,
            "keys_s2c_bytes": kcost.s2c, "load_average": os.getloadavg(),
            "declared_ok": cost == S.matmul_cost(params, heads, m, d, p) and kcost == S.matmul_keys_cost(params)}


def run_cache(params, d_in, d_out, layers: int = 2):
    """Cache file of ``layers`` matrices of one shape: setup into the file, size, open+verify time,
    per-matrix load (decode + re-expand) time, and the peak resident memory while streaming."""
    import resource
    import tempfile

    from nimbus.cache import CacheReader, CacheWriter
    from nimbus.conformance.harness import contexts
    from nimbus.registry import implementation
    from nimbus.runtime import run_local
    from nimbus.spec import linear as S
    from nimbus.spec.prg import PRG

    im = implementation("optimized")
    g = PRG.for_tests("bench/cache")
    shapes = tuple(S.WeightShape(f"m{i}", d_in, d_out) for i in range(layers))
    W = {s.name: g.uniform(s.name, (d_in, d_out), params.linear.bits) for s in shapes}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.nlc"
        c, s = contexts(params, im, "bench/cache")
        w = CacheWriter(path, params, shapes, packer=im.rlwe.pack_bits)
        t0 = time.perf_counter()
        run_local(im.linear.client_setup(c.sub("setup"), shapes, sink=w), im.linear.server_setup(s.sub("setup"), W, shapes))
        w.close()
        setup_s = time.perf_counter() - t0
        size = path.stat().st_size
        import tracemalloc

        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        t0 = time.perf_counter()
        r = CacheReader(path, params, shapes=shapes, unpacker=im.rlwe.unpack_bits)
        open_s = time.perf_counter() - t0
        loads = []
        buf = np.empty(d_in * 2 * params.he.levels * params.he.n, np.uint64)  # one layer's buffer, reused
        for sh in shapes:  # layer by layer: one expanded matrix alive at a time
            t0 = time.perf_counter()
            enc = r.load(sh.name, im, out=buf)
            loads.append(time.perf_counter() - t0)
            del enc
        r.close()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    it = sum(S.cache_it_bytes(params.he, sh) for sh in shapes)
    return {"matrices": layers, "d_in": d_in, "d_out": d_out, "file_bytes": size, "it_bytes_full_cts": it,
            "ratio_to_it": round(size / it, 3), "setup_into_file_s": setup_s, "open_verify_s": open_s,
            "load_s_per_matrix": statistics.median(loads), "expanded_bytes_per_matrix": d_in * 2 * params.he.levels * params.he.n * 8,
            "peak_traced_load_mb": peak / 1e6, "peak_rss_mb": rss1 / 1024, "rss_before_open_mb": rss0 / 1024}


def bert_totals(params) -> dict:
    """Setup bytes, cache size and IT size for the whole BERT-base (computed from the format)."""
    from nimbus.spec import linear as S

    he = params.he
    shapes = S.bert_shapes()
    setup = sum(S.setup_bytes(he, s) for s in shapes)
    it = sum(S.cache_it_bytes(he, s) for s in shapes)
    recs = sum(-(-s.d_in // S.SETUP_CHUNK_ROWS) * len(S.column_chunks(he.n, s.d_out)) for s in shapes)
    cts = sum(s.d_in * len(S.column_chunks(he.n, s.d_out)) for s in shapes)
    return {"ciphertexts": cts, "setup_bytes": setup, "cache_bytes": setup + 4 * recs, "it_bytes_full_cts": it,
            "cache_over_it": round((setup + 4 * recs) / it, 3), "expanded_bytes": cts * 2 * he.levels * he.n * 8,
            "embed_table_cache_bytes": S.setup_bytes(he, shapes[0])}


def report(data: dict) -> str:
    lines = ["# Linear layers: benchmark", "",
             f"Machine: {data['machine']}; parameters `{data['params']}` (HE set `{data['he']}`); "
             f"optimized implementation, both parties in one process; medians of {data['repeat']} runs. "
             "Times are the driver's per-party compute (wall = both parties, sequential); CPU s = process CPU "
             "time of both parties (all threads). "
             f"Load average at start: {data.get('load_average')}.", "",
             "| shape | tokens | client s | server s | wall s | CPU s (both) | bytes c->s | rounds | cts | utilisation |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for sh in data["shapes"]:
        for r in sh["online"]:
            lines.append(f"| {sh['d_in']}x{sh['d_out']} | {r['tokens']} | {r['client_s']:.3f} | {r['server_s']:.3f} | "
                         f"{r['wall_s']:.3f} | {r['cpu_s_both']:.2f} | {r['c2s_bytes'] / 1e6:.2f} MB | {r['rounds']} | {r['ciphertexts']} | "
                         f"{100 * r['utilisation']:.1f}% |")
    lines += ["", "| matrix | setup bytes | setup s (server / client) | cache seeded | cache expanded | IT size |",
              "|---|---|---|---|---|---|"]
    for sh in data["shapes"]:
        lines.append(f"| {sh['d_in']}x{sh['d_out']} | {sh['setup_bytes'] / 1e6:.1f} MB | {sh['setup_server_s']:.1f} / "
                     f"{sh['setup_client_s']:.1f} | {sh['cache_bytes_seeded'] / 1e6:.1f} MB | "
                     f"{sh['cache_bytes_expanded'] / 1e6:.1f} MB | {sh['it_bytes'] / 1e6:.1f} MB |")
    if data.get("cache"):
        c = data["cache"]
        lines += ["", f"Cache file ({c['matrices']} matrices {c['d_in']}x{c['d_out']}): {c['file_bytes'] / 1e6:.1f} MB "
                  f"= {c['ratio_to_it']}x the information-theoretic size of the full ciphertexts; setup into the file "
                  f"{c['setup_into_file_s']:.1f} s; open + verify {c['open_verify_s']:.2f} s; load (decode + re-expand) "
                  f"{c['load_s_per_matrix']:.2f} s per matrix; peak memory allocated while opening and streaming the "
                  f"matrices {c.get('peak_traced_load_mb', 0):.0f} MB (one expanded matrix "
                  f"{c['expanded_bytes_per_matrix'] / 1e6:.0f} MB, reused buffer; process peak RSS {c['peak_rss_mb']:.0f} MB)."]
    if data.get("bert"):
        b = data["bert"]
        lines += ["", f"BERT-base (computed from the format): {b['ciphertexts']} weight ciphertexts; setup "
                  f"{b['setup_bytes'] / 1e9:.2f} GB; cache {b['cache_bytes'] / 1e9:.2f} GB = {b['cache_over_it']}x the "
                  f"information-theoretic size of the full ciphertexts ({b['it_bytes_full_cts'] / 1e9:.2f} GB; "
                  f"expanded in memory {b['expanded_bytes'] / 1e9:.1f} GB); of which the embedding table "
                  f"{b['embed_table_cache_bytes'] / 1e9:.2f} GB."]
    for mm in data.get("matmul") or []:
        lines += ["", f"{mm['name']} ({mm['heads']} heads, ({mm['m']}x{mm['d']}) @ ({mm['d']}x{mm['p']}), blocks "
                  f"{mm['blocks']}): client {mm['client_s']:.2f} s, server {mm['server_s']:.2f} s, CPU (both) "
                  f"{mm['cpu_s']:.2f} s, {mm['s2c_bytes'] / 1e6:.1f} MB s->c + {mm['c2s_bytes'] / 1e6:.1f} MB c->s, "
                  f"{mm['rounds']} rounds; packing {mm['pack']}: {mm['products']} products in {mm['responses']} "
                  f"response ciphertexts ({mm['key_switches']} key switches). Once per session: Galois + public "
                  f"keys {mm['keys_s2c_bytes'] / 1e6:.2f} MB s->c (server {mm['keys_server_s']:.2f} s, client "
                  f"{mm['keys_client_s']:.2f} s)."]
    if data.get("embedding"):
        e = data["embedding"]
        lines += ["", f"Embedding lookup, {e['tokens']} tokens (table of {e['vocab_in_bench']} rows in the bench): "
                  f"client {e['client_s']:.3f} s (of which reading + verifying + expanding the 128 cached rows "
                  f"{e['load_rows_s']:.3f} s), server {e['server_s']:.3f} s, wall {e['wall_s']:.3f} s, "
                  f"{e['c2s_bytes'] / 1e6:.2f} MB, {e['rounds']} round."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", default="h1,qkv,o,h2")
    ap.add_argument("--tokens", default="1,32,128")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--params", default="bert-base")
    ap.add_argument("--embed-vocab", type=int, default=2048, help="table rows in the bench (0: skip)")
    ap.add_argument("--cache", type=int, default=2, help="matrices 768x3072 in the cache bench (0: skip)")
    ap.add_argument("--matmul", type=int, default=1, help="QK^T and PV for 12 heads (0: skip)")
    a = ap.parse_args(argv)
    from nimbus.spec import get_preset

    params = get_preset(a.params)
    tokens = [int(t) for t in a.tokens.split(",")]
    data = {"machine": f"{platform.machine()} {os.cpu_count()} cpus", "params": params.name, "he": params.he.name,
            "repeat": a.repeat, "shapes": [], "embedding": None,
            "load_average": os.getloadavg()}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for s in a.shapes.split(","):
        if not s:
            continue
        d_in, d_out = SHAPES[s]
        data["shapes"].append({"name": s, **run_shape(params, d_in, d_out, tokens, a.repeat)})
        (out / "linear.json").write_text(json.dumps(data, indent=1))
        print(report(data), flush=True)
    data["bert"] = bert_totals(params)
    if a.matmul:
        import dataclasses

        from nimbus.spec import he as H

        pm = params if any(k == "matmul" for k, _ in params.extra) else dataclasses.replace(
            params, name=params.name + "+matmul64", extra=params.extra + (("matmul", H.MATMUL64),))
        data["matmul_params"] = {"name": pm.name, "he": S_matmul_he(pm).name}
        data["matmul"] = [run_matmul(pm, 12, 128, 64, 128, a.repeat, "QK^T"),
                          run_matmul(pm, 12, 128, 128, 64, a.repeat, "PV")]
        (out / "linear.json").write_text(json.dumps(data, indent=1))
    if a.cache:
        data["cache"] = run_cache(params, 768, 3072, a.cache)
    if a.embed_vocab:
        data["embedding"] = run_embedding(params, a.embed_vocab, 768, 128, a.repeat)
    (out / "linear.json").write_text(json.dumps(data, indent=1))
    (out / "linear.md").write_text(report(data))
    print(report(data))


if __name__ == "__main__":
    main()
