"""Non-linear layer benchmark: GELU 128x3072, Softmax 12x128x128 (and tanh, the BumbleBee GELU
baseline on a slice) on shares, both parties in this process.

Usage: ``python -m nimbus.bench.nonlinear --out DIR [--repeats 3] [--ot ideal|ferret]
[--quick] [--baseline]``. Writes ``DIR/nonlinear.json`` and ``DIR/nonlinear.md``.

Time: wall-clock seconds of ``run_local`` (the two parties alternate on this machine, so this is
client + server compute), its process CPU time, and each party's compute from the transcript;
projections onto ``lan``/``wan`` use ``Transcript.project`` (the slower party's compute + the
slower direction's bytes / bandwidth + rounds x latency). Bytes and rounds are measured from the
transcript (they equal the declared ``*_cost``). ``--ot ideal`` uses F_COT
(``IdealCotSession``): random-COT generation is then *not* included, and the report gives the
number of COTs consumed so the OT layer's measured rate can be added; ``--ot ferret`` runs the
real session (setup excluded, refills included). Errors: against float64 (torch's erf for GELU),
on the benchmark inputs (distribution-weighted) and on a dense grid (worst case), next to the
table's certified bound. Medians of ``--repeats`` runs after a JIT warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from nimbus.spec.prg import PRG

from nimbus.registry import implementation
from nimbus.runtime import run_local
from nimbus.spec import CLIENT, NETWORKS, PRG, SERVER, Ctx, get_preset
from nimbus.spec import nonlinear as S
from nimbus.spec import nonlinear_fn as F

__all__ = ["main", "bench_one"]

TARGETS = {  # NIMBUS.md: targets of this issue, SPU/BumbleBee baseline measured on this machine
    "gelu": {"time_s": 8.0, "bytes": 200e6, "round_trips": 20, "baseline": "33 s, 1.10 GB, 220 RT"},
    "softmax": {"time_s": 2.2, "bytes": 70e6, "round_trips": 60, "baseline": "8.9 s, 0.29 GB"},
    "layernorm": {"time_s": 0.3, "bytes": 15e6, "round_trips": 20, "baseline": "1.2 s, 58 MB, 44 RT"},
}


def _shares(x_real: np.ndarray, frac: int, seed: int):
    X = np.floor(x_real * (1 << frac)).astype(np.int64).view(np.uint64)
    r = PRG.for_tests(f"bench/nonlinear/{seed}").uniform("r", X.shape, 64)  # the client's share
    return X, r, X - r


def _sessions(params, kind: str):
    if kind == "ideal":
        return S.IdealCotSession.pair(b"bench"), None
    im = implementation("optimized")
    c = Ctx(CLIENT, params, PRG.for_tests("bench-ot/c"), im).sub("ot")
    s = Ctx(SERVER, params, PRG.for_tests("bench-ot/s"), im).sub("ot")
    t0 = time.perf_counter()
    res = run_local(im.ot.ot_setup_client(c, kind), im.ot.ot_setup_server(s, kind))
    return (res.client, res.server), time.perf_counter() - t0


def _used(sess) -> dict:
    c, s = sess
    get = (lambda e: e.used) if isinstance(c.sender, S.IdealCotEnd) else (lambda e: e.consumed)
    ideal = isinstance(c.sender, S.IdealCotEnd)
    fc = (c.sender.seconds + c.receiver.seconds) if ideal else 0.0
    fs = (s.sender.seconds + s.receiver.seconds) if ideal else 0.0
    return {"c2s": get(c.sender), "s2c": get(s.sender), "fcot_s": fc + fs, "fcot_client_s": fc, "fcot_server_s": fs}


def _proj_wo(tr, label, used) -> dict:
    """Projections with each party's compute minus its F_COT generation time."""
    comp = max(tr.compute_time(CLIENT, label) - used["fcot_client_s"], tr.compute_time(SERVER, label) - used["fcot_server_s"])
    return {n: tr.cost(label).project(n, comp) for n in NETWORKS}


