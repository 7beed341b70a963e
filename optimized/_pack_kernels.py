"""Private numba kernels of output packing (automorphisms, key switching): used by
:mod:`nimbus.optimized.rlwe` (``automorphism``, ``key_switch``, ``pack_trace``).

Representation: every kernel takes and returns ``numpy.uint64`` residues in [0, p) (coefficient
form unless named ``*_ntt``); arrays are C-contiguous with the prime axis next to last, as in
:mod:`nimbus.optimized._ntt`. Every product is reduced explicitly (Shoup or Montgomery, from
``_ntt``); no kernel relies on scalar overflow except inside those reductions.
Reference twins: :func:`nimbus.reference.rlwe.automorphism`, ``key_switch``, ``pack_trace``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import _ntt as NT

__all__: list[str] = []  # private helpers; the public API is nimbus.optimized.rlwe


@njit(cache=True, parallel=True)
def auto_kernel(a, g, primes, out):
    """out[r, i] = sigma_g(a[r, i]): coefficient j -> j g mod 2N, negated (p - x) at or above N.

    a, out: (R, L, N) residues; g odd in (0, 2N)."""
    R, L, n = a.shape
    two_n = 2 * n
    for r in prange(R):
        for i in range(L):
            p = primes[i]
            src = a[r, i]
            dst = out[r, i]
            t = 0
            for j in range(n):
                x = src[j]
                if t >= n:
                    dst[t - n] = p - x if x != 0 else x
                else:
                    dst[t] = x
                t += g
                if t >= two_n:
                    t -= two_n


@njit(cache=True, parallel=True)
def digits_kernel(c1, primes, onep, out):
    """RNS gadget digits: out[b, i, j] = (centred residue of c1[b, i] mod p_i) mod p_j.

    c1: (B, L, N); out: (B, L, L, N); onep[j] = floor(2^64 / p_j). The centred residue of x is
    x (x <= p_i // 2) or x - p_i; reduction mod p_j by ``x - mulhi(x, onep) p_j`` and one
    conditional subtraction (the quotient estimate is low by at most 1)."""
    B, L, n = c1.shape
    for x in prange(B * L):
        b = x // L
        i = x % L
        pi = primes[i]
        half = pi // np.uint64(2)
        src = c1[b, i]
        for j in range(L):
            pj = primes[j]
            w = onep[j]
            dst = out[b, i, j]
            for t in range(n):
                v = src[t]
                neg = v > half
                if neg:
                    v = pi - v  # |x - p_i|
                r = v - NT.mulhi(v, w) * pj
                if r >= pj:
                    r -= pj
                if neg and r != 0:
                    r = pj - r
                dst[t] = r


@njit(cache=True, parallel=True)
def ks_mac_ntt(d, key, primes, pinv, out):
    """out[b, c, j] = sum_i d[b, i, j] * key[i, c, j] 2^-64 mod p_j (NTT domain; key in
    Montgomery form, so the products are plain). d: (B, L, L, N), key: (L, 2, L, N),
    out: (B, 2, L, N)."""
    B, L, _, n = d.shape
    for b in prange(B):
        for c in range(2):
            for j in range(L):
                p = primes[j]
                q = pinv[j]
                o = out[b, c, j]
                for t in range(n):
                    o[t] = 0
                for i in range(L):
                    NT.mac_mont_row(o, d[b, i, j], key[i, c, j], p, q)


@njit(cache=True, parallel=True)
def mul_const_kernel(a, w, wp, primes, out):
    """out[r, i] = a[r, i] * w[i] mod p_i (Shoup constants wp[i] = floor(w[i] 2^64 / p_i)).

    a, out: (R, L, N)."""
    R, L, n = a.shape
    for r in prange(R):
        for i in range(L):
            p = primes[i]
            for t in range(n):
                x = NT.mul_shoup(w[i], wp[i], a[r, i, t], p)
                out[r, i, t] = x - p if x >= p else x


@njit(cache=True, parallel=True)
def combine_level(cur, s, g, primes, plus, auto):
    """One packing level before its key switch, fused: with E = cur[:, t], O = cur[:, t + s]
    (t < s), ``plus[:, t] = E + X^s O`` and ``auto[:, t] = sigma_g(E - X^s O)``.

    cur: (B, 2s, 2, L, N); plus, auto: (B, s, 2, L, N); g odd in (0, 2N)."""
    B = cur.shape[0]
    L, n = cur.shape[3], cur.shape[4]
    two_n = 2 * n
    for x in prange(B * s):
        b = x // s
        t = x % s
        for c in range(2):
            for i in range(L):
                p = primes[i]
                e = cur[b, t, c, i]
                o = cur[b, t + s, c, i]
                po = plus[b, t, c, i]
                ao = auto[b, t, c, i]
                u = 0  # = k g mod 2N, stepped (g < 2N)
                for k in range(n):
                    if k >= s:  # coefficient k of X^s O: O[k - s], or -O[k - s + N] (wrapped)
                        v = o[k - s]
                    else:
                        v = o[k - s + n]
                        if v != 0:
                            v = p - v
                    ek = e[k]
                    a = ek + v
                    po[k] = a - p if a >= p else a
                    m = ek + p - v
                    m = m - p if m >= p else m
                    if u >= n:  # sigma_g: k -> k g mod 2N, negated at or above N
                        ao[u - n] = p - m if m != 0 else m
                    else:
                        ao[u] = m
                    u += g
                    if u >= two_n:
                        u -= two_n


@njit(cache=True, parallel=True)
def finish_level(plus, acc, auto, primes, out):
    """out = plus + (auto_c0 + acc_c0, acc_c1): E + X^s O plus the key-switched sigma_g(E - X^s O).

    plus, auto, out: (R, 2, L, N); acc: (R, 2, L, N) the key-switching sums (coefficient form)."""
    R, _, L, n = plus.shape
    for r in prange(R):
        for i in range(L):
            p = primes[i]
            for j in range(n):
                a = acc[r, 0, i, j] + auto[r, 0, i, j]
                a = a - p if a >= p else a
                a = a + plus[r, 0, i, j]
                out[r, 0, i, j] = a - p if a >= p else a
                b = acc[r, 1, i, j] + plus[r, 1, i, j]
                out[r, 1, i, j] = b - p if b >= p else b
