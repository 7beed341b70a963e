"""Certificates hold on 10^6 random fixed-point inputs per piece and are within 2x of the
observed maximum; the derivative and tail facts they rest on hold numerically."""

import numpy as np
import pytest

from nimbus.approx import certify, tables
from nimbus.approx.functions import TARGETS, gelu_d3_sup

N = 10**6
CERTS = tables.load("certificates")["certificates"]
CASES = [("ours-minilm-global", fn, None) for fn in ("gelu", "exp", "tanh", "reciprocal", "rsqrt")]
CASES += [("ours-minilm-layers", fn, i) for fn in ("gelu", "exp") for i in (0, 5)]
CASES += [("nimbus-prototype", "gelu", None), ("nimbus-prototype", "exp", None),
          ("bumblebee", "gelu", None), ("bumblebee", "exp", None),
          ("ours-minilm-precise", "gelu", None), ("ours-minilm-precise", "exp", None)]


@pytest.mark.parametrize("stem, fn, layer", CASES)
def test_bound_holds_and_is_tight(stem, fn, layer):
    entry = tables.entry(stem, fn, layer)
    cert = CERTS[stem][fn] if layer is None else CERTS[stem][fn][layer]
    for k, pc in enumerate(cert["pieces"]):
        seen = certify.observed_max(entry, pc, N, seed=k)
        bound = float(pc["bound"])
        assert seen <= bound + 1e-12, (pc["kind"], seen, bound)
        assert bound <= 2 * seen, (pc["kind"], seen, bound)


def test_no_overflow_in_certified_pieces():
    for stem, by_fn in CERTS.items():
        for fn, c in by_fn.items():
            for cert in (c if isinstance(c, list) else [c]):
                for pc in cert["pieces"]:
                    if pc["kind"] == "poly":
                        assert float(pc["overflow_margin_bits"]) > 0, (stem, fn)


def test_gelu_third_derivative_sup():
    x = np.linspace(-10, 10, 400001)
    phi = np.exp(-x * x / 2) / np.sqrt(2 * np.pi)
    dense = np.abs(phi * (x**3 - 4 * x)).max()
    assert dense <= gelu_d3_sup() < dense * (1 + 1e-6)


@pytest.mark.parametrize("fn", ["gelu", "exp", "tanh", "reciprocal", "rsqrt"])
def test_second_derivatives_match_finite_differences(fn):
    import mpmath as mp

    t = TARGETS[fn]
    with mp.workdps(60):
        for x in (mp.mpf("0.3"), mp.mpf("0.7"), mp.mpf("0.95")):
            h = mp.mpf("1e-15")
            fd = (t.mp_f(x + h) - 2 * t.mp_f(x) + t.mp_f(x - h)) / h**2
            assert abs(fd - t.mp_d2(x)) < 1e-9


@pytest.mark.parametrize("fn, side, t, tail", [
    ("gelu", "left", -1.0, lambda x: 0 * x), ("gelu", "right", 1.0, lambda x: x),
    ("tanh", "left", 0.0, lambda x: -1 + 0 * x), ("tanh", "right", 0.0, lambda x: 1 + 0 * x),
    ("exp", "left", 0.0, lambda x: 0 * x)])
def test_tail_bounds_are_sups(fn, side, t, tail):
    target = TARGETS[fn]
    for start in (t, t - 0.5 if side == "left" else t + 0.5):
        x = np.linspace(start - 30, start, 300001) if side == "left" else np.linspace(start, start + 30, 300001)
        err = np.abs(target.np_f(x) - tail(x))
        assert err.max() <= target.tail_sup(side, start) <= err.max() * (1 + 1e-9) + 1e-300


def test_round_up_never_lowers():
    for v in (0.0812769, 1.0, 2.5e-7, 0.123456789):
        r = certify.round_up(v)
        assert r >= v and r <= v * 1.001