def bench_one(name: str, fn: str, params, X, Xc, Xs, kwargs: dict, repeats: int, ot: str) -> dict:
    """Time ``fn`` (party functions ``<fn>_client/_server``) on the given shares."""
    im = implementation("optimized")
    mod = im.nonlinear
    runs = []
    for rep in range(repeats + 1):  # the first run warms the JIT and is not counted
        sess, setup_s = _sessions(params, ot)
        used0 = _used(sess)
        c = Ctx(CLIENT, params, PRG.for_tests(f"bench/{name}/{rep}/c"), im).sub(name)
        s = Ctx(SERVER, params, PRG.for_tests(f"bench/{name}/{rep}/s"), im).sub(name)
        t0, p0 = time.perf_counter(), time.process_time()
        res = run_local(getattr(mod, f"{fn}_client")(c, sess[0], Xc, **kwargs),
                        getattr(mod, f"{fn}_server")(s, sess[1], Xs, **kwargs))
        wall, cpu = time.perf_counter() - t0, time.process_time() - p0
        used = {k: v - used0[k] for k, v in _used(sess).items()}
        if rep:
            runs.append((wall, cpu, res, used))
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    res, used = runs[-1][2], runs[-1][3]
    no_fcot = statistics.median(r[0] - r[3]["fcot_s"] for r in runs)
    tr = res.transcript
    cost = tr.cost(name)
    out = (res.client + res.server)
    return {
        "name": name, "shape": list(np.shape(X)), "kwargs": {k: v for k, v in kwargs.items() if k != "mask"},
        "wall_s": wall, "wall_s_runs": [r[0] for r in runs], "cpu_s": cpu, "wall_s_without_fcot": no_fcot,
        "compute_s": {r: tr.compute_time(r, name) for r in (CLIENT, SERVER)},
        "bytes_c2s": cost.c2s, "bytes_s2c": cost.s2c, "bytes": cost.total_bytes,
        "rounds": cost.rounds, "round_trips": cost.round_trips,
        "bytes_all_labels": tr.cost().total_bytes, "cots_consumed": used, "ot": ot,
        "projected_s": {n: tr.project(n) for n in NETWORKS},
        "projected_s_without_fcot": _proj_wo(tr, name, used),
        "steps": _steps(tr, name), "digest": tr.digest(), "_out": out,
    }


def _steps(tr, name: str) -> dict:
    """Bytes and flights per protocol step under ``name`` (two label levels: ``softmax/exp``)."""
    return {k: {"bytes": v["bytes_c2s"] + v["bytes_s2c"], "flights": v["rounds"],
                "client_s": v["compute_s"][CLIENT], "server_s": v["compute_s"][SERVER]}
            for k, v in tr.breakdown(2).items() if k.split("/")[0] == name and "/" in k}


def _gelu_float(x):
    from nimbus.approx.functions import gelu_np

    return gelu_np(x)


def _errors(got_ring: np.ndarray, want_float: np.ndarray, frac: int) -> dict:
    got = got_ring.view(np.int64).astype(np.float64) / (1 << frac)
    e = np.abs(got - want_float)
    return {"max_abs": float(e.max()), "mean_abs": float(e.mean())}


def _grid(params, fn: str, table: str, lo: float, hi: float) -> dict:
    """Worst case over every fixed-point input in [lo, hi] (scale 2^13 after the down-cast):
    the ideal functionality (= the protocol, bit for bit) against float64."""
    f = 13
    xi = np.arange(int(lo * (1 << f)), int(hi * (1 << f)) + 1, dtype=np.int64)
    X = (xi << np.int64(params.linear.frac - f)).view(np.uint64)
    y = F.ideal_unary(X, params, None, table, fn).view(np.int64) / float(1 << params.linear.frac)
    x = xi / float(1 << f)
    ref = _gelu_float(x) if fn == "gelu" else np.tanh(x)
    return {"range": [lo, hi], "points": int(xi.size), "max_abs": float(np.abs(y - ref).max())}


def _cert(table: str, fn: str):
    from nimbus.approx.tables import load

    try:
        return float(load("certificates")["certificates"][table][fn]["bound"])
    except (KeyError, TypeError):
        return None


