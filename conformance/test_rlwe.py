"""RLWE layer: reference vs optimized bit for bit on the tiny sets, homomorphic identities,
measured noise against the analysis (nimbus.spec.he.analyze)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nimbus.conformance.assertions import assert_same
from nimbus.registry import implementation
from nimbus.spec import he as H
from nimbus.spec.errors import RandomnessReuseError, ShapeError
from nimbus.spec.prg import PRG

TINY = [H.TINY16, H.TINY32]
REF = implementation("reference").rlwe
OPT = implementation("optimized").rlwe


def _plain(he, rows):
    return hnp.arrays(np.uint64, (rows, he.n), elements=st.integers(0, (1 << he.plain_bits) - 1).map(np.uint64))


def _everything(M, he, seed: str, m, x, shift: int, pkeep: int):
    """Every operation once, on one deterministic PRG stream."""
    g = PRG.for_tests(seed)
    o = {}
    sk = M.keygen(he, g, "k")
    o["pk"] = pk = M.keygen_public(he, sk, g, "pk")
    sd = g.child_seed("seed")
    o["c0"] = c0 = M.encrypt_symmetric(he, sk, m, sd, g, "enc")
    o["ct"] = ct = M.expand_seeded(he, sd, c0)
    o["dec"] = M.decrypt(he, sk, ct)
    o["ctp"] = ctp = M.encrypt_public(he, pk, m, g, "pe")
    o["decp"] = M.decrypt(he, sk, ctp)
    o["add"], o["sub"] = M.add(he, ct, ctp), M.sub(he, ct, ctp)
    o["mac"] = acc = M.mac_scalar(he, ct, x)
    o["scalar"] = M.mul_scalar(he, ct, x[0])
    o["mono"] = M.mul_monomial(he, ct, shift)
    o["plain"] = M.mul_plain(he, ct, m[::-1].copy())
    o["ms"] = sw = M.mod_switch(he, acc, pkeep)
    o["flood"] = M.flood(he, pk, sw, g, "fl")
    o["flood_wide"] = M.flood(he, pk, sw, g, "flw", bound=(1 << 62) + (1 << 100) // (len(seed) + 2))
    o["flood_edge"] = M.flood(he, pk, sw, g, "fle", bound=(1 << 62) - 1)  # the last narrow width
    o["noise"] = M.noise(he, sk, ct, m)
    o["enc"] = e = M.encode(he, m, pkeep)
    o["decode"] = M.decode(he, e)
    o["decode_any"] = M.decode(he, acc[:, 1])  # arbitrary residues, not a real encoding
    return o


@pytest.mark.parametrize("he", TINY, ids=lambda h: h.name)
@settings(max_examples=15)
@given(data=st.data())
def test_reference_and_optimized_agree(he, data):
    m = data.draw(_plain(he, 3))
    x = data.draw(_plain(he, 2).map(lambda a: a[:, :3].copy()))
    shift = data.draw(st.integers(-3 * he.n, 3 * he.n))
    pkeep = data.draw(st.integers(1, he.levels))
    seed = data.draw(st.text("abc", min_size=1, max_size=4))
    ref = _everything(REF, he, seed, m, x, shift, pkeep)
    opt = _everything(OPT, he, seed, m, x, shift, pkeep)
    assert_same(ref, opt, {"he": he.name, "seed": seed, "shift": shift, "level": pkeep})


@pytest.mark.parametrize("he", TINY, ids=lambda h: h.name)
@settings(max_examples=10)
@given(data=st.data())
def test_packing_agrees_on_edge_values(he, data):
    l = he.plain_bits
    edge = [0, 1, (1 << (l - 1)) - 1, 1 << (l - 1), (1 << l) - 1]
    v = data.draw(hnp.arrays(np.uint64, (4, 2, he.levels, he.n), elements=st.integers(0, min(he.primes) - 1).map(np.uint64)))
    m = np.array([edge[i % 5] for i in range(he.n)], np.uint64)[None]
    assert_same(REF.encode(he, m), OPT.encode(he, m))
    assert_same(REF.decode(he, v[:, 0]), OPT.decode(he, v[:, 0]))
    for p in he.primes:
        b = p.bit_length()
        vals = v.reshape(-1) % np.uint64(p)
        assert_same(REF.pack_bits(vals, b), OPT.pack_bits(vals, b))
        assert_same(OPT.unpack_bits(OPT.pack_bits(vals, b), vals.size, b), vals)


@pytest.mark.parametrize("he", TINY, ids=lambda h: h.name)
@settings(max_examples=8)
@given(data=st.data())
def test_homomorphic_identities(impl, he, data):
    M = impl.rlwe
    l, n = he.plain_bits, he.n
    mask = (1 << l) - 1
    m = data.draw(_plain(he, 3))
    x = data.draw(_plain(he, 2).map(lambda a: a[:, :3].copy()))
    k = data.draw(st.integers(0, 2 * n - 1))
    g = PRG.for_tests("identities")
    sk = M.keygen(he, g, "k")
    pk = M.keygen_public(he, sk, g, "pk")
    sd = g.child_seed("s")
    ct = M.expand_seeded(he, sd, M.encrypt_symmetric(he, sk, m, sd, g, "e"))
    ctp = M.encrypt_public(he, pk, m, g, "p")
    mo = m.astype(object)
    assert_same(M.decrypt(he, sk, ct), m)
    assert_same(M.decrypt(he, sk, ctp), m)
    assert_same(M.decrypt(he, sk, M.add(he, ct, ctp)), ((mo + mo) & mask).astype(np.uint64))
    assert_same(M.decrypt(he, sk, M.sub(he, ct, ctp)), np.zeros_like(m))
    want = (x.astype(object).dot(mo) & mask).astype(np.uint64)
    acc = M.mac_scalar(he, ct, x)
    assert_same(M.decrypt(he, sk, acc), want)
    # monomial: coefficient j moves to j + k with sign (-1)^floor((j + k) / N)
    sh = np.zeros_like(m)
    for j in range(n):
        t = j + k
        sh[:, t % n] = (m[:, j] if (t // n) % 2 == 0 else (-m[:, j].astype(object)) & mask).astype(np.uint64)
    assert_same(M.decrypt(he, sk, M.mul_monomial(he, ct, k)), sh)
    # plaintext polynomial product, negacyclic over Z_2^l
    p = m[::-1].copy()
    prod = np.zeros(m.shape, dtype=object)
    for j in range(n):
        for t in range(n):
            s = 1 if j + t < n else -1
            prod[:, (j + t) % n] += s * mo[:, j] * p[:, t].astype(object)
    assert_same(M.decrypt(he, sk, M.mul_plain(he, ct, p)), (prod & mask).astype(np.uint64))
    for lev in range(1, he.levels + 1):
        sw = M.mod_switch(he, acc, lev)
        assert sw.shape[-2] == lev
        assert_same(M.decrypt(he, sk, sw), want)
    lev = he.response_level or 1
    fl = M.flood(he, pk, M.mod_switch(he, acc, lev), g, "fl")
    assert_same(M.decrypt(he, sk, fl), want)
    # measured noise <= the analysis, at every step
    fresh, mac = ("fresh_sk",), ("mac", 3, l)
    for got, ops in ((M.noise(he, sk, ct, m), (fresh,)), (M.noise(he, sk, ctp, m), (("fresh_pk",),)),
                     (M.noise(he, sk, acc, want), (fresh, mac)),
                     (M.noise(he, sk, M.mod_switch(he, acc, lev), want), (fresh, mac, ("mod_switch", lev))),
                     (M.noise(he, sk, fl, want), (fresh, mac, ("mod_switch", lev), ("flood",))),
                     (M.noise(he, sk, M.mul_plain(he, ct, p), (prod & mask).astype(np.uint64)),
                      (fresh, ("plain_mul", l, n)))):
        assert got <= H.analyze(he, ops).total + 1, (ops, got)


def _worst_cop(M, he, seed="cop-worst", k=8, pack=2, tok=None):
    """The COP workload with maximal scalars (lift -2^(l-1)): returns (measured noises, want)."""
    l, n = he.plain_bits, he.n
    g = PRG.for_tests(seed)
    sk = M.keygen(he, g, "k")
    pk = M.keygen_public(he, sk, g, "pk")
    m = g.uniform("m", (k, n), l)
    sd = g.child_seed("s")
    cts = M.expand_seeded(he, sd, M.encrypt_symmetric(he, sk, m, sd, g, "e"))
    x = np.full((pack, k), 1 << (l - 1), np.uint64)
    acc = M.mac_scalar(he, cts, x)
    packed = acc[0]
    step = n // pack
    for t in range(1, pack):
        packed = M.add(he, packed, M.mul_monomial(he, acc[t], t * step))
    want_rows = (x.astype(object).dot(m.astype(object)) & ((1 << l) - 1))
    want = np.zeros(n, dtype=object)
    for t in range(pack):
        for j in range(n):
            u = j + t * step
            want[u % n] = (want[u % n] + (want_rows[t, j] if (u // n) % 2 == 0 else -want_rows[t, j]))
    want = (want & ((1 << l) - 1)).astype(np.uint64)
    sw = M.mod_switch(he, packed, he.response_level)
    fl = M.flood(he, pk, sw, g, "fl")
    return M.noise(he, sk, packed, want), M.noise(he, sk, sw, want), M.noise(he, sk, fl, want), M.decrypt(he, sk, fl), want


def test_tiny_cop_worst_case_noise_within_analysis(impl):
    he = H.TINY16
    ops = H.cop_workload(8, 2, he.plain_bits, he.response_level)
    rep = H.analyze(he, ops)
    pre = H.analyze(he, ops[:4])
    mid = H.analyze(he, ops[:5])
    n_pre, n_ms, n_fl, got, want = _worst_cop(impl.rlwe, he)
    assert n_pre <= pre.total + 1 and n_ms <= mid.total + 1 and n_fl <= rep.total + 1
    assert_same(got, want)


#: N = 16 with three 61-bit primes (INSECURE, tests only): room for a wide flood (F = 2^100).
TINY16_WIDE = H.HEParams("tiny16-wide", 16, H.ntt_primes(61, 16, 3), 16, eta=2, response_level=3,
                         flood_bound=(1 << 100) + 12345, insecure_test_only=True).validate()


def test_wide_flooding_decrypts_within_the_analysis(impl):
    """A flooding width above 2^62 (PRG.uniform_signed_wide): the result decrypts, the measured
    noise is within the analysis, the wide range is really used, and the flooding error is
    exactly the normative draw (lo + 2^64 hi - F, reduced mod each prime)."""
    from nimbus.reference.rlwe import _negacyclic
    from nimbus.spec.prg import wide_to_ints

    he, M = TINY16_WIDE, impl.rlwe
    F, n = he.flood_bound, he.n
    g = PRG.for_tests("wide-flood")
    sk = M.keygen(he, g, "k")
    pk = M.keygen_public(he, sk, g, "pk")
    m = g.uniform("m", (4, n), he.plain_bits)
    ct = M.encrypt_public(he, pk, m, g, "e")
    fl = M.flood(he, pk, ct, g, "fl")
    assert_same(M.decrypt(he, sk, fl), m)
    got = M.noise(he, sk, fl, m)
    assert got <= H.analyze(he, (("fresh_pk",), ("flood",))).total + 1
    assert got > F // 2  # 64 coefficients uniform on [-F, F]: all below F/2 with probability 2^-64
    # c0 of a flooded zero ciphertext is p0 u + e2: recompute e2 from the labels
    z = M.flood(he, pk, np.zeros((1, 2, he.levels, n), np.uint64), PRG.for_tests("wide-exact"), "fl")
    h = PRG.for_tests("wide-exact")
    u = h.ternary("fl/u", (1, n))[0].tolist()
    e2 = wide_to_ints(*h.uniform_signed_wide("fl/e2", (1, n), F), F)[0]
    assert max(abs(int(x)) for x in e2) > F // 2
    for i, p in enumerate(he.primes):
        pu = _negacyclic([int(x) for x in pk[0, i]], u, p)
        assert [(int(c) - x) % p for c, x in zip(z[0, 0, i], pu)] == [int(x) % p for x in e2]


def test_labels_are_never_reused(impl):
    he = H.TINY16
    g = PRG.for_tests("reuse")
    impl.rlwe.keygen(he, g, "k")
    with pytest.raises(RandomnessReuseError):
        impl.rlwe.keygen(he, g, "k")


def test_bad_shapes_raise_shape_error(impl):
    he, M = H.TINY16, impl.rlwe
    g = PRG.for_tests("bad")
    sk = M.keygen(he, g, "k")
    good = np.zeros((1, 2, he.levels, he.n), np.uint64)
    for bad in (np.zeros((1, 2, he.levels, he.n + 1), np.uint64), np.zeros((1, 3, he.levels, he.n), np.uint64),
                np.zeros((1, 2, he.levels + 1, he.n), np.uint64), good.astype(np.int64)):
        with pytest.raises(ShapeError):
            M.decrypt(he, sk, bad)
        with pytest.raises(ShapeError):
            M.add(he, good if bad.shape != good.shape else bad, bad)
    with pytest.raises(ShapeError):
        M.encode(he, np.full((1, he.n), 1 << he.plain_bits, np.uint64))
    with pytest.raises(ShapeError):
        M.mod_switch(he, good, he.levels + 1)
    with pytest.raises(ShapeError):
        M.mac_scalar(he, good, np.zeros((2, 3), np.uint64))
    with pytest.raises(ShapeError):
        M.mul_plain(he, good, np.zeros((2, he.n), np.uint64))


@pytest.mark.parametrize("he", TINY + [H.COP64], ids=lambda h: h.name)
def test_decode_near_rounding_boundaries(impl, he):
    """Values within 2^l / Q of a half-integer (where a fixed-point CRT must fall back to exact
    arithmetic) decode exactly: round(2^l x / Q) mod 2^l."""
    if he.n > 64 and impl.name == "reference":
        pytest.skip("reference decode at N = 8192 is slow")
    l, n = he.plain_bits, he.n
    for level in range(1, he.levels + 1):
        q = he.q(level)
        g = PRG.for_tests(f"near/{he.name}/{level}")
        ts = [int(t) for t in g.uniform("t", n, l)]
        xs = [((2 * t + 1) * q >> (l + 1)) + (j % 3) - 1 for j, t in enumerate(ts)]
        xs = [x % q for x in xs]
        v = np.array([[x % p for x in xs] for p in he.primes[:level]], np.uint64)[None]
        want = np.array([(((x << (l + 1)) + q) // (2 * q)) % (1 << l) for x in xs], np.uint64)[None]
        assert_same(impl.rlwe.decode(he, v), want, {"he": he.name, "level": level})


# -- automorphisms, Galois keys, key switching, packing (output packing of linear.matmul) ------
def _sigma_plain(m, g, l):
    """sigma_g on plaintexts (rows, N) in Z_2^l: coefficient j -> j g mod 2N, negated above N."""
    n = m.shape[-1]
    out = np.zeros_like(m)
    for j in range(n):
        t = j * g % (2 * n)
        out[..., t % n] = ((-m[..., j].astype(object) if t >= n else m[..., j].astype(object)) % (1 << l)).astype(np.uint64)
    return out


def _galois_run(M, he, seed: str, m, g_extra: int, D: int):
    """Keys, automorphism, key switch and packing once each on one deterministic PRG stream."""
    g = PRG.for_tests(seed)
    o = {}
    sk = M.keygen(he, g, "k")
    sd = g.child_seed("seed")
    ct = M.expand_seeded(he, sd, M.encrypt_symmetric(he, sk, m, sd, g, "enc"))
    gs = H.pack_elements(he.n, D.bit_length() - 1) + (g_extra,)
    ks = g.child_seed("gk")
    o["gk"] = gk = M.galois_keygen(he, sk, gs, ks, g, "gk")
    o["keys"] = keys = M.expand_galois(he, ks, gk)
    o["auto"] = M.automorphism(he, ct, g_extra)
    o["switched"] = sw = M.apply_galois(he, ct, g_extra, keys[-1])
    o["dec_switched"] = M.decrypt(he, sk, sw)
    o["ks_low"] = M.key_switch(he, M.mod_switch(he, M.automorphism(he, ct, g_extra), 1), keys[-1])
    rows = (m.shape[0] // D) * D
    if rows:
        o["packed"] = pk = M.pack_trace(he, ct[:rows].reshape((-1, D) + ct.shape[1:]), keys)
        o["dec_packed"] = M.decrypt(he, sk, pk)
    return o, sk


@pytest.mark.parametrize("he", TINY, ids=lambda h: h.name)
@settings(max_examples=6)
@given(data=st.data())
def test_galois_reference_and_optimized_agree(he, data):
    """automorphism, galois_keygen/expand_galois, key_switch (full and lower level), apply_galois
    and pack_trace: bit for bit the same in both implementations."""
    D = data.draw(st.sampled_from([1, 2, 4]))
    m = data.draw(_plain(he, 4))
    g_extra = data.draw(st.integers(0, he.n - 1).map(lambda v: 2 * v + 1))
    seed = data.draw(st.text("abc", min_size=1, max_size=4))
    ref, _ = _galois_run(REF, he, seed, m, g_extra, D)
    opt, _ = _galois_run(OPT, he, seed, m, g_extra, D)
    assert_same(ref, opt, {"he": he.name, "seed": seed, "g": g_extra, "D": D})


@pytest.mark.parametrize("he", TINY, ids=lambda h: h.name)
def test_galois_and_packing_decrypt_as_specified(impl, he):
    """apply_galois decrypts to sigma_g(m); pack_trace to sum_i X^i P_D(m_i) (every input's
    coefficients at the multiples of D, the rest annihilated), with measured noise within
    ``analyze``'s ("pack", k) term."""
    M, l, n = impl.rlwe, he.plain_bits, he.n
    D = 4
    g_extra = 2 * n - 3
    m = PRG.for_tests(f"gal/{he.name}").uniform("m", (2 * D, n), l)
    out, sk = _galois_run(M, he, f"gal/{he.name}", m, g_extra, D)
    assert_same(out["dec_switched"], _sigma_plain(m, g_extra, l))
    want = np.zeros((2, n), np.uint64)
    for b in range(2):
        for i in range(D):
            want[b, i::D] = m[b * D + i, ::D]
    assert_same(out["dec_packed"], want)
    fresh = H.analyze(he, (("fresh_sk",),)).total
    bound = H.analyze(he, (("fresh_sk",), ("pack", 2))).total
    assert bound == fresh + 3 * H.ks_noise_bound(he, he.levels)
    assert M.noise(he, sk, out["packed"], want) <= bound + 1
    assert M.noise(he, sk, out["switched"], _sigma_plain(m, g_extra, l)) <= fresh + H.ks_noise_bound(he, he.levels) + 1


