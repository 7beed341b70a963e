"""Optimized OT: the reference orchestration with fast kernels (numba + AES on preallocated buffers).

Twin of ``nimbus.reference.ot``: same ``__all__``, signatures, outputs and transcripts. The party
generators, :class:`CotEnd` and :class:`OtSession` are the reference's (cheap orchestration; the
DESIGN allows reusing it) and dispatch to kernels through ``ctx.impl.ot``, so with this
implementation they run the kernels below. AES is the ``cryptography`` package's
``update_into`` on preallocated C-contiguous uint8 buffers (one call per batch, never per block);
bit shuffles, xors and gathers are numba kernels in :mod:`nimbus.optimized._ot_kernels`.
Threads (``numba.set_num_threads``) never change outputs.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from nimbus.reference import ot as _ref
from nimbus.reference.ot import (  # noqa: F401  (orchestration shared with the reference)
    CotEnd, OtSession, acot_receiver, acot_sender, base_ot_receiver, base_ot_sender, cot_end_setup,
    cot_receiver, cot_sender, ot_1ofn_receiver, ot_1ofn_sender, ot_receiver, ot_sender,
    ot_setup_client, ot_setup_server, rcot_receiver, rcot_sender, rot_receiver, rot_sender,
)
from nimbus.spec import ot as S
from nimbus.spec.errors import ShapeError

from . import _ot_kernels as K

__all__ = list(_ref.__all__)

#: Names taken from the reference on purpose (protocol orchestration; it calls the kernels below
#: through ``ctx.impl.ot``). Every kernel is rewritten here.
REUSED = frozenset({
    "CotEnd", "OtSession", "ot_setup_client", "ot_setup_server", "cot_end_setup",
    "base_ot_sender", "base_ot_receiver",
    "rcot_sender", "rcot_receiver", "cot_sender", "cot_receiver", "rot_sender", "rot_receiver",
    "ot_sender", "ot_receiver", "ot_1ofn_sender", "ot_1ofn_receiver", "acot_sender", "acot_receiver",
})

_U64 = np.uint64
_ECB = threading.local()  # per thread: an encryptor object must not be used by two threads at once
_ZEROS = np.zeros(0, dtype=np.uint8)
_LPN_CHUNK_PAR = 1 << 16
_LPN_CHUNK = 1 << 14  # rows per AES call in lpn_encode (cache-resident; a tuning knob: never changes outputs)


def _ecb(key: bytes):
    """A cached AES-128-ECB encryptor (ECB is stateless, so it can be reused), one per thread
    (both parties may run in one process, each in its own thread)."""
    cache = getattr(_ECB, "d", None)
    if cache is None:
        cache = _ECB.d = {}
    enc = cache.get(key)
    if enc is None:
        enc = cache[key] = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc


def _zeros(n: int) -> np.ndarray:
    global _ZEROS
    if _ZEROS.size < n:
        _ZEROS = np.zeros(max(n, 2 * _ZEROS.size), dtype=np.uint8)
    return _ZEROS[:n]


def _as_blocks(x, name: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=_U64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ShapeError(f"{name} must be an (n, 2) array of blocks")
    return x


def prg_expand(keys: np.ndarray, nbytes: int, nonce: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.ot.prg_expand` (one fixed-key AES call for all columns)."""
    keys = np.ascontiguousarray(keys, dtype=np.uint8)
    if keys.ndim != 2 or keys.shape[1] != 16 or not 0 <= int(nonce) < 1 << 32:
        raise ShapeError("keys must be (m, 16) uint8 and 0 <= nonce < 2^32")
    nblk = -(-nbytes // 16)
    out = np.empty(keys.shape[0] * nblk * 16 + 16, dtype=np.uint8)
    _prg_into(keys, nblk, nonce, out)
    g = out[: keys.shape[0] * nblk * 16].reshape(keys.shape[0], nblk * 16)
    return g if nblk * 16 == nbytes else np.ascontiguousarray(g[:, :nbytes])


def transpose_bits(cols: np.ndarray) -> np.ndarray:
    """Twin of :func:`nimbus.reference.ot.transpose_bits` (numba 64x64-block transposes)."""
    cols = np.ascontiguousarray(cols, dtype=np.uint8)
    if cols.ndim != 2 or cols.shape[0] != 128:
        raise ShapeError("cols must be (128, m/8) uint8")
    if cols.shape[1] % 8:
        return _ref.transpose_bits(cols)  # m not a multiple of 64: the reference path
    words = cols.view("<u8")
    out = np.empty((cols.shape[1] * 8, 2), dtype=_U64)
    K.transpose_128(words, out, max(1, min((words.shape[1] + 7) // 8, 8 * numba.get_num_threads())))
    return out


def _prg_into(keys: np.ndarray, nblk: int, nonce: int, out: np.ndarray) -> None:
    """out (flat uint8, m*nblk*16 + 16 bytes) <- the m columns of nblk blocks, back to back."""
    m = keys.shape[0]
    if m == 0 or nblk == 0:
        return
    x = np.empty((m, nblk, 2), dtype=_U64)
    K.prg_inputs(keys.view("<u8").reshape(m, 2), np.uint64((S.DOM_IKNP << 32) | int(nonce)), x)
    _ecb(S.PI_KEY).update_into(x.reshape(-1).view(np.uint8), out[: m * nblk * 16 + 15])
    K.xor_into(out[: m * nblk * 16].view("<u8").reshape(-1, 2), x.reshape(-1, 2))


_IKNP_CHUNK = 512  # blocks per column per fused IKNP step (a tuning knob: never changes outputs)


def _iknp_fused(keys_u64: np.ndarray, nonce: int, nb: int, step) -> np.ndarray:
    """The fused single-thread IKNP pass: per chunk of C blocks of every column, one AES call for
    the PRG inputs of all key sets, then ``step(enc, c0, tile, out)`` (xors + the transpose of the
    chunk into its rows). Nothing of size m*128 bits is materialised but the outputs."""
    S_, m_cols = keys_u64.shape[0], keys_u64.shape[1]
    nblk = nb // 16
    C = min(_IKNP_CHUNK, nblk)
    hi = _U64((S.DOM_IKNP << 32) | int(nonce))
    x = np.empty(S_ * m_cols * C * 2, dtype=_U64)
    enc = np.empty(S_ * m_cols * C * 2 + 2, dtype=_U64)
    tile = np.empty((128, 2 * C + 8), dtype=_U64)  # padded rows: no cache-set conflicts
    out = np.empty((nb * 8, 2), dtype=_U64)
    pi = _ecb(S.PI_KEY)
    for c0 in range(0, nblk, C):
        cc = min(C, nblk - c0)
        xs = x[: S_ * m_cols * cc * 2].reshape(S_, m_cols, cc, 2)
        K.iknp_prg_in(keys_u64, hi, c0, xs)
        pi.update_into(xs.reshape(-1).view(np.uint8), enc.view(np.uint8)[: xs.size * 8 + 15])
        step(enc[: xs.size].reshape(S_, m_cols, cc, 2), c0, tile, out)
    return out


def iknp_receiver_expand(keys: np.ndarray, r_packed: np.ndarray, nonce: int) -> tuple[np.ndarray, np.ndarray]:
    """Twin of :func:`nimbus.reference.ot.iknp_receiver_expand` (one thread: PRG, xors and the
    transpose fused chunk by chunk; several: whole-matrix passes with parallel kernels)."""
    keys = np.ascontiguousarray(keys, dtype=np.uint8)
    rp = np.ascontiguousarray(r_packed, dtype=np.uint8).reshape(-1)
    if keys.shape != (128, 2, 16) or rp.size % 16:
        return _ref.iknp_receiver_expand(keys, rp, nonce)  # odd sizes: the reference path
    nb = rp.size
    if numba.get_num_threads() == 1:
        ku = np.ascontiguousarray(keys.view("<u8").reshape(128, 2, 2).transpose(1, 0, 2))
        u = np.empty((128, nb), dtype=np.uint8)
        uw, rw = u.view("<u8"), rp.view("<u8")
        t = _iknp_fused(ku, nonce, nb, lambda enc, c0, tile, out: K.iknp_recv_chunk(
            enc, ku, _U64((S.DOM_IKNP << 32) | int(nonce)), c0, rw, uw, tile, out))
        return u, t
    t_flat = np.empty(128 * nb + 16, dtype=np.uint8)
    u_flat = np.empty(128 * nb + 16, dtype=np.uint8)
    _prg_into(np.ascontiguousarray(keys[:, 0]), nb // 16, nonce, t_flat)
    _prg_into(np.ascontiguousarray(keys[:, 1]), nb // 16, nonce, u_flat)
    t_cols = t_flat[: 128 * nb].reshape(128, nb)
    u = u_flat[: 128 * nb].reshape(128, nb)
    K.xor3_rows(u.view("<u8"), t_cols.view("<u8"), rp.view("<u8"))
    t_cols[0] = rp
    return u, transpose_bits(t_cols)


def iknp_sender_expand(keys: np.ndarray, delta: np.ndarray, u: np.ndarray, nonce: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.ot.iknp_sender_expand`."""
    keys = np.ascontiguousarray(keys, dtype=np.uint8)
    u = np.ascontiguousarray(u, dtype=np.uint8)
    if keys.shape != (128, 16) or u.ndim != 2 or u.shape[0] != 128 or u.shape[1] % 16:
        return _ref.iknp_sender_expand(keys, delta, u, nonce)
    nb = u.shape[1]
    dbits = np.unpackbits(np.asarray(delta, dtype="<u8").view(np.uint8), bitorder="little")
    if numba.get_num_threads() == 1:
        ku = np.ascontiguousarray(keys.view("<u8").reshape(1, 128, 2))
        uw = u.view("<u8")
        return _iknp_fused(ku, nonce, nb, lambda enc, c0, tile, out: K.iknp_send_chunk(
            enc, ku, _U64((S.DOM_IKNP << 32) | int(nonce)), c0, dbits, uw, tile, out))
    flat = np.empty(128 * nb + 16, dtype=np.uint8)
    _prg_into(keys, nb // 16, nonce, flat)
    cols = flat[: 128 * nb].reshape(128, nb)
    K.xor_rows_masked(cols.view("<u8"), u.view("<u8"), dbits)
    cols[0] = 0
    return transpose_bits(cols)


def ccr_hash(x: np.ndarray, tweaks: np.ndarray) -> np.ndarray:
    """Twin of :func:`nimbus.reference.ot.ccr_hash`: ``PI(sigma(x) xor w) xor sigma(x)``."""
    x = _as_blocks(x, "x")
    tw = _as_blocks(tweaks, "tweaks")
    if tw.shape != x.shape:
        raise ShapeError("x and tweaks must have the same shape")
    n = x.shape[0]
    s = np.empty((n, 2), dtype=_U64)
    buf = np.empty((n, 2), dtype=_U64)
    K.sigma_xor(x, tw, s, buf)
    flat = np.empty(2 * n + 2, dtype=_U64)
    _aes_blocks(S.PI_KEY, buf, flat)
    out = flat[: 2 * n].reshape(n, 2)
    K.xor_into(out, s)
    return out


def _aes_blocks(key: bytes, src: np.ndarray, dst_flat: np.ndarray) -> None:
    """dst_flat[:src.size] = AES_key(src) (dst_flat: a flat uint64 array with a spare block)."""
    enc = _ecb(key)
    s = src.reshape(-1).view(np.uint8)
    if s.size:
        enc.update_into(s, dst_flat.view(np.uint8)[: s.size + 15])


_GGM_BOTTOM = 6  # GGM levels run tree group by tree group (a tuning knob: never changes outputs)
_GGM_CHUNK = 1 << 16  # leaves per tree group (1 MB scratch buffers)
_NO_KNOWN = np.zeros((1, 1, 2), dtype=_U64)
_NO_ALPHA = np.zeros(1, dtype=np.int64)


def _ggm(first: np.ndarray, h: int, known=None, alpha=None) -> tuple[np.ndarray, np.ndarray]:
    """GGM trees from the level-0 AES inputs ``first`` (t, 2, 2): the top ``h - _GGM_BOTTOM``
    levels for all trees at once (one AES call per level), the bottom levels tree group by tree
    group (cache-resident scratch, the last level written straight into the leaves)."""
    t = first.shape[0]
    L = 1 << h
    recv = known is not None
    if not recv:
        known, alpha = _NO_KNOWN, _NO_ALPHA
    level = K.ggm_level if numba.get_num_threads() == 1 else K.ggm_level_par
    leaves = np.empty((t, L, 2), dtype=_U64)
    sums = np.zeros((t, h, 2, 2), dtype=_U64)
    if t == 0:
        return leaves, sums
    top = max(0, h - _GGM_BOTTOM)
    kin = first
    enc_big = np.empty(t * (2 << top) * 2 + 2, dtype=_U64)
    for i in range(top):  # kin: (t, 2^(i+1), 2) AES inputs of depth i+1
        w2 = 2 << i
        _aes_blocks(S.GGM_KEY, kin, enc_big)
        nxt = np.empty((t, 2 * w2, 2), dtype=_U64)
        level(enc_big[: t * w2 * 2].reshape(t, w2, 2), kin, nxt, sums, i, 0, True, recv, known, alpha, h)
        kin = nxt
    G = max(1, min(t, _GGM_CHUNK // L))
    bufs = (np.empty(G * L * 2, dtype=_U64), np.empty(G * L * 2, dtype=_U64))
    enc = np.empty(G * L * 2 + 2, dtype=_U64)
    for g0 in range(0, t, G):
        g = min(G, t - g0)
        cur = kin[g0 : g0 + g]
        for i in range(top, h):
            w2 = 2 << i
            _aes_blocks(S.GGM_KEY, cur, enc)
            if i == h - 1:
                out = leaves[g0 : g0 + g]
            else:
                out = bufs[(i - top) & 1][: g * 2 * w2 * 2].reshape(g, 2 * w2, 2)
            level(enc[: g * w2 * 2].reshape(g, w2, 2), cur, out, sums, i, g0, i < h - 1, recv, known, alpha, h)
            cur = out
    return leaves, sums


def ggm_expand(seeds: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Twin of :func:`nimbus.reference.ot.ggm_expand`: top levels one AES call per level for all
    trees, bottom levels per cache-resident group of trees, each level one fused numba pass."""
    seeds = _as_blocks(seeds, "seeds")
    first = np.empty((seeds.shape[0], 2, 2), dtype=_U64)
    first[:, 0] = seeds
    first[:, 1] = seeds
    first[:, 1, 0] ^= _U64(1)
    return _ggm(first, h)


def ggm_reconstruct(known: np.ndarray, alpha: np.ndarray, h: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.ot.ggm_reconstruct` (same structure as :func:`ggm_expand`,
    with the on-path fix-up fused into each level)."""
    known = np.ascontiguousarray(known, dtype=_U64)
    alpha = np.ascontiguousarray(alpha, dtype=np.int64)
    t = known.shape[0]
    if known.shape != (t, h, 2) or alpha.shape != (t,) or (t and (alpha.min() < 0 or alpha.max() >= 1 << h)):
        raise ShapeError("known must be (t, h, 2) and alpha (t,) in [0, 2^h)")
    first = np.zeros((t, 2, 2), dtype=_U64)  # the root is unknown (0)
    first[:, 1, 0] = 1
    return _ggm(first, h, known, alpha)[0]


def xor_sum(blocks: np.ndarray) -> np.ndarray:
    """Twin of :func:`nimbus.reference.ot.xor_sum`."""
    b = np.ascontiguousarray(blocks, dtype=_U64)
    if b.ndim != 3 or b.shape[2] != 2:
        raise ShapeError("blocks must be (t, L, 2)")
    out = np.empty((b.shape[0], 2), dtype=_U64)
    K.xor_reduce_leaves(b, out)
    return out


def lpn_encode(x: np.ndarray, noise: np.ndarray, seed: bytes, d: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.ot.lpn_encode`: AES index derivation in chunks of rows,
    numba gather-xor."""
    x = _as_blocks(x, "x")
    noise = _as_blocks(noise, "noise")
    if not 1 <= d <= 12 or len(seed) != 16 or x.shape[0] == 0:
        raise ShapeError("lpn_encode: need 1 <= d <= 12, a 16-byte seed and k > 0")
    n, w = noise.shape[0], -(-d // 4)
    out = np.empty_like(noise)
    enc = _ecb(bytes(seed))
    # one thread: small cache-resident chunks; several: larger ones, so that each parallel region
    # has enough work to amortise waking the threads
    nth = numba.get_num_threads()
    R = max(1, min(_LPN_CHUNK if nth == 1 else _LPN_CHUNK_PAR, n))
    ctr = np.zeros((R * w, 2), dtype=_U64)
    words = np.empty(R * w * 4 + 4, dtype=np.uint32)
    base = np.arange(R * w, dtype=_U64)
    k = x.shape[0]
    for r0 in range(0, n, R):
        rows = min(R, n - r0)
        ctr[: rows * w, 0] = base[: rows * w] + _U64(r0 * w)
        enc.update_into(ctr[: rows * w].view(np.uint8).reshape(-1), words.view(np.uint8)[: rows * w * 16 + 15])
        idx = words[: rows * w * 4]
        K.lpn_indices(idx, k)
        if nth == 1:
            K.lpn_gather_1(x, idx.reshape(rows, 4 * w), noise, out, r0, d)
        else:
            K.lpn_gather(x, idx.reshape(rows, 4 * w), noise, out, r0, d, max(1, min(rows // 1024, 64)))
    return out
