"""Private numba kernels of the optimized RLWE layer: NTT/INTT, Shoup and Montgomery products,
the scalar multiply-accumulate, monomial shifts, modulus switching, encoding, decoding, packing,
the reduction of wide flooding draws (offset form, ``PRG.uniform_signed_wide``) to residues.

All kernels are ``@njit(cache=True)`` at module level and take ``numpy.uint64`` arrays. Every
product is reduced explicitly; the only reliance on wrap-around is the documented arithmetic mod
2^64 inside Shoup's and Montgomery's reductions (``w*y - q*p`` and ``lo * pinv``), which is exact
because the true result is known to lie in [0, 2p) (resp. is only needed mod 2^64).

NTT: negacyclic, Cooley-Tukey forward / Gentleman-Sande inverse with Harvey's lazy butterflies
(D. Harvey, "Faster arithmetic for number-theoretic transforms", J. Symb. Comp. 2014): values in
[0, 4p) inside the forward transform, [0, 2p) inside the inverse, twiddles with Shoup constants
w' = floor(w 2^64 / p); requires p < 2^62. Twiddles are psi^bitrev(k) (psi a primitive 2N-th root).

Representation: "NTT form" arrays are only ever internal to :mod:`nimbus.optimized.rlwe`; every
public function takes and returns coefficient form, residues in [0, p).
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

__all__: list[str] = []  # private helpers; the public API is nimbus.optimized.rlwe

_S32 = np.uint64(32)
_M32 = np.uint64(0xFFFFFFFF)
_ONE = np.uint64(1)
_ZERO = np.uint64(0)


@njit(cache=True, inline="always")
def mulhi(a, b):
    """floor(a * b / 2^64) for uint64 a, b (32-bit halves; LLVM emits one mulx)."""
    a0 = a & _M32
    a1 = a >> _S32
    b0 = b & _M32
    b1 = b >> _S32
    p00 = a0 * b0
    p01 = a0 * b1
    p10 = a1 * b0
    mid = (p00 >> _S32) + (p01 & _M32) + (p10 & _M32)
    return a1 * b1 + (p01 >> _S32) + (p10 >> _S32) + (mid >> _S32)


@njit(cache=True, inline="always")
def mul_shoup(w, wp, y, p):
    """w * y mod p in [0, 2p) for w < p, wp = floor(w 2^64 / p), any uint64 y (Shoup)."""
    q = mulhi(wp, y)
    return w * y - q * p  # exact: the true value is in [0, 2p); computed mod 2^64


@njit(cache=True, inline="always")
def redc(lo, hi, p, pinv):
    """Montgomery reduction (hi 2^64 + lo) 2^-64 mod p in [0, p); needs hi < p < 2^63,
    pinv = -p^-1 mod 2^64."""
    m = lo * pinv  # mod 2^64 by design
    t = hi + mulhi(m, p) + (_ONE if lo != _ZERO else _ZERO)
    return t - p if t >= p else t


@njit(cache=True, inline="always")
def mul_mont(x, y, p, pinv):
    """x y 2^-64 mod p for x, y < p."""
    return redc(x * y, mulhi(x, y), p, pinv)


@njit(cache=True)
def shoup_const(w, p):
    """floor(w 2^64 / p) for w < p < 2^63 (restoring division, 64 steps)."""
    r = w
    q = _ZERO
    for _ in range(64):
        r = r << _ONE
        q = q << _ONE
        if r >= p:
            r -= p
            q |= _ONE
    return q


# -- NTT ------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _ntt_row(a, W, Wp, p):
    n = a.shape[0]
    two_p = p + p
    t = n
    m = 1
    while m < n:
        t >>= 1
        for i in range(m):
            j1 = np.uint64(2 * i * t)
            w = W[m + i]
            wp = Wp[m + i]
            for j in range(j1, j1 + np.uint64(t)):
                x = a[j]
                if x >= two_p:
                    x -= two_p
                y = a[j + np.uint64(t)]
                tt = w * y - mulhi(wp, y) * p
                a[j] = x + tt
                a[j + np.uint64(t)] = x - tt + two_p
        m <<= 1
    for j in range(n):
        x = a[j]
        if x >= two_p:
            x -= two_p
        if x >= p:
            x -= p
        a[j] = x


@njit(cache=True, inline="always")
def _intt_row(a, IW, IWp, p, ninv, ninvp):
    n = a.shape[0]
    two_p = p + p
    t = 1
    m = n
    while m > 1:
        h = m >> 1
        j1 = np.uint64(0)
        for i in range(h):
            w = IW[h + i]
            wp = IWp[h + i]
            for j in range(j1, j1 + np.uint64(t)):
                x = a[j]
                y = a[j + np.uint64(t)]
                u = x + y
                if u >= two_p:
                    u -= two_p
                d = x - y + two_p
                a[j] = u
                a[j + np.uint64(t)] = w * d - mulhi(wp, d) * p
            j1 += np.uint64(2 * t)
        t <<= 1
        m = h
    for j in range(n):
        x = ninv * a[j] - mulhi(ninvp, a[j]) * p
        if x >= p:
            x -= p
        a[j] = x


@njit(cache=True, parallel=True)
def ntt_batch(a, W, Wp, primes):
    """In place: a (B, L, N) coefficient form -> NTT form, residues in [0, p)."""
    B, L = a.shape[0], a.shape[1]
    for task in prange(B * L):
        b = task // L
        i = task % L
        _ntt_row(a[b, i], W[i], Wp[i], primes[i])


@njit(cache=True, parallel=True)
def intt_batch(a, IW, IWp, primes, ninv, ninvp):
    """In place: a (B, L, N) NTT form (values in [0, 2p)) -> coefficient form in [0, p)."""
    B, L = a.shape[0], a.shape[1]
    for task in prange(B * L):
        b = task // L
        i = task % L
        _intt_row(a[b, i], IW[i], IWp[i], primes[i], ninv[i], ninvp[i])


@njit(cache=True, parallel=True)
def pointwise_mont(a, bm, primes, pinv, out):
    """out[b, i] = a[b, i] * bm[b, i] 2^-64 mod p_i (bm in Montgomery form gives a*b)."""
    B, L, n = a.shape
    for task in prange(B * L):
        b = task // L
        i = task % L
        p = primes[i]
        q = pinv[i]
        for j in range(n):
            out[b, i, j] = mul_mont(a[b, i, j], bm[b, i, j], p, q)


@njit(cache=True, parallel=True)
def to_mont(a, primes, pinv, r2):
    """In place: a -> a 2^64 mod p (Montgomery form), via redc(a * (2^128 mod p))."""
    B, L, n = a.shape
    for task in prange(B * L):
        b = task // L
        i = task % L
        for j in range(n):
            a[b, i, j] = mul_mont(a[b, i, j], r2[i], primes[i], pinv[i])


@njit(cache=True)
def add_mod(a, b, primes, out):
    """out = a + b mod p_i; a, b, out (B, L, N) with residues in [0, p)."""
    B, L, n = a.shape
    for x in range(B):
        for i in range(L):
            p = primes[i]
            for j in range(n):
                s = a[x, i, j] + b[x, i, j]
                out[x, i, j] = s - p if s >= p else s


@njit(cache=True)
def sub_mod(a, b, primes, out):
    """out = a - b mod p_i."""
    B, L, n = a.shape
    for x in range(B):
        for i in range(L):
            p = primes[i]
            for j in range(n):
                s = a[x, i, j] + p - b[x, i, j]
                out[x, i, j] = s - p if s >= p else s


@njit(cache=True)
def signed_to_rns(v, primes, out):
    """out[b, i, j] = v[b, j] mod p_i for int64 v with |v| < 2^62."""
    B, n = v.shape
    L = primes.shape[0]
    for b in range(B):
        for i in range(L):
            p = primes[i]
            ip = np.int64(p)
            for j in range(n):
                x = v[b, j] % ip  # Python semantics: result in [0, p)
                out[b, i, j] = np.uint64(x)


@njit(cache=True)
def wide_to_rns(lo, hi, primes, t64, t64p, fmod, out):
    """out[b, i, j] = (hi[b, j] 2^64 + lo[b, j] - F) mod p_i: a wide flooding draw in offset form
    (``PRG.uniform_signed_wide``) to residues. ``t64[i]`` = 2^64 mod p_i (Shoup ``t64p[i]``),
    ``fmod[i]`` = F mod p_i; p_i < 2^62."""
    B, n = lo.shape
    L = primes.shape[0]
    for b in range(B):
        for i in range(L):
            p = primes[i]
            for j in range(n):
                h = mul_shoup(t64[i], t64p[i], hi[b, j], p)  # [0, 2p)
                s = h + lo[b, j] % p  # [0, 3p)
                if s >= p + p:
                    s -= p + p
                if s >= p:
                    s -= p
                s = s + p - fmod[i]
                out[b, i, j] = s - p if s >= p else s


# -- scalar multiply-accumulate (the COP inner loop) -------------------------------------------
@njit(cache=True)
def lift_scalars(x, l, primes, w, wp):
    """w[r, j, i] = centred lift of x[r, j] in Z_2^l, mod p_i; wp its Shoup constant."""
    n, k = x.shape
    L = primes.shape[0]
    half = _ONE << np.uint64(l - 1)
    for r in range(n):
        for j in range(k):
            v = x[r, j]
            for i in range(L):
                p = primes[i]
                if v >= half:  # negative: -(2^l - v); 2^l - v computed mod 2^64 (exact, < 2^63)
                    neg = ((_ONE << np.uint64(l)) - v) if l < 64 else (_ZERO - v)
                    rr = neg % p
                    res = _ZERO if rr == _ZERO else p - rr
                else:
                    res = v % p
                w[r, j, i] = res
                wp[r, j, i] = shoup_const(res, p)


@njit(cache=True)
def lift_poly(x, l, primes, out):
    """out[b, i, j] = centred lift of x[b, j] in Z_2^l, mod p_i (no Shoup constants)."""
    B, n = x.shape
    L = primes.shape[0]
    half = _ONE << np.uint64(l - 1)
    for b in range(B):
        for i in range(L):
            p = primes[i]
            for j in range(n):
                v = x[b, j]
                if v >= half:
                    neg = ((_ONE << np.uint64(l)) - v) if l < 64 else (_ZERO - v)
                    rr = neg % p
                    out[b, i, j] = _ZERO if rr == _ZERO else p - rr
                else:
                    out[b, i, j] = v % p


@njit(cache=True, parallel=True)
def mac_kernel(cts, w, wp, primes, out):
    """out[r, c, i, :] = sum_j w[r, j, i] * cts[j, c, i, :] mod p_i.

    Tiled: a task owns (row block, component, prime, coefficient block) so its accumulators
    (8 rows x 256 coefficients) stay in L1 while each ciphertext segment is read once per row
    block; lazy reduction keeps accumulators in [0, 2p) with one conditional subtraction.
    """
    K, _, L, n = cts.shape
    R = w.shape[0]
    BC = 256 if n >= 256 else n
    RB = 8
    nb = n // BC
    nr = (R + RB - 1) // RB
    for task in prange(nr * 2 * L * nb):
        blk = task % nb
        rest = task // nb
        i = rest % L
        rest //= L
        c = rest % 2
        rb = rest // 2
        r0 = rb * RB
        rc = min(RB, R - r0)
        p = primes[i]
        two_p = p + p
        acc = np.zeros((RB, BC), dtype=np.uint64)
        off = blk * BC
        for j in range(K):
            seg = cts[j, c, i, off:off + BC]
            for rr in range(rc):
                ww = w[r0 + rr, j, i]
                wwp = wp[r0 + rr, j, i]
                a = acc[rr]
                for t in range(BC):
                    y = seg[t]
                    s = a[t] + (ww * y - mulhi(wwp, y) * p)
                    a[t] = s - two_p if s >= two_p else s
        for rr in range(rc):
            for t in range(BC):
                s = acc[rr, t]
                out[r0 + rr, c, i, off + t] = s - p if s >= p else s


@njit(cache=True)
def scale_kernel(ct, w, wp, primes, out):
    """out[b, c, i] = w[b, i] * ct[b, c, i] mod p_i (one scalar per ciphertext)."""
    B, _, L, n = ct.shape
    for b in range(B):
        for c in range(2):
            for i in range(L):
                p = primes[i]
                for t in range(n):
                    s = mul_shoup(w[b, 0, i], wp[b, 0, i], ct[b, c, i, t], p)
                    out[b, c, i, t] = s - p if s >= p else s


# -- row helpers (Montgomery accumulate, monomial shift), monomials, modulus switching ---------
@njit(cache=True, inline="always")
def mac_mont_row(o, src, w, p, q):
    """o[t] += src[t] w[t] 2^-64 mod p for one residue row (o in [0, p); the Montgomery product of
    a plain value by a value in Montgomery form is the plain product)."""
    for t in range(o.shape[0]):
        s = o[t] + mul_mont(src[t], w[t], p, q)
        o[t] = s - p if s >= p else s


@njit(cache=True, inline="always")
def shift_row(src, k, p, dst):
    """dst = src * X^k mod (X^N + 1, p) for one residue row (0 <= k < 2N): coefficient j lands
    at (j + k) mod N, negated (p - v) when j + k wraps an odd number of times."""
    n = src.shape[0]
    neg0 = k >= n
    s = k - n if neg0 else k  # X^k = (-1)^neg0 X^s, 0 <= s < N
    for j in range(n - s):  # j + s < N: sign (-1)^neg0
        v = src[j]
        dst[j + s] = (p - v if v != _ZERO else v) if neg0 else v
    for j in range(n - s, n):  # wraps once more: sign flipped
        v = src[j]
        dst[j + s - n] = v if neg0 else (p - v if v != _ZERO else v)


@njit(cache=True, parallel=True)
def monomial_kernel(a, k, primes, out):
    """out = a * X^k mod X^N + 1 (0 <= k < 2N); a, out (B, L, N). Rows in parallel."""
    B, L, n = a.shape
    for x in prange(B * L):
        b = x // L
        i = x % L
        shift_row(a[b, i], k, primes[i], out[b, i])


@njit(cache=True)
def drop_prime(a, primes, inv, invp, pmod, out):
    """One modulus-switching step: a (B, L, N) -> out (B, L-1, N) = round(a / p_{L-1}).

    r = centred residue mod p_last; out_i = (a_i - r) p_last^-1 mod p_i.
    ``inv[i]``, ``invp[i]``: p_last^-1 mod p_i and its Shoup constant; ``pmod[i]`` = p_last mod p_i.
    """
    B, L, n = a.shape
    pl = primes[L - 1]
    half = pl >> _ONE
    for b in range(B):
        for i in range(L - 1):
            p = primes[i]
            for j in range(n):
                r = a[b, L - 1, j]
                rm = r % p
                if r > half:  # r - p_last
                    rm = rm + p - pmod[i]
                    if rm >= p:
                        rm -= p
                d = a[b, i, j] + p - rm
                if d >= p:
                    d -= p
                s = mul_shoup(inv[i], invp[i], d, p)
                out[b, i, j] = s - p if s >= p else s


# -- encoding / decoding ------------------------------------------------------------------------
@njit(cache=True)
def encode_kernel(m, l, bq, amod, amodp, onep, primes, out):
    """out[b, i, j] = round(Q m / 2^l) mod p_i with Q = a 2^l + bq (0 <= bq < 2^l).

    round(Q m / 2^l) = a m + ((bq m + 2^(l-1)) >> l); a mod p_i = amod[i] (Shoup amodp[i]);
    onep[i] = floor(2^64 / p_i) (Shoup constant of 1, reduces any uint64).
    """
    B, n = m.shape
    L = primes.shape[0]
    h = _ONE << np.uint64(l - 1)
    for b in range(B):
        for j in range(n):
            x = m[b, j]
            lo = bq * x
            hi = mulhi(bq, x)
            lo2 = lo + h
            if lo2 < lo:
                hi += _ONE
            if l == 64:
                t = hi
            else:
                t = (hi << np.uint64(64 - l)) | (lo2 >> np.uint64(l))
            for i in range(L):
                p = primes[i]
                u = mul_shoup(amod[i], amodp[i], x, p)
                v = mul_shoup(_ONE, onep[i], t, p)
                s = u + v
                if s >= p + p:
                    s -= p + p
                if s >= p:
                    s -= p
                out[b, i, j] = s


@njit(cache=True)
def decode_kernel(v, l, primes, qhat_inv, qhat_invp, qhat_words, q_words, half_words, out):
    """out[b, j] = round(2^l x / Q) mod 2^l, x = CRT(v[b, :, j]) (exact multiword arithmetic).

    X = sum_i y_i Qhat_i with y_i = v_i Qhat_i^-1 mod p_i equals x + kappa Q (kappa < L);
    reduce mod Q by subtraction, then l steps of restoring division give floor(2^l x / Q) and
    the remainder R; round up iff R >= (Q + 1) / 2 (Q odd: no ties).
    """
    B, L, n = v.shape
    W = q_words.shape[0]
    acc = np.zeros(W, dtype=np.uint64)
    for b in range(B):
        for j in range(n):
            for w in range(W):
                acc[w] = _ZERO
            for i in range(L):
                s = mul_shoup(qhat_inv[i], qhat_invp[i], v[b, i, j], primes[i])
                y = s - primes[i] if s >= primes[i] else s
                carry = _ZERO
                for w in range(W):
                    lo = y * qhat_words[i, w]
                    hi = mulhi(y, qhat_words[i, w])
                    t = acc[w] + lo
                    c1 = _ONE if t < lo else _ZERO
                    t2 = t + carry
                    c2 = _ONE if t2 < carry else _ZERO
                    acc[w] = t2
                    carry = hi + c1 + c2
            # reduce mod Q
            while True:
                ge = True
                for w in range(W - 1, -1, -1):
                    if acc[w] != q_words[w]:
                        ge = acc[w] > q_words[w]
                        break
                if not ge:
                    break
                borrow = _ZERO
                for w in range(W):
                    t = acc[w] - q_words[w] - borrow
                    borrow = _ONE if (acc[w] < q_words[w]) or (acc[w] - q_words[w] < borrow) else _ZERO
                    acc[w] = t
            quo = _ZERO
            for _ in range(l):
                top = _ZERO
                for w in range(W):
                    nt = acc[w] >> np.uint64(63)
                    acc[w] = (acc[w] << _ONE) | top
                    top = nt
                ge = True
                for w in range(W - 1, -1, -1):
                    if acc[w] != q_words[w]:
                        ge = acc[w] > q_words[w]
                        break
                quo = quo << _ONE
                if ge:
                    quo |= _ONE
                    borrow = _ZERO
                    for w in range(W):
                        t = acc[w] - q_words[w] - borrow
                        borrow = _ONE if (acc[w] < q_words[w]) or (acc[w] - q_words[w] < borrow) else _ZERO
                        acc[w] = t
            ge = True
            for w in range(W - 1, -1, -1):
                if acc[w] != half_words[w]:
                    ge = acc[w] > half_words[w]
                    break
            if ge:
                quo += _ONE
            if l < 64:
                quo &= (_ONE << np.uint64(l)) - _ONE
            out[b, j] = quo


@njit(cache=True)
def decode_fast_kernel(v, l, primes, qhat_inv, qhat_invp, omega, fhi, flo, out, ambiguous):
    """out[b, j] = round(2^l x / Q) mod 2^l through 2^l x / Q = sum_i y_i 2^l / p_i - kappa 2^l.

    With 2^l / p_i = omega_i + f_i and F_i = floor(f_i 2^128) = fhi 2^64 + flo, the sum is kept
    as an integer part mod 2^64 and a 64-bit fraction Phi; the computed value is below the true
    one by less than delta = (2L + 2) 2^-64. Rounding is certain unless Phi falls in
    [1/2 - delta, 1/2): those coefficients are flagged in ``ambiguous`` (returns their count) for
    the exact multiword kernel.
    """
    B, L, n = v.shape
    half = _ONE << np.uint64(63)
    eps = np.uint64(2 * L + 2)
    mask = (_ONE << np.uint64(l)) - _ONE if l < 64 else ~_ZERO
    count = 0
    for b in range(B):
        for j in range(n):
            ip = _ZERO
            phi = _ZERO
            for i in range(L):
                p = primes[i]
                s = mul_shoup(qhat_inv[i], qhat_invp[i], v[b, i, j], p)
                y = s - p if s >= p else s
                ip += y * omega[i]
                a1 = mulhi(y, flo[i])
                b0 = y * fhi[i]
                mid = a1 + b0
                ip += mulhi(y, fhi[i]) + (_ONE if mid < a1 else _ZERO)
                t = phi + mid
                if t < phi:
                    ip += _ONE
                phi = t
            if phi < half and phi >= half - eps:
                ambiguous[b, j] = True
                count += 1
            out[b, j] = (ip + (_ONE if phi >= half else _ZERO)) & mask
    return count


# -- bit packing ----------------------------------------------------------------------------------
@njit(cache=True)
def pack_kernel(v, bits, out):
    """Little-endian bit-packing of v (each < 2^bits) into the zeroed byte array out."""
    pos = np.uint64(0)
    b = np.uint64(bits)
    for i in range(v.shape[0]):
        x = v[i]
        rem = b
        while rem > _ZERO:
            byte = pos >> np.uint64(3)
            off = pos & np.uint64(7)
            take = np.uint64(8) - off
            if take > rem:
                take = rem
            chunk = x & ((_ONE << take) - _ONE)
            out[byte] |= np.uint8(chunk << off)
            x = x >> take
            rem -= take
            pos += take


@njit(cache=True)
def unpack_kernel(data, n, bits, out):
    """Inverse of :func:`pack_kernel`."""
    pos = np.uint64(0)
    b = np.uint64(bits)
    for i in range(n):
        x = _ZERO
        got = _ZERO
        while got < b:
            byte = pos >> np.uint64(3)
            off = pos & np.uint64(7)
            take = np.uint64(8) - off
            if take > b - got:
                take = b - got
            chunk = (np.uint64(data[byte]) >> off) & ((_ONE << take) - _ONE)
            x |= chunk << got
            got += take
            pos += take
        out[i] = x


# -- tables (Python integers, cached per (N, primes)) --------------------------------------------
def _bitrev(x: int, bits: int) -> int:
    return int(format(x, f"0{bits}b")[::-1], 2) if bits else 0


def _root(p: int, n: int) -> int:
    """The smallest-generator primitive 2n-th root of unity mod p.
    derivation: psi = g^((p-1)/(2n)) for the first g = 2, 3, ... with psi^n = -1 mod p."""
    for g in range(2, 1000):
        psi = pow(g, (p - 1) // (2 * n), p)
        if pow(psi, n, p) == p - 1:
            return psi
    raise ValueError(f"no primitive {2 * n}-th root mod {p}")


@functools.lru_cache(maxsize=64)
def tables(n: int, primes: tuple):
    """Twiddles (psi^bitrev(k), Shoup), inverse twiddles, N^-1, Montgomery constants."""
    L = len(primes)
    logn = n.bit_length() - 1
    W = np.empty((L, n), np.uint64)
    Wp = np.empty((L, n), np.uint64)
    IW = np.empty((L, n), np.uint64)
    IWp = np.empty((L, n), np.uint64)
    ninv = np.empty(L, np.uint64)
    ninvp = np.empty(L, np.uint64)
    pinv = np.empty(L, np.uint64)
    r2 = np.empty(L, np.uint64)
    for i, p in enumerate(primes):
        psi = _root(p, n)
        ipsi = pow(psi, -1, p)
        for k in range(n):
            e = _bitrev(k, logn)
            w, iw = pow(psi, e, p), pow(ipsi, e, p)
            W[i, k], Wp[i, k] = w, (w << 64) // p
            IW[i, k], IWp[i, k] = iw, (iw << 64) // p
        ni = pow(n, -1, p)
        ninv[i], ninvp[i] = ni, (ni << 64) // p
        pinv[i] = (-pow(p, -1, 1 << 64)) % (1 << 64)
        r2[i] = pow(2, 128, p)
    return dict(W=W, Wp=Wp, IW=IW, IWp=IWp, ninv=ninv, ninvp=ninvp, pinv=pinv, r2=r2,
                primes=np.array(primes, np.uint64))
