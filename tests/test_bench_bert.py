"""The end-to-end benchmark (nimbus.bench.bert) on a tiny random model: the results schema,
per-category bytes summing to the totals, projections consistent with the recorded compute,
cache reuse, the ``bench`` subcommand's arguments, and the PNG plots (matplotlib, the ``bench``
extra; skipped where it is not installed). Bounded: one setup, a few 8-token sessions.
"""

from __future__ import annotations

import argparse
import copy
import json

import pytest

from nimbus.bench import bert as B
from nimbus.bench import plots as P
from nimbus.spec.cost import NETWORKS


def _args(out, **kw):
    ap = argparse.ArgumentParser()
    B.configure(ap)
    a = ap.parse_args(["--out", str(out), "--model", "tiny", "--tokens", "8", "--repeat", "1", "--ot", "iknp",
                       "--no-tune"])  # keep the pytest process on the allocator defaults
    for k, v in kw.items():
        setattr(a, k, v)
    return a


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-bert")
    data = B.run_bench(_args(out), log=lambda s: None)
    return out, data


def test_files_and_schema(result):
    out, data = result
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["schema"] == B.SCHEMA
    for key in ("machine", "commit", "dirty", "params", "config", "model", "options", "setup", "runs"):
        assert key in on_disk, key
    assert on_disk["machine"]["cpus"] and len(on_disk["machine"]["loadavg_start"]) == 3
    assert on_disk["options"]["warmup"] == 1 and on_disk["options"]["networks"] == list(NETWORKS)
    assert on_disk["model"]["arch"]["layers"] == 1 and on_disk["model"]["arch"]["hidden"] == 32
    st = on_disk["setup"]
    assert not st["reused"] and st["bytes_s2c"] > 0 and st["cache_bytes"] > 0
    (run,) = on_disk["runs"]
    assert run["tokens"] == 8 and run["network"] is None and run["repeats"] == 1 and run["wall_s"] > 0
    assert len(run["layers"]["round_trips"]) == 1 and run["layers"]["round_trips"][0] > 0
    text = (out / "report.md").read_text()
    assert "## 8 tokens, in process" in text and "Setup amortisation" in text


def test_bytes_and_flights_add_up(result):
    _, data = result
    cats = data["runs"][0]["categories"]
    tot = cats["total"]
    rows = [r for c, r in cats.items() if c != "total"]
    for k in ("bytes_c2s", "bytes_s2c"):
        assert sum(r[k] for r in rows) == tot[k] > 0
    for role in ("client", "server"):
        assert sum(r["compute_s"][role] for r in rows) == pytest.approx(tot["compute_s"][role])
    # flights of categories may share a wave, never exceed the session's
    assert max(r["flights"] for r in rows) <= tot["flights"] <= sum(r["flights"] for r in rows)
    assert all(r["round_trips"] == r["flights"] / 2 for r in cats.values())
    assert "Linear_qkv" in cats and "Softmax" in cats and "GELU" in cats and "LayerNorm" in cats


def test_projections_consistent(result):
    _, data = result
    for c, r in data["runs"][0]["categories"].items():
        comp = max(r["compute_s"].values())
        for n, net in NETWORKS.items():
            p = r["projected_s"][n]
            assert p >= comp - 1e-12, (c, n)
            assert p >= r["flights"] * net.latency_s - 1e-12
    tot = data["runs"][0]["categories"]["total"]
    assert tot["measured_s"] == data["runs"][0]["wall_s"] and tot["projection_error_s"] == {}
    lan, wan = tot["projected_s"]["lan"], tot["projected_s"]["wan"]
    assert wan > lan  # same compute, slower link


def test_cache_reused(result, tmp_path):
    out, data = result
    again = B.run_bench(_args(tmp_path, cache=data["setup"]["cache_dir"], network=["lan"], repeat=1),
                        log=lambda s: None)
    assert again["setup"]["reused"] and again["amortisation"] is None  # not BERT-base sizes
    assert again["setup"]["bytes_s2c"] == data["setup"]["bytes_s2c"]  # the figures of the run that made the cache
    assert list(again["runs"][0]["categories"]["total"]["projected_s"]) == ["lan"]
    assert again["runs"][0]["categories"]["total"]["bytes_c2s"] == data["runs"][0]["categories"]["total"]["bytes_c2s"]


def test_bench_subcommand_registered():
    from nimbus import cli

    assert "bench" in cli.COMMANDS and cli.COMMANDS["bench"].run is B.cmd_bench
    ap = argparse.ArgumentParser()
    cli.COMMANDS["bench"].configure(ap)
    a = ap.parse_args(["--out", "x", "--layers", "1", "--tokens", "128", "32", "--mode", "tcp", "--network", "wan"])
    assert (a.layers, a.tokens, a.mode, a.network, a.model) == (1, [128, 32], "tcp", ["wan"], "bert-base")
    assert a.study is None and ap.parse_args(["--out", "x", "--study", "s.json"]).study == "s.json"


# -- plots -------------------------------------------------------------------------------------------------
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    blob = path.read_bytes()
    assert blob[:8] == PNG_SIGNATURE, path
    assert len(blob) > 1024, (path, len(blob))  # not an empty canvas


def test_plots_of_the_run(result):
    pytest.importorskip("matplotlib")
    out, data = result
    # the tiny model has no amortisation (not BERT-base sizes) and the run had no --study
    assert data["plots"] == ["categories-8-local.png"]
    assert json.loads((out / "results.json").read_text())["plots"] == data["plots"]
    assert "`categories-8-local.png`" in (out / "report.md").read_text()
    for name in data["plots"]:
        _assert_png(out / name)


