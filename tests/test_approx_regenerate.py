"""Generated tables: up to date, labelled, within the degree budget; the fitter's pieces."""

import json
import shutil
from fractions import Fraction

import numpy as np

from nimbus.approx import baselines, fit, regenerate, tables


def test_tables_are_up_to_date():
    assert regenerate.main(["--check"]) == 0


def test_check_detects_a_stale_table(tmp_path):
    for p in tables.TABLE_DIR.glob("*.json"):
        shutil.copy(p, tmp_path / p.name)
    path = tmp_path / "ours-minilm-global.json"
    obj = json.loads(path.read_text())
    obj["entries"]["gelu"]["pieces"][1]["coeffs"][0] += 1
    path.write_text(json.dumps(obj))
    assert regenerate.main(["--check", "--dir", str(tmp_path)]) == 1


def test_every_generated_file_has_the_header_and_no_raw_floats():
    def walk(v):
        assert not isinstance(v, float)
        for c in (v.values() if isinstance(v, dict) else v if isinstance(v, list) else ()):
            walk(c)

    files = list(tables.TABLE_DIR.glob("*.json"))
    assert len(files) >= 8
    for p in files:
        obj = json.loads(p.read_text())
        assert obj["header"] == tables.HEADER
        walk(obj)


def _polys(entry):
    return [p for p in entry["pieces"] if p["kind"] == "poly"]


def test_our_tables_respect_the_degree_budget_and_format():
    for stem in ("ours-minilm-global", "ours-minilm-layers"):
        entries = tables.load(stem)["entries"]
        for fn, budget in (("gelu", 2), ("exp", 3)):
            for e in (entries[fn] if isinstance(entries[fn], list) else [entries[fn]]):
                assert (e["ring_bits"], e["frac_bits"]) == (32, 13)
                assert [p["kind"] for p in e["pieces"]][0] == "zero"
                assert all(len(p["coeffs"]) - 1 <= budget for p in _polys(e))


def test_quantised_coefficients_are_the_rounded_exact_ones_up_to_the_nudge():
    e = tables.entry("ours-minilm-global", "gelu")
    for p in _polys(e):
        for q, c in zip(p["coeffs"], p["coeffs_exact"]):
            assert abs(q - Fraction(c) * 2**13) <= 2.5  # rounding (1/2) + at most 2 nudges


def test_prototype_table_is_the_published_coefficients():
    e = tables.entry("nimbus-prototype", "exp")
    poly = _polys(e)[0]
    want = [0.9708981428645548, 0.8318065569430768, 0.26332572942924737, 0.0291786417536755]
    assert poly["coeffs"] == [round(c * 8192) for c in want]
    assert e == baselines.prototype_tables()["exp"]


def test_exact_coeffs_is_the_weighted_least_squares_solution():
    rng = np.random.default_rng(3)
    x = np.sort(rng.integers(-256, 256, 200) / 64.0)
    w = rng.integers(1, 20, 200)
    y = np.sin(x)
    c = fit.exact_coeffs(x, [Fraction(int(v), int(w.sum())) for v in w], y, 3)
    ref = np.polynomial.polynomial.polyfit(x, y, 3, w=np.sqrt(w))
    assert np.allclose([float(v) for v in c], ref, atol=1e-9)


def test_search_beats_the_grid_alternatives():
    # GELU under a uniform density on [-6, 6]: the searched optimum is no worse than any
    # coarse (a, b) it could have picked.
    x = -6 + (np.arange(12 * 64) + 0.5) / 64
    w = np.ones(x.size)  # counts
    spec = fit.SPECS["gelu"]
    a, b, d, obj = fit.search(*fit.weighted_points(x, w, spec)[:2], spec)
    xs, ws, _ = fit.weighted_points(x, w, spec)
    f = fit.TARGETS["gelu"].np_f(xs)
    for aa in (-4.0, -3.0, -2.0, -1.0):
        for bb in (0.5, 1.0, 2.0, 3.0):
            assert obj <= fit._direct_objective(xs, ws, f, spec, aa, bb, 2) + 1e-15
    assert d == 2 and a < -1 and b > 1
