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
from nimbus.spec.messages import pack_bits as _spec_pack, unpack_bits as _spec_unpack
from nimbus.spec.prg import wide_to_ints

__all__ = [
    "keygen", "keygen_public", "encode", "decode", "encrypt_symmetric", "expand_seeded",
    "encrypt_public", "decrypt", "add", "sub", "mul_scalar", "mac_scalar", "mul_monomial",
    "mul_plain", "mod_switch", "flood", "noise", "pack_bits", "unpack_bits",
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


# -- serialisation --------------------------------------------------------------------------
def pack_bits(values, bits: int) -> bytes:
    """Bit-packing of the message codec (the spec's definitional packer)."""
    return _spec_pack(values, bits)


def unpack_bits(data, n: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits` (the spec's definitional unpacker)."""
    return _spec_unpack(data, n, bits)