class _Normal:
    """Normal samples (Box-Muller) from the labelled test PRG: the benchmark's public activations."""

    def __init__(self, prg):
        self.prg, self.k = prg, 0

    def normal(self, mean: float, std: float, shape) -> np.ndarray:
        n = int(np.prod(shape))
        self.k += 1
        u = (self.prg.uniform(f"u{self.k}", (2, n), 53).astype(np.float64) + 0.5) / float(1 << 53)
        z = np.sqrt(-2.0 * np.log(u[0])) * np.cos(2.0 * np.pi * u[1])
        return (mean + std * z).reshape(shape)


def run_all(args) -> dict:
    P = get_preset(args.preset)
    rng = _Normal(PRG.for_tests("nimbus/bench/nonlinear/activations"))  # public synthetic activations
    results = {}
    gshape = (16, 3072) if args.quick else (128, 3072)
    sshape = (2, 128, 128) if args.quick else (12, 128, 128)
    only = set(args.only.split(","))
    # GELU: inputs like the calibration data (peak near -3, under 10% positive) [NIMBUS.md]
    xg = np.clip(rng.normal(-2.5, 1.6, gshape), -40, 40)
    X, Xc, Xs = _shares(xg, P.linear.frac, 1)
    r = bench_one("gelu", "gelu", P, X, Xc, Xs, {}, args.repeats, args.ot) if "gelu" in only else None
    if r is not None:
        _gelu_report(r, X, xg, P, results)
        r = bench_one("gelu", "gelu", P, X, Xc, Xs, {"trunc": "faithful"}, args.repeats, args.ot)
        out = r.pop("_out")
        r["max_dev_from_ideal"] = float(np.abs(out.view(np.int64) - F.ideal_gelu(X, P).view(np.int64)).max()
                                        / (1 << P.linear.frac))
        r["declared_dev_bound"] = F.unary_faithful_bound(P, F.DEFAULT_TABLE, "gelu")
        r["error_vs_float64"] = _errors(out, _gelu_float(xg), P.linear.frac)
        r["certified_bound"] = _cert(F.DEFAULT_TABLE, "gelu")
        r["declared"] = _cost_dict(F.gelu_cost(P, X.shape, trunc="faithful"))
        results["gelu-faithful"] = r
    # Softmax: attention scores (already scaled by 1/sqrt(d)), a padding mask on the last 8 keys
    xs = rng.normal(0.0, 1.5, sshape)
    mask = np.zeros(sshape[-1])
    mask[-8:] = -1e4
    X, Xc, Xs = _shares(xs, P.linear.frac, 2)
    for trunc in (("faithful", "exact") if "softmax" in only else ()):
        name = f"softmax-{trunc}"
        r = _bench_softmax(P, X, Xc, Xs, mask, trunc, args)
        out = r.pop("_out")
        ideal = F.ideal_softmax(X, P, mask=mask)
        dev = np.abs(out.view(np.int64) - ideal.view(np.int64)).max() / (1 << P.linear.frac)
        r["max_dev_from_ideal"] = float(dev)
        r["declared_dev_bound"] = 0.0 if trunc == "exact" else F.softmax_faithful_bound(params=P)
        xm = xs + mask
        ref = np.exp(xm - xm.max(-1, keepdims=True))
        ref /= ref.sum(-1, keepdims=True)
        r["error_vs_float64"] = _errors(out, ref, P.linear.frac)
        r["certified_bound_exp"] = _cert(F.DEFAULT_TABLE, "exp")
        r["declared"] = _cost_dict(F.softmax_cost(P, sshape, trunc=trunc))
        results[name] = r
    if args.baseline and "softmax" in only:  # BumbleBee's exp (1 + x/2^8)^(2^8) on one head, scaled
        Xb, Xcb, Xsb = X[:1], Xc[:1], Xs[:1]
        r = _bench_softmax(P, Xb, Xcb, Xsb, mask, "exact", args, table="bumblebee", repeats=1)
        out = r.pop("_out")
        assert np.array_equal(out, F.ideal_softmax(Xb, P, mask=mask, table="bumblebee"))
        xm = xs[:1] + mask
        ref = np.exp(xm - xm.max(-1, keepdims=True))
        ref /= ref.sum(-1, keepdims=True)
        r["error_vs_float64"] = _errors(out, ref, P.linear.frac)
        scale = sshape[0] / Xb.shape[0]
        r["scaled_to_12x128x128"] = {"wall_s": r["wall_s"] * scale, "bytes": r["bytes"] * scale,
                                     "round_trips": r["round_trips"]}
        r["declared"] = _cost_dict(F.softmax_cost(P, Xb.shape, table="bumblebee", trunc="exact"))
        results["softmax-bumblebee"] = r
    _rest(args, P, rng, xg, results, only)
    return results


