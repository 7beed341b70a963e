"""RLWE parameter sets: security bound, NTT-friendly primes (with their derivations), the noise
analysis of every protocol set, validate() refusals, and the wire format of ciphertexts."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
import sympy

from nimbus.conformance.assertions import assert_same
from nimbus.registry import implementation
from nimbus.spec import he as H
from nimbus.spec.errors import DecodeError, ParameterError, ShapeError
from nimbus.spec.messages import Message
from nimbus.spec.params import PRESETS
from nimbus.spec.prg import PRG

#: The derivation comment of every registered set, as data: groups of ntt_primes(bits, N, count).
DERIVATIONS = {
    "tiny16-l16": [(30, 16, 3)],
    "tiny32-l12": [(30, 32, 2), (24, 32, 1)],
    "cop-n8192-l64": [(51, 8192, 3), (32, 8192, 2)],
    "matmul-n8192-l64": [(51, 8192, 3), (32, 8192, 2)],
    "cop-n8192-l40": [(42, 8192, 3), (50, 8192, 1)],
}


def test_every_set_has_a_derivation():
    assert sorted(DERIVATIONS) == sorted(H.HE_PARAMS)


@pytest.mark.parametrize("name", sorted(DERIVATIONS))
def test_primes_are_ntt_friendly_primes_as_derived(name):
    he = H.get_he(name)
    derived = tuple(p for bits, n, c in DERIVATIONS[name] for p in H.ntt_primes(bits, n, c))
    assert he.primes == derived
    for p in he.primes:
        assert sympy.isprime(p) and H.is_prime(p)
        assert p % (2 * he.n) == 1 and p < 1 << 62
        # and they are the largest such primes below 2^bits: nothing prime in between
    for bits, n, c in DERIVATIONS[name]:
        top = H.ntt_primes(bits, n, c)[-1]
        between = [q for q in range(top + 2 * n, 1 << bits, 2 * n) if sympy.isprime(q)]
        assert sorted(between) == sorted(H.ntt_primes(bits, n, c)[:-1])


def test_is_prime_matches_sympy():
    rnd = PRG.for_tests("is_prime").uniform("x", 300, 62) | np.uint64(1 << 40)
    for x in list(range(2, 2000)) + [int(v) for v in rnd]:
        assert H.is_prime(x) == sympy.isprime(x), x


@pytest.mark.parametrize("name", sorted(DERIVATIONS))
def test_registered_sets_meet_the_security_bound_or_are_flagged(name):
    he = H.get_he(name)
    if he.insecure_test_only:
        assert he.n < 2048
        with pytest.raises(ParameterError, match="128-bit"):
            dataclasses.replace(he, insecure_test_only=False).validate()
    else:
        assert he.log_q() <= H.SECURITY_BOUND_128[he.n]
        assert he.eta >= 21  # CBD(eta) has sigma^2 = eta / 2 >= 3.2^2 <=> eta >= 20.48


def test_no_preset_carries_an_insecure_set():
    for ps in PRESETS.values():
        if ps.he is not None:
            assert not ps.he.insecure_test_only, ps.name
            assert ps.he.plain_bits == ps.linear.bits, ps.name
            ps.he.validate()


@pytest.mark.parametrize("name", sorted(DERIVATIONS))
def test_protocol_sets_are_sound_by_their_analysis(name):
    """Decryption never fails (worst case below capacity) and the whole query's statistical
    distance M S / (2F + 1) is <= 2^-stat_bits, S = floor(B + 1/2 + 2 N eta + 1/2) the shift bound:
    data noise B before flooding, the mask's rounding, the key owner's view e u + s e1 of the
    flooding randomness, the simulator's rounding."""
    he = H.get_he(name)
    for wname, ops in he.workloads:
        rep = H.analyze(he, ops)
        pre = H.analyze(he, ops[:-1])
        assert ops[-1] == ("flood",)
        assert rep.correct and rep.failure_log2 <= -40, (wname, rep.as_dict())
        assert rep.shift == math.floor(pre.total + 1 + 2 * he.n * he.eta) and rep.max_flooded == he.max_flooded
        assert rep.flooding_ok and 2 * rep.flood_bound + 1 >= he.max_flooded * rep.shift * 2 ** he.stat_bits
        sd_query = Fraction(he.max_flooded * rep.shift, 2 * rep.flood_bound + 1)
        assert sd_query <= Fraction(1, 2 ** he.stat_bits), (wname, rep.as_dict())
        assert rep.sd_query_log2 <= -he.stat_bits and rep.sd_log2 <= -he.stat_bits - math.log2(he.max_flooded)
        assert rep.total == pre.total + 2 * he.n * he.eta + he.flood_bound + Fraction(1, 2)
        # F is the smallest sound width: one less breaks the bound
        assert not H.analyze(he, ops, flood_bound=he.flood_bound - 1).flooding_ok


