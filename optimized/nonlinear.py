"""Non-linear protocols, optimized: the reference orchestration with numba kernels.

The protocol text (message flow, COT consumption, tree schedule) is reused from
``nimbus.reference.nonlinear`` (listed in :data:`REUSED`); the per-element local work (leaf
tables, ACOT arithmetic, bit and block decomposition) is rewritten here as ``@njit(cache=True)``
kernels in ``nimbus.optimized._nl_kernels`` behind validating wrappers, each naming its reference
twin. Works with ``NUMBA_DISABLE_JIT=1``.
"""

from __future__ import annotations

import numpy as np

from nimbus.reference.nonlinear import (  # noqa: F401  (orchestration, reused on purpose)
    __all__ as _REF_ALL, and_bits, and_client, and_server, b2a, b2a_client, b2a_server,
    downcast_trunc, downcast_trunc_client, downcast_trunc_server, drelu, drelu_client, drelu_finish, drelu_group,
    drelu_server, max_client, max_server, maximum, millionaire, millionaire_client,
    millionaire_server, msb_client, msb_server, mul, mul_client, mul_server, mul_rows,
    mul_rows_client, mul_rows_server, vacot, mux, mux_client,
    mux_server, square, square_client, square_server, trunc, trunc_client, trunc_server,
    trunc_upcast, trunc_upcast_client, trunc_upcast_server, wrap_client, wrap_server,
    gelu_client, gelu_server, softmax_client, softmax_server, tanh_client, tanh_server,
    layernorm_client, layernorm_server, reciprocal_client, reciprocal_server, rsqrt_client,
    rsqrt_server,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from nimbus.spec.errors import ShapeError
from nimbus.spec.nonlinear import DOM_NL_VACOT, nblocks, ring_mask, vacot_lanes
from nimbus.spec.ot import PI_KEY

from . import _nl_kernels as _k

__all__ = list(_REF_ALL)

_KERNELS = ("vacot_pads", "vacot_sender", "vacot_receiver", "hash_pair", "hash_one", "hash_pair_words", "hash_one_words", "pack_words", "unpack_words", "acot_sender", "acot_receiver", "leaf_encrypt", "leaf_decrypt", "acot_send_words", "acot_recv_words", "split_blocks",
            "bits_lsb_first")
#: Functions taken from the reference unchanged (protocol orchestration only).
REUSED = frozenset(n for n in __all__ if n not in _KERNELS)


_CHUNK = 1 << 18  # blocks per AES call (bounded temporaries; never changes results)


def _aes(inb: np.ndarray, outb: np.ndarray) -> np.ndarray:
    enc = Cipher(algorithms.AES(PI_KEY), modes.ECB()).encryptor()
    k = enc.update_into(inb.view(np.uint8).reshape(-1), outb)
    return outb[:k].view(np.uint64).reshape(-1, 2)


def _pair(q, delta, d, index0, domain, words: bool):
    q = np.ascontiguousarray(q, dtype=np.uint64)
    d = np.ascontiguousarray(d, dtype=np.uint8).reshape(-1)
    n = q.shape[0]
    if q.ndim != 2 or q.shape[1] != 2 or d.size != n:
        raise ShapeError("hash_pair: q must be (n, 2) blocks and d n bits")
    delta = np.ascontiguousarray(delta, dtype=np.uint64)
    shp = (n,) if words else (n, 2)
    out0, out1 = np.empty(shp, np.uint64), np.empty(shp, np.uint64)
    c = min(_CHUNK, max(n, 1))
    inb, sig = np.empty((2 * c, 2), np.uint64), np.empty((2 * c, 2), np.uint64)
    outb = np.empty(32 * c + 16, np.uint8)
    post = _k.crh_post_pair_words if words else _k.crh_post_pair
    for s in range(0, n, c):
        m = min(c, n - s)
        ib, sg = inb[: 2 * m], sig[: 2 * m]
        _k.crh_prep_pair(q, delta, d, int(index0), int(domain), s, ib, sg)
        post(_aes(ib, outb), sg, out0, out1, s, m)
    return out0, out1


def _one(t, index0, domain, words: bool):
    t = np.ascontiguousarray(t, dtype=np.uint64)
    if t.ndim != 2 or t.shape[1] != 2:
        raise ShapeError("hash_one: t must be (n, 2) blocks")
    n = t.shape[0]
    out = np.empty((n,) if words else (n, 2), np.uint64)
    c = min(_CHUNK, max(n, 1))
    inb, sig = np.empty((c, 2), np.uint64), np.empty((c, 2), np.uint64)
    outb = np.empty(16 * c + 16, np.uint8)
    post = _k.crh_post_words if words else _k.crh_post
    for s in range(0, n, c):
        m = min(c, n - s)
        _k.crh_prep_one(t, int(index0), int(domain), s, inb[:m], sig[:m])
        post(_aes(inb[:m], outb), sig, out, s, m)
    return out


def hash_pair(q: np.ndarray, delta: np.ndarray, d: np.ndarray, index0: int, domain: int):
    """Twin of :func:`nimbus.reference.nonlinear.hash_pair` (chunked, numba pre/post passes,
    AES-128-ECB from ``cryptography``)."""
    return _pair(q, delta, d, index0, domain, False)


def hash_one(t: np.ndarray, index0: int, domain: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.nonlinear.hash_one`."""
    return _one(t, index0, domain, False)


def hash_pair_words(q: np.ndarray, delta: np.ndarray, d: np.ndarray, index0: int, domain: int):
    """Twin of :func:`nimbus.reference.nonlinear.hash_pair_words`."""
    return _pair(q, delta, d, index0, domain, True)


def hash_one_words(t: np.ndarray, index0: int, domain: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.nonlinear.hash_one_words`."""
    return _one(t, index0, domain, True)


def acot_sender(q: np.ndarray, delta: np.ndarray, d: np.ndarray, index0: int, c: np.ndarray, bits: int):
    """Twin of :func:`nimbus.reference.nonlinear.acot_sender`: hashing fused with the ACOT
    arithmetic per chunk (no full-length hash arrays)."""
    from nimbus.spec.nonlinear import DOM_NL_ACOT

    q = np.ascontiguousarray(q, dtype=np.uint64)
    d = np.ascontiguousarray(d, dtype=np.uint8).reshape(-1)
    c = np.ascontiguousarray(c, dtype=np.uint64).reshape(-1)
    n = q.shape[0]
    if q.ndim != 2 or q.shape[1] != 2 or d.size != n or c.size != n:
        raise ShapeError("acot_sender: q (n, 2), d and c of length n")
    delta = np.ascontiguousarray(delta, dtype=np.uint64)
    u, out = np.empty(n, np.uint64), np.empty(n, np.uint64)
    ch = min(_CHUNK, max(n, 1))
    inb, sig = np.empty((2 * ch, 2), np.uint64), np.empty((2 * ch, 2), np.uint64)
    outb = np.empty(32 * ch + 16, np.uint8)
    mk = ring_mask(bits)
    for s in range(0, n, ch):
        m = min(ch, n - s)
        ib, sg = inb[: 2 * m], sig[: 2 * m]
        _k.crh_prep_pair(q, delta, d, int(index0), DOM_NL_ACOT, s, ib, sg)
        _k.acot_send_post(_aes(ib, outb), sg, c, mk, u, out, s, m)
    return u, out


def acot_receiver(t: np.ndarray, index0: int, b: np.ndarray, u: np.ndarray, bits: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.nonlinear.acot_receiver` (fused, chunked)."""
    from nimbus.spec.nonlinear import DOM_NL_ACOT

    t = np.ascontiguousarray(t, dtype=np.uint64)
    b = np.ascontiguousarray(b, dtype=np.uint8).reshape(-1)
    u = np.ascontiguousarray(u, dtype=np.uint64).reshape(-1)
    n = t.shape[0]
    if t.ndim != 2 or t.shape[1] != 2 or b.size != n or u.size != n:
        raise ShapeError("acot_receiver: t (n, 2), b and u of length n")
    y = np.empty(n, np.uint64)
    ch = min(_CHUNK, max(n, 1))
    inb, sig = np.empty((ch, 2), np.uint64), np.empty((ch, 2), np.uint64)
    outb = np.empty(16 * ch + 16, np.uint8)
    mk = ring_mask(bits)
    for s in range(0, n, ch):
        m = min(ch, n - s)
        _k.crh_prep_one(t, int(index0), DOM_NL_ACOT, s, inb[:m], sig[:m])
        _k.acot_recv_post(_aes(inb[:m], outb), sig, b, u, mk, y, s, m)
    return y


_NO_BITS = np.zeros(1, np.uint8)


def _vstreams(keys, delta, d, pair: bool, index0: int, n: int, bits: int, post):
    """Hash the vector-ACOT streams of ``keys`` in chunks of keys (bounded AES buffers) and hand
    each chunk to ``post(enc, sig, lanes, G, start, m)``."""
    lanes = vacot_lanes(bits)
    G = -(-n // lanes)
    M = keys.shape[0]
    if G == 0 or M == 0:
        return
    ch = max(1, min(M, _CHUNK // G))
    k = 2 if pair else 1
    inb = np.empty((k * ch * G, 2), np.uint64)
    sig = np.empty((k * ch, 2), np.uint64)
    outb = np.empty(16 * k * ch * G + 16, np.uint8)
    for s in range(0, M, ch):
        m = min(ch, M - s)
        ib = inb[: k * m * G]
        _k.vcrh_prep(keys, delta, d, pair, int(index0), DOM_NL_VACOT, G, s, m, ib, sig)
        post(_aes(ib, outb), sig, lanes, G, s, m)


def vacot_pads(keys: np.ndarray, index0: int, n: int, bits: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.nonlinear.vacot_pads` (numba pre/post passes, chunked)."""
    keys = np.ascontiguousarray(keys, dtype=np.uint64)
    if keys.ndim != 2 or keys.shape[1] != 2:
        raise ShapeError("vacot_pads: keys must be (m, 2) blocks")
    y = np.zeros((keys.shape[0], int(n)), np.uint64)
    mk = ring_mask(bits)
    _vstreams(keys, np.zeros(2, np.uint64), _NO_BITS, False, index0, int(n), bits,
              lambda enc, sig, lanes, G, s, m: _k.vacot_pads_post(enc, sig, mk, lanes, G, int(n), y, s, m))
    return y


def vacot_sender(q: np.ndarray, delta: np.ndarray, d: np.ndarray, index0: int, c: np.ndarray, bits: int):
    """Twin of :func:`nimbus.reference.nonlinear.vacot_sender`: both keys' streams hashed per
    chunk of COTs, the ACOT arithmetic fused into the post pass."""
    q = np.ascontiguousarray(q, dtype=np.uint64)
    d = np.ascontiguousarray(d, dtype=np.uint8).reshape(-1)
    c = np.ascontiguousarray(c, dtype=np.uint64)
    M = q.shape[0]
    if q.ndim != 2 or q.shape[1] != 2 or d.size != M or c.ndim != 2 or c.shape[0] != M:
        raise ShapeError("vacot_sender: q (m, 2), d of length m, c (m, n)")
    delta = np.ascontiguousarray(delta, dtype=np.uint64)
    u, out = np.zeros(c.shape, np.uint64), np.zeros(c.shape, np.uint64)
    mk = ring_mask(bits)
    _vstreams(q, delta, d, True, index0, c.shape[1], bits,
              lambda enc, sig, lanes, G, s, m: _k.vacot_send_post(enc, sig, c, mk, lanes, G, u, out, s, m))
    return u, out


def vacot_receiver(t: np.ndarray, index0: int, b: np.ndarray, u: np.ndarray, bits: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.nonlinear.vacot_receiver` (fused, chunked)."""
    t = np.ascontiguousarray(t, dtype=np.uint64)
    b = np.ascontiguousarray(b, dtype=np.uint8).reshape(-1)
    u = np.ascontiguousarray(u, dtype=np.uint64)
    M = t.shape[0]
    if t.ndim != 2 or t.shape[1] != 2 or b.size != M or u.ndim != 2 or u.shape[0] != M:
        raise ShapeError("vacot_receiver: t (m, 2), b of length m, u (m, n)")
    y = np.zeros(u.shape, np.uint64)
    mk = ring_mask(bits)
    _vstreams(t, np.zeros(2, np.uint64), _NO_BITS, False, index0, u.shape[1], bits,
              lambda enc, sig, lanes, G, s, m: _k.vacot_recv_post(enc, sig, b, u, mk, lanes, G, y, s, m))
    return y


def _blocks(a, L, m, name):
    a = np.ascontiguousarray(a, dtype=np.uint64)
    nw = 1 if m <= 5 else 2
    if a.ndim != 3 or a.shape[:2] != (L, m) or not nw <= a.shape[2] <= 2:
        raise ShapeError(f"{name} must have shape {(L, m, nw)}, got {a.shape}")
    return a


def leaf_encrypt(k0: np.ndarray, k1: np.ndarray, b: np.ndarray, gt_s: np.ndarray,
                 eq_s: np.ndarray, m: int) -> bytes:
    """Twin of :func:`nimbus.reference.nonlinear.leaf_encrypt` (word-parallel, packed)."""
    b = np.ascontiguousarray(b, dtype=np.uint64).reshape(-1)
    L = b.shape[0]
    nbits = L << (m + 1)
    out = np.zeros((nbits + 63) // 64 + 1, dtype=np.uint64)
    _k.leaf_encrypt_k(_blocks(k0, L, m, "k0"), _blocks(k1, L, m, "k1"), b,
                      np.ascontiguousarray(gt_s, dtype=np.uint8), np.ascontiguousarray(eq_s, dtype=np.uint8),
                      int(m), out)
    return out.astype("<u8").view(np.uint8)[: (nbits + 7) // 8].tobytes()


def leaf_decrypt(kt: np.ndarray, a: np.ndarray, data: bytes, m: int):
    """Twin of :func:`nimbus.reference.nonlinear.leaf_decrypt`."""
    a = np.ascontiguousarray(a, dtype=np.uint64).reshape(-1)
    L = a.shape[0]
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size != ((L << (m + 1)) + 7) // 8:
        raise ShapeError("leaf tables of the wrong length")
    gt = np.empty(L, dtype=np.uint8)
    eq = np.empty(L, dtype=np.uint8)
    _k.leaf_decrypt_k(_blocks(kt, L, m, "kt"), a, raw, int(m), gt, eq)
    return gt, eq


def pack_words(values: np.ndarray, bits: int) -> bytes:
    """Twin of :func:`nimbus.reference.nonlinear.pack_words` (one pass, word-parallel)."""
    v = np.ascontiguousarray(values, dtype=np.uint64).reshape(-1)
    if bits < 64 and v.size and int(v.max()) >> bits:
        raise ShapeError(f"value >= 2^{bits} in pack_words")
    nbits = v.size * bits
    out = np.zeros((nbits + 63) // 64 + 1, dtype=np.uint64)
    _k.pack_k(v, int(bits), out)
    return out.astype("<u8").view(np.uint8)[: (nbits + 7) // 8].tobytes()


def unpack_words(data: bytes, n: int, bits: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.nonlinear.unpack_words`."""
    from nimbus.spec.errors import ProtocolError

    nb = (n * bits + 7) // 8
    if len(data) != nb:
        raise ProtocolError(f"ring vector of {len(data)} bytes, expected {nb}")
    if (n * bits) % 8 and data[-1] >> ((n * bits) % 8):
        raise ProtocolError("non-zero padding bits in a ring vector")
    w = np.zeros((nb + 7) // 8 + 1, dtype=np.uint64)
    w.view(np.uint8)[:nb] = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(n, dtype=np.uint64)
    _k.unpack_k(w, int(n), int(bits), out)
    return out


def acot_send_words(h0: np.ndarray, h1: np.ndarray, c: np.ndarray, bits: int):
    """Twin of :func:`nimbus.reference.nonlinear.acot_send_words`."""
    h0, h1, c = (np.ascontiguousarray(v, dtype=np.uint64).reshape(-1) for v in (h0, h1, c))
    if not h0.size == h1.size == c.size:
        raise ShapeError("acot_send_words: length mismatch")
    u, out = np.empty_like(h0), np.empty_like(h0)
    _k.acot_send_k(h0, h1, c, ring_mask(bits), u, out)
    return u, out


def acot_recv_words(ht: np.ndarray, b: np.ndarray, u: np.ndarray, bits: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.nonlinear.acot_recv_words`."""
    ht, u = (np.ascontiguousarray(v, dtype=np.uint64).reshape(-1) for v in (ht, u))
    b = np.ascontiguousarray(b, dtype=np.uint8).reshape(-1)
    if not ht.size == b.size == u.size:
        raise ShapeError("acot_recv_words: length mismatch")
    y = np.empty_like(ht)
    _k.acot_recv_k(ht, b, u, ring_mask(bits), y)
    return y


def split_blocks(v: np.ndarray, nbits: int, m: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.nonlinear.split_blocks`."""
    v = np.ascontiguousarray(v, dtype=np.uint64).reshape(-1)
    q = nblocks(nbits, m)
    out = np.empty((v.size, q), dtype=np.uint64)
    _k.split_blocks_k(v, ring_mask(nbits), int(m), q, out)
    return out


def bits_lsb_first(v: np.ndarray, nbits: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.nonlinear.bits_lsb_first`."""
    v = np.ascontiguousarray(v, dtype=np.uint64).reshape(-1)
    out = np.empty((v.size, nbits), dtype=np.uint8)
    _k.bits_k(v, int(nbits), out)
    return out