def _gelu_report(r, X, xg, P, results):
    assert np.array_equal(r.pop("_out"), F.ideal_gelu(X, P)), "GELU output differs from the ideal"
    r["bit_exact"] = True
    r["error_vs_float64"] = _errors(F.ideal_gelu(X, P), _gelu_float(xg), P.linear.frac)
    r["grid"] = _grid(P, "gelu", F.DEFAULT_TABLE, -8, 8)
    r["certified_bound"] = _cert(F.DEFAULT_TABLE, "gelu")
    r["declared"] = _cost_dict(F.gelu_cost(P, X.shape))
    results["gelu"] = r


def _rest(args, P, rng, xg, results, only):
    # LayerNorm: residual-stream-like rows (a few outlier features)
    lshape = (16, 768) if args.quick else (128, 768)
    xl = rng.normal(0.2, 1.5, lshape)
    xl[:, :4] += 12.0
    X, Xc, Xs = _shares(xl, P.linear.frac, 5)
    if "layernorm" not in only:
        return _rest_tanh(args, P, rng, xg, results, only)
    r = bench_one("layernorm", "layernorm", P, X, Xc, Xs, {}, args.repeats, args.ot)
    assert np.array_equal(r.pop("_out"), F.ideal_layernorm(X, P)), "LayerNorm output differs from the ideal"
    r["bit_exact"] = True
    ref = (xl - xl.mean(-1, keepdims=True)) / np.sqrt(xl.var(-1, keepdims=True) + 1e-12)
    r["error_vs_float64"] = _errors(F.ideal_layernorm(X, P), ref, P.linear.frac)
    r["declared"] = _cost_dict(F.layernorm_cost(P, lshape))
    results["layernorm"] = r
    return _rest_tanh(args, P, rng, xg, results, only)


def _rest_tanh(args, P, rng, xg, results, only):
    # tanh (BERT pooler): one 768-vector per sequence, 8 sequences
    xt = rng.normal(0, 1.0, (8, 768))
    X, Xc, Xs = _shares(xt, P.linear.frac, 3)
    if "tanh" not in only:
        return _rest_baseline(args, P, xg, results)
    r = bench_one("tanh", "tanh", P, X, Xc, Xs, {}, args.repeats, args.ot)
    assert np.array_equal(r.pop("_out"), F.ideal_tanh(X, P))
    r["error_vs_float64"] = _errors(F.ideal_tanh(X, P), np.tanh(xt), P.linear.frac)
    r["grid"] = _grid(P, "tanh", F.TANH_TABLE, -8, 8)
    r["certified_bound"] = _cert(F.TANH_TABLE, "tanh")
    results["tanh"] = r
    return _rest_baseline(args, P, xg, results)


def _rest_baseline(args, P, xg, results):
    if args.baseline:  # BumbleBee's GELU (4 pieces up to degree 6, Z_2^64) on a slice, scaled
        bshape = (4, 3072)
        X, Xc, Xs = _shares(xg[: bshape[0]], P.linear.frac, 4)
        r = bench_one("gelu", "gelu", P, X, Xc, Xs, {"table": "bumblebee"}, 1, args.ot)
        assert np.array_equal(r.pop("_out"), F.ideal_gelu(X, P, table="bumblebee"))
        scale = (128 * 3072) / (bshape[0] * 3072)
        r["scaled_to_128x3072"] = {"wall_s": r["wall_s"] * scale, "bytes": r["bytes"] * scale,
                                   "round_trips": r["round_trips"]}
        r["error_vs_float64"] = _errors(F.ideal_gelu(X, P, table="bumblebee"), _gelu_float(xg[: bshape[0]]),
                                        P.linear.frac)
        r["certified_bound"] = _cert("bumblebee", "gelu")
        results["gelu-bumblebee"] = r
    return results