def test_protocol_sets_are_sized_for_a_whole_query():
    """stat_bits = 40 per query, one M for everything the server decrypts in a BERT-base query
    (spec/he.py derivation comment); the flooding widths are above 2^62 (wide sampler)."""
    for he in (H.COP64, H.MATMUL64, H.COP40):
        assert he.stat_bits == 40 and he.max_flooded == H.BERT_BASE_FLOODED == 1 << 26
        assert H.WIDE_FLOOD <= he.flood_bound < 1 << 127
        rep = H.analyze(he, he.workloads[0][1])
        assert -40.01 < rep.sd_query_log2 <= -40 and rep.sd_log2 <= -66 and rep.margin_bits > 1.5
        assert rep.shift >= 2 * he.n * he.eta  # S covers the key owner's view e u + s e1
    assert PRESETS["bert-base"].he is H.COP64
    # COP64's width also floods the attention products soundly (it may carry them itself)
    rep = H.analyze(H.COP64, H.matmul_workload(8192, 8192, 2, 64, 3, fresh="sk"))
    assert rep.correct and rep.flooding_ok and rep.shift <= H.analyze(H.COP64, H.COP64.workloads[0][1]).shift


def _bert_base_flooded_ciphertexts(S, tokens: int) -> tuple[int, int]:
    """(COP, attention) response ciphertexts the server decrypts in one BERT-base query."""
    cop = 0
    for s in S.bert_shapes():
        lay = (S.embed_layout(H.COP64, tokens, s.d_out) if s.name == "embed"
               else S.cop_layout(H.COP64, tokens, s.d_in, s.d_out))
        cop += lay.count
    att = 0
    if hasattr(S, "matmul_plan"):
        for m, d, p in ((tokens, 64, tokens), (tokens, tokens, 64)):  # Q K^T, P V per head
            p1, p2 = S.matmul_plan(H.COP64, m, d, p), S.matmul_plan(H.COP64, p, d, m)
            att += 12 * S.matmul_packing(p1, p2, 12).count  # packed responses of 12 heads, 12 layers
    return cop, att


def test_flooded_count_covers_a_bert_base_query():
    """M = 2^26 >= every response coefficient the server decrypts in a BERT-base query at 128
    tokens (embedding lookup + 12 layers of COP + attention products), with the protocol's own
    layouts (nimbus.spec.linear)."""
    S = pytest.importorskip("nimbus.spec.linear")
    if not all(hasattr(S, f) for f in ("bert_shapes", "cop_layout", "embed_layout")):
        pytest.skip("linear-layer layouts not available")
    cop, att = _bert_base_flooded_ciphertexts(S, 128)
    assert cop == 1308
    assert (cop + att) * H.COP64.n <= H.BERT_BASE_FLOODED, (cop, att)
    for tokens in (1, 37, 100):  # shorter queries flood fewer coefficients
        assert sum(_bert_base_flooded_ciphertexts(S, tokens)) * H.COP64.n <= H.BERT_BASE_FLOODED
    if hasattr(S, "max_query_tokens"):
        assert S.query_flooded(H.COP64, 128) == (cop + att) * H.COP64.n
        assert S.query_flooded(H.COP64, 257) > H.BERT_BASE_FLOODED


def test_token_limit_is_enforced():
    """M2: the per-query budget M is enforced at run time: 128 tokens fit, 129 do not, for every
    protocol set; the spec's layouts (used by both implementations) refuse longer queries."""
    S = pytest.importorskip("nimbus.spec.linear")
    for he in (H.COP64, H.MATMUL64, H.COP40):
        T = S.max_query_tokens(he)  # packed attention responses: 256 (COP40's plans do not pack: 128)
        assert T == (128 if he is H.COP40 else 256)
        assert all(S.query_flooded(he, t) <= he.max_flooded for t in range(1, T + 1, 17))
        assert S.query_flooded(he, T + 1) > he.max_flooded
        S.cop_layout(he, T, 768, 768)
        with pytest.raises(ParameterError, match=f"{T + 1} tokens exceed the per-query flooding budget"):
            S.cop_layout(he, T + 1, 768, 768)
        with pytest.raises(ParameterError, match="per-query flooding budget"):
            S.embed_layout(he, T + 1, 768)
        with pytest.raises(ParameterError, match="per-query flooding budget"):
            S.matmul_plan(he, T + 1, 64, T + 1)
    assert S.max_query_tokens(H.TINY16) is None  # per-coefficient test sets: no query budget
    S.cop_layout(H.TINY16, 300, 4, 4)