def test_galois_elements():
    """g = N/s + 1 negates X^s and fixes X^(2s) (the derivation in spec.he)."""
    n = 8192
    for t in range(13):
        s = 1 << t
        g = H.galois_element(n, s)
        assert (s * g) % (2 * n) == s + n and (2 * s * g) % (2 * n) == 2 * s
    assert H.pack_elements(16, 3) == (17, 9, 5)
    assert H.galois_key_count(H.MATMUL64) == H.PACK_MAX_LEVELS
    with pytest.raises(Exception):
        H.galois_element(16, 3)


def test_galois_bad_inputs_raise_shape_error(impl):
    he, M = H.TINY16, impl.rlwe
    g = PRG.for_tests("gal-bad")
    sk = M.keygen(he, g, "k")
    good = np.zeros((1, 2, he.levels, he.n), np.uint64)
    key = np.zeros((he.levels, 2, he.levels, he.n), np.uint64)
    with pytest.raises(ShapeError):
        M.automorphism(he, good, 4)  # even: not an automorphism of the ring
    with pytest.raises(ShapeError):
        M.key_switch(he, good, key[:, :, :1])
    with pytest.raises(ShapeError):
        M.galois_keygen(he, sk, (2,), g.child_seed("s"), g, "gk")
    with pytest.raises(ShapeError):
        M.expand_galois(he, g.child_seed("s2"), np.zeros((1, he.levels, 1, he.n), np.uint64))
    with pytest.raises(ShapeError):
        M.pack_trace(he, np.zeros((1, 3, 2, he.levels, he.n), np.uint64), key[None].repeat(2, 0))
    with pytest.raises(ShapeError):
        M.pack_trace(he, np.zeros((1, 4, 2, he.levels, he.n), np.uint64), key[None])  # 2 keys needed