def _bench_softmax(P, X, Xc, Xs, mask, trunc, args, table=F.DEFAULT_TABLE, repeats=None):
    """Softmax with the client's mask (a client-only keyword)."""
    im = implementation("optimized")
    runs = []
    for rep in range((args.repeats if repeats is None else repeats) + 1):
        sess, _ = _sessions(P, args.ot)
        used0 = _used(sess)
        c = Ctx(CLIENT, P, PRG.for_tests(f"bench/sm/{rep}/c"), im).sub("softmax")
        s = Ctx(SERVER, P, PRG.for_tests(f"bench/sm/{rep}/s"), im).sub("softmax")
        t0, p0 = time.perf_counter(), time.process_time()
        res = run_local(im.nonlinear.softmax_client(c, sess[0], Xc, mask=mask, trunc=trunc, table=table),
                        im.nonlinear.softmax_server(s, sess[1], Xs, trunc=trunc, table=table))
        wall, cpu = time.perf_counter() - t0, time.process_time() - p0
        if rep:
            runs.append((wall, cpu, res, {k: v - used0[k] for k, v in _used(sess).items()}))
    tr, used = runs[-1][2].transcript, runs[-1][3]
    cost = tr.cost("softmax")
    return {
        "name": "softmax", "shape": list(X.shape), "kwargs": {"trunc": trunc, "mask": "last 8 keys", "table": table},
        "wall_s": statistics.median(r[0] for r in runs), "wall_s_runs": [r[0] for r in runs],
        "wall_s_without_fcot": statistics.median(r[0] - r[3]["fcot_s"] for r in runs),
        "cpu_s": statistics.median(r[1] for r in runs),
        "compute_s": {r: tr.compute_time(r, "softmax") for r in (CLIENT, SERVER)},
        "bytes_c2s": cost.c2s, "bytes_s2c": cost.s2c, "bytes": cost.total_bytes, "rounds": cost.rounds,
        "round_trips": cost.round_trips, "cots_consumed": used, "ot": args.ot,
        "projected_s": {n: tr.project(n) for n in NETWORKS}, "digest": tr.digest(),
        "projected_s_without_fcot": _proj_wo(tr, "softmax", used), "steps": _steps(tr, "softmax"),
        "_out": runs[-1][2].client + runs[-1][2].server,
    }


def _cost_dict(c) -> dict:
    return {"bytes_c2s": c.c2s, "bytes_s2c": c.s2c, "rounds": c.rounds}