def test_security_bound_refusals():
    # 4 primes of 60 bits at N = 8192: 240 > 218
    with pytest.raises(ParameterError, match="exceeds the 128-bit bound 218"):
        H.HEParams("too-big", 8192, H.ntt_primes(60, 8192, 4), 64).validate()
    with pytest.raises(ParameterError, match="exceeds the 128-bit bound 109"):
        H.HEParams("too-big", 4096, H.ntt_primes(60, 4096, 2), 32).validate()
    with pytest.raises(ParameterError, match="no 128-bit parameters"):
        H.HEParams("tiny", 16, H.ntt_primes(30, 16, 1), 16).validate()
    with pytest.raises(ParameterError, match="narrower than sigma"):
        H.HEParams("narrow", 4096, H.ntt_primes(50, 4096, 2), 32, eta=2).validate()
    with pytest.raises(ParameterError, match="narrower than sigma"):  # sigma^2 = 5.5 < 3.2^2
        H.HEParams("narrow", 4096, H.ntt_primes(50, 4096, 2), 32, eta=11).validate()
    with pytest.raises(ParameterError, match="narrower than sigma"):
        H.HEParams("narrow", 4096, H.ntt_primes(50, 4096, 2), 32, eta=20).validate()
    H.HEParams("wide-enough", 4096, H.ntt_primes(50, 4096, 2), 32, eta=21).validate()
    # registering refuses as well
    with pytest.raises(ParameterError):
        H.register_he(H.HEParams("too-big", 8192, H.ntt_primes(60, 8192, 4), 64))
    assert "too-big" not in H.HE_PARAMS


