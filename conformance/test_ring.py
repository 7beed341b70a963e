"""Reference vs optimized ring kernels, bit for bit, and both against the spec's definitions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from nimbus.conformance.assertions import assert_same
from nimbus.conformance.strategies import EDGE_VALUES, ring_array_pairs, ring_arrays
from nimbus.registry import implementation
from nimbus.spec import fixedpoint as fxp
from nimbus.spec.errors import ShapeError
from nimbus.spec.params import Ring

REF = implementation("reference")
BITS = st.sampled_from([1, 2, 7, 12, 16, 31, 32, 37, 63, 64])


def _spec_binary(op, a, b, bits):
    m = (1 << bits)
    fa, fb = a.reshape(-1).tolist(), b.reshape(-1).tolist()
    return np.array([op(x, y) % m for x, y in zip(fa, fb)], dtype=np.uint64).reshape(a.shape)


@pytest.mark.parametrize("name,op", [("add", lambda x, y: x + y), ("sub", lambda x, y: x - y),
                                      ("mul", lambda x, y: x * y)])
@given(data=st.data(), bits=BITS)
def test_binary_kernels(impl, name, op, data, bits):
    a, b = data.draw(ring_array_pairs(bits))
    want = _spec_binary(op, a, b, bits)
    assert_same(want, getattr(impl.ring, name)(a, b, bits), {"op": name, "bits": bits, "a": a.tolist(), "b": b.tolist()})


@given(data=st.data(), bits=BITS, c=st.integers(-(1 << 70), 1 << 70))
def test_neg_scalar_downcast(impl, data, bits, c):
    a = data.draw(ring_arrays(bits))
    case = {"bits": bits, "c": c, "a": a.tolist()}
    assert_same(REF.ring.neg(a, bits), impl.ring.neg(a, bits), case)
    assert_same(REF.ring.mul_scalar(a, c, bits), impl.ring.mul_scalar(a, c, bits), case)
    k = data.draw(st.integers(1, bits))
    assert_same(fxp.downcast(a, k), impl.ring.downcast(a, k), case)


@given(data=st.data(), bits=BITS, n=st.integers(1, 5), k=st.integers(1, 6), m=st.integers(1, 5))
def test_matmul_and_sum(impl, data, bits, n, k, m):
    a = data.draw(ring_arrays(bits, (n, k)))
    b = data.draw(ring_arrays(bits, (k, m)))
    mod = 1 << bits
    want = np.array([[sum(int(a[i, t]) * int(b[t, j]) for t in range(k)) % mod for j in range(m)]
                     for i in range(n)], dtype=np.uint64)
    assert_same(want, impl.ring.matmul(a, b, bits), {"bits": bits, "a": a.tolist(), "b": b.tolist()})
    assert_same(REF.ring.sum_last(a, bits), impl.ring.sum_last(a, bits), {"bits": bits})


def test_matmul_real_size_matches_reference_on_sample(opt):
    """A BERT-sized Z_2^64 product, checked entry-wise against Python integers on a sample."""
    from nimbus.spec.prg import PRG

    prg = PRG.for_tests("matmul")
    a = prg.uniform("a", (16, 768), 64)
    b = prg.uniform("b", (768, 96), 64)
    c = opt.ring.matmul(a, b, 64)
    for i, j in [(0, 0), (15, 95), (7, 31)]:
        assert int(c[i, j]) == sum(int(x) * int(y) for x, y in zip(a[i], b[:, j])) % (1 << 64)


def test_shape_errors(impl):
    a = np.zeros((2, 3), dtype=np.uint64)
    with pytest.raises(ShapeError):
        impl.ring.add(a, np.zeros((3, 2), dtype=np.uint64), 16)
    with pytest.raises(ShapeError):
        impl.ring.matmul(a, a, 16)


@given(bits=st.integers(2, 64), data=st.data())
def test_fixed_point_round_trip(bits, data):
    frac = data.draw(st.integers(0, bits - 2))
    ring = Ring(bits, frac)
    lim = (1 << (bits - 1)) - 1
    v = data.draw(st.lists(st.integers(-lim, lim), min_size=1, max_size=8))
    x = np.array(v, dtype=np.float64) / (1 << frac)
    if bits > 53:  # float64 cannot carry every integer; keep values it can
        x = np.clip(x, -(2.0 ** 52) / (1 << frac), (2.0 ** 52) / (1 << frac))
    u = fxp.encode(x, ring)
    assert np.array_equal(fxp.encode(fxp.decode(u, ring), ring), u)
    assert np.all(np.abs(fxp.decode(u, ring) - x) <= 2.0 ** -(frac + 1))


def test_fixed_point_rounding_rule_and_range():
    ring = Ring(8, 2)
    # round half up: 0.125 * 4 = 0.5 -> 1 ; -0.125 * 4 = -0.5 -> 0 ; -0.375*4=-1.5 -> -1
    assert fxp.to_signed(fxp.encode([0.125, -0.125, -0.375, 31.75], ring), ring).tolist() == [1, 0, -1, 127]
    with pytest.raises(ShapeError):
        fxp.encode([32.0], ring)
    with pytest.raises(ShapeError):
        fxp.encode([float("nan")], ring)
    assert fxp.to_signed(fxp.encode([-32.0], ring), ring).tolist() == [-128]


@pytest.mark.parametrize("bits", [12, 16, 32, 64])
def test_edge_values_exhaustive_small(impl, bits):
    e = np.array(EDGE_VALUES(bits), dtype=np.uint64)
    a, b = np.meshgrid(e, e)
    assert_same(_spec_binary(lambda x, y: x * y, a, b, bits), impl.ring.mul(a, b, bits), {"bits": bits})
    assert_same(_spec_binary(lambda x, y: x - y, a, b, bits), impl.ring.sub(a, b, bits), {"bits": bits})