def _report(res: dict) -> str:
    m = res["meta"]
    lines = [
        "# Non-linear layers: benchmark", "",
        f"Machine: {m['machine']}; {m['cpus']} CPUs (shared; load average {m['loadavg']}); "
        f"preset {m['preset']}; OT: {m['ot']} ({'F_COT: COT generation NOT included' if m['ot'] == 'ideal' else 'real session'}); "
        f"medians of {m['repeats']} runs after a warm-up; both parties in one process (time = client + server).",
        "",
        "| workload | wall s | wall s w/o F_COT | CPU s | client s | server s | MB | rounds (RT) | lan s | wan s | lan/wan s w/o F_COT | COTs c2s / s2c | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k, r in res["results"].items():
        t = TARGETS.get(k.split("-")[0], {})
        tgt = f"<= {t['time_s']} s, <= {t['bytes'] / 1e6:.0f} MB, <= {t['round_trips']} RT" if t else ""
        lines.append(
            f"| {k} {tuple(r['shape'])} | {r['wall_s']:.2f} | {r['wall_s_without_fcot']:.2f} | {r['cpu_s']:.2f} | {r['compute_s']['client']:.2f} | "
            f"{r['compute_s']['server']:.2f} | {r['bytes'] / 1e6:.1f} | {r['rounds']} ({r['round_trips']}) | "
            f"{r['projected_s']['lan']:.2f} | {r['projected_s']['wan']:.2f} | "
            f"{r['projected_s_without_fcot']['lan']:.2f} / {r['projected_s_without_fcot']['wan']:.2f} | "
            f"{r['cots_consumed']['c2s'] / 1e6:.1f}M / {r['cots_consumed']['s2c'] / 1e6:.1f}M | {tgt} |")
    lines += ["", "wall s w/o F_COT: wall minus the time the ideal random-COT source spent generating "
              "(with ``--ot ideal``). lan/wan: the slower party's compute + bytes/bandwidth + rounds x latency."]
    lines += ["", "## Accuracy against float64", "",
              "| workload | mean abs err | max abs err | grid worst case | certified bound of the table | vs ideal |",
              "|---|---|---|---|---|---|"]
    for k, r in res["results"].items():
        e = r.get("error_vs_float64", {})
        g = r.get("grid", {})
        cert = r.get("certified_bound", r.get("certified_bound_exp"))
        dev = ("bit-exact" if r.get("bit_exact", k in ("tanh", "gelu-bumblebee", "softmax-bumblebee")) or r.get("max_dev_from_ideal") == 0.0
               else f"max {r.get('max_dev_from_ideal', 0):.2e} (declared <= {r.get('declared_dev_bound', 0):.2e})")
        lines.append(f"| {k} | {e.get('mean_abs', float('nan')):.2e} | {e.get('max_abs', float('nan')):.2e} | "
                     f"{g.get('max_abs', float('nan')):.3g} on {g.get('range', '-')} | {cert} "
                     f"{'(exp)' if 'certified_bound_exp' in r else ''} | {dev} |")
    lines += ["", "Baseline (NIMBUS.md, SPU/BumbleBee on this machine): GELU 128x3072 33 s, 1.10 GB, ~220 RT; "
              "Softmax 12x128x128 8.9 s, 0.29 GB.", ""]
    if "gelu-bumblebee" in res["results"]:
        b = res["results"]["gelu-bumblebee"]["scaled_to_128x3072"]
        lines.append(f"BumbleBee GELU table on our protocols, scaled linearly to 128x3072: {b['wall_s']:.1f} s, "
                     f"{b['bytes'] / 1e6:.0f} MB, {b['round_trips']} RT.")
    if "softmax-bumblebee" in res["results"]:
        b = res["results"]["softmax-bumblebee"]["scaled_to_12x128x128"]
        lines.append(f"BumbleBee exp (1 + x/2^8)^(2^8) (Z_2^64) in our softmax, one head scaled linearly to "
                     f"12x128x128: {b['wall_s']:.1f} s, {b['bytes'] / 1e6:.0f} MB, {b['round_trips']} RT.")
    lines += ["", "## Where the bytes go (per protocol step)", "",
              "| workload | step | MB | flights | client s | server s |", "|---|---|---|---|---|---|"]
    for k, r in res["results"].items():
        for st, v in sorted(r.get("steps", {}).items(), key=lambda kv: -kv[1]["bytes"]):
            lines.append(f"| {k} | {st.split('/', 1)[1]} | {v['bytes'] / 1e6:.1f} | {v['flights']} | "
                         f"{v['client_s']:.3f} | {v['server_s']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--preset", default="bert-base")
    ap.add_argument("--ot", default="ideal", choices=["ideal", "ferret", "iknp"])
    ap.add_argument("--quick", action="store_true", help="smaller shapes (smoke test)")
    ap.add_argument("--baseline", action="store_true", help="also the BumbleBee GELU on a slice")
    ap.add_argument("--only", default="gelu,softmax,layernorm,tanh",
                    help="comma-separated workloads (gelu, softmax, layernorm, tanh)")
    ap.add_argument("--tune", action=argparse.BooleanOptionalAction, default=True,
                    help="party-process settings (nimbus.runtime.tuning), as nimbus serve / infer run")
    args = ap.parse_args(argv)
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    tuned = None
    if args.tune:
        from nimbus.runtime import tune_party_process

        tuned = tune_party_process()
    results = run_all(args)
    res = {"meta": {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "loadavg": [round(v, 2) for v in os.getloadavg()], "preset": args.preset, "ot": args.ot,
                    "repeats": args.repeats, "quick": args.quick, "numpy": np.__version__, "tuning": tuned,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
           "targets": TARGETS, "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nonlinear.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    (args.out / "nonlinear.md").write_text(_report(res))
    print(_report(res))
    return res


if __name__ == "__main__":
    main()
