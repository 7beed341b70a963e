"""The fixed-point evaluation semantics: hand-checked values and the vectorised twin."""

import numpy as np
from hypothesis import given, settings, strategies as st

from nimbus.approx import baselines, fxp, tables


def _poly_entry(coeffs, l=32, f=13, lo=None, hi=None):
    piece = {"kind": "poly", "coeffs": coeffs}
    pieces = []
    if lo is not None:
        pieces.append({"kind": "zero", "hi": lo})
        piece["lo"] = lo
    if hi is not None:
        piece["hi"] = hi
    pieces.append(piece)
    if hi is not None:
        pieces.append({"kind": "identity", "lo": hi})
    return {"function": "gelu", "ring_bits": l, "frac_bits": f, "pieces": pieces}


def test_horner_uses_floor_truncation():
    # f = 2: q = [1, 0, 3] is 0.25 + 0.75 x^2. x = -1 (-0.25):
    # acc = 3; acc = (3 * -1) >> 2 + 0 = floor(-3/4) = -1; acc = (-1 * -1) >> 2 + 1 = 0 + 1 = 1.
    e = _poly_entry([1, 0, 3], l=16, f=2)
    assert fxp.evaluate_fxp(e, -1) == 1
    # x = 3 (0.75): acc = 9 >> 2 = 2; (2 * 3) >> 2 = 1; + 1 = 2.
    assert fxp.evaluate_fxp(e, 3) == 2


def test_products_wrap_mod_ring_before_truncation():
    e = _poly_entry([0, 0, 1 << 10], l=16, f=4)  # 64 x^2 at f = 4
    x = 1 << 6                                     # 4.0: (2^10 * 2^6) = 2^16 wraps to 0
    assert fxp.evaluate_fxp(e, x) == 0
    assert fxp.lift(1 << 15, 16) == -(1 << 15) and fxp.lift(-1, 16) == -1


def test_pieces_are_half_open():
    e = _poly_entry([5], lo=-10, hi=10)
    assert [fxp.evaluate_fxp(e, x) for x in (-11, -10, 9, 10)] == [0, 5, 5, 10]


def test_prototype_gelu_values():
    e = baselines.prototype_tables()["gelu"]
    assert fxp.evaluate_fxp(e, 0) == round(-0.006946478426716862 * 8192)
    assert fxp.evaluate_fxp(e, 3 << 13) == 3 << 13
    assert fxp.evaluate_fxp(e, -2 << 13) == 0
    # "x < -1.8" is exact: ceil(-1.8 * 8192) = -14745 is the first poly input
    assert fxp.select_piece(e, -14746)["kind"] == "zero"
    assert fxp.select_piece(e, -14745)["kind"] == "poly"


def test_pow2chain_is_compound_interest():
    e = baselines.bumblebee_tables()["exp"]
    f = e["frac_bits"]
    for x in (-0.5, -3.0, -10.0):
        y = fxp.evaluate_fxp(e, int(x * 2**f)) / 2**f
        assert abs(y - (1 + x / 256) ** 256) < 1e-3
    assert fxp.evaluate_fxp(e, -15 << f) == 0


_entries = st.builds(
    lambda l, f, coeffs, lo, width: _poly_entry(coeffs, l, f, lo, lo + width),
    st.sampled_from([16, 32, 64]), st.integers(2, 14),
    st.lists(st.integers(-(1 << 15), 1 << 15), min_size=1, max_size=7),
    st.integers(-(1 << 14), 0), st.integers(1, 1 << 15))


@settings(max_examples=150, deadline=None)
@given(_entries, st.lists(st.integers(-(1 << 40), 1 << 40), min_size=1, max_size=40))
def test_vectorised_twin_equals_definition(entry, xs):
    got = fxp.evaluate_fxp_array(entry, np.array(xs, dtype=np.int64))
    assert [int(v) for v in got] == [fxp.evaluate_fxp(entry, x) for x in xs]


def test_twin_on_every_generated_entry():
    rng = np.random.default_rng(1)
    for stem in dict.fromkeys((*tables.TABLE_NAMES, "ours-minilm-precise")):
        for fn, e in tables.load(stem)["entries"].items():
            for entry in (e if isinstance(e, list) else [e]):
                half = 1 << (entry["ring_bits"] - 1 - 1)
                xs = np.concatenate([rng.integers(-(1 << 20), 1 << 20, 300), rng.integers(-half, half, 50)])
                got = fxp.evaluate_fxp_array(entry, xs)
                assert [int(v) for v in got] == [fxp.evaluate_fxp(entry, int(x)) for x in xs], (stem, fn)