def test_consistency_refusals():
    base = H.COP64
    with pytest.raises(ParameterError, match="not 1 mod 2N"):
        dataclasses.replace(base, primes=(base.primes[0], 1152921504606846883)).validate()  # 2^60 - 93: prime
    with pytest.raises(ParameterError, match="not prime"):
        dataclasses.replace(base, primes=(base.primes[0], 18014398509481985)).validate()  # 1 + 2^14 2^40, divisible by 5
    with pytest.raises(ParameterError, match="distinct"):
        dataclasses.replace(base, primes=(base.primes[0], base.primes[0])).validate()
    with pytest.raises(ParameterError, match="power of two"):
        dataclasses.replace(base, n=6000).validate()
    with pytest.raises(ParameterError, match="flooding width"):
        dataclasses.replace(base, flood_bound=base.flood_bound // 2).validate()
    with pytest.raises(ParameterError, match="decryption may fail"):
        dataclasses.replace(base, response_level=1,
                            workloads=(("cop", H.cop_workload(3072, 16, 64, 1)),)).validate()
    with pytest.raises(ParameterError, match=r"flooding width 2.62.0 < 2.40 x M 2.26.0 x shift 2.83.0 / 2"):
        dataclasses.replace(base, flood_bound=(1 << 62) - 1,  # no switch
                            workloads=(("cop", H.cop_workload(3072, 16, 64, 5)),)).validate()
    with pytest.raises(ParameterError, match="flood bound"):
        dataclasses.replace(base, flood_bound=1 << 127).validate()
    with pytest.raises(ParameterError, match="max_flooded"):
        dataclasses.replace(base, max_flooded=0).validate()
    with pytest.raises(ParameterError, match="flooding width"):  # per-coefficient F, per-query M
        dataclasses.replace(base, flood_bound=H.analyze(dataclasses.replace(base, max_flooded=1),
                                                        base.workloads[0][1]).required_flood).validate()


def test_analysis_arithmetic():
    he = H.COP64
    # fresh symmetric: eta + 1/2; mac: k 2^(l-1) (eta + 1/2); pack 16; drop 2 primes; flood
    rep = H.analyze(he, (("fresh_sk",), ("mac", 3072, 64), ("add", 16)))
    assert rep.data == 16 * 3072 * 2 ** 63 * H.Fraction(43, 2)
    rep = H.analyze(he, he.workloads[0][1])
    # what is left after switching: the MAC noise / 2^64 and the rounding noise
    assert 2 ** 19 < rep.data < 2 ** 19.03  # 2^83.01 / (p_3 p_4 ~ 2^64) + (N + 1) / 2 rounding
    assert rep.required_flood == he.flood_bound == (rep.shift * he.max_flooded << 40) // 2
    assert 3 < rep.margin_bits < 3.5
    # per coefficient (M = 1): F is 2^26 times narrower
    one = H.analyze(dataclasses.replace(he, max_flooded=1), he.workloads[0][1])
    assert one.required_flood == (rep.shift << 40) // 2 and one.shift == rep.shift
    assert H.matmul_workload(8192, 8192, 2, 64, 3)[0] == ("fresh_pk",)
    assert H.matmul_workload(8192, 8192, 2, 64, 3, fresh="sk")[0] == ("fresh_sk",)
    with pytest.raises(ParameterError):
        H.matmul_workload(8192, 8192, 2, 64, 3, fresh="x")
    with pytest.raises(ParameterError):
        H.analyze(he, (("bogus",),))


# -- wire format ----------------------------------------------------------------------------------
@pytest.mark.parametrize("he", [H.TINY16, H.TINY32, H.COP64], ids=lambda h: h.name)
def test_serialisation_round_trip_and_sizes(impl, he):
    M = impl.rlwe
    g = PRG.for_tests("wire")
    rows = 2 if he.n <= 64 else 1
    c0 = np.stack([np.stack([g.uniform_mod(f"c{t}/{i}", he.n, p) for i, p in enumerate(he.primes)]) for t in range(rows)])
    seed = g.child_seed("seed")
    ct = M.expand_seeded(he, seed, c0)
    for msg, dims in ((H.SeededCiphertexts(seed=seed, c0=c0), {"c0": c0.shape}),
                      (H.Ciphertexts(ct=ct), {"ct": ct.shape}),
                      (H.Ciphertexts(ct=ct[:, :, :1].copy()), {"ct": ct[:, :, :1].shape}),
                      (H.PublicKeyMsg(pk=ct[0]), {"pk": ct[0].shape})):
        blob = msg.encode(he, packer=M.pack_bits)
        assert blob == msg.encode(he)  # the spec's packer: identical bytes
        assert len(blob) == msg.size_bytes(he) == type(msg).declared_size(he, **dims)
        back = Message.decode(blob, he, unpacker=M.unpack_bits)
        assert back == msg
    per = sum(p.bit_length() for p in he.primes) * he.n
    assert H.seeded_bytes(he, rows) == 2 + 32 + 1 + 12 + sum((rows * he.n * p.bit_length() + 7) // 8 for p in he.primes)
    assert H.ciphertext_bytes(he, rows) == 2 + 1 + 16 + sum((2 * rows * he.n * p.bit_length() + 7) // 8 for p in he.primes)
    assert H.seeded_bytes(he, 1) <= per // 8 + 64
    # the seed regenerates the uniform half exactly
    assert_same(M.expand_seeded(he, seed, c0)[:, 1], H.expand_a(he, seed, rows))


def test_non_canonical_wire_data_is_rejected():
    he = H.TINY16
    c0 = np.zeros((1, he.levels, he.n), np.uint64)
    c0[0, 0, 0] = he.primes[0] - 1
    blob = bytearray(H.SeededCiphertexts(seed=b"\x01" * 32, c0=c0).encode(he))
    with pytest.raises(ShapeError):
        c0[0, 0, 0] = he.primes[0]
        H.SeededCiphertexts(seed=b"\x01" * 32, c0=c0).encode(he)
    # residue p_0 itself (all-ones 30 bits = 2^30 - 1 >= p_0) injected into the first limb
    start = 2 + 32 + 1 + 12
    blob[start:start + 4] = (2**30 - 1).to_bytes(4, "little")[:4]
    with pytest.raises(DecodeError):
        Message.decode(bytes(blob), he)
    with pytest.raises(DecodeError):
        Message.decode(bytes(blob[:-1]), he)
    with pytest.raises(DecodeError):  # wrong N
        Message.decode(H.Ciphertexts(ct=np.zeros((1, 2, 1, 32), np.uint64)).encode(H.TINY32), he)


def test_optimized_packer_matches_spec_on_every_width():
    opt = implementation("optimized").rlwe
    from nimbus.spec.messages import pack_bits, unpack_bits
    g = PRG.for_tests("packer")
    for b in (1, 3, 7, 8, 13, 30, 37, 45, 60, 61, 63, 64):
        v = g.uniform(f"v{b}", 77, b)
        v[:3] = np.uint64((1 << b) - 1) if b < 64 else np.uint64(2**64 - 1)
        assert opt.pack_bits(v, b) == pack_bits(v, b)
        assert_same(opt.unpack_bits(pack_bits(v, b), v.size, b), unpack_bits(pack_bits(v, b), v.size, b))
