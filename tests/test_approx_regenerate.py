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


def test_precise_table_format_and_budget():
    # ours-minilm-precise: GELU zero | degree 6 | identity; exp zero | degree 2 | degree 4 (to 0)
    entries = tables.load("ours-minilm-precise")["entries"]
    kinds = {fn: [(p["kind"], len(p.get("coeffs", [0])) - 1) for p in e["pieces"]] for fn, e in entries.items()}
    assert kinds == {"gelu": [("zero", 0), ("poly", 6), ("identity", 0)],
                     "exp": [("zero", 0), ("poly", 2), ("poly", 4)]}
    for e in entries.values():
        assert (e["ring_bits"], e["frac_bits"]) == (32, 13)
        for p, q in zip(e["pieces"], e["pieces"][1:]):
            assert p["hi"] == q["lo"]   # the pieces tile the line


def test_chain_search_with_one_piece_matches_the_grid_alternatives():
    # a one-piece chain is the single-polynomial family: the dynamic programme's optimum is
    # no worse than any coarse (a, b) on its grid.
    x = -6 + (np.arange(12 * 64) + 0.5) / 64
    w = np.ones(x.size)
    base = fit.FitSpec("gelu", "zero", "identity", (3,), tuple(fit.grid(-4, -0.5)), tuple(fit.grid(0, 4)),
                       (-8.0, 8.0))
    spec = fit.ChainSpec(base, (3,), tuple(fit.grid(-4, 4)))
    xs, ws, _ = fit.weighted_points(x, w, base)
    (a, b), obj = fit.search_chain(xs, ws, spec)
    f = fit.TARGETS["gelu"].np_f(xs)
    assert abs(obj - fit._direct_objective(xs, ws, f, base, a, b, 3)) < 1e-9
    for aa in (-4.0, -3.0, -2.0, -1.0):
        for bb in (0.5, 1.0, 2.0, 3.0):
            assert obj <= fit._direct_objective(xs, ws, f, base, aa, bb, 3) + 1e-12


def test_chain_search_respects_the_overflow_margin():
    # exp as one polynomial up to 0: with a wide piece the Horner bound leaves Z_2^32, so the
    # search must stop the piece early enough; certify agrees on the chosen coefficients.
    from nimbus.approx import certify

    x = -12 + (np.arange(12 * 64) + 0.5) / 64
    base = fit.FitSpec("exp", "zero", None, (5,), tuple(fit.grid(-12, -1)), (), (-16.0, 0.0),
                       domain=(-np.inf, 0.0))
    entry, _ = fit.fit_chain_entry((x, np.ones(x.size)), fit.ChainSpec(base, (5,), tuple(fit.grid(-12, 0))))
    poly = [p for p in entry["pieces"] if p["kind"] == "poly"][0]
    X = abs(poly["lo"]) / 2**13
    assert certify.overflow_margin_bits(poly, 32, 13, X) > 0


def test_check_tolerates_only_float_report_noise():
    """--check: a least-squares objective may differ in its last digits between CPUs (seen:
    6.81035e-07 vs 6.80982e-07); any other difference, a coefficient included, is stale."""
    from nimbus.approx.regenerate import _same

    old = {"entries": {"gelu": {"pieces": [{"coeffs": [1, 2]}]}},
           "fits": {"gelu": {"objective_float": "6.81035e-07", "objective_fxp": "9.00588e-07"}}}
    noisy = {"entries": {"gelu": {"pieces": [{"coeffs": [1, 2]}]}},
             "fits": {"gelu": {"objective_float": "6.80982e-07", "objective_fxp": "9.00588e-07"}}}
    assert _same(old, noisy)
    assert not _same(old, {**noisy, "fits": {"gelu": {"objective_float": "6.9e-07", "objective_fxp": "9.00588e-07"}}})
    assert not _same(old, {**noisy, "entries": {"gelu": {"pieces": [{"coeffs": [1, 3]}]}}})
    assert not _same(old, {**noisy, "fits": {"gelu": {"objective_float": "6.80982e-07", "objective_fxp": "9.0059e-07"}}})
