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


# -- the wide uniform sampler (noise flooding wider than 2^62) -----------------------------------
def _wide_definition(seed: bytes, label: str, n: int, bound: int, words: int) -> list:
    """The module docstring's algorithm, in Python integers: candidates from word pairs (low limb
    first), masked to b = bitlen(2 bound) bits, kept when < 2 bound + 1; offset values."""
    r = 2 * bound + 1
    b = (r - 1).bit_length()
    raw = [int(w) for w in np.frombuffer(_stream(seed, label, 8 * words), dtype="<u8")]
    cands = [(raw[2 * j] + (raw[2 * j + 1] << 64)) % (1 << b) for j in range(words // 2)]
    return [x for x in cands if x < r][:n]


@given(n=st.integers(0, 120), bound=st.one_of(st.integers(1, 1 << 70), st.integers(1, (1 << 127) - 1),
                                             st.sampled_from([1, 2, (1 << 63) - 1, 1 << 63, (1 << 64) - 1,
                                                              1 << 64, (1 << 126) + 1, (1 << 127) - 1])))
def test_uniform_signed_wide_is_the_specified_rejection_sampler(n, bound):
    from nimbus.spec.prg import wide_to_ints

    lo, hi = PRG(SEED).uniform_signed_wide("w", n, bound)
    assert lo.dtype == hi.dtype == np.uint64 and lo.shape == hi.shape == (n,)
    v = wide_to_ints(lo, hi).tolist()
    want = _wide_definition(SEED, "w", n, bound, 2 * (4 * n + 64))
    if len(want) == n:  # acceptance > 1/2: 4n+64 candidates fall short with probability < 2^-64
        assert v == want
    assert all(0 <= x <= 2 * bound for x in v)


def test_uniform_signed_wide_shapes_residues_and_refusals():
    from nimbus.spec.prg import wide_residues, wide_to_ints

    bound = 3 * (1 << 74) + 12345
    lo, hi = PRG(SEED).uniform_signed_wide("s", (3, 5), bound)
    assert lo.shape == hi.shape == (3, 5)
    e = wide_to_ints(lo, hi, bound)
    assert all(-bound <= x <= bound for x in e.reshape(-1))
    for p in (3, 1152921504606830593, 281474976694273):
        assert wide_residues(lo, hi, bound, p).tolist() == (e % p).tolist()
    # same stream, same values; a second draw of the label is refused
    lo2, hi2 = PRG(SEED).uniform_signed_wide("s", 15, bound)
    assert lo2.tolist() == lo.reshape(-1).tolist() and hi2.tolist() == hi.reshape(-1).tolist()
    p = PRG(SEED)
    p.uniform_signed_wide("once", 2, 5)
    with pytest.raises(RandomnessReuseError):
        p.uniform_signed_wide("once", 2, 5)
    for bad in (0, -1, 1 << 127):
        with pytest.raises(ParameterError):
            PRG(SEED).uniform_signed_wide("bad", 2, bad)


@pytest.mark.parametrize("bound", [1, 2, 3, 48])
def test_uniform_signed_wide_small_bound_chi_square(bound):
    from nimbus.spec.prg import wide_to_ints

    lo, hi = PRG(SEED).uniform_signed_wide(f"wchi{bound}", 100_000, bound)
    assert not hi.any()
    counts = np.bincount(lo.astype(np.int64), minlength=2 * bound + 1)
    assert counts.size == 2 * bound + 1
    assert _chi_square_p_value(counts) > 1e-4, counts
    assert wide_to_ints(lo[:5], hi[:5], bound).tolist() == (lo[:5].astype(np.int64) - bound).tolist()


def test_uniform_signed_wide_large_bound_is_uniform_on_both_limbs():
    """bound = 5 * 2^72 (b = 76: 12 bits of the high limb used, acceptance 10/16): the value
    v // 2^72 falls into its 10 buckets uniformly, and the low limb's top bytes are uniform."""
    bound = 5 << 72
    lo, hi = PRG(SEED).uniform_signed_wide("wbig", 100_000, bound)
    assert int(hi.max()) <= (2 * bound) >> 64
    buckets = (hi >> np.uint64(8)).astype(np.int64)  # v // 2^72 in 0..9 (10 only for v = 2 bound)
    counts = np.bincount(np.minimum(buckets, 9), minlength=10)
    assert counts.size == 10 and _chi_square_p_value(counts) > 1e-4, counts
    low_bytes = (lo >> np.uint64(56)).astype(np.int64)
    assert _chi_square_p_value(np.bincount(low_bytes, minlength=256)) > 1e-4


def test_uniform_signed_wide_known_answers():
    """Frozen values (a change of the normative algorithm must show up here)."""
    from nimbus.spec.prg import wide_to_ints

    F = (1 << 100) + 7
    lo, hi = PRG(SEED).uniform_signed_wide("kat", 4, F)
    assert wide_to_ints(lo, hi, F).tolist() == [
        -400473249011265121939576944933, 724730787779327940143671140448,
        927846724058641508776477365223, -971909243946846441020742313202]
    lo, hi = PRG(SEED).uniform_signed_wide("kat", 4, 5)
    assert wide_to_ints(lo, hi, 5).tolist() == [3, -3, 3, -2]
