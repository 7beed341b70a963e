"""Kernels of ``nimbus.optimized.linear`` (private): the COP multiply-accumulate on BLAS, packing.

The COP accumulation ``out[i, comp, p, :] = sum_j lift(x[i, j]) * ct[j, comp, p, :] mod p`` is a
matrix product (n x k) @ (k x 2N) per prime. It is computed exactly with float64 BLAS:

* the client scalar (centred residue mod p, |x| < 2^mx) is split into A balanced digits of width
  wx, the ciphertext residue (centred, |c| < 2^mc) into B balanced digits of width wc;
* every digit-plane product is a float64 matmul over k-chunks of at most ``kc`` terms with
  ``kc * max|x digit| * max|c digit| < 2^53``, so every partial sum is an exactly represented
  integer whatever order BLAS adds in (the result is bit-exact and thread-count independent);
* the A*B planes are recombined mod p with Shoup multiplications by 2^(wx a + wc b) mod p.

For the 51-bit primes of COP64 (``plan(50, 50, k)``): A = 3 (17-bit), B = 2 (26-bit) digits, 6
planes, kc = 4095; for its 32-bit primes A = 3 (11-bit), B = 1, 3 planes: 24 plane products per
token and ciphertext coefficient over the 5 primes (the BLAS work of the COP).
Representation: residues uint64 in [0, p) at the boundary, float64 planes inside.
Threads: BLAS, and the ``prange`` loops of the attention products (independent outputs, rows or
members; every iteration writes its own slice), use the core the waiting server leaves idle; the
COP's digit, recombination and packing passes stay one-thread (parallel versions measured no
gain next to the BLAS planes). Outputs never depend on the thread count.
Reference twin: :func:`nimbus.reference.rlwe.mac_scalar`.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from nimbus.spec.errors import ShapeError

from . import _ntt as NT

__all__: list[str] = []

_EXACT = (1 << 53) - 1
#: Rows below which the integer kernel (``rlwe.mac_scalar``) is used: the digit planes of the
#: ciphertexts cost a pass over them that only pays off for several rows. Outputs never depend on it.
BLAS_MIN_ROWS = 8
#: Coefficient columns per block (bounded temporaries: B * k * COLS float64).
COLS = 2048


def _maxdig(m: int, d: int) -> tuple[int, int]:
    """Digit width and bound of |digit| for d balanced digits of a value |v| < 2^m."""
    w = -(-(m + 1) // d)
    if d == 1:
        return m + 1, 1 << m
    return w, max(1 << (w - 1), (1 << max(m - w * (d - 1), 0)) + 1)


@functools.lru_cache(maxsize=256)
def plan(mx: int, mc: int, k: int) -> tuple:
    """(A, wx, B, wc, kc): fewest digit-plane products with k-chunks of >= min(k, 512) terms
    (shorter chunks make BLAS slow), ties broken by fewer ciphertext digit planes."""
    best = None
    for a in range(1, 9):
        for b in range(1, 9):
            wx, bx = _maxdig(mx, a)
            wc, bc = _maxdig(mc, b)
            kc = _EXACT // (bx * bc)
            if kc < min(k, 512):
                continue
            key = (a * b, b)
            if best is None or key < best[0]:
                best = (key, (a, wx, b, wc, min(kc, k)))
    return best[1]


@functools.lru_cache(maxsize=64)
def _consts(p: int, a: int, wx: int, b: int, wc: int):
    w = np.array([[pow(2, wx * i + wc * j, p) for i in range(a)] for j in range(b)], np.uint64)
    wp = np.array([[(int(v) << 64) // p for v in row] for row in w], np.uint64)
    return w, wp


def _x_digits(xr: np.ndarray, a: int, wx: int) -> np.ndarray:
    """Balanced digits of int64 residues (n, k) -> float64 (a * n, k)."""
    out = np.empty((a,) + xr.shape, np.float64)
    r = xr.copy()
    half, mask = np.int64(1 << (wx - 1)), np.int64((1 << wx) - 1)
    for i in range(a - 1):
        d = ((r + half) & mask) - half
        out[i] = d
        r = (r - d) >> np.int64(wx)
    out[a - 1] = r
    return out.reshape(a * xr.shape[0], xr.shape[1])


@njit(cache=True)
def c_digits(cts, comp, i, c0, cb, p, wc, nd, out):
    """out[b, j, t] = balanced digit b (width wc) of the centred residue cts[j, comp, i, c0 + t]."""
    k = cts.shape[0]
    half = p >> np.uint64(1)
    pi = np.int64(p)
    hw = np.int64(1) << np.int64(wc - 1)
    mw = (np.int64(1) << np.int64(wc)) - np.int64(1)
    sw = np.int64(wc)
    zero = np.int64(0)
    r = np.empty(cb, np.int64)
    for j in range(k):
        src = cts[j, comp, i]
        for t in range(cb):
            v = src[c0 + t]
            r[t] = np.int64(v) - (pi if v > half else zero)
        for b in range(nd - 1):
            o = out[b, j]
            for t in range(cb):
                d = ((r[t] + hw) & mw) - hw
                o[t] = d
                r[t] = (r[t] - d) >> sw
        o = out[nd - 1, j]
        for t in range(cb):
            o[t] = r[t]


@njit(cache=True)
def combine(m, w, wp, p, off, acc):
    """acc[r, t] += sum_a int(m[a, r, t]) * w[a] mod p; acc in [0, p).

    ``off``: a multiple of p >= 2^53, added to negative plane values so that Shoup's product
    (which takes any uint64) needs no division. Inner loop over t: branch-free, vectorisable."""
    A, n, cb = m.shape
    uoff = np.uint64(off)
    zero = np.uint64(0)
    for r in range(n):
        ar = acc[r]
        for a in range(A):
            wa = w[a]
            wpa = wp[a]
            row = m[a, r]
            for t in range(cb):
                v = np.int64(row[t])
                y = np.uint64(v) + (uoff if v < 0 else zero)
                u = NT.mul_shoup(wa, wpa, y, p)
                u = u - p if u >= p else u
                s = ar[t] + u
                ar[t] = s - p if s >= p else s


def mac(he, cts, x, blas_min_rows: int = BLAS_MIN_ROWS) -> np.ndarray:
    """The COP accumulation (see the module docstring). Twin: ``reference.rlwe.mac_scalar``."""
    from . import rlwe as R

    x = np.asarray(x)
    cts = np.asarray(cts)
    if x.ndim != 2 or cts.ndim != 4 or x.shape[1] != cts.shape[0] or x.dtype != np.uint64 \
            or cts.dtype != np.uint64 or cts.shape[1] != 2 or cts.shape[-1] != he.n \
            or not 1 <= cts.shape[2] <= he.levels:
        raise ShapeError(f"mac: x (n, k) uint64 with k = {cts.shape[0] if cts.ndim else '?'} ciphertexts, "
                         f"got {x.dtype}{x.shape} and {cts.dtype}{cts.shape}")
    n, k = x.shape
    if n < blas_min_rows or k == 0:
        return R.mac_scalar(he, cts, x)
    l, L, N = he.plain_bits, cts.shape[2], he.n
    if l < 64 and x.size and int(x.max()) >> l:
        raise ShapeError(f"mac: scalars must be in Z_2^{l}")
    half = np.uint64(1 << (l - 1))
    xs = x.view(np.int64) if l == 64 else x.astype(np.int64) - (x >= half).astype(np.int64) * np.int64(1 << l)
    out = np.empty((n, 2, L, N), np.uint64)
    cb = min(COLS, N)
    for i in range(L):
        p = int(he.primes[i])
        pb = p.bit_length()
        a, wx, b, wc, kc = plan(min(l - 1, pb - 1), pb - 1, k)
        w, wp = _consts(p, a, wx, b, wc)
        off = np.int64(p * -(-(1 << 53) // p))  # multiple of p in [2^53, 2^63)
        xr = xs % np.int64(p)
        xr = np.where(xr > p // 2, xr - np.int64(p), xr)
        xd = _x_digits(xr, a, wx)  # (a n, k)
        cd = np.empty((b, k, cb), np.float64)
        for comp in range(2):
            for c0 in range(0, N, cb):
                acc = np.zeros((n, cb), np.uint64)
                c_digits(cts, comp, i, c0, cb, np.uint64(p), wc, b, cd)
                for k0 in range(0, k, kc):
                    for j in range(b):
                        m = xd[:, k0:k0 + kc] @ cd[j, k0:k0 + kc]
                        combine(m.reshape(a, n, cb), w[j], wp[j], np.uint64(p), off, acc)
                out[:, comp, i, c0:c0 + cb] = acc
    return out


@njit(cache=True)
def pack_kernel(res, ptr, mr, me, primes, out):
    """out[c] = sum over members m in [ptr[c], ptr[c+1]) of res[mr[m]] * X^me[m] (|e| < N):
    coefficient j lands at j + e, or (negated) at j + e -+ N when it wraps."""
    C = out.shape[0]
    L, N = res.shape[2], res.shape[3]
    for c in range(C):
        for m in range(ptr[c], ptr[c + 1]):
            r, e = mr[m], me[m]
            # j in [j0, j1) lands unwrapped at j + e; the rest wraps with a sign flip
            j0 = -e if e < 0 else 0
            j1 = N - e if e > 0 else N
            for comp in range(2):
                for i in range(L):
                    p = primes[i]
                    src = res[r, comp, i]
                    dst = out[c, comp, i]
                    for j in range(j0, j1):
                        s = dst[j + e] + src[j]
                        dst[j + e] = s - p if s >= p else s
                    for j in range(0, j0):  # e < 0: j + e + N
                        v = src[j]
                        v = p - v if v != 0 else v
                        s = dst[j + e + N] + v
                        dst[j + e + N] = s - p if s >= p else s
                    for j in range(j1, N):  # e > 0: j + e - N
                        v = src[j]
                        v = p - v if v != 0 else v
                        s = dst[j + e - N] + v
                        dst[j + e - N] = s - p if s >= p else s


@njit(cache=True, parallel=True)
def shift_members(res, src, dst, k, w, wp, primes, out):
    """out[dst[m]] = res[src[m]] * w X^k mod (X^N + 1, p_i) for every member m (dst distinct;
    0 <= k < 2N; w[i] < p_i with Shoup constants wp[i]); res (P, 2, L, N), out (R, 2, L, N).
    Rows in parallel."""
    M = src.shape[0]
    L = res.shape[2]
    for x in prange(M * 2 * L):
        m = x // (2 * L)
        c = (x // L) % 2
        i = x % L
        p = primes[i]
        o = out[dst[m], c, i]
        NT.shift_row(res[src[m], c, i], k, p, o)
        for t in range(o.shape[0]):
            v = NT.mul_shoup(w[i], wp[i], o[t], p)
            o[t] = v - p if v >= p else v


def pack(he, res, lay) -> np.ndarray:
    """Twin of ``reference.linear.pack``."""
    L = res.shape[2]
    ptr = np.zeros(lay.count + 1, np.int64)
    mr, me = [], []
    for c, members in enumerate(lay.members):
        ptr[c + 1] = ptr[c] + len(members)
        for r, e in members:
            mr.append(r)
            me.append(e)
    out = np.zeros((lay.count, 2, L, he.n), np.uint64)
    pack_kernel(np.ascontiguousarray(res, dtype=np.uint64), ptr, np.array(mr, np.int64), np.array(me, np.int64),
                np.array(he.primes[:L], np.uint64), out)
    return out



# -- products by plaintext polynomials, accumulated in the NTT domain --------------------------
@njit(cache=True, parallel=True)
def mac_ntt(a, pm, primes, pinv, out):
    """out[j, c, i] = sum_k a[k, c, i] * pm[k, j, i] 2^-64 mod p_i (pm in Montgomery form: the
    NTT-domain products; a: (K, 2, L, N) NTT values, pm: (K, J, L, N), out: (J, 2, L, N)).
    The (j, c, i) outputs in parallel."""
    K, _, L, n = a.shape
    J = pm.shape[1]
    for x in prange(J * 2 * L):
        j = x // (2 * L)
        c = (x // L) % 2
        i = x % L
        p = primes[i]
        q = pinv[i]
        o = out[j, c, i]
        for t in range(n):
            o[t] = 0
        for k in range(K):
            NT.mac_mont_row(o, a[k, c, i], pm[k, j, i], p, q)


@njit(cache=True, parallel=True)
def lift_kernel(x, half, mask, primes, onep, out):
    """out[b, i, t] = the centred lift of x[b, t] in Z_2^l (half = 2^(l-1), mask = 2^l - 1)
    mod primes[i]: |v| reduced with Shoup's quotient (onep[i] = floor(2^64 / p_i)), negated for
    v < 0. One pass, no division."""
    B, n = x.shape
    L = primes.shape[0]
    zero = np.uint64(0)
    one = np.uint64(1)
    for b in prange(B):
        for t in range(n):
            v = x[b, t]
            neg = v >= half
            mag = ((zero - v) & mask) if neg else v
            for i in range(L):
                p = primes[i]
                r = NT.mul_shoup(one, onep[i], mag, p)
                r = r - p if r >= p else r
                out[b, i, t] = p - r if (neg and r != zero) else r


def _lift_polys(he, polys, L):
    """Centred lifts of Z_2^l coefficients (B, N) -> residues (B, L, N) (numba, Shoup reduction)."""
    l = he.plain_bits
    x = np.ascontiguousarray(polys, dtype=np.uint64)
    out = np.empty((x.shape[0], L, he.n), np.uint64)
    pr = np.array(he.primes[:L], np.uint64)
    onep = np.array([(1 << 64) // p for p in he.primes[:L]], np.uint64)
    lift_kernel(x, np.uint64(1 << (l - 1)), np.uint64((1 << l) - 1), pr, onep, out)
    return out


def plain_mac(he, cts, polys) -> np.ndarray:
    """Twin of ``reference.linear.plain_mac``: NTT every ciphertext once and every polynomial
    once, multiply-accumulate in the NTT domain, one inverse NTT per output."""
    K, _, L, n = cts.shape
    J = polys.shape[1]
    t = NT.tables(n, tuple(he.primes[:L]))
    a = np.array(cts, dtype=np.uint64, order="C", copy=True).reshape(K * 2, L, n)
    NT.ntt_batch(a, t["W"], t["Wp"], t["primes"])
    pm = _lift_polys(he, polys.reshape(K * J, n), L)
    NT.ntt_batch(pm, t["W"], t["Wp"], t["primes"])
    NT.to_mont(pm, t["primes"], t["pinv"], t["r2"])
    out = np.empty((J, 2, L, n), np.uint64)
    mac_ntt(a.reshape(K, 2, L, n), pm.reshape(K, J, L, n), t["primes"], t["pinv"], out)
    flat = out.reshape(J * 2, L, n)
    NT.intt_batch(flat, t["IW"], t["IWp"], t["primes"], t["ninv"], t["ninvp"])
    return out
