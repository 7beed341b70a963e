"""Reference RLWE (BFV, coefficient encoding, plaintext modulus 2^l): Python integers, schoolbook.

Definitional and slow: every residue is a Python int, polynomial products are schoolbook
negacyclic convolutions, decoding and modulus switching go through the CRT to big integers.
Usable on the tiny sets (N = 16, 32) and on a single small batch at N = 4096.

Representation: see :mod:`nimbus.spec.he` (ciphertexts ``(..., 2, L', N)`` uint64 residues,
component 0 = c0 = b, 1 = c1 = a; plaintexts ``(..., N)`` uint64 in [0, 2^l)).
References: [BFV12] Fan-Vercauteren, ePrint 2012/144; [CHEETAH22] Huang et al., USENIX Security
2022; [BUMBLEBEE25] Lu et al., NDSS 2025; [NIMBUS24] Li et al., NeurIPS 2024.
"""

from __future__ import annotations

import numpy as np

from nimbus.spec import he as H
from nimbus.spec.errors import ShapeError
from nimbus.spec.he import galois_element
from nimbus.spec.messages import pack_bits as _spec_pack, unpack_bits as _spec_unpack
from nimbus.spec.prg import wide_to_ints

__all__ = [
    "keygen", "keygen_public", "encode", "decode", "encrypt_symmetric", "expand_seeded",
    "encrypt_public", "decrypt", "add", "sub", "mul_scalar", "mac_scalar", "mul_monomial",
    "mul_plain", "mod_switch", "flood", "noise", "pack_bits", "unpack_bits",
    "automorphism", "galois_keygen", "expand_galois", "key_switch", "apply_galois", "pack_trace",
]


# -- helpers (Python ints) ----------------------------------------------------------------------
_level = H.ciphertext_level  # the shared boundary check (spec)


def _lift(c: int, l: int) -> int:
    """Centred lift of c in Z_2^l to [-2^(l-1), 2^(l-1))."""
    return c - (1 << l) if c >> (l - 1) else c


def _negacyclic(a: list, b: list, p: int) -> list:
    """Schoolbook a*b mod (X^N + 1, p)."""
    n = len(a)
    out = [0] * n
    for i, x in enumerate(a):
        if x:
            for j, y in enumerate(b):
                k = i + j
                if k < n:
                    out[k] += x * y
                else:
                    out[k - n] -= x * y
    return [v % p for v in out]


