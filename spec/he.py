"""RLWE homomorphic encryption: parameters, encodings, messages and the noise analysis.

Message tags 0x1000-0x10ff.

The scheme is BFV (Fan-Vercauteren, ePrint 2012/144) with *coefficient* encoding and plaintext
modulus 2^l, used the way Cheetah (Huang et al., USENIX Security 2022), BumbleBee (Lu et al.,
NDSS 2025) and Nimbus [NIMBUS24] use it: no relinearisation, no slot rotations; additions,
plaintext-scalar, monomial and plaintext-polynomial products, modulus switching, noise flooding,
and Galois automorphisms with key switching for output packing (PackLWEs, [CDKS21]).

Normative definitions (both implementations agree bit for bit):

* Ring: R_q = Z_q[X]/(X^N + 1), N a power of two, q = Q_L = p_0 * ... * p_{L-1} (RNS, each
  p_i prime, p_i = 1 mod 2N, p_i < 2^62). A ciphertext at *level* L' (the first L' primes) is a
  ``numpy.uint64`` array of shape ``(..., 2, L', N)``: component 0 is ``c0 = b``, component 1 is
  ``c1 = a``; residue ``[k, i, j]`` is coefficient j of component k mod p_i, in ``[0, p_i)``.
* Secret s: ternary (:meth:`PRG.ternary`), error e: centred binomial ``PRG.cbd(eta)``.
  Decryption value v = c0 + c1 * s (mod Q').
* Encoding of m in Z_{2^l}: ``round(Q' m / 2^l) mod Q'`` = ``(Q' m + 2^(l-1)) >> l``; decoding of
  v in [0, Q'): ``round(2^l v / Q') mod 2^l`` (Q' odd: no ties). Noise: ``E = v - Q' m / 2^l``
  (a rational; decoding is correct iff |E| < Q' / 2^(l+1)).
* Symmetric encryption of m (shape ``(n, N)``) with seed σ: ``a_t`` mod p_i =
  ``PRG(σ).uniform_mod(f"he.a/{t}/{i}", N, p_i)`` (AES-CTR + exact rejection, see ``prg``),
  ``e_t = prg.cbd(label/e, eta)``, ``c0 = -a s + e + encode(m)``, ``c1 = a``.
* Public key: ``(p0, p1) = (-a s + e, a)`` at the top level; a public key restricted to the first
  L' primes is a public key at level L'. Public-key encryption: ``u`` ternary, ``e1, e2`` cbd,
  ``c0 = p0 u + e2 + encode(m)``, ``c1 = p1 u + e1``.
* Scalar product by c in Z_{2^l}: multiply by the centred lift of c (in [-2^(l-1), 2^(l-1))).
  Plaintext polynomial product: the centred lift of every coefficient, negacyclic product.
* Modulus switching drops primes one at a time, the last first:
  ``c' = round(c / p_last)`` computed exactly on the integer c in [0, Q') (p odd: no ties).
* Flooding: add a public-key encryption of 0 at the ciphertext's level whose ``e2`` is uniform
  on [-F, F], drawn as ``prg.uniform_signed(label/e2, F)`` when ``F < 2^62`` and as
  ``prg.uniform_signed_wide(label/e2, F)`` otherwise (offset form ``(lo, hi)``, ``e2 mod p_i =
  (hi 2^64 + lo - F) mod p_i``); ``u``, ``e1`` as in public-key encryption.
* Automorphism sigma_g (g odd in (0, 2N)) of a ciphertext: coefficient j of both components moves
  to ``j g mod 2N``, negated when that is >= N.
* Galois keys for elements ``gs`` (key owner, seeded): digit i of key t is
  ``(c0, a) = (-a s + e + [j = i] sigma_g(s) mod p_j, a)`` with ``a = expand_a(seed)[t L + i]``
  and ``e = prg.cbd(label/e, eta)`` of shape (G, L, N) (the RNS gadget: the CRT idempotents).
  Key switching: digits ``d_i`` = the residue of c1 mod p_i centred to ``(-p_i/2, p_i/2)``,
  ``c0' = c0 + sum_i d_i b_i``, ``c1' = sum_i d_i a_i`` (first L' digits and primes at level L').
* Packing of D = 2^k ciphertexts (``pack_trace``): multiply by ``D^-1 mod Q'``, then for
  s = D/2, ..., 1 replace input t < s by ``(E + X^s O) + KS(sigma_g(E - X^s O))``, E = input t,
  O = input t + s, g = N/s + 1; input i's coefficients at the multiples of D land at ``+ i``.

Security: log2 Q <= the bound of the Homomorphic Encryption Security Standard (Albrecht et al.,
homomorphicencryption.org, November 2018, Table 1, classical 128-bit, ternary secret, error
sigma ~ 3.2): N = 1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881 bits.
Our error is CBD(eta = 21), sigma = sqrt(10.5) = 3.24 >= 3.2, bounded by 21; validate() requires
eta >= 21 (sigma^2 = eta / 2 >= 3.2^2) for every set that is not insecure_test_only.

Noise analysis: :func:`analyze` follows a *workload* (a tuple of operations) with worst-case bounds.
Every distribution used is bounded (ternary, CBD, uniform), so a worst-case bound that is below
Q'/2^(l+1) makes the decryption failure probability exactly 0 (<= 2^-40 as required).

Flooding is sized for the *whole query* (docs/rlwe.md): a set declares ``stat_bits`` = 40 and
``max_flooded`` = M, the most flooded coefficients its key owner decrypts in one query under
this set and every other set sharing the budget. Before flooding the phase is
``Q' m / 2^l + E`` with ``|E| <= B`` (the analysed bound); the flooding encryption adds
``e u + s e1 + e2`` and the mask's trivial encryption a rounding ``|eps| <= 1/2``. The key owner
knows s and the key's error e, so e2 must hide ``e u + s e1`` too (then ``c1 = c1' + p1 u + e1``
is an RLWE sample with secret u: pseudorandom). A simulator that knows only the masked m outputs
``round(Q' m / 2^l) + e2'`` and a fresh ``(u', e1')``; the two integer phases differ by a shift D
with ``|D| <= S = floor(B + 1/2 + 2 N eta + 1/2)`` (``||e u||, ||s e1|| <= N eta`` for ternary u, s
and CBD(eta) e, e1), and e2 uniform on [-F, F] makes them ``|D| / (2F + 1)`` apart.
``F = ceil((2^stat_bits M S - 1) / 2)`` makes that ``<= 2^-stat_bits / M``
per coefficient; every coefficient has its own e2, so a hybrid over the at most M coefficients
of a query (data noise chosen adaptively or not) puts the key owner's view of the whole query
within ``2^-stat_bits`` of the simulation. The claim is per query: q queries are within
``q 2^-stat_bits``.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from .errors import DecodeError, ParameterError, ShapeError
from .messages import FixedBytes, Message, RingField, packed_size
from .prg import PRG, SEED_BYTES, WIDE_BOUND_LIMIT

__all__ = [
    "HEParams", "SecretKey", "SECURITY_BOUND_128", "HE_PARAMS", "register_he", "get_he",
    "is_prime", "ntt_primes", "he_of", "ciphertext_level", "NoiseReport", "analyze", "cop_workload",
    "matmul_workload", "RnsField", "SeededCiphertexts", "Ciphertexts", "PublicKeyMsg",
    "expand_a", "modulus", "ciphertext_bytes", "seeded_bytes", "TINY16", "TINY32", "COP64",
    "MATMUL64", "COP40", "A_LABEL", "draw_secret", "draw_error", "draw_uniform", "draw_flood",
    "draw_flood_wide", "WIDE_FLOOD", "BERT_BASE_FLOODED", "galois_element", "pack_elements",
    "ks_noise_bound", "PACK_MAX_LEVELS", "galois_key_count", "galois_seeded_shape", "galois_key_at",
    "pack_trace_shape",
]

#: [HES18] Table 1: max log2(Q) for 128-bit classical security, uniform ternary secret.
SECURITY_BOUND_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}

#: Flooding widths F >= WIDE_FLOOD are drawn with ``PRG.uniform_signed_wide`` (F < 2^127).
WIDE_FLOOD = 1 << 62

#: Label of the seeded uniform part: ``A_LABEL.format(t=ciphertext index, i=prime index)``.
A_LABEL = "he.a/{t}/{i}"

_MR_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)  # deterministic for n < 3.3e24


def is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin for n < 3.3 * 10^24 (all our primes are < 2^62)."""
    if n < 2:
        return False
    for b in _MR_BASES:
        if n % b == 0:
            return n == b
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for b in _MR_BASES:
        x = pow(b, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def ntt_primes(bits: int, n: int, count: int, skip: tuple = ()) -> tuple[int, ...]:
    """The ``count`` largest primes p < 2^bits with p = 1 mod 2n, not in ``skip``.

    This is the derivation of every prime list below (each is a call of this function).
    """
    m = 2 * n
    p = ((1 << bits) - 1) // m * m + 1
    out: list[int] = []
    while len(out) < count and p > m:
        if p < (1 << bits) and p not in skip and is_prime(p):
            out.append(p)
        p -= m
    return tuple(out)


@dataclass(frozen=True)
class HEParams:
    """One RLWE parameter set.

    Attributes:
        name: registry name.
        n: ring degree N (power of two).
        primes: RNS primes p_0..p_{L-1} (p_i = 1 mod 2N, prime, < 2^62); the *last* are dropped
            first by modulus switching.
        plain_bits: l, plaintext modulus 2^l (must equal the ring the protocol runs in).
        eta: error distribution CBD(eta) (|e| <= eta, variance eta/2).
        response_level: number of primes kept in protocol responses (after modulus switching).
        flood_bound: F; flooding error uniform on [-F, F] (0: the set does no flooding; F < 2^127,
            drawn with the wide sampler when F >= 2^62).
        stat_bits: statistical budget of flooding: the key owner's view of one query is within
            2^-stat_bits of a simulation (40).
        max_flooded: M, the most flooded coefficients the key owner decrypts per query, under
            this set and every set sharing the query budget (every coefficient of every flooded
            ciphertext counts, used or not); each is then within 2^-stat_bits / M. The default 1
            makes the budget per coefficient (test sets only).
        workloads: ``((name, ops), ...)``: the worst-case operation sequences the set is sized
            for (see :func:`analyze`); validate() runs each.
        insecure_test_only: exempt from the security bound (tiny sets for tests; never attached
            to a preset).
    """

    name: str
    n: int
    primes: tuple
    plain_bits: int
    eta: int = 21
    response_level: int = 0
    flood_bound: int = 0
    stat_bits: int = 40
    max_flooded: int = 1
    workloads: tuple = field(default=())
    insecure_test_only: bool = False

    # -- derived -------------------------------------------------------------------------------
    @property
    def levels(self) -> int:
        return len(self.primes)

    def q(self, level: int | None = None) -> int:
        """Q' = product of the first ``level`` primes (all by default)."""
        return modulus(self.primes[: self.levels if level is None else level])

    def log_q(self, level: int | None = None) -> float:
        return math.log2(self.q(level))

    def prime_bits(self) -> tuple[int, ...]:
        return tuple(p.bit_length() for p in self.primes)

    def describe(self) -> dict:
        return {"name": self.name, "n": self.n, "primes": list(self.primes), "l": self.plain_bits,
                "log_q": round(self.log_q(), 2), "response_level": self.response_level,
                "flood_bound_log2": round(math.log2(self.flood_bound), 2) if self.flood_bound else None,
                "stat_bits": self.stat_bits, "max_flooded": self.max_flooded}

    # -- validation ----------------------------------------------------------------------------
    def validate(self) -> "HEParams":
        """Refuse insecure or inconsistent sets with a :class:`ParameterError` that says why."""
        n = self.n
        if not isinstance(n, int) or n < 4 or n & (n - 1):
            raise ParameterError(f"HE set {self.name!r}: ring degree N must be a power of two >= 4, got {n!r}")
        if not self.primes:
            raise ParameterError(f"HE set {self.name!r}: needs at least one prime")
        if len(set(self.primes)) != len(self.primes):
            raise ParameterError(f"HE set {self.name!r}: RNS primes must be distinct")
        for p in self.primes:
            if not isinstance(p, int) or not 2 * n < p < 1 << 62:
                raise ParameterError(f"HE set {self.name!r}: prime {p!r} must be an int in (2N, 2^62)")
            if p % (2 * n) != 1:
                raise ParameterError(f"HE set {self.name!r}: {p} is not 1 mod 2N = {2 * n} (not NTT-friendly)")
            if not is_prime(p):
                raise ParameterError(f"HE set {self.name!r}: {p} is not prime")
        if not isinstance(self.plain_bits, int) or not 2 <= self.plain_bits <= 64:
            raise ParameterError(f"HE set {self.name!r}: plaintext bits l must be in [2, 64]")
        if not 1 <= self.eta <= 32:
            raise ParameterError(f"HE set {self.name!r}: eta must be in [1, 32]")
        if not 0 <= self.response_level <= self.levels:
            raise ParameterError(f"HE set {self.name!r}: response level {self.response_level} not in [0, {self.levels}]")
        if not isinstance(self.flood_bound, int) or not 0 <= self.flood_bound < WIDE_BOUND_LIMIT:
            raise ParameterError(f"HE set {self.name!r}: flood bound must be an int in [0, 2^127)")
        if not isinstance(self.max_flooded, int) or self.max_flooded < 1:
            raise ParameterError(f"HE set {self.name!r}: max_flooded (M) must be an int >= 1")
        if not isinstance(self.stat_bits, int) or not 1 <= self.stat_bits <= 128:
            raise ParameterError(f"HE set {self.name!r}: stat_bits must be in [1, 128]")
        logq = self.log_q()
        if not self.insecure_test_only:
            bound = SECURITY_BOUND_128.get(n)
            if bound is None or n < 2048:
                raise ParameterError(f"HE set {self.name!r}: N = {n} has no 128-bit parameters in the HE standard")
            if logq > bound:
                raise ParameterError(
                    f"HE set {self.name!r}: log2 Q = {logq:.1f} exceeds the 128-bit bound {bound} for "
                    f"N = {n} (HE security standard 2018, ternary secret)")
            if self.eta < 21:
                raise ParameterError(f"HE set {self.name!r}: error CBD({self.eta}) is narrower than sigma 3.2")
        for wname, ops in self.workloads:
            rep = analyze(self, ops)
            if not rep.flooding_ok:
                raise ParameterError(
                    f"HE set {self.name!r}, workload {wname!r}: flooding width 2^{math.log2(max(self.flood_bound, 1)):.1f} "
                    f"< 2^{self.stat_bits} x M 2^{math.log2(self.max_flooded):.1f} x shift 2^{rep.shift_log2:.1f} / 2")
            if not rep.correct:
                raise ParameterError(
                    f"HE set {self.name!r}, workload {wname!r}: noise 2^{rep.total_log2:.1f} >= Q'/2^(l+1) = "
                    f"2^{rep.capacity_log2:.1f}: decryption may fail")
        return self


def modulus(primes) -> int:
    q = 1
    for p in primes:
        q *= int(p)
    return q


def ciphertext_level(he: HEParams, ct, comps: bool = True) -> int:
    """The level L' of a ciphertext tensor ``(..., 2, L', N)`` (``comps=False``: ``(..., L', N)``),
    after checking dtype and shape against ``he``; both implementations validate with this."""
    a = np.asarray(ct)
    if a.dtype != np.uint64 or a.ndim < (3 if comps else 2) or a.shape[-1] != he.n \
            or not 1 <= a.shape[-2] <= he.levels or (comps and a.shape[-3] != 2):
        raise ShapeError(f"expected uint64 (..., {'2, ' if comps else ''}L<={he.levels}, {he.n}), got {a.dtype}{a.shape}")
    return a.shape[-2]


def galois_seeded_shape(he: HEParams, c0) -> np.ndarray:
    """``c0`` of seeded Galois keys ``(G, L, L, N)`` (digit, prime) after checking its shape
    against ``he``; both implementations' ``expand_galois`` validate with this."""
    c0 = np.asarray(c0)
    if c0.ndim != 4 or c0.shape[1:3] != (he.levels, he.levels) or c0.shape[3] != he.n:
        raise ShapeError(f"seeded Galois keys must be (G, {he.levels}, {he.levels}, {he.n}), got {c0.shape}")
    return c0


def galois_key_at(he: HEParams, key, level: int) -> np.ndarray:
    """A Galois key ``(L, 2, L, N)`` restricted to the first ``level`` digits and primes (the
    gadget's CRT idempotents restrict), after checking dtype and shape against ``he``."""
    key = np.asarray(key)
    if key.dtype != np.uint64 or key.shape != (he.levels, 2, he.levels, he.n):
        raise ShapeError(f"a Galois key is uint64 ({he.levels}, 2, {he.levels}, {he.n}), got {key.dtype}{key.shape}")
    return key[:level, :, :level]


def pack_trace_shape(he: HEParams, cts, keys) -> tuple[int, int]:
    """``(level, D)`` of a ``pack_trace`` call on cts (B, D, 2, L', N) with ``keys`` (>= log2 D
    Galois keys), after checking both; both implementations validate with this."""
    cts = np.asarray(cts)
    if cts.ndim != 5:
        raise ShapeError(f"pack_trace: cts (B, D, 2, L, N), got {cts.shape}")
    level = ciphertext_level(he, cts)
    D = cts.shape[1]
    if D < 1 or D & (D - 1) or D > he.n:
        raise ShapeError(f"pack_trace: D = {D} must be a power of two <= N")
    keys = np.asarray(keys)
    k = D.bit_length() - 1
    if keys.ndim != 5 or keys.shape[0] < k:
        raise ShapeError(f"pack_trace: {k} Galois keys needed, got {keys.shape}")
    return level, D


def he_of(params) -> HEParams:
    """The :class:`HEParams` of ``params`` (a ParamSet with ``he`` or an HEParams itself)."""
    if isinstance(params, HEParams):
        return params
    he = getattr(params, "he", None)
    if not isinstance(he, HEParams):
        raise ParameterError("these parameters carry no RLWE (he) parameter set")
    return he


@dataclass(frozen=True)
class SecretKey:
    """An RLWE secret key: ``s`` int64 array (N,), ternary. Never serialised."""

    s: np.ndarray

    def __repr__(self):
        return "SecretKey(<secret>)"


# -- noise analysis ---------------------------------------------------------------------------
@dataclass(frozen=True)
class NoiseReport:
    """Result of :func:`analyze` (bounds per coefficient, in absolute value, worst case).

    ``data``: data-dependent noise before flooding; ``total``: bound at decryption;
    ``capacity``: Q'/2^(l+1); ``failure_log2``: log2 of the decryption-failure probability
    (``-inf``: impossible, the bound is a worst case); ``shift``: S = floor(B + 1/2 + 2 N eta + 1/2),
    the largest integer shift between the real and the simulated phase (B: the bound before
    flooding; the mask's rounding; the key owner's view e u + s e1 of the flooding randomness;
    the simulator's rounding); ``sd_log2``: log2 of the statistical distance per flooded coefficient,
    S / (2F + 1); ``sd_query_log2``: per query, M S / (2F + 1) (M = ``max_flooded``).
    """

    level: int
    data: Fraction
    total: Fraction
    capacity: Fraction
    flood_bound: int
    required_flood: int
    flooded: bool
    stat_bits: int
    shift: int = 0
    max_flooded: int = 1

    @property
    def data_log2(self) -> float:
        return math.log2(self.data) if self.data > 0 else float("-inf")

    @property
    def total_log2(self) -> float:
        return math.log2(self.total) if self.total > 0 else float("-inf")

    @property
    def capacity_log2(self) -> float:
        return math.log2(self.capacity)

    @property
    def margin_bits(self) -> float:
        return self.capacity_log2 - self.total_log2

    @property
    def correct(self) -> bool:
        return self.total < self.capacity

    @property
    def failure_log2(self) -> float:
        return float("-inf") if self.correct else 0.0

    @property
    def flooding_ok(self) -> bool:
        return (not self.flooded) or self.flood_bound >= self.required_flood

    @property
    def shift_log2(self) -> float:
        return math.log2(self.shift) if self.shift > 0 else float("-inf")

    @property
    def sd_log2(self) -> float:
        """log2 of the statistical distance per flooded coefficient (S / (2F + 1))."""
        if not self.flooded or self.shift == 0:
            return float("-inf")
        return math.log2(Fraction(self.shift, 2 * self.flood_bound + 1))

    @property
    def sd_query_log2(self) -> float:
        """log2 of the statistical distance of a whole query (M S / (2F + 1))."""
        if not self.flooded or self.shift == 0:
            return float("-inf")
        return math.log2(Fraction(self.max_flooded * self.shift, 2 * self.flood_bound + 1))

    def as_dict(self) -> dict:
        return {"level": self.level, "data_log2": round(self.data_log2, 2), "total_log2": round(self.total_log2, 2),
                "capacity_log2": round(self.capacity_log2, 2), "margin_bits": round(self.margin_bits, 2),
                "flood_log2": round(math.log2(self.flood_bound), 2) if self.flood_bound else None,
                "required_flood_log2": round(math.log2(self.required_flood), 2) if self.required_flood else None,
                "shift_log2": round(self.shift_log2, 2), "max_flooded_log2": round(math.log2(self.max_flooded), 2),
                "sd_log2": round(self.sd_log2, 2), "sd_query_log2": round(self.sd_query_log2, 2),
                "failure_log2": self.failure_log2}


def analyze(he: HEParams, ops, flood_bound: int | None = None) -> NoiseReport:
    """Worst-case noise of a workload: the sequence ``ops`` of tuples

    * ``("fresh_sk",)`` / ``("fresh_pk",)``: a fresh symmetric / public-key encryption at the top
      level (noise eta + 1/2 / 2 N eta + eta + 1/2; the 1/2 is the encoding's rounding);
    * ``("mac", k, b)``: sum of k products by private scalars, centred lifts of b-bit values
      (|c| <= 2^(b-1)); all noise becomes data-dependent;
    * ``("add", n)``: sum of n ciphertexts of this bound; ``("monomial",)``: no change;
    * ``("pack", k)``: PackLWEs-style packing of 2^k ciphertexts whose useful coefficients lie on a
      stride-2^k grid (pre-multiplication by 2^-k mod Q', k levels of
      ``(E + X^s O) + sigma_g(E - X^s O)`` with a key switch after every automorphism, at the
      current level): the data noise is unchanged (the trace's 2^k cancels exactly) and
      ``(2^k - 1) ks_noise_bound(level)`` is added, data-dependent (the key switch digits depend on
      the ciphertext, the key's errors are the key owner's);
    * ``("plain_mul", b, t)``: product by a private plaintext polynomial with t non-zero b-bit
      coefficients (centred): noise times t 2^(b-1), data-dependent;
    * ``("mod_switch", level)``: drop primes down to ``level``; per dropped p the noise becomes
      E/p + (1 + N)/2 (rounding of c0 and of c1 s, ||s||_1 <= N), the rounding part data-dependent;
    * ``("flood",)``: add a public-key encryption of 0 with e2 uniform on [-F, F] and subtract the
      mask's trivial encryption: + 2 N eta + F + 1/2;
      requires ``2F + 1 >= 2^stat_bits M S`` with S = floor(B + 2 N eta + 1), B the bound before
      flooding
      (the whole query's M coefficients are then within 2^-stat_bits; module docstring), i.e.
      ``F >= required_flood = floor(2^stat_bits M S / 2)``.

    Runs on: either party (public computation). Returns: :class:`NoiseReport`.
    Reference: [BFV12, §4], [CHEETAH22, §2.4 and App. A], [BUMBLEBEE25, §3].
    """
    F = he.flood_bound if flood_bound is None else int(flood_bound)
    n, eta, level = he.n, he.eta, he.levels
    data, indep = Fraction(0), Fraction(0)
    flooded, req, shift = False, 0, 0
    half = Fraction(1, 2)
    for op in ops:
        kind = op[0]
        if kind == "fresh_sk":
            indep += eta + half
        elif kind == "fresh_pk":
            indep += 2 * n * eta + eta + half
        elif kind == "mac":
            k, b = int(op[1]), int(op[2])
            data, indep = k * Fraction(1 << (b - 1)) * (data + indep), Fraction(0)
        elif kind == "add":
            data, indep = data * int(op[1]), indep * int(op[1])
        elif kind == "monomial":
            pass
        elif kind == "pack":
            k = int(op[1])
            if not 0 <= k or (1 << k) > n:
                raise ParameterError(f"pack over 2^{k} ciphertexts with N = {n}")
            # the trace's factor 2^k cancels the pre-multiplication by 2^-k mod Q' exactly: the data
            # noise of every input lands unchanged on its slots; each of the (2^k - 1) combinations
            # adds one key switch's noise, and the ones below it on a coefficient are disjoint
            # (docs/rlwe.md): at most (2^k - 1) key-switching bounds per coefficient.
            data += ((1 << k) - 1) * ks_noise_bound(he, level)
        elif kind == "plain_mul":
            b, t = int(op[1]), int(op[2])
            data, indep = t * Fraction(1 << (b - 1)) * (data + indep), Fraction(0)
        elif kind == "mod_switch":
            target = int(op[1])
            if not 1 <= target <= level:
                raise ParameterError(f"mod_switch to level {target} from level {level}")
            for p in reversed(he.primes[target:level]):
                data, indep = data / p + Fraction(n + 1, 2), indep / p
            level = target
        elif kind == "flood":
            flooded = True
            # S bounds the integer shift between the real and the simulated phase: the data
            # noise B, the mask's encoding rounding (1/2), the key owner's view of the fresh
            # randomness e u + s e1 (||e u||, ||s e1|| <= N eta each) and the simulator's rounding.
            shift = math.floor(data + indep + half + 2 * n * eta + half)
            req = (shift * he.max_flooded << he.stat_bits) // 2  # = ceil((2^stat M S - 1) / 2)
            indep += 2 * n * eta + F + half  # the flooding encryption and the mask's rounding
        else:
            raise ParameterError(f"unknown noise-analysis operation {op!r}")
    cap = Fraction(he.q(level), 1 << (he.plain_bits + 1))
    return NoiseReport(level, data, data + indep, cap, F, req if flooded else 0, flooded, he.stat_bits,
                       shift, he.max_flooded)


def cop_workload(k: int, pack: int, scalar_bits: int, response_level: int) -> tuple:
    """The client-side outer product [NIMBUS24, §3]: fresh seeded ciphertexts, a k-term scalar
    multiply-accumulate with l-bit client shares, right-shift packing of ``pack`` results
    (monomials + additions), modulus switch to the response level, flooding."""
    return (("fresh_sk",), ("mac", k, scalar_bits), ("monomial",), ("add", pack),
            ("mod_switch", response_level), ("flood",))


def matmul_workload(n: int, terms: int, products: int, bits: int, response_level: int, *,
                    fresh: str = "pk", pack: int = 0) -> tuple:
    """A cross term of a product of two shared matrices (BumbleBee-style [BUMBLEBEE25, §4]):
    the other party's fresh ciphertext (``fresh="pk"``: public-key, ``"sk"``: the key owner's
    symmetric encryption of its own share, as in Cheetah/BumbleBee) times my share as a plaintext
    polynomial with ``terms`` non-zero coefficients, ``products`` such products summed, then
    (``pack`` = k > 0) output packing of 2^k such results at the full level (``("pack", k)``),
    modulus switch, flooding."""
    if fresh not in ("pk", "sk"):
        raise ParameterError(f"fresh must be 'pk' or 'sk', got {fresh!r}")
    packing = (("pack", int(pack)),) if pack else ()
    return ((f"fresh_{fresh}",), ("plain_mul", bits, terms), ("add", products)) + packing + (
        ("mod_switch", response_level), ("flood",))


# -- automorphisms and key switching (output packing) ------------------------------------------
#: The most packing levels any plan uses: strides (and packing factors) up to 2^PACK_MAX_LEVELS.
#: It fixes the Galois keys a session carries (one per level; :func:`pack_elements`). 2^5 = 32
#: covers every stride the cost model picks for BERT shapes (docs/linear.md).
PACK_MAX_LEVELS = 5


def galois_element(n: int, s: int) -> int:
    """The Galois element that negates X^s and fixes X^(2s) (s a power of two < N): g = N/s + 1.

    derivation: (X^s)^(N/s + 1) = X^N X^s = -X^s and (X^(2s))^(N/s + 1) = X^(2N) X^(2s) = X^(2s)."""
    if s < 1 or s & (s - 1) or s >= n:
        raise ParameterError(f"galois_element: s = {s} must be a power of two < N = {n}")
    return n // s + 1


def galois_key_count(he: "HEParams") -> int:
    """Packing levels (= Galois keys) of the set: min(log2 N, PACK_MAX_LEVELS)."""
    return min(he.n.bit_length() - 1, PACK_MAX_LEVELS)


def pack_elements(n: int, levels: int) -> tuple[int, ...]:
    """The Galois elements of a packing tree of ``levels`` levels, key t for s = 2^t:
    ``(N + 1, N/2 + 1, ..., N/2^(levels-1) + 1)``; their (1 + sigma) product is the trace onto
    the stride-2^levels grid."""
    return tuple(galois_element(n, 1 << t) for t in range(levels))


def ks_noise_bound(he: "HEParams", level: int) -> Fraction:
    """Worst-case noise of one key switch at ``level`` with the RNS gadget (one digit per prime,
    digits centred in (-p_i/2, p_i/2)): ``|sum_i d_i e_i| <= N eta sum_i (p_i - 1)/2``."""
    return Fraction(he.n * he.eta * sum(p - 1 for p in he.primes[:level]), 2)


# -- registry ---------------------------------------------------------------------------------
HE_PARAMS: dict[str, HEParams] = {}


def register_he(he: HEParams) -> HEParams:
    he.validate()
    if he.name in HE_PARAMS and HE_PARAMS[he.name] != he:
        raise ParameterError(f"HE set {he.name!r} registered twice with different values")
    HE_PARAMS[he.name] = he
    return he


def get_he(name: str) -> HEParams:
    try:
        return HE_PARAMS[name]
    except KeyError:
        raise ParameterError(f"unknown HE set {name!r}; known: {', '.join(sorted(HE_PARAMS))}") from None


def _sized(name, n, primes, l, response_level, workloads, **kw) -> HEParams:
    """Build a set whose flooding width is the smallest the workloads allow
    (``floor(2^stat_bits M S / 2)``, see :func:`analyze`)."""
    proto = HEParams(name, n, tuple(primes), l, response_level=response_level, workloads=(), **kw)
    need = max([analyze(proto, ops).required_flood for _, ops in workloads] + [0])
    return HEParams(name, n, tuple(primes), l, response_level=response_level, flood_bound=need,
                    workloads=tuple(workloads), **kw)


# Tiny sets (Hypothesis, reference speed). INSECURE: N = 16/32; never attach to a preset.
# derivation: ntt_primes(30, 16, 3) / ntt_primes(30, 32, 2) + ntt_primes(24, 32, 1)
TINY16 = register_he(_sized(
    "tiny16-l16", 16, (1073741441, 1073740609, 1073739937), 16, 2,
    (("cop", cop_workload(8, 2, 16, 2)),), eta=2, stat_bits=12, insecure_test_only=True))
TINY32 = register_he(HEParams(
    "tiny32-l12", 32, (1073741441, 1073740609, 16777153), 12, eta=3, response_level=2, flood_bound=1 << 20,
    insecure_test_only=True))

# Flooded coefficients per query (M), BERT-base, 128 tokens, N = 8192: ONE budget for everything
# the server decrypts in a query, under every set it uses (COP and attention products), so that
# each flooded coefficient is within 2^-40 / M and the whole query within 2^-40. Every coefficient
# of every response ciphertext counts (the key owner decrypts all N, used or not).
#   COP (nimbus.spec.linear.cop_layout): 12 layers x (36 qkv + 12 o + 48 h1 + 12 h2) + 12 for the
#     embedding lookup = 1,308 response ciphertexts;
#   attention products (nimbus.spec.linear.matmul_plan, both cross terms, the server decrypts):
#     12 layers x 12 heads x (8 + 8 for Q K^T, 8 + 8 for P V) = 4,608 response ciphertexts;
#   in all 5,916 ciphertexts = 48,463,872 = 2^25.53 coefficients. M = 2^26 (8,192 ciphertexts):
#   38% headroom (pooler and classifier heads, other layouts); recounted in
#   conformance/test_rlwe_params.py with the protocol's own layouts.
BERT_BASE_FLOODED = 1 << 26

# COP, l = 64 (the paper's linear ring), BERT-base worst case: k = 3072 terms (Linear_h2), up to
# 16 packed results per ciphertext (d_out >= 512 at N = 8192). The flooding shift S counts the
# data noise, the mask's rounding, the key owner's view of the flooding randomness e u + s e1
# (<= 2 N eta = 2^18.39) and the simulator's rounding (analyze, "flood"), so F = 2^40 M S / 2
# ~ 2^84.7 and Q' must exceed 2^(65 + 84.7): three kept 51-bit primes (Q' ~ 2^153, margin 3.26
# bits); two 32-bit primes are dropped before flooding (they absorb the 2^83 MAC noise down to
# 2^19, S = 876,735 = 2^19.74). log Q = 217.0. (Keeping a fourth prime instead, 48x3 + 37 kept,
# costs 181 response bits against 153.)
# derivation: ntt_primes(51, 8192, 3) + ntt_primes(32, 8192, 2)
COP64 = register_he(_sized(
    "cop-n8192-l64", 8192,
    (2251799813554177, 2251799813472257, 2251799813406721, 4294475777, 4293918721), 64, 3,
    (("cop-bert-base", cop_workload(3072, 16, 64, 3)),), max_flooded=BERT_BASE_FLOODED))

# Products of two shared matrices (Q K^T, P V), l = 64: the key owner's fresh *symmetric*
# ciphertext of its share (a public-key one adds 2 N eta to the data noise) times the other share
# as a plaintext polynomial with up to N non-zero 64-bit coefficients, 2 products summed, then
# output packing of up to 2^PACK_MAX_LEVELS = 32 results at the FULL level (31 key switches'
# noise, 31 x 2^68.97 = 2^73.9, next to the 2^81.4 of the products: both divided by the two
# dropped 32-bit primes before flooding); same primes as COP64 (the response modulus is set by F,
# not by the workload), F = 2^84.0; same query budget M.
# derivation: ntt_primes(51, 8192, 3) + ntt_primes(32, 8192, 2)
MATMUL64 = register_he(_sized(
    "matmul-n8192-l64", 8192,
    (2251799813554177, 2251799813472257, 2251799813406721, 4294475777, 4293918721), 64, 3,
    (("matmul-bert-base", matmul_workload(8192, 8192, 2, 64, 3, fresh="sk", pack=PACK_MAX_LEVELS)),),
    max_flooded=BERT_BASE_FLOODED))

# Trade-off (docs/rlwe.md): the linear layers in Z_2^40 instead of Z_2^64: response modulus three
# 42-bit primes (Q' ~ 2^126, F = 2^83.41, margin 1.59 bits), one 50-bit prime dropped; log Q = 176.
# derivation: ntt_primes(42, 8192, 3) + ntt_primes(50, 8192, 1)
COP40 = register_he(_sized(
    "cop-n8192-l40", 8192,
    (4398046150657, 4398045708289, 4398045511681, 1125899906826241), 40, 3,
    (("cop-bert-base", cop_workload(3072, 16, 40, 3)),), max_flooded=BERT_BASE_FLOODED))


# -- seeded uniform part ----------------------------------------------------------------------
def expand_a(he: HEParams, seed: bytes, count: int, level: int | None = None) -> np.ndarray:
    """The uniform parts a_t, t < count, of a seeded batch: shape (count, L', N), normative.

    ``a[t, i] = PRG(seed).uniform_mod(A_LABEL.format(t=t, i=i), N, p_i)``.
    """
    if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_BYTES:
        raise ShapeError(f"a ciphertext seed is {SEED_BYTES} bytes")
    level = he.levels if level is None else level
    g = PRG(bytes(seed))
    out = np.empty((count, level, he.n), dtype=np.uint64)
    for t in range(count):
        for i in range(level):
            out[t, i] = g.uniform_mod(A_LABEL.format(t=t, i=i), he.n, he.primes[i])
    return out


# -- normative sampling (both implementations call these) ------------------------------------
def draw_secret(he: HEParams, prg: PRG, label: str) -> SecretKey:
    """s = ``prg.ternary(label + "/s", N)``."""
    return SecretKey(prg.ternary(label + "/s", he.n).astype(np.int64))


def draw_error(he: HEParams, prg: PRG, label: str, batch: tuple = ()) -> np.ndarray:
    """Errors CBD(eta), int64 of shape ``batch + (N,)``."""
    return prg.cbd(label, tuple(batch) + (he.n,), he.eta)


def draw_uniform(he: HEParams, prg: PRG, label: str, level: int) -> np.ndarray:
    """Uniform residues (level, N): limb i = ``prg.uniform_mod(label/i, N, p_i)``."""
    return np.stack([prg.uniform_mod(f"{label}/{i}", he.n, he.primes[i]) for i in range(level)])


def draw_flood(he: HEParams, prg: PRG, label: str, batch: tuple, bound: int) -> np.ndarray:
    """Flooding errors uniform on [-bound, bound] for bound < 2^62 (:data:`WIDE_FLOOD`), int64 of
    shape ``batch + (N,)``: ``prg.uniform_signed(label, ..., bound)``."""
    if int(bound) >= WIDE_FLOOD:
        raise ParameterError(f"flooding width {bound} >= 2^62: use draw_flood_wide")
    return prg.uniform_signed(label, tuple(batch) + (he.n,), bound)


def draw_flood_wide(he: HEParams, prg: PRG, label: str, batch: tuple, bound: int) -> tuple:
    """Flooding errors uniform on [-bound, bound] for 2^62 <= bound < 2^127, in offset form:
    ``(lo, hi)`` uint64 of shape ``batch + (N,)`` with e = lo + 2^64 hi - bound
    (``prg.uniform_signed_wide``); e mod p = ``prg.wide_residues(lo, hi, bound, p)``."""
    if int(bound) < WIDE_FLOOD:
        raise ParameterError(f"flooding width {bound} < 2^62: use draw_flood")
    return prg.uniform_signed_wide(label, tuple(batch) + (he.n,), bound)


# -- messages ---------------------------------------------------------------------------------
class RnsField(RingField):
    """An array ``(..., L', N)`` of RNS residues; limb i packed with width bitlen(p_i).

    Wire: ``u8 ndim || u32 dims || limb_0 || ... || limb_{L'-1}``, limb i = the elements
    ``arr[..., i, :]`` in C order, bit-packed at ``bitlen(p_i)`` bits, zero-padded to a byte.
    Decoding rejects residues >= p_i (canonical form).
    """

    def __init__(self):
        super().__init__(64)

    def _limbs(self, shape, params):
        he = he_of(params)
        if len(shape) < 2 or shape[-1] != he.n or not 1 <= shape[-2] <= he.levels:
            raise ShapeError(f"RNS array shape {shape} does not match N = {he.n}, L <= {he.levels}")
        return he, shape[-2], int(np.prod(shape[:-2], dtype=np.int64)) * he.n

    def check(self, name, value, params):
        arr = np.asarray(value)
        if arr.dtype != np.uint64:
            raise ShapeError(f"field {name!r} must be a uint64 array, got {arr.dtype}")
        he, L, _ = self._limbs(arr.shape, params)
        lim = np.array(he.primes[:L], dtype=np.uint64)[:, None]
        if arr.size and np.any(arr.reshape(-1, L, he.n) >= lim):
            raise ShapeError(f"field {name!r} has a residue >= its prime")
        return arr

    def size(self, shape, params) -> int:
        he, L, per = self._limbs(tuple(shape), params)
        return 1 + 4 * len(shape) + sum(packed_size(per, p.bit_length()) for p in he.primes[:L])

    def encode(self, arr, params, out, packer):
        he, L, _ = self._limbs(arr.shape, params)
        out.append(struct.pack(f"<B{arr.ndim}I", arr.ndim, *arr.shape))
        for i in range(L):
            out.append(packer(np.ascontiguousarray(arr[..., i, :]).reshape(-1), he.primes[i].bit_length()))

    def decode(self, r, params, unpacker):
        ndim = r.u8()
        if not 2 <= ndim <= 8:
            raise DecodeError(f"RNS array with {ndim} dimensions")
        shape = tuple(r.u32() for _ in range(ndim))
        try:
            he, L, per = self._limbs(shape, params)
        except ShapeError as e:
            raise DecodeError(str(e)) from None
        limbs = []
        for i in range(L):
            b = he.primes[i].bit_length()
            payload = r.take(packed_size(per, b))
            v = unpacker(payload, per, b)
            tail = (per * b) % 8
            if tail and payload[-1] >> tail:
                raise DecodeError("non-zero padding bits")
            if per and int(v.max()) >= he.primes[i]:
                raise DecodeError(f"residue >= p_{i}")
            limbs.append(v.reshape(shape[:-2] + (he.n,)))
        return np.ascontiguousarray(np.stack(limbs, axis=-2))


class SeededCiphertexts(Message):
    """A batch of symmetric ciphertexts: the seed of the uniform parts and c0 ``(n, L', N)``."""

    TAG = 0x1001
    FIELDS = (("seed", FixedBytes(SEED_BYTES)), ("c0", RnsField()))


class Ciphertexts(Message):
    """A batch of full ciphertexts ``(n, 2, L', N)``."""

    TAG = 0x1002
    FIELDS = (("ct", RnsField()),)


class PublicKeyMsg(Message):
    """A public key ``(2, L, N)`` (p0, p1)."""

    TAG = 0x1003
    FIELDS = (("pk", RnsField()),)


def ciphertext_bytes(he: HEParams, count: int, level: int | None = None) -> int:
    """Encoded size of a :class:`Ciphertexts` message of ``count`` ciphertexts."""
    level = he.levels if level is None else level
    return Ciphertexts.declared_size(he, ct=(count, 2, level, he.n))


def seeded_bytes(he: HEParams, count: int) -> int:
    """Encoded size of a :class:`SeededCiphertexts` message of ``count`` ciphertexts."""
    return SeededCiphertexts.declared_size(he, c0=(count, he.levels, he.n))
