"""Optimized RLWE (BFV, coefficient encoding, plaintext modulus 2^l): numba kernels.

Twin of :mod:`nimbus.reference.rlwe`: same names, signatures, results (bit for bit) and errors.
Kernels live in :mod:`nimbus.optimized._ntt` (NTT/INTT with Harvey's lazy butterflies and Shoup
twiddles, Montgomery pointwise products, the tiled scalar multiply-accumulate, monomial shifts,
prime dropping, exact multiword decoding, bit-packing, wide flooding residues). Each public
function validates its input, converts at the boundary (coefficient form, residues in [0, p))
and names its twin.
Threads: ``NUMBA_NUM_THREADS``; outputs never depend on it.
References: [BFV12] Fan-Vercauteren 2012; [HARVEY14] Harvey, J. Symb. Comp. 2014;
[CHEETAH22] Huang et al., USENIX Security 2022; [BUMBLEBEE25] Lu et al., NDSS 2025; [NIMBUS24].
"""

from __future__ import annotations

import functools

import numpy as np

from nimbus.spec import he as H
from nimbus.spec.errors import ShapeError
from nimbus.spec.messages import packed_size

from . import _ntt as K
from . import _pack_kernels as PK

__all__ = [
    "keygen", "keygen_public", "encode", "decode", "encrypt_symmetric", "expand_seeded",
    "encrypt_public", "decrypt", "add", "sub", "mul_scalar", "mac_scalar", "mul_monomial",
    "mul_plain", "mod_switch", "flood", "noise", "pack_bits", "unpack_bits",
    "automorphism", "galois_keygen", "expand_galois", "key_switch", "apply_galois", "pack_trace",
]


# -- boundary helpers ---------------------------------------------------------------------------
_level = H.ciphertext_level  # the shared boundary check (spec)


def _t(he, level):
    return K.tables(he.n, tuple(he.primes[:level]))


def _rows(a, inner: int) -> np.ndarray:
    """C-contiguous uint64 view/copy with all batch axes flattened into one."""
    a = np.ascontiguousarray(a, dtype=np.uint64)
    return a.reshape((-1,) + a.shape[a.ndim - inner:])


def _ntt(he, a):
    """NTT of a (B, L', N) copy."""
    t = _t(he, a.shape[1])
    x = np.array(a, dtype=np.uint64, order="C", copy=True)
    K.ntt_batch(x, t["W"], t["Wp"], t["primes"])
    return x


def _intt(he, x):
    t = _t(he, x.shape[1])
    K.intt_batch(x, t["IW"], t["IWp"], t["primes"], t["ninv"], t["ninvp"])
    return x


def _mont(he, a_ntt):
    """Montgomery form of NTT values (in place)."""
    t = _t(he, a_ntt.shape[1])
    K.to_mont(a_ntt, t["primes"], t["pinv"], t["r2"])
    return a_ntt


def _polymul(he, a, b_mont_ntt):
    """Negacyclic a * b for a (B, L', N) coefficient form, b given as Montgomery NTT form."""
    t = _t(he, a.shape[1])
    x = _ntt(he, a)
    K.pointwise_mont(x, b_mont_ntt, t["primes"], t["pinv"], x)
    return _intt(he, x)


def _signed(he, v, level):
    """int64 polys (B, N) -> residues (B, L', N)."""
    v = np.ascontiguousarray(v, dtype=np.int64).reshape(-1, he.n)
    out = np.empty((v.shape[0], level, he.n), np.uint64)
    K.signed_to_rns(v, np.array(he.primes[:level], np.uint64), out)
    return out


