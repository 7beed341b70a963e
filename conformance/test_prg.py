"""The labelled PRG: determinism, label independence, exact sampling algorithms, no reuse."""

from __future__ import annotations

import math

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, strategies as st

from nimbus.spec.errors import ParameterError, RandomnessReuseError
from nimbus.spec.prg import PRG, derive_key


def _stream(prg_seed: bytes, label: str, n: int) -> bytes:
    enc = Cipher(algorithms.AES(derive_key(prg_seed, label)), modes.CTR(b"\0" * 16)).encryptor()
    return enc.update(b"\0" * n)


SEED = bytes(range(32))


def test_same_seed_and_label_same_values_different_labels_differ():
    a, b = PRG(SEED), PRG(SEED)
    assert np.array_equal(a.uniform("x", 100, 64), b.uniform("x", 100, 64))
    c = PRG(SEED)
    assert not np.array_equal(c.uniform("x", 100, 64), c.uniform("y", 100, 64))
    assert not np.array_equal(PRG(SEED).uniform("x", 100, 64), PRG(bytes(32)).uniform("x", 100, 64))


def test_label_reuse_refused():
    p = PRG(SEED)
    p.uniform("mask", 4, 16)
    with pytest.raises(RandomnessReuseError):
        p.bits("mask", 4)


def test_bad_seed_and_arguments():
    with pytest.raises(ParameterError):
        PRG(b"short")
    p = PRG(SEED)
    with pytest.raises(ParameterError):
        p.uniform("a", 3, 65)
    with pytest.raises(ParameterError):
        p.uniform_mod("b", 3, 1)
    assert "seed" in repr(p) and SEED.hex() not in repr(p)


@given(n=st.integers(0, 300), bits=st.integers(1, 64))
def test_uniform_is_the_specified_algorithm(n, bits):
    got = PRG(SEED).uniform("u", n, bits)
    raw = np.frombuffer(_stream(SEED, "u", 8 * n), dtype="<u8")
    want = [int(w) % (1 << bits) for w in raw]
    assert got.tolist() == want


@given(n=st.integers(0, 200), q=st.integers(2, (1 << 64)))
def test_uniform_mod_is_the_specified_rejection_sampler(n, q):
    got = PRG(SEED).uniform_mod("q", n, q)
    b = (q - 1).bit_length()
    raw = np.frombuffer(_stream(SEED, "q", 8 * (4 * n + 64)), dtype="<u8")
    want = [int(w) % (1 << b) for w in raw if int(w) % (1 << b) < q][:n]
    if len(want) == n:  # the probability that 4n+64 words are not enough is < 2^-64
        assert got.tolist() == want
    assert all(int(v) < q for v in got)


def test_bits_ternary_cbd_definitions():
    p = PRG(SEED)
    bits = p.bits("b", 50)
    raw = _stream(SEED, "b", 7)
    assert bits.tolist() == [(raw[i >> 3] >> (i & 7)) & 1 for i in range(50)]
    t = p.ternary("t", 40)
    rawt = [x for x in _stream(SEED, "t", 200) if x < 255][:40]
    assert t.tolist() == [x % 3 - 1 for x in rawt]
    c = p.cbd("c", 30, 21)
    words = np.frombuffer(_stream(SEED, "c", 240), dtype="<u8")
    m = (1 << 21) - 1
    assert c.tolist() == [bin(int(w) & m).count("1") - bin((int(w) >> 21) & m).count("1") for w in words]


def _chi_square_p_value(counts: np.ndarray) -> float:
    """Upper tail of the chi-square statistic (Wilson-Hilferty normal approximation)."""
    n, k = counts.sum(), counts.size
    exp = n / k
    stat = float(((counts - exp) ** 2 / exp).sum())
    dof = k - 1
    z = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2))


@pytest.mark.parametrize("q", [3, 5, 7, 11, 97])
def test_uniform_mod_small_q_chi_square(q):
    v = PRG(SEED).uniform_mod(f"chi{q}", 200_000, q)
    counts = np.bincount(v.astype(np.int64), minlength=q)
    assert counts.size == q
    assert _chi_square_p_value(counts) > 1e-4, counts


def test_chi_square_detects_modulo_bias():
    """The test above can fail: a biased sampler (w mod q on 3-bit words) is caught."""
    w = PRG(SEED).uniform("bias", 200_000, 3)
    biased = (w % np.uint64(5)).astype(np.int64)
    assert _chi_square_p_value(np.bincount(biased, minlength=5)) < 1e-6


def test_ternary_and_cbd_distributions():
    p = PRG(SEED)
    t = p.ternary("t", 90_000)
    assert _chi_square_p_value(np.bincount(t + 1, minlength=3)) > 1e-4
    c = p.cbd("c", 100_000, 21)
    assert abs(c.mean()) < 0.05 and abs(c.var() - 10.5) < 0.3 and c.min() >= -21 and c.max() <= 21
