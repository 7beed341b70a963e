"""RLWE at real sizes (N = 4096, 8192): the protocol sets' worst cases against their analysis,
optimized vs reference where the reference is linear-time, vs Python integers elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from nimbus.conformance.assertions import assert_same
from nimbus.conformance.conftest import NOJIT
from nimbus.registry import implementation
from nimbus.spec import he as H
from nimbus.spec.prg import PRG

# Interpreted kernels at N = 8192 take hours; the tiny sets cover the kernel source under NOJIT.
pytestmark = pytest.mark.skipif(NOJIT, reason="real-size RLWE needs compiled kernels")

REF = implementation("reference").rlwe
OPT = implementation("optimized").rlwe

#: A secure N = 4096 set (not a protocol set): two 54-bit primes, log Q = 108 <= 109.
N4096 = H.HEParams("test-n4096", 4096, H.ntt_primes(54, 4096, 2), 32).validate()


def _keys(M, he, seed):
    g = PRG.for_tests(seed)
    sk = M.keygen(he, g, "k")
    return g, sk, M.keygen_public(he, sk, g, "pk")


@pytest.mark.parametrize("he", [H.COP64, H.COP40], ids=lambda h: h.name)
def test_cop_worst_case_measured_noise_within_budget(he):
    """The bert-base COP workload at full size: k = 3072 terms of scalar -2^(l-1) (the largest lift),
    16 results packed by monomials, switch to the response level, flood; every stage's measured
    noise <= its analysed bound, and the result decrypts exactly."""
    M = OPT
    l, n, k, pack, distinct = he.plain_bits, he.n, 3072, 16, 48
    g, sk, pk = _keys(M, he, f"cop-worst/{he.name}")
    m = g.uniform("m", (distinct, n), l)
    sd = g.child_seed("s")
    cts = M.expand_seeded(he, sd, M.encrypt_symmetric(he, sk, m, sd, g, "e"))
    x = np.full((pack, distinct), 1 << (l - 1), np.uint64)
    part = M.mac_scalar(he, cts, x)  # k = 3072 terms = 64 repetitions of the 48 distinct ones
    acc = part
    for _ in range(k // distinct - 1):
        acc = M.add(he, acc, part)
    rows = (x.astype(object).dot(m.astype(object)) * (k // distinct)) & ((1 << l) - 1)
    packed, want = acc[0], np.array(rows[0], dtype=object)
    step = n // pack
    for t in range(1, pack):
        packed = M.add(he, packed, M.mul_monomial(he, acc[t], t * step))
        for j in range(n):
            u = j + t * step
            want[u % n] += rows[t, j] if (u // n) % 2 == 0 else -rows[t, j]
    want = (want & ((1 << l) - 1)).astype(np.uint64)[None]
    ops = he.workloads[0][1]
    pre, mid, end = H.analyze(he, ops[:4]), H.analyze(he, ops[:5]), H.analyze(he, ops)
    sw = M.mod_switch(he, packed[None], he.response_level)
    fl = M.flood(he, pk, sw, g, "fl")
    got = [M.noise(he, sk, packed[None], want), M.noise(he, sk, sw, want), M.noise(he, sk, fl, want)]
    assert got[0] <= pre.total + 1, (got, pre.as_dict())
    assert got[1] <= mid.total + 1, (got, mid.as_dict())
    assert got[2] <= end.total + 1 and got[2] < end.capacity, (got, end.as_dict())
    assert got[2] > he.flood_bound // 2  # the wide flood is really there (8192 uniform draws)
    assert end.sd_query_log2 <= -40 and he.flood_bound >= H.WIDE_FLOOD
    assert_same(M.decrypt(he, sk, fl), want)


def test_matmul64_worst_case_measured_noise_within_budget():
    he, M = H.MATMUL64, OPT
    l, n = he.plain_bits, he.n
    g, sk, pk = _keys(M, he, "matmul64-worst")
    m = g.uniform("m", (2, n), l)
    assert he.workloads[0][1][0] == ("fresh_sk",)  # the key owner encrypts its own share
    sd = g.child_seed("s")
    ct = M.expand_seeded(he, sd, M.encrypt_symmetric(he, sk, m, sd, g, "e"))
    poly = np.full((2, n), 1 << (l - 1), np.uint64)  # every coefficient lifts to -2^63
    prod = M.mul_plain(he, ct, poly)
    acc = M.add(he, prod[:1], prod[1:])
    want = np.zeros(n, dtype=object)
    for r in range(2):
        s = int(m[r].astype(object).sum())
        # m * (-2^63 sum_t X^t): coefficient u = -2^63 (sum_{j<=u} m_j - sum_{j>u} m_j)
        pref = np.cumsum(m[r].astype(object))
        want += -(1 << 63) * (2 * pref - s)
    want = (want & ((1 << l) - 1)).astype(np.uint64)[None]
    assert_same(M.decrypt(he, sk, acc), want)
    ops = he.workloads[0][1]
    sw = M.mod_switch(he, acc, he.response_level)
    fl = M.flood(he, pk, sw, g, "fl")
    assert M.noise(he, sk, acc, want) <= H.analyze(he, ops[:3]).total + 1
    assert M.noise(he, sk, sw, want) <= H.analyze(he, ops[:4]).total + 1
    end = H.analyze(he, ops)
    assert M.noise(he, sk, fl, want) <= end.total + 1 and end.total < end.capacity
    assert he.flood_bound >= H.WIDE_FLOOD  # the wide sampler at full size
    assert_same(M.decrypt(he, sk, fl), want)


@pytest.mark.parametrize("he", [N4096, H.COP64], ids=lambda h: h.name)
def test_linear_time_operations_match_reference(he):
    """encode, decode, add, sub, scalar, mac, monomial, modulus switching, packing at real N."""
    g = PRG.for_tests(f"real/{he.name}")
    l, n, L = he.plain_bits, he.n, he.levels
    m = g.uniform("m", (1, n), l)
    ct = np.stack([np.stack([np.stack([g.uniform_mod(f"c{t}/{k}/{i}", n, p) for i, p in enumerate(he.primes)])
                             for k in range(2)]) for t in range(2)])
    x = g.uniform("x", (1, 2), l)
    case = {"he": he.name}
    for fn, args in (("encode", (m,)), ("decode", (ct[:, 0],)), ("add", (ct[0], ct[1])), ("sub", (ct[0], ct[1])),
                     ("mul_scalar", (ct, x[0])), ("mac_scalar", (ct, x)), ("mul_monomial", (ct[:1], n + 17)),
                     ("mod_switch", (ct[:1], 1))):
        assert_same(getattr(REF, fn)(he, *args), getattr(OPT, fn)(he, *args), {**case, "fn": fn})
    for i, p in enumerate(he.primes):
        assert REF.pack_bits(ct[:, :, i], p.bit_length()) == OPT.pack_bits(ct[:, :, i], p.bit_length())
    assert L >= 2


@pytest.mark.parametrize("he", [N4096, H.COP64], ids=lambda h: h.name)
def test_products_match_python_integers(he):
    """mul_plain (NTT) vs a sparse product built from monomials and scalars (independent kernels),
    and a few coefficients of a dense product vs Python integers."""
    M = OPT
    g = PRG.for_tests(f"prod/{he.name}")
    n, l = he.n, he.plain_bits
    ct = np.stack([np.stack([g.uniform_mod(f"c{k}/{i}", n, p) for i, p in enumerate(he.primes)]) for k in range(2)])[None]
    poly = np.zeros((1, n), np.uint64)
    terms = {0: 5, 1: (1 << l) - 3, n - 1: 1 << (l - 1), 77: 12345}
    for t, c in terms.items():
        poly[0, t] = c
    want = None
    for t, c in terms.items():
        term = M.mul_scalar(he, M.mul_monomial(he, ct, t), np.array([c], np.uint64))
        want = term if want is None else M.add(he, want, term)
    assert_same(M.mul_plain(he, ct, poly), want)
    dense = g.uniform("d", (1, n), l)
    got = M.mul_plain(he, ct, dense)
    lift = [int(v) - (1 << l) if int(v) >> (l - 1) else int(v) for v in dense[0]]
    for i, p in enumerate(he.primes):
        a = ct[0, 1, i].tolist()
        for u in (0, 1, n // 2, n - 1):
            s = sum(a[j] * lift[u - j] for j in range(u + 1)) - sum(a[j] * lift[n + u - j] for j in range(u + 1, n))
            assert int(got[0, 1, i, u]) == s % p


@pytest.mark.slow
def test_encryption_matches_reference_at_n4096():
    """Key generation, both encryptions, decryption: reference (schoolbook, ~minutes) vs optimized."""
    he = N4096
    outs = []
    for M in (REF, OPT):
        g, sk, pk = _keys(M, he, "n4096")
        m = g.uniform("m", (1, he.n), he.plain_bits)
        sd = g.child_seed("s")
        c0 = M.encrypt_symmetric(he, sk, m, sd, g, "e")
        ctp = M.encrypt_public(he, pk, m, g, "p")
        outs.append((pk, c0, ctp, M.decrypt(he, sk, ctp)))
        assert_same(outs[-1][3], m)
    assert_same(outs[0], outs[1])


def test_round_trip_and_identities_at_real_size():
    for he in (N4096, H.COP64):
        M = OPT
        g, sk, pk = _keys(M, he, f"rt/{he.name}")
        m = g.uniform("m", (3, he.n), he.plain_bits)
        sd = g.child_seed("s")
        ct = M.expand_seeded(he, sd, M.encrypt_symmetric(he, sk, m, sd, g, "e"))
        assert_same(M.decrypt(he, sk, ct), m)
        assert M.noise(he, sk, ct, m) <= H.analyze(he, (("fresh_sk",),)).total + 1
        ctp = M.encrypt_public(he, pk, m, g, "p")
        assert_same(M.decrypt(he, sk, ctp), m)
        assert M.noise(he, sk, ctp, m) <= H.analyze(he, (("fresh_pk",),)).total + 1
        assert_same(M.decrypt(he, sk, M.mod_switch(he, ct, he.response_level or 1)), m)