def _wide(he, lo, hi, bound, level):
    """Offset-form wide draws (lo, hi) (B, N) -> residues of lo + 2^64 hi - bound, (B, L', N)."""
    lo = np.ascontiguousarray(lo, dtype=np.uint64).reshape(-1, he.n)
    hi = np.ascontiguousarray(hi, dtype=np.uint64).reshape(-1, he.n)
    primes = he.primes[:level]
    t64 = [(1 << 64) % p for p in primes]
    out = np.empty((lo.shape[0], level, he.n), np.uint64)
    K.wide_to_rns(lo, hi, np.array(primes, np.uint64), np.array(t64, np.uint64),
                  np.array([(t << 64) // p for t, p in zip(t64, primes)], np.uint64),
                  np.array([int(bound) % p for p in primes], np.uint64), out)
    return out


def _addm(he, a, b):
    out = np.empty_like(a)
    K.add_mod(a, b, np.array(he.primes[: a.shape[1]], np.uint64), out)
    return out


def _secret_mont(he, sk, level):
    """NTT(s) in Montgomery form, (1, L', N)."""
    return _mont(he, _ntt(he, _signed(he, sk.s[None], level)))


# -- keys ---------------------------------------------------------------------------------------
def keygen(he: H.HEParams, prg, label: str) -> H.SecretKey:
    """Twin of :func:`nimbus.reference.rlwe.keygen`."""
    return H.draw_secret(he, prg, label)


def keygen_public(he: H.HEParams, sk: H.SecretKey, prg, label: str) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.keygen_public`."""
    L = he.levels
    a = H.draw_uniform(he, prg, label + "/a", L)[None]
    e = _signed(he, H.draw_error(he, prg, label + "/e")[None], L)
    a_s = _polymul(he, a, _secret_mont(he, sk, L))
    p0 = np.empty_like(a)
    K.sub_mod(e, a_s, np.array(he.primes, np.uint64), p0)
    return np.stack([p0[0], a[0]])


# -- encodings ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _enc_consts(he: H.HEParams, level: int):
    q, l = he.q(level), he.plain_bits
    a, bq = q >> l, q & ((1 << l) - 1)
    primes = he.primes[:level]
    amod = np.array([a % p for p in primes], np.uint64)
    amodp = np.array([((a % p) << 64) // p for p in primes], np.uint64)
    onep = np.array([(1 << 64) // p for p in primes], np.uint64)
    return np.uint64(bq), amod, amodp, onep, np.array(primes, np.uint64)


def encode(he: H.HEParams, m, level: int | None = None) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.encode`."""
    level = he.levels if level is None else level
    l = he.plain_bits
    m = np.asarray(m)
    if m.dtype != np.uint64 or m.ndim < 1 or m.shape[-1] != he.n or (l < 64 and m.size and int(m.max()) >> l):
        raise ShapeError(f"plaintext must be uint64 (..., {he.n}) in [0, 2^{l})")
    flat = _rows(m, 1)
    out = np.empty((flat.shape[0], level, he.n), np.uint64)
    bq, amod, amodp, onep, pr = _enc_consts(he, level)
    K.encode_kernel(flat, l, bq, amod, amodp, onep, pr, out)
    return out.reshape(m.shape[:-1] + (level, he.n))


def _words(x: int, w: int) -> list:
    return [(x >> (64 * i)) & ((1 << 64) - 1) for i in range(w)]


@functools.lru_cache(maxsize=64)
def _dec_consts(he: H.HEParams, level: int):
    primes = he.primes[:level]
    q = he.q(level)
    W = (q.bit_length() + 63) // 64 + 1
    qhat = [q // p for p in primes]
    inv = [pow(h, -1, p) for h, p in zip(qhat, primes)]
    return (np.array(primes, np.uint64), np.array(inv, np.uint64),
            np.array([(v << 64) // p for v, p in zip(inv, primes)], np.uint64),
            np.array([_words(h, W) for h in qhat], np.uint64).reshape(level, W),
            np.array(_words(q, W), np.uint64), np.array(_words((q + 1) // 2, W), np.uint64))


@functools.lru_cache(maxsize=64)
def _fast_consts(he: H.HEParams, level: int):
    l = he.plain_bits
    primes = he.primes[:level]
    omega = [(1 << l) // p for p in primes]
    frac = [(((1 << l) % p) << 128) // p for p in primes]
    return (np.array(omega, np.uint64), np.array([f >> 64 for f in frac], np.uint64),
            np.array([f & ((1 << 64) - 1) for f in frac], np.uint64))


def decode(he: H.HEParams, v) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.decode` (fixed-point CRT; exact multiword fallback)."""
    level = _level(he, v, comps=False)
    flat = _rows(v, 2)
    out = np.empty((flat.shape[0], he.n), np.uint64)
    amb = np.zeros((flat.shape[0], he.n), np.bool_)
    pr, inv, invp, qw, q, half = _dec_consts(he, level)
    if K.decode_fast_kernel(flat, he.plain_bits, pr, inv, invp, *_fast_consts(he, level), out, amb):
        idx = np.nonzero(amb)
        sub = np.ascontiguousarray(flat[idx[0], :, idx[1]])[:, :, None]
        exact = np.empty((sub.shape[0], 1), np.uint64)
        K.decode_kernel(sub, he.plain_bits, pr, inv, invp, qw, q, half, exact)
        out[idx] = exact[:, 0]
    return out.reshape(np.shape(v)[:-2] + (he.n,))


# -- encryption / decryption --------------------------------------------------------------------
def encrypt_symmetric(he: H.HEParams, sk: H.SecretKey, m, seed: bytes, prg, label: str) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.encrypt_symmetric`."""
    m = np.asarray(m)
    if m.ndim != 2:
        raise ShapeError("encrypt_symmetric takes a batch (n, N)")
    dm = encode(he, m)
    a = H.expand_a(he, seed, m.shape[0])
    e = _signed(he, H.draw_error(he, prg, label + "/e", (m.shape[0],)), he.levels)
    s = _secret_mont(he, sk, he.levels)
    a_s = _polymul(he, a, np.broadcast_to(s, a.shape).copy())
    out = np.empty_like(a)
    pr = np.array(he.primes, np.uint64)
    K.sub_mod(_addm(he, e, dm), a_s, pr, out)
    return out


def expand_seeded(he: H.HEParams, seed: bytes, c0) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.expand_seeded`."""
    c0 = np.asarray(c0)
    level = _level(he, c0, comps=False)
    if c0.ndim != 3:
        raise ShapeError("seeded c0 must be (n, L, N)")
    return np.stack([c0, H.expand_a(he, seed, c0.shape[0], level)], axis=1)


def encrypt_public(he: H.HEParams, pk, m, prg, label: str) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.encrypt_public`."""
    return _pk_encrypt(he, pk, encode(he, m, _level(he, pk)), prg, label, None)


def _pk_encrypt(he, pk, dm, prg, label, flood_bound):
    level = dm.shape[-2]
    batch = dm.shape[:-2]
    u = prg.ternary(label + "/u", batch + (he.n,))
    e1 = H.draw_error(he, prg, label + "/e1", batch)
    if flood_bound is None:
        e2 = _signed(he, H.draw_error(he, prg, label + "/e2", batch), level)
    elif flood_bound < H.WIDE_FLOOD:
        e2 = _signed(he, H.draw_flood(he, prg, label + "/e2", batch, flood_bound), level)
    else:
        e2 = _wide(he, *H.draw_flood_wide(he, prg, label + "/e2", batch, flood_bound), flood_bound, level)
    e1 = _signed(he, e1, level)
    U = _signed(he, u, level)
    B = U.shape[0]
    Un = _ntt(he, U)
    pk = np.asarray(pk)
    out = np.empty((B, 2, level, he.n), np.uint64)
    for k, err, add in ((0, e2, dm.reshape(B, level, he.n)), (1, e1, None)):
        pkm = _mont(he, _ntt(he, np.ascontiguousarray(pk[k, :level])[None]))
        x = Un.copy()
        t = _t(he, level)
        K.pointwise_mont(x, np.broadcast_to(pkm, x.shape).copy(), t["primes"], t["pinv"], x)
        r = _addm(he, _intt(he, x), err)
        out[:, k] = _addm(he, r, add) if add is not None else r
    return out.reshape(batch + (2, level, he.n))


def _phase(he, sk, ct):
    level = _level(he, ct)
    flat = _rows(ct, 3)
    s = _secret_mont(he, sk, level)
    c1s = _polymul(he, np.ascontiguousarray(flat[:, 1]), np.broadcast_to(s, (flat.shape[0], level, he.n)).copy())
    return _addm(he, np.ascontiguousarray(flat[:, 0]), c1s).reshape(np.shape(ct)[:-3] + (level, he.n))


def decrypt(he: H.HEParams, sk: H.SecretKey, ct) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.decrypt`."""
    return decode(he, _phase(he, sk, ct))


def noise(he: H.HEParams, sk: H.SecretKey, ct, m) -> int:
    """Twin of :func:`nimbus.reference.rlwe.noise` (big integers on the CRT values; tests only)."""
    v = _phase(he, sk, ct)
    level = v.shape[-2]
    q, l = he.q(level), he.plain_bits
    primes = he.primes[:level]
    qhat = [q // p for p in primes]
    coef = [h * pow(h, -1, p) for h, p in zip(qhat, primes)]
    flat = v.reshape(-1, level, he.n).astype(object)
    x = sum(flat[:, i, :] * coef[i] for i in range(level)) % q
    d = ((x << l) - np.asarray(m).reshape(-1, he.n).astype(object) * q) % (q << l)
    d = np.minimum(d, (q << l) - d)
    return int(max(-((-int(z)) >> l) for z in d.reshape(-1))) if d.size else 0


# -- homomorphic operations ---------------------------------------------------------------------
def _binary(he, x, y, kernel):
    level = _level(he, x)
    if np.shape(x) != np.shape(y):
        raise ShapeError(f"ciphertext shapes differ: {np.shape(x)} vs {np.shape(y)}")
    _level(he, y)
    a, b = _rows(x, 2), _rows(y, 2)
    out = np.empty_like(a)
    kernel(a, b, np.array(he.primes[:level], np.uint64), out)
    return out.reshape(np.shape(x))


def add(he: H.HEParams, x, y) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.add`."""
    return _binary(he, x, y, K.add_mod)


def sub(he: H.HEParams, x, y) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.sub`."""
    return _binary(he, x, y, K.sub_mod)


def _lifted(he, x, level):
    x = np.ascontiguousarray(x, dtype=np.uint64)
    w = np.empty(x.shape + (level,), np.uint64)
    wp = np.empty_like(w)
    K.lift_scalars(x, he.plain_bits, np.array(he.primes[:level], np.uint64), w, wp)
    return w, wp


def mul_scalar(he: H.HEParams, ct, c) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.mul_scalar`."""
    level = _level(he, ct)
    c = np.broadcast_to(np.asarray(c, dtype=np.uint64), np.shape(ct)[:-3])
    flat = _rows(ct, 3)
    w, wp = _lifted(he, c.reshape(-1, 1), level)
    out = np.empty_like(flat)
    K.scale_kernel(flat, w, wp, np.array(he.primes[:level], np.uint64), out)
    return out.reshape(np.shape(ct))


def mac_scalar(he: H.HEParams, cts, x) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.mac_scalar` (tiled, lazy reduction; the COP hot loop)."""
    x = np.asarray(x)
    level = _level(he, cts)
    if x.ndim != 2 or np.ndim(cts) != 4 or x.shape[1] != np.shape(cts)[0] or x.dtype != np.uint64:
        raise ShapeError(f"mac_scalar: x (n, k) uint64 with k = {np.shape(cts)[0]} ciphertexts, got {x.dtype}{x.shape}")
    w, wp = _lifted(he, x, level)
    out = np.empty((x.shape[0], 2, level, he.n), np.uint64)
    K.mac_kernel(np.ascontiguousarray(cts), w, wp, np.array(he.primes[:level], np.uint64), out)
    return out


def mul_monomial(he: H.HEParams, ct, k: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.mul_monomial`."""
    level = _level(he, ct)
    a = _rows(ct, 2)
    out = np.empty_like(a)
    K.monomial_kernel(a, int(k) % (2 * he.n), np.array(he.primes[:level], np.uint64), out)
    return out.reshape(np.shape(ct))


def mul_plain(he: H.HEParams, ct, poly) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.mul_plain` (NTT, Montgomery pointwise products)."""
    level = _level(he, ct)
    poly = np.asarray(poly)
    if poly.dtype != np.uint64 or poly.shape != np.shape(ct)[:-3] + (he.n,):
        raise ShapeError(f"mul_plain: polynomial shape {poly.shape} for ciphertexts {np.shape(ct)}")
    flat = _rows(ct, 3)
    B = flat.shape[0]
    pw = poly.reshape(B, he.n)
    pm = np.empty((B, level, he.n), np.uint64)  # centred lifts mod p_i
    K.lift_poly(np.ascontiguousarray(pw), he.plain_bits, np.array(he.primes[:level], np.uint64), pm)
    pm = _mont(he, _ntt(he, pm))
    out = np.empty_like(flat)
    for k in range(2):
        out[:, k] = _polymul(he, np.ascontiguousarray(flat[:, k]), pm)
    return out.reshape(np.shape(ct))


@functools.lru_cache(maxsize=64)
def _drop_consts(he: H.HEParams, level: int):
    pl = he.primes[level - 1]
    keep = he.primes[: level - 1]
    inv = [pow(pl, -1, p) for p in keep]
    return (np.array(he.primes[:level], np.uint64), np.array(inv, np.uint64),
            np.array([(v << 64) // p for v, p in zip(inv, keep)], np.uint64),
            np.array([pl % p for p in keep], np.uint64))


def mod_switch(he: H.HEParams, ct, level: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.mod_switch`."""
    cur = _level(he, ct)
    if not 1 <= level <= cur:
        raise ShapeError(f"cannot switch from level {cur} to {level}")
    a = _rows(ct, 2)
    for L in range(cur, level, -1):
        out = np.empty((a.shape[0], L - 1, he.n), np.uint64)
        K.drop_prime(a, *_drop_consts(he, L), out)
        a = out
    return a.reshape(np.shape(ct)[:-2] + (level, he.n))


def flood(he: H.HEParams, pk, ct, prg, label: str, bound: int | None = None) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.flood`."""
    level = _level(he, ct)
    F = he.flood_bound if bound is None else int(bound)
    zero = np.zeros(np.shape(ct)[:-3] + (level, he.n), dtype=np.uint64)
    return add(he, ct, _pk_encrypt(he, np.asarray(pk)[:, :level], zero, prg, label, F))


# -- automorphisms, key switching, packing ---------------------------------------------------
def _check_g(he, g: int) -> int:
    g = int(g)
    if g % 2 == 0 or not 0 < g < 2 * he.n:
        raise ShapeError(f"Galois element {g} must be odd in (0, 2N)")
    return g


def _auto(he, a, g):
    """sigma_g on residues (R, L', N)."""
    a = _rows(a, 2)
    out = np.empty_like(a)
    PK.auto_kernel(a, np.int64(g), np.array(he.primes[: a.shape[1]], np.uint64), out)
    return out


def automorphism(he: H.HEParams, ct, g: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.automorphism` (one permutation pass)."""
    _level(he, ct)
    g = _check_g(he, g)
    return _auto(he, ct, g).reshape(np.shape(ct))


def galois_keygen(he: H.HEParams, sk: H.SecretKey, gs, seed: bytes, prg, label: str) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.galois_keygen` (NTT products)."""
    gs = [_check_g(he, g) for g in gs]
    L, n = he.levels, he.n
    G = len(gs)
    a = H.expand_a(he, seed, G * L)
    e = _signed(he, H.draw_error(he, prg, label + "/e", (G, L)), L)
    a_s = _polymul(he, a, np.broadcast_to(_secret_mont(he, sk, L), a.shape).copy())
    out = np.empty_like(a)
    K.sub_mod(e, a_s, np.array(he.primes, np.uint64), out)
    out = out.reshape(G, L, L, n)
    s_rns = _signed(he, sk.s[None], L)
    for t, g in enumerate(gs):
        sg = _auto(he, s_rns, g)[0]  # sigma_g(s) mod every prime
        for i in range(L):  # + sigma_g(s) on digit i's own prime (the gadget's CRT idempotent)
            v = out[t, i, i] + sg[i]
            out[t, i, i] = np.where(v >= np.uint64(he.primes[i]), v - np.uint64(he.primes[i]), v)
    return out


def expand_galois(he: H.HEParams, seed: bytes, c0) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.expand_galois`."""
    c0 = H.galois_seeded_shape(he, c0)
    full = expand_seeded(he, seed, c0.reshape((-1, he.levels, he.n)))
    return full.reshape(c0.shape[:2] + (2, he.levels, he.n))


def _key_ntt(he, key, level):
    """A Galois key (L', 2, L', N) in Montgomery NTT form."""
    k = np.ascontiguousarray(key).reshape(level * 2, level, he.n)
    return _mont(he, _ntt(he, k)).reshape(level, 2, level, he.n)


@functools.lru_cache(maxsize=64)
def _onep(he: H.HEParams, level: int) -> np.ndarray:
    """floor(2^64 / p_j) for the primes of the level (the digits' reduction constants)."""
    return np.array([(1 << 64) // p for p in he.primes[:level]], np.uint64)


def _switch_acc(he, ct, kn, level):
    """sum_i d_i (b_i, a_i) (coefficient form, (B, 2, L', N)) for ciphertexts ct (B, 2, L', N),
    d_i the digits of c1, kn the key in NTT form."""
    B = ct.shape[0]
    t = _t(he, level)
    d = np.empty((B, level, level, he.n), np.uint64)
    PK.digits_kernel(ct[:, 1], t["primes"], _onep(he, level), d)  # 1. digits
    K.ntt_batch(d.reshape(B * level, level, he.n), t["W"], t["Wp"], t["primes"])
    acc = np.empty((B, 2, level, he.n), np.uint64)
    PK.ks_mac_ntt(d, kn, t["primes"], t["pinv"], acc)  # 2. sum_i d_i (b_i, a_i)
    _intt(he, acc.reshape(B * 2, level, he.n))
    return acc


def _switch(he, ct, kn, level):
    """Key switching of ciphertexts ct (B, 2, L', N) with the NTT-form key kn."""
    acc = _switch_acc(he, ct, kn, level)
    acc[:, 0] = _addm(he, np.ascontiguousarray(acc[:, 0]), np.ascontiguousarray(ct[:, 0]))
    return acc


def key_switch(he: H.HEParams, ct, key) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.key_switch` (digits, NTT, accumulate, one inverse NTT)."""
    level = _level(he, ct)
    key = H.galois_key_at(he, key, level)
    flat = _rows(ct, 3)
    out = _switch(he, flat, _key_ntt(he, key, level), level)
    return out.reshape(np.shape(ct))


def apply_galois(he: H.HEParams, ct, g: int, key) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.apply_galois`."""
    return key_switch(he, automorphism(he, ct, g), key)


def _mul_int(he, a, c: int):
    """a * c mod every prime, a (R, L', N)."""
    level = a.shape[1]
    pr = he.primes[:level]
    w = np.array([c % p for p in pr], np.uint64)
    wp = np.array([((c % p) << 64) // p for p in pr], np.uint64)
    out = np.empty_like(a)
    PK.mul_const_kernel(np.ascontiguousarray(a), w, wp, np.array(pr, np.uint64), out)
    return out


def pack_trace(he: H.HEParams, cts, keys) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.pack_trace`: every level is one batched automorphism
    and one batched key switch over all groups (the key in NTT form once per level)."""
    level, D = H.pack_trace_shape(he, cts, keys)
    cts = np.asarray(cts)
    return _trace_levels(he, _mul_int(he, _rows(cts, 2), pow(D, -1, he.q(level))).reshape(cts.shape), keys)  # 1.


def _trace_levels(he: H.HEParams, cur, keys) -> np.ndarray:
    """Step 2 of :func:`pack_trace` on members already multiplied by D^-1 (B, D, 2, L', N)."""
    level, D = H.pack_trace_shape(he, cur, keys)
    keys = np.asarray(keys)
    B = cur.shape[0]
    n = he.n
    pr = np.array(he.primes[:level], np.uint64)
    cur = np.ascontiguousarray(cur, dtype=np.uint64)
    s = D // 2
    while s >= 1:  # 2. level s: inputs t and t + s of every group (fused passes)
        g = H.galois_element(n, s)
        kn = _key_ntt(he, H.galois_key_at(he, keys[s.bit_length() - 1], level), level)
        plus = np.empty((B, s, 2, level, n), np.uint64)
        auto = np.empty_like(plus)
        PK.combine_level(cur, s, np.int64(g), pr, plus, auto)  # E + X^s O, sigma_g(E - X^s O)
        auto = auto.reshape(B * s, 2, level, n)
        acc = _switch_acc(he, auto, kn, level)
        nxt = np.empty_like(auto)
        PK.finish_level(plus.reshape(B * s, 2, level, n), acc, auto, pr, nxt)
        cur, s = nxt.reshape(B, s, 2, level, n), s // 2
    return cur[:, 0]


# -- serialisation --------------------------------------------------------------------------
def pack_bits(values, bits: int) -> bytes:
    """Twin of :func:`nimbus.reference.rlwe.pack_bits` (numba bit-packer)."""
    v = np.ascontiguousarray(values, dtype=np.uint64).reshape(-1)
    out = np.zeros(packed_size(v.size, bits), np.uint8)
    K.pack_kernel(v, int(bits), out)
    return out.tobytes()


def unpack_bits(data, n: int, bits: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.rlwe.unpack_bits`."""
    raw = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(int(n), np.uint64)
    K.unpack_kernel(raw, int(n), int(bits), out)
    return out
