"""numba kernels of ``nimbus.optimized.nonlinear`` (module-level, ``cache=True``).

Representation: blocks are (n, 2) uint64 ``[lo, hi]``; bits are uint8 0/1; ring values uint64
reduced with an explicit mask. Every kernel is the twin of the reference function named in its
wrapper in ``nimbus.optimized.nonlinear``.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _sel_mask(i, word):
    """Bits p of 64-bit word ``word`` (p = 64 word + p') whose v = p >> 1 has bit i set."""
    mk = np.uint64(0)
    for p in range(64):
        if (((64 * word + p) >> 1) >> i) & 1:
            mk |= np.uint64(1) << np.uint64(p)
    return mk


@njit(cache=True)
def leaf_encrypt_k(k0, k1, b, gt_s, eq_s, m, out):
    """Packed leaf tables, word-parallel: for the bit p = 2v + k of the leaf's 2^(m+1)-bit
    table, pad bit p is bit p of xor_i K_i^{v_i} = (xor_i K_i^0) ^ xor_i ((K_i^0 ^ K_i^1) & M_i)
    with M_i the positions whose v has bit i; payload masks from b. out: uint64 words, leaf j
    at bits [j 2^(m+1), (j+1) 2^(m+1)) of the little-endian stream."""
    L = b.shape[0]
    nbits = 2 << m
    nw = (nbits + 63) // 64
    even = np.uint64(0x5555555555555555)
    for w in range(nw):
        msk = np.empty(m, np.uint64)
        for i in range(m):
            msk[i] = _sel_mask(i, w)
        width = min(64, nbits - 64 * w)
        lim = np.uint64(0xFFFFFFFFFFFFFFFF) if width == 64 else (np.uint64(1) << np.uint64(width)) - np.uint64(1)
        for j in range(L):
            pad = np.uint64(0)
            for i in range(m):
                a0 = k0[j, i, w]
                pad ^= a0 ^ ((a0 ^ k1[j, i, w]) & msk[i])
            bj = np.int64(b[j])
            # gt bits: positions 2v (v > b) in this word; eq bit: position 2b + 1
            lo_p = 2 * bj + 2 - 64 * w  # first even position with v > b
            if lo_p <= 0:
                gt = even
            elif lo_p >= 64:
                gt = np.uint64(0)
            else:
                gt = even & ~((np.uint64(1) << np.uint64(lo_p)) - np.uint64(1))
            ep = 2 * bj + 1 - 64 * w
            eq = (np.uint64(1) << np.uint64(ep)) if 0 <= ep < 64 else np.uint64(0)
            word = pad ^ gt ^ eq
            if gt_s[j]:
                word ^= even
            if eq_s[j]:
                word ^= even << np.uint64(1)
            word &= lim
            # append `width` bits at bit offset j * nbits + 64 w
            pos = j * nbits + 64 * w
            q, r = pos // 64, pos % 64
            out[q] |= word << np.uint64(r)
            if r and r + width > 64:
                out[q + 1] |= word >> np.uint64(64 - r)


@njit(cache=True)
def leaf_decrypt_k(kt, a, data, m, gt, eq):
    """data: the packed tables as uint8; reads the two bits at (j 2^m + a_j) 2."""
    L = a.shape[0]
    for j in range(L):
        lo = np.uint64(0)
        hi = np.uint64(0)
        for i in range(m):
            lo ^= kt[j, i, 0]
            if kt.shape[2] > 1:
                hi ^= kt[j, i, 1]
        v = np.int64(a[j])
        p0 = 2 * v
        p1 = 2 * v + 1
        w0 = lo if p0 < 64 else hi
        w1 = lo if p1 < 64 else hi
        base = (j << (m + 1)) + p0
        t0 = (data[base >> 3] >> (base & 7)) & 1
        base1 = base + 1
        t1 = (data[base1 >> 3] >> (base1 & 7)) & 1
        gt[j] = np.uint8(t0) ^ np.uint8((w0 >> np.uint64(p0 & 63)) & np.uint64(1))
        eq[j] = np.uint8(t1) ^ np.uint8((w1 >> np.uint64(p1 & 63)) & np.uint64(1))


@njit(cache=True)
def acot_send_k(h0, h1, c, mk, u, out):
    for i in range(h0.shape[0]):
        u[i] = (h1[i] - h0[i] - c[i]) & mk
        out[i] = (np.uint64(0) - h0[i]) & mk


@njit(cache=True)
def acot_recv_k(ht, b, u, mk, y):
    for i in range(ht.shape[0]):
        if b[i]:
            y[i] = (ht[i] - u[i]) & mk
        else:
            y[i] = ht[i] & mk


@njit(cache=True)
def split_blocks_k(v, vmask, m, q, out):
    bm = np.uint64((1 << m) - 1)
    for i in range(v.shape[0]):
        x = v[i] & vmask
        for j in range(q):
            out[i, j] = (x >> np.uint64(j * m)) & bm


@njit(cache=True)
def bits_k(v, nbits, out):
    for i in range(v.shape[0]):
        x = v[i]
        for j in range(nbits):
            out[i, j] = np.uint8((x >> np.uint64(j)) & np.uint64(1))


@njit(cache=True)
def crh_prep_pair(q, delta, d, i0, dom, start, inb, sig):
    """AES inputs sigma(y) ^ w for y0 = q ^ d delta (rows [0, n)) and y1 = y0 ^ delta (rows
    [n, 2n)) of the chunk q[start:start+n]; sig keeps sigma(y)."""
    n = inb.shape[0] // 2
    d0, d1 = delta[0], delta[1]
    w1 = np.uint64(dom)
    for k in range(n):
        i = start + k
        lo = q[i, 0]
        hi = q[i, 1]
        if d[i]:
            lo ^= d0
            hi ^= d1
        w0 = np.uint64(i0 + i)
        # y0
        s0, s1 = hi, lo ^ hi
        sig[k, 0] = s0
        sig[k, 1] = s1
        inb[k, 0] = s0 ^ w0
        inb[k, 1] = s1 ^ w1
        # y1 = y0 ^ delta
        lo ^= d0
        hi ^= d1
        s0, s1 = hi, lo ^ hi
        sig[n + k, 0] = s0
        sig[n + k, 1] = s1
        inb[n + k, 0] = s0 ^ w0
        inb[n + k, 1] = s1 ^ w1


@njit(cache=True)
def crh_prep_one(t, i0, dom, start, inb, sig):
    n = inb.shape[0]
    w1 = np.uint64(dom)
    for k in range(n):
        i = start + k
        lo = t[i, 0]
        hi = t[i, 1]
        s0, s1 = hi, lo ^ hi
        sig[k, 0] = s0
        sig[k, 1] = s1
        inb[k, 0] = s0 ^ np.uint64(i0 + i)
        inb[k, 1] = s1 ^ w1


@njit(cache=True)
def crh_post(enc, sig, out, start, n):
    """out[start:start+n] = enc[:n] ^ sig[:n] (one block array)."""
    for k in range(n):
        out[start + k, 0] = enc[k, 0] ^ sig[k, 0]
        out[start + k, 1] = enc[k, 1] ^ sig[k, 1]


@njit(cache=True)
def crh_post_pair(enc, sig, out0, out1, start, n):
    for k in range(n):
        out0[start + k, 0] = enc[k, 0] ^ sig[k, 0]
        out0[start + k, 1] = enc[k, 1] ^ sig[k, 1]
        out1[start + k, 0] = enc[n + k, 0] ^ sig[n + k, 0]
        out1[start + k, 1] = enc[n + k, 1] ^ sig[n + k, 1]


@njit(cache=True)
def crh_post_words(enc, sig, out, start, n):
    for k in range(n):
        out[start + k] = enc[k, 0] ^ sig[k, 0]


@njit(cache=True)
def crh_post_pair_words(enc, sig, out0, out1, start, n):
    for k in range(n):
        out0[start + k] = enc[k, 0] ^ sig[k, 0]
        out1[start + k] = enc[n + k, 0] ^ sig[n + k, 0]


@njit(cache=True)
def pack_k(v, bits, out):
    """Element i at bits [i*bits, (i+1)*bits) of the little-endian stream ``out`` (uint64 words,
    zeroed by the caller); v < 2^bits."""
    pos = 0
    for i in range(v.shape[0]):
        x = v[i]
        q, r = pos >> 6, pos & 63
        out[q] |= x << np.uint64(r)
        if r and r + bits > 64:
            out[q + 1] |= x >> np.uint64(64 - r)
        pos += bits


@njit(cache=True)
def unpack_k(w, n, bits, out):
    mk = np.uint64(0xFFFFFFFFFFFFFFFF) if bits == 64 else (np.uint64(1) << np.uint64(bits)) - np.uint64(1)
    pos = 0
    for i in range(n):
        q, r = pos >> 6, pos & 63
        x = w[q] >> np.uint64(r)
        if r and r + bits > 64:
            x |= w[q + 1] << np.uint64(64 - r)
        out[i] = x & mk
        pos += bits


@njit(cache=True)
def acot_send_post(enc, sig, c, mk, u, out, start, n):
    """ACOT sender on one hashed chunk: h0 = enc[k] ^ sig[k], h1 = enc[n+k] ^ sig[n+k] (low
    words); u = h1 - h0 - c, out = -h0 (mod 2^bits)."""
    for k in range(n):
        h0 = enc[k, 0] ^ sig[k, 0]
        h1 = enc[n + k, 0] ^ sig[n + k, 0]
        u[start + k] = (h1 - h0 - c[start + k]) & mk
        out[start + k] = (np.uint64(0) - h0) & mk


@njit(cache=True)
def acot_recv_post(enc, sig, b, u, mk, y, start, n):
    for k in range(n):
        h = enc[k, 0] ^ sig[k, 0]
        if b[start + k]:
            h -= u[start + k]
        y[start + k] = h & mk


@njit(cache=True)
def vcrh_prep(q, delta, d, pair, i0, dom, G, start, m, inb, sig):
    """AES inputs of the vector-ACOT streams of keys start..start+m: key y0 = q ^ d delta (and,
    when ``pair``, y1 = y0 ^ delta in rows [m G, 2 m G)); block g of key i: sigma(y) ^ (i0 + i,
    dom + (g << 16)); sig keeps sigma(y) per key (rows [0, m) and [m, 2m))."""
    d0, d1 = delta[0], delta[1]
    for k in range(m):
        i = start + k
        lo = q[i, 0]
        hi = q[i, 1]
        if pair and d[i]:
            lo ^= d0
            hi ^= d1
        w0 = np.uint64(i0 + i)
        for half in range(2 if pair else 1):
            if half:
                lo ^= d0
                hi ^= d1
            s0, s1 = hi, lo ^ hi
            sig[half * m + k, 0] = s0
            sig[half * m + k, 1] = s1
            base = half * m * G + k * G
            for g in range(G):
                inb[base + g, 0] = s0 ^ w0
                inb[base + g, 1] = s1 ^ (np.uint64(dom) + (np.uint64(g) << np.uint64(16)))


@njit(cache=True, inline="always")
def _lane(enc, sig, row, krow, j, lanes):
    """Pad j of the stream whose blocks start at enc row ``row`` (sigma in sig[krow])."""
    if lanes == 4:
        g, w = j >> 2, j & 3
        v = enc[row + g, w >> 1] ^ sig[krow, w >> 1]
        return (v >> np.uint64(32)) if (w & 1) else (v & np.uint64(0xFFFFFFFF))
    g, w = j >> 1, j & 1
    return enc[row + g, w] ^ sig[krow, w]


@njit(cache=True)
def vacot_send_post(enc, sig, c, mk, lanes, G, u, out, start, m):
    """Vector-ACOT sender on one hashed chunk of m keys: P0 from rows [0, m G), P1 from
    [m G, 2 m G); u = P1 - P0 - c, out = -P0 (mod 2^bits)."""
    n = c.shape[1]
    for k in range(m):
        i = start + k
        for j in range(n):
            p0 = _lane(enc, sig, k * G, k, j, lanes)
            p1 = _lane(enc, sig, m * G + k * G, m + k, j, lanes)
            u[i, j] = (p1 - p0 - c[i, j]) & mk
            out[i, j] = (np.uint64(0) - p0) & mk


@njit(cache=True)
def vacot_recv_post(enc, sig, b, u, mk, lanes, G, y, start, m):
    n = u.shape[1]
    for k in range(m):
        i = start + k
        bi = b[i]
        for j in range(n):
            p = _lane(enc, sig, k * G, k, j, lanes)
            if bi:
                p -= u[i, j]
            y[i, j] = p & mk


@njit(cache=True)
def vacot_pads_post(enc, sig, mk, lanes, G, n, y, start, m):
    for k in range(m):
        for j in range(n):
            y[start + k, j] = _lane(enc, sig, k * G, k, j, lanes) & mk