def test_amortisation_plot(result, tmp_path):
    pytest.importorskip("matplotlib")
    _, data = result
    # The tiny run relabelled as a 128-token run of BERT-base sizes, only so that amortisation()
    # computes its figures and plots() draws the curve; the numbers themselves mean nothing.
    d = copy.deepcopy(data)
    d["model"]["arch"].update(hidden=768, ffn=3072, heads=12)
    d["runs"][0]["tokens"] = 128
    d["amortisation"] = B.amortisation(d)
    am = d["amortisation"]
    assert am["queries_time"] >= 1 and am["queries_bytes"] >= 1  # the tiny online cost is below the baseline's
    names = B.plots(d, tmp_path)
    assert names == ["categories-128-local.png", P.AMORTISATION_PNG]
    for name in names:
        _assert_png(tmp_path / name)
    # online never cheaper than the baseline: still drawn, without a break-even point
    never = dict(am, online_s=10 * am["baseline"]["seconds"], queries_time=None)
    assert P.amortisation_plot(never, tmp_path / "never.png") == "never.png"
    _assert_png(tmp_path / "never.png")


#: SYNTHETIC input for the plot function only (the schema of ``python -m nimbus.approx.study --out``);
#: these are not measured accuracies.
SYNTHETIC_STUDY = {
    "model": "synthetic-test-input", "n_heldout": 200,
    "results": {name: {"accuracy": acc, "agreement_with_float": agree, "accuracy_delta_vs_float": acc - 0.80,
                       "max_abs_logit_diff": mx, "mean_abs_logit_diff": mx / 8, "seconds": 0.0}
                for name, acc, agree, mx in [("float", 0.80, 1.0, 0.0), ("nimbus-prototype", 0.785, 0.93, 0.9),
                                             ("bumblebee", 0.80, 0.995, 0.16), ("ours-global", 0.805, 0.96, 0.8)]},
}


def test_accuracy_vs_approximation_plot(result, tmp_path):
    pytest.importorskip("matplotlib")
    study = tmp_path / "synthetic-study.json"
    study.write_text(json.dumps(SYNTHETIC_STUDY))
    # the command line: python -m nimbus.bench.plots STUDY.json --out DIR
    assert P.main([str(study), "--out", str(tmp_path / "cli")]) == 0
    _assert_png(tmp_path / "cli" / P.ACCURACY_PNG)
    # through the benchmark's --study option (recorded in options.study): listed after the run's plots
    _, data = result
    d = copy.deepcopy(data)
    d["options"]["study"] = str(study)
    names = B.plots(d, tmp_path)
    assert names == ["categories-8-local.png", P.ACCURACY_PNG]
    _assert_png(tmp_path / P.ACCURACY_PNG)
    # and a bench results.json redrawn from the command line
    (tmp_path / "results.json").write_text(json.dumps(data))
    assert P.main(["--results", str(tmp_path / "results.json"), "--out", str(tmp_path / "redrawn")]) == 0
    _assert_png(tmp_path / "redrawn" / "categories-8-local.png")


def test_no_plots_without_matplotlib(result, tmp_path, monkeypatch):
    _, data = result
    monkeypatch.setattr(P, "available", lambda: False)
    assert B.plots(data, tmp_path) == [] and not list(tmp_path.glob("*.png"))
    assert "Plots: none (matplotlib is not installed)" in B.report(dict(data, plots=[]))


def test_table_option(result, tmp_path):
    out, data = result
    again = B.run_bench(_args(tmp_path, cache=data["setup"]["cache_dir"], network=["lan"],
                              table="ours-bert-base-random-global"), log=lambda s: None)
    assert again["config"]["gelu_table"] == again["config"]["exp_table"] == "ours-bert-base-random-global"
    assert data["config"]["gelu_table"] != "ours-bert-base-random-global"
    gelu = [r["runs"][0]["categories"]["GELU"] for r in (data, again)]  # degree 2 instead of 6: fewer bytes
    assert gelu[1]["bytes_c2s"] + gelu[1]["bytes_s2c"] < gelu[0]["bytes_c2s"] + gelu[0]["bytes_s2c"]
    assert "ours-bert-base-random-global" in (tmp_path / "report.md").read_text()
    with pytest.raises(SystemExit, match="--table"):
        B.run_bench(_args(tmp_path / "x", table="no-such-table"), log=lambda s: None)


def test_peak_memory_per_query(result):
    _, data = result
    (run,) = data["runs"]
    pk = run["peak_rss_bytes"]
    assert set(pk) == {"both"} and pk["both"] > 10e6  # local mode: one process holds both parties
    assert "Peak resident memory during the query" in B.report(data)


def test_peak_rss_resets_to_the_interval():
    """In a child process (the allocator's defaults: freed blocks go back to the kernel)."""
    import subprocess
    import sys

    code = ("import numpy as np, json; from nimbus.bench.memory import peak_rss, reset_peak_rss\n"
            "a = np.ones(64 << 20, dtype=np.uint8); high = peak_rss(); del a\n"
            "ok = reset_peak_rss(); print(json.dumps([high, ok, peak_rss()]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    high, ok, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert high >= 64 << 20
    if ok:  # Linux: the mark restarts from what is resident now
        assert after < high