def test_packing_at_matmul64_decrypts_within_the_analysis(opt):
    """At the real products set (N = 8192, 51/32-bit primes): Galois keys, pack_trace of 8
    fresh ciphertexts at the full level, modulus switching and flooding decrypt to the packed
    plaintext, and the measured noise is within analyze's ("pack", 3) bound at every step."""
    he, M = H.MATMUL64, opt.rlwe
    n, l, D = he.n, he.plain_bits, 8
    g = PRG.for_tests("pack-matmul64")
    sk = M.keygen(he, g, "k")
    pk = M.keygen_public(he, sk, g, "pk")
    m = g.uniform("m", (D, n), l)
    sd = g.child_seed("s")
    ct = M.expand_seeded(he, sd, M.encrypt_symmetric(he, sk, m, sd, g, "e"))
    ks = g.child_seed("gk")
    keys = M.expand_galois(he, ks, M.galois_keygen(he, sk, H.pack_elements(n, H.galois_key_count(he)), ks, g, "gk"))
    packed = M.pack_trace(he, ct[None], keys)[0]
    want = np.zeros(n, np.uint64)
    for i in range(D):
        want[i::D] = m[i, ::D]
    ops = (("fresh_sk",), ("pack", 3), ("mod_switch", he.response_level), ("flood",))
    assert M.noise(he, sk, packed, want) <= H.analyze(he, ops[:2]).total + 1
    sw = M.mod_switch(he, packed, he.response_level)
    assert M.noise(he, sk, sw, want) <= H.analyze(he, ops[:3]).total + 1
    fl = M.flood(he, pk, sw, g, "fl")
    end = H.analyze(he, ops)
    assert M.noise(he, sk, fl, want) <= end.total + 1 and end.correct and end.flooding_ok
    assert_same(M.decrypt(he, sk, fl), want)