def _crt(residues: list, primes) -> int:
    """The integer in [0, Q) with the given residues."""
    q = H.modulus(primes)
    return sum(r * (q // p) * pow(q // p, -1, p) for r, p in zip(residues, primes)) % q


def _poly_mod(values, primes) -> np.ndarray:
    """Integer coefficients (list) -> residues (L', N)."""
    return np.array([[int(v) % p for v in values] for p in primes], dtype=np.uint64)


def _map_batch(fn, arr, inner: int):
    """Apply fn to every sub-array over the last ``inner`` axes, stacking the results."""
    a = np.asarray(arr)
    batch = a.shape[: a.ndim - inner]
    flat = a.reshape((-1,) + a.shape[a.ndim - inner:])
    outs = [fn(x) for x in flat]
    if not outs:
        return np.zeros(batch + (0,), dtype=np.uint64)
    return np.stack(outs).reshape(batch + outs[0].shape)


# -- keys ---------------------------------------------------------------------------------------
def keygen(he: H.HEParams, prg, label: str) -> H.SecretKey:
    """Secret key generation.

    Runs on: the key owner. Inputs: the labelled PRG. Returns: s ternary (N,).
    Cost: N draws. Reference: [BFV12, §3] SecretKeyGen.
    """
    return H.draw_secret(he, prg, label)


def keygen_public(he: H.HEParams, sk: H.SecretKey, prg, label: str) -> np.ndarray:
    """Public key (p0, p1) = (-a s + e, a) at the top level, shape (2, L, N).

    Runs on: the key owner. Private inputs: sk. Returns: the public key.
    Cost: L schoolbook products. Reference: [BFV12, §3] PublicKeyGen.
    """
    a = H.draw_uniform(he, prg, label + "/a", he.levels)
    e = H.draw_error(he, prg, label + "/e").tolist()
    s = sk.s.tolist()
    p0 = [[(-x + y) % p for x, y in zip(_negacyclic(a[i].tolist(), s, p), e)] for i, p in enumerate(he.primes)]
    return np.stack([np.array(p0, dtype=np.uint64), a])


# -- encodings ----------------------------------------------------------------------------------
def encode(he: H.HEParams, m, level: int | None = None) -> np.ndarray:
    """The scaled encoding: round(Q' m / 2^l) mod p_i for every prime of the level.

    Runs on: either party. Inputs: m uint64 (..., N) in [0, 2^l); level (default: all primes).
    Pre-conditions: m < 2^l (else ShapeError). Returns: residues (..., L', N).
    Cost: N L' big-integer products. Reference: [NIMBUS24, §3.3], [BFV12, §3].
    """
    level = he.levels if level is None else level
    q, l = he.q(level), he.plain_bits
    m = np.asarray(m)
    if m.dtype != np.uint64 or m.ndim < 1 or m.shape[-1] != he.n or (l < 64 and m.size and int(m.max()) >> l):
        raise ShapeError(f"plaintext must be uint64 (..., {he.n}) in [0, 2^{l})")
    return _map_batch(lambda v: _poly_mod([(q * int(x) + (1 << (l - 1))) >> l for x in v], he.primes[:level]), m, 1)


def decode(he: H.HEParams, v) -> np.ndarray:
    """The scaled decoding: round(2^l v / Q') mod 2^l (Q' odd: no ties), via the CRT.

    Runs on: the key owner. Inputs: residues v (..., L', N) in [0, p_i). Returns: (..., N) in
    Z_2^l. Cost: N CRT reconstructions. Reference: [NIMBUS24, §3.3], [BFV12, §3].
    """
    level = _level(he, v, comps=False)
    q, l, primes = he.q(level), he.plain_bits, he.primes[:level]

    def one(limbs):
        ints = [_crt(list(col), primes) for col in zip(*limbs.tolist())]
        return np.array([((((x << (l + 1)) + q) // (2 * q)) % (1 << l)) for x in ints], dtype=np.uint64)

    return _map_batch(one, v, 2)


# -- encryption / decryption --------------------------------------------------------------------
def encrypt_symmetric(he: H.HEParams, sk: H.SecretKey, m, seed: bytes, prg, label: str) -> np.ndarray:
    """Seeded symmetric encryption of a batch m (n, N): returns c0 (n, L, N); c1 = expand_a(seed).

    Runs on: the key owner (the server, for its weight rows). Private inputs: sk, m.
    Public inputs: seed (sent with c0). Cost: n L schoolbook products.
    Reference: [NIMBUS24, §3.2] (setup), [BFV12] SymEnc, seeded as in [CHEETAH22].
    """
    m = np.asarray(m)
    if m.ndim != 2:
        raise ShapeError("encrypt_symmetric takes a batch (n, N)")
    a = H.expand_a(he, seed, m.shape[0])
    e = H.draw_error(he, prg, label + "/e", (m.shape[0],))
    dm = encode(he, m)
    s = sk.s.tolist()
    out = np.empty_like(dm)
    for t in range(m.shape[0]):
        for i, p in enumerate(he.primes):
            aspoly = _negacyclic(a[t, i].tolist(), s, p)
            out[t, i] = [(-x + int(y) + int(z)) % p for x, y, z in zip(aspoly, e[t].tolist(), dm[t, i].tolist())]
    return out


def expand_seeded(he: H.HEParams, seed: bytes, c0) -> np.ndarray:
    """Full ciphertexts from a seeded batch: c1 = expand_a(seed) (AES-CTR + exact rejection).

    Runs on: the receiver of seeded ciphertexts (the client). Public inputs: seed, c0 (n, L', N).
    Returns: (n, 2, L', N). Cost: n L' N rejection samples. Reference: [CHEETAH22, §2.4].
    """
    c0 = np.asarray(c0)
    level = _level(he, c0, comps=False)
    if c0.ndim != 3:
        raise ShapeError("seeded c0 must be (n, L, N)")
    return np.stack([c0, H.expand_a(he, seed, c0.shape[0], level)], axis=1)


def encrypt_public(he: H.HEParams, pk, m, prg, label: str) -> np.ndarray:
    """Public-key encryption of m (..., N) at the public key's level: (..., 2, L, N).

    c0 = p0 u + e2 + encode(m), c1 = p1 u + e1. Cost: 2 L schoolbook products per ciphertext.
    Reference: [BFV12, §3] PubEnc.
    """
    return _pk_encrypt(he, pk, encode(he, m, _level(he, pk)), prg, label, None)


def _pk_encrypt(he, pk, dm, prg, label, flood_bound):
    """c = (p0 u + e2 + dm, p1 u + e1); e2 uniform on [-F, F] when flood_bound is set."""
    level = dm.shape[-2]
    batch = dm.shape[:-2]
    u = prg.ternary(label + "/u", batch + (he.n,)).reshape(-1, he.n)
    e1 = H.draw_error(he, prg, label + "/e1", batch).reshape(-1, he.n)
    if flood_bound is None:
        e2 = H.draw_error(he, prg, label + "/e2", batch)
    elif flood_bound < H.WIDE_FLOOD:
        e2 = H.draw_flood(he, prg, label + "/e2", batch, flood_bound)
    else:  # offset form (lo, hi) -> Python ints lo + 2^64 hi - F
        e2 = wide_to_ints(*H.draw_flood_wide(he, prg, label + "/e2", batch, flood_bound), flood_bound)
    e2 = e2.reshape(-1, he.n)
    flat = dm.reshape(-1, level, he.n)
    out = np.empty((flat.shape[0], 2, level, he.n), dtype=np.uint64)
    for t in range(flat.shape[0]):
        for i, p in enumerate(he.primes[:level]):
            for k, (err, add) in enumerate(((e2[t], flat[t, i]), (e1[t], np.zeros(he.n, np.uint64)))):
                prod = _negacyclic(pk[k, i].tolist(), u[t].tolist(), p)
                out[t, k, i] = [(x + int(y) + int(z)) % p for x, y, z in zip(prod, err.tolist(), add.tolist())]
    return out.reshape(batch + (2, level, he.n))


def _phase(he, sk, ct) -> np.ndarray:
    """v = c0 + c1 s mod Q' as residues (..., L', N)."""
    level = _level(he, ct)
    s = sk.s.tolist()

    def one(c):
        return np.array([[(x + y) % p for x, y in zip(c[0, i].tolist(), _negacyclic(c[1, i].tolist(), s, p))]
                         for i, p in enumerate(he.primes[:level])], dtype=np.uint64)

    return _map_batch(one, ct, 3)


def decrypt(he: H.HEParams, sk: H.SecretKey, ct) -> np.ndarray:
    """m = decode(c0 + c1 s): (..., 2, L', N) -> (..., N) in Z_2^l.

    Runs on: the key owner. Cost: L' products + CRT. Reference: [BFV12, §3] Dec.
    """
    return decode(he, _phase(he, sk, ct))


def noise(he: H.HEParams, sk: H.SecretKey, ct, m) -> int:
    """Noise measurement: max over coefficients of |c0 + c1 s - Q' m / 2^l| (centred), rounded up.

    Runs on: the key owner, in tests only. Inputs: sk, ct (..., 2, L', N), the expected m (..., N).
    Returns: an int, to compare with :func:`nimbus.spec.he.analyze` (``total + 1``).
    """
    v = _phase(he, sk, ct)
    level = v.shape[-2]
    q, l = he.q(level), he.plain_bits
    worst = 0
    for limbs, mm in zip(v.reshape(-1, level, he.n), np.asarray(m).reshape(-1, he.n)):
        for col, x in zip(zip(*limbs.tolist()), mm.tolist()):
            d = ((_crt(list(col), he.primes[:level]) << l) - q * int(x)) % (q << l)
            d = min(d, (q << l) - d)
            worst = max(worst, -((-d) >> l))
    return worst


# -- homomorphic operations ---------------------------------------------------------------------
def _binary(he, x, y, op):
    _level(he, x)
    if np.shape(x) != np.shape(y):
        raise ShapeError(f"ciphertext shapes differ: {np.shape(x)} vs {np.shape(y)}")
    _level(he, y)
    out = np.empty(np.shape(x), dtype=np.uint64)
    for idx in np.ndindex(*np.shape(x)[:-1]):
        p = he.primes[idx[-1]]
        out[idx] = [op(a, b) % p for a, b in zip(x[idx].tolist(), y[idx].tolist())]
    return out


def add(he: H.HEParams, x, y) -> np.ndarray:
    """Homomorphic addition.

    Runs on: either party. Inputs: x, y (..., 2, L', N), same shape. Returns: x + y mod p_i.
    Cost: 2 L' N additions. Noise: bounds add. Reference: [BFV12, §4] Add.
    """
    return _binary(he, x, y, lambda a, b: a + b)


def sub(he: H.HEParams, x, y) -> np.ndarray:
    """Homomorphic subtraction.

    Runs on: either party. Inputs: x, y (..., 2, L', N), same shape. Returns: x - y mod p_i.
    Cost: 2 L' N subtractions. Noise: bounds add. Reference: [BFV12, §4].
    """
    return _binary(he, x, y, lambda a, b: a - b)


def _scale(he, ct, scalars, fn):
    """Apply fn(residue_list, scalar_or_poly, p) per ciphertext component and prime."""
    level = _level(he, ct)
    out = np.empty(np.shape(ct), dtype=np.uint64)
    for idx in np.ndindex(*np.shape(ct)[:-3]):
        for k in range(2):
            for i, p in enumerate(he.primes[:level]):
                out[idx + (k, i)] = fn(ct[idx + (k, i)].tolist(), scalars[idx], p)
    return out


def mul_scalar(he: H.HEParams, ct, c) -> np.ndarray:
    """Product by plaintext scalars: c * ct with the centred lift of c in Z_2^l.

    Runs on: the client. Private inputs: c uint64 of shape ct.shape[:-3] (broadcast from a 0-d).
    Public inputs: ct (..., 2, L', N). Returns: same shape. Cost: 2 L' N modular products.
    Noise: times |lift(c)| <= 2^(l-1). Reference: [NIMBUS24, §3.2], [CHEETAH22, §3].
    """
    c = np.broadcast_to(np.asarray(c, dtype=np.uint64), np.shape(ct)[:-3])
    l = he.plain_bits
    return _scale(he, ct, c, lambda v, x, p: [(_lift(int(x), l) * a) % p for a in v])


def mac_scalar(he: H.HEParams, cts, x) -> np.ndarray:
    """out[i] = sum_j lift(x[i, j]) * cts[j]: the client's outer-product accumulation.

    Runs on: the client. Private inputs: x (n, k) uint64 in Z_2^l (its share). Public inputs:
    cts (k, 2, L', N) (the server's encrypted weight rows). Returns: (n, 2, L', N).
    Cost: 2 n k L' N modular multiply-adds. Reference: [NIMBUS24, §3.2] step 2.
    """
    x = np.asarray(x)
    level = _level(he, cts)
    if x.ndim != 2 or np.ndim(cts) != 4 or x.shape[1] != np.shape(cts)[0] or x.dtype != np.uint64:
        raise ShapeError(f"mac_scalar: x (n, k) uint64 with k = {np.shape(cts)[0]} ciphertexts, got {x.dtype}{x.shape}")
    l = he.plain_bits
    out = np.empty((x.shape[0], 2, level, he.n), dtype=np.uint64)
    for r in range(x.shape[0]):
        coefs = [_lift(int(v), l) for v in x[r].tolist()]
        for k in range(2):
            for i, p in enumerate(he.primes[:level]):
                acc = [0] * he.n
                for c, ctj in zip(coefs, cts):
                    acc = [s + c * a for s, a in zip(acc, ctj[k, i].tolist())]
                out[r, k, i] = [s % p for s in acc]
    return out


def mul_monomial(he: H.HEParams, ct, k: int) -> np.ndarray:
    """Product by the monomial X^k: coefficient j moves to j + k, negated when it wraps.

    Runs on: the client (packing). Inputs: ct (..., 2, L', N); k any int (taken mod 2N).
    Returns: same shape. Cost: 2 L' N moves. Noise: unchanged (permuted, signs flipped).
    Reference: [NIMBUS24, §3.3] right-shift packing.
    """
    n = he.n
    k = int(k) % (2 * n)

    def shift(v, _x, p):
        out = [0] * n
        for j, a in enumerate(v):
            t = j + k
            sign = -1 if (t // n) % 2 else 1
            out[t % n] = (sign * a) % p
        return out

    return _scale(he, ct, np.zeros(np.shape(ct)[:-3], dtype=np.uint64), shift)


def mul_plain(he: H.HEParams, ct, poly) -> np.ndarray:
    """ct * m(X) for plaintext polynomials m (ct.shape[:-3] + (N,)) in Z_2^l, centred lift.

    Noise: times ||m||_1 <= N 2^(l-1). Cost: schoolbook here (NTT in optimized).
    Reference: [BUMBLEBEE25, §4], [CHEETAH22, §3].
    """
    poly = np.asarray(poly)
    if poly.dtype != np.uint64 or poly.shape != np.shape(ct)[:-3] + (he.n,):
        raise ShapeError(f"mul_plain: polynomial shape {poly.shape} for ciphertexts {np.shape(ct)}")
    l = he.plain_bits
    polys = np.empty(poly.shape[:-1], dtype=object)
    for idx in np.ndindex(*poly.shape[:-1]):
        polys[idx] = [_lift(int(c), l) for c in poly[idx].tolist()]
    return _scale(he, ct, polys, lambda v, m, p: _negacyclic(v, m, p))


def mod_switch(he: H.HEParams, ct, level: int) -> np.ndarray:
    """Modulus switching: drop primes down to ``level``, the last first, c <- round(c / p).

    Runs on: the client before flooding. Inputs: ct (..., 2, L', N); 1 <= level <= L'.
    Returns: (..., 2, level, N). Cost: CRT per coefficient here; O(L'^2 N) in optimized.
    Noise: E/p + (N + 1)/2 per dropped prime p (rounding of c0 and of c1 s, ||s||_1 <= N).
    Reference: [BFV12, §4], [CHEETAH22, §2.4].
    """
    cur = _level(he, ct)
    if not 1 <= level <= cur:
        raise ShapeError(f"cannot switch from level {cur} to {level}")

    def one(limbs):
        primes = he.primes[:cur]
        ints = [_crt(list(col), primes) for col in zip(*limbs.tolist())]
        for L in range(cur, level, -1):
            p = he.primes[L - 1]
            ints = [(2 * x + p) // (2 * p) for x in ints]  # round(x / p), p odd: no ties
        return _poly_mod(ints, he.primes[:level])

    return _map_batch(one, ct, 2)


def flood(he: H.HEParams, pk, ct, prg, label: str, bound: int | None = None) -> np.ndarray:
    """ct + Enc_pk(0) with e2 uniform on [-F, F] (F = he.flood_bound by default; drawn with
    ``PRG.uniform_signed`` for F < 2^62, ``PRG.uniform_signed_wide`` above: see ``spec.he``).

    Runs on: the client before masking and sending. Pre-conditions: pk (2, L, N) at top level
    (restricted to the ciphertext's level). Noise: + 2 N eta + F; the key owner's view of a
    query's M flooded coefficients with shifts <= S is within M S / (2F + 1) <= 2^-stat_bits of
    a simulation (``spec.he.analyze``; S counts the data noise, the mask's rounding and the key
    owner's view e u + s e1 <= 2 N eta of this encryption's randomness). Reference: [BFV12]; flooding as in Gentry's thesis, sized
    in docs/rlwe.md.
    """
    level = _level(he, ct)
    F = he.flood_bound if bound is None else int(bound)
    zero = np.zeros(np.shape(ct)[:-3] + (level, he.n), dtype=np.uint64)
    return add(he, ct, _pk_encrypt(he, np.asarray(pk)[:, :level], zero, prg, label, F))


# -- automorphisms, key switching, packing ---------------------------------------------------
def _auto_poly(v: list, g: int, n: int) -> list:
    """sigma_g on one polynomial of Python ints: coefficient j moves to j g mod 2N, negated when
    that is >= N (X^N = -1). Signs are applied to the ints (the caller reduces)."""
    out = [0] * n
    for j, a in enumerate(v):
        t = (j * g) % (2 * n)
        out[t % n] = -a if t >= n else a
    return out


def _check_g(he, g: int) -> int:
    g = int(g)
    if g % 2 == 0 or not 0 < g < 2 * he.n:
        raise ShapeError(f"Galois element {g} must be odd in (0, 2N)")
    return g


def automorphism(he: H.HEParams, ct, g: int) -> np.ndarray:
    """The Galois automorphism sigma_g: X -> X^g (g odd) on both components of ciphertexts.

    Runs on: the client (packing). Inputs: ct (..., 2, L', N) under s; g odd in (0, 2N).
    Returns: same shape, a ciphertext of sigma_g(m) under sigma_g(s) (coefficient j -> j g mod 2N,
    negated when it lands at or above N). Cost: 2 L' N moves. Noise: permuted, same bound.
    Reference: [CDKS21, §2] (Galois group of the 2N-th cyclotomic ring), [BUMBLEBEE25, §3.2].
    """
    level = _level(he, ct)
    g = _check_g(he, g)

    def one(limbs):
        return np.array([[x % p for x in _auto_poly(limbs[i].tolist(), g, he.n)]
                         for i, p in enumerate(he.primes[:level])], dtype=np.uint64)

    return _map_batch(one, ct, 2)


def galois_keygen(he: H.HEParams, sk: H.SecretKey, gs, seed: bytes, prg, label: str) -> np.ndarray:
    """Seeded key-switching keys from sigma_g(s) to s for every g in ``gs``, RNS gadget (one digit
    per prime): key (t, i) = (c0, a) with ``c0 = -a s + e + [j = i] sigma_g(s)`` mod p_j (the
    gadget element of digit i is the CRT idempotent: 1 mod p_i, 0 mod every other prime), ``a``
    = ``expand_a(seed)[t L + i]``, e = CBD(eta) from ``prg(label/e)``.

    Runs on: the key owner (the server), once per session. Private inputs: sk. Public inputs:
    gs (odd), seed (sent with c0). Returns: c0 (G, L, L, N); the keys are
    :func:`expand_galois` of it. Cost: G L^2 schoolbook products; on the wire G L polynomials at
    the top level (half of an unseeded key). Security: RLWE samples with secret s whose messages
    are multiples of sigma_g(s) (the circular-security assumption of every Galois key).
    Reference: [CDKS21, §2.2] (key switching, gadget decomposition), [BFV12] seeded as in
    [CHEETAH22].
    """
    gs = [_check_g(he, g) for g in gs]
    L, n = he.levels, he.n
    a = H.expand_a(he, seed, len(gs) * L)
    e = H.draw_error(he, prg, label + "/e", (len(gs), L))
    s = sk.s.tolist()
    out = np.empty((len(gs), L, L, n), np.uint64)
    for t, g in enumerate(gs):
        sg = _auto_poly(s, g, n)  # 1. sigma_g(s)
        for i in range(L):  # 2. one RLWE sample per digit, sigma_g(s) on the digit's own prime
            for j, p in enumerate(he.primes):
                a_s = _negacyclic(a[t * L + i, j].tolist(), s, p)
                plus = sg if i == j else [0] * n
                out[t, i, j] = [(-x + int(y) + z) % p for x, y, z in zip(a_s, e[t, i].tolist(), plus)]
    return out


def expand_galois(he: H.HEParams, seed: bytes, c0) -> np.ndarray:
    """Full Galois keys (G, L, 2, L, N) from their seeded form c0 (G, L, L, N).

    Runs on: the receiver (the client). Cost: G L^2 N rejection samples. Reference: [CHEETAH22, §2.4].
    """
    c0 = H.galois_seeded_shape(he, c0)
    full = expand_seeded(he, seed, c0.reshape((-1, he.levels, he.n)))
    return full.reshape(c0.shape[:2] + (2, he.levels, he.n))


def key_switch(he: H.HEParams, ct, key) -> np.ndarray:
    """Key switching of ciphertexts under s' to s with the key (L, 2, L, N) of s' (RNS gadget).

    ``c0' = c0 + sum_i d_i b_i``, ``c1' = sum_i d_i a_i`` with d_i the centred residue of c1 mod
    p_i (in (-p_i/2, p_i/2)); at level L' < L the key's first L' digits and primes (the gadget's
    CRT idempotents restrict). Runs on: the client. Inputs: ct (..., 2, L', N), key. Returns:
    same shape under s. Cost: L'^2 products per ciphertext. Noise: + sum_i d_i e_i, at most
    ``spec.he.ks_noise_bound(he, L')``. Reference: [CDKS21, §2.2], [BUMBLEBEE25, §3.2].
    """
    level = _level(he, ct)
    key = H.galois_key_at(he, key, level)
    primes = he.primes[:level]

    def one(c):
        out0 = [c[0, j].tolist() for j in range(level)]
        out1 = [[0] * he.n for _ in range(level)]
        for i, pi in enumerate(primes):  # 1. digit i: the centred residue of c1 mod p_i
            d = [x - pi if x > pi // 2 else x for x in c[1, i].tolist()]
            for j, pj in enumerate(primes):  # 2. d_i (b_i, a_i), accumulated prime by prime
                dj = [x % pj for x in d]
                for comp, acc in ((0, out0), (1, out1)):
                    prod = _negacyclic(dj, key[i, comp, j].tolist(), pj)
                    acc[j] = [(x + y) % pj for x, y in zip(acc[j], prod)]
        return np.array([out0, out1], dtype=np.uint64)

    return _map_batch(one, ct, 3)


def apply_galois(he: H.HEParams, ct, g: int, key) -> np.ndarray:
    """sigma_g then key switching back to s: a ciphertext of sigma_g(m) under s.

    Runs on: the client. Inputs: ct (..., 2, L', N); key: the Galois key of g (L, 2, L, N).
    Cost: one automorphism + one key switch each. Reference: [CDKS21, §2.2] EvalAuto.
    """
    return key_switch(he, automorphism(he, ct, g), key)


def _mul_int(he, ct, c: int) -> np.ndarray:
    """ct * c for an integer c (mod every prime of the level)."""
    return _scale(he, ct, np.zeros(np.shape(ct)[:-3], np.uint64),
                  lambda v, _x, p: [(a * (c % p)) % p for a in v])


def pack_trace(he: H.HEParams, cts, keys) -> np.ndarray:
    """Pack D = 2^k ciphertexts whose useful coefficients sit on the stride-D grid into one:
    the phase of the result is ``sum_i X^i P_D(phase_i)`` (P_D: keep the coefficients at multiples
    of D) plus key-switching noise.

    Runs on: the client (attention responses, before modulus switching and flooding).
    Inputs: cts (B, D, 2, L', N) (B independent groups; a missing input is a zero ciphertext),
    keys (>= k, L, 2, L, N): key t is the Galois key of ``galois_element(N, 2^t)``.
    Steps: 1. multiply by D^-1 mod Q' (Q' odd); 2. for s = D/2, ..., 2, 1 (k levels, g = N/s + 1,
    which negates X^s and fixes X^(2s)): pair input t with t + s and combine
    ``(E + X^s O) + sigma_g(E - X^s O)`` (a key switch after the automorphism). Over the k levels
    every input goes through prod (1 + sigma_g) = the trace onto Z[X^D] = D P_D, and through
    X^i (i = the sum of the s of the levels where it was the odd one), so step 1 cancels the
    factor D exactly. Returns: (B, 2, L', N). Cost: (D - 1) B automorphisms and key switches.
    Noise: the inputs' data noise on their slots plus at most (D - 1) key switches' noise per
    coefficient (``spec.he.analyze`` op ``("pack", k)``).
    Reference: [CDKS21, §3 Alg. 2 PackLWEs], [BUMBLEBEE25, §3.2] (packing strided products).
    """
    level, D = H.pack_trace_shape(he, cts, keys)
    cts, keys = np.asarray(cts), np.asarray(keys)
    cur = [list(grp) for grp in _mul_int(he, cts, pow(D, -1, he.q(level)))]  # 1. D^-1 mod Q'
    s = D // 2
    while s >= 1:  # 2. one level per s = D/2, ..., 1
        g, key = galois_element(he.n, s), keys[s.bit_length() - 1]
        nxt = []
        for grp in cur:
            row = []
            for t in range(s):
                xo = mul_monomial(he, grp[t + s], s)
                row.append(add(he, add(he, grp[t], xo), apply_galois(he, sub(he, grp[t], xo), g, key)))
            nxt.append(row)
        cur, s = nxt, s // 2
    return np.stack([grp[0] for grp in cur])


# -- serialisation --------------------------------------------------------------------------
def pack_bits(values, bits: int) -> bytes:
    """Bit-packing of the message codec (the spec's definitional packer)."""
    return _spec_pack(values, bits)


def unpack_bits(data, n: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits` (the spec's definitional unpacker)."""
    return _spec_unpack(data, n, bits)
