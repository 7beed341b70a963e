"""numba kernels of the optimized OT (private; wrapped and validated by ``nimbus.optimized.ot``).

Representation: blocks are ``(n, 2)`` uint64 ``[lo, hi]`` (see ``nimbus.spec.ot``); bit matrices
are uint64 words with little-endian bit order. AES itself is never done here: the wrappers call
the ``cryptography`` package (OpenSSL, AES-NI/VAES) on preallocated buffers and these kernels do
the surrounding xors, gathers and bit shuffles. All loops index explicitly; no reliance on
overflow except the uint64 wrap of xor-only data. ``prange`` loops split independent rows.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange, types

__all__ = [
    "transpose_128", "xor_rows_masked", "xor3_rows", "prg_inputs", "sigma_xor", "xor_into", "ggm_prep", "ggm_finish", "ggm_fix",
    "lpn_gather", "xor_reduce_leaves", "prefetch", "PREFETCH_ROWS",
]


PREFETCH_ROWS = 16  # LPN rows prefetched ahead (a tuning knob: never changes outputs)

if numba.config.DISABLE_JIT:  # plain-Python run of the kernels: prefetching is a no-op

    def prefetch(arr, i):
        """Hint the CPU to fetch ``arr[i]`` (no-op without the JIT)."""
        return None

else:
    from llvmlite import ir
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def prefetch(typingctx, arr, i):
        """``llvm.prefetch(&arr[i, 0], read, high locality)``: a cache hint, no semantic effect."""
        sig = types.void(arr, i)

        def codegen(context, builder, signature, args):
            aryty = signature.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            idx = [args[1]] + [context.get_constant(types.intp, 0)] * (aryty.ndim - 1)
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx)
            i8p = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
            builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return sig, codegen


@njit(cache=True, inline="always")
def _t64(a):
    """In-place transpose of a 64x64 bit matrix (bit j of a[i] = element (i, j)): six stages of
    masked swaps of j x j blocks (Hacker's Delight §7-3, least significant bit first)."""
    j = 32
    m = np.uint64(0x00000000FFFFFFFF)
    while j != 0:
        k = 0
        while k < 64:
            for kk in range(k, k + j):
                t = ((a[kk] >> np.uint64(j)) ^ a[kk + j]) & m
                a[kk] ^= t << np.uint64(j)
                a[kk + j] ^= t
            k += 2 * j
        j >>= 1
        m ^= m << np.uint64(j)


@njit(cache=True, parallel=True)
def transpose_128(cols, out, nchunks):
    """cols (128, W) uint64 (W = m/64 words per column) -> out (m, 2): out[i, w] bit jj =
    bit i of column 64w + jj. Each step loads one cache line (8 words) of each of the 64
    columns, transposes the eight 64x64 blocks and stores 512 rows; ``nchunks`` contiguous
    ranges of steps run in parallel (a tuning knob: never changes the output)."""
    W = cols.shape[1]
    steps = (W + 7) // 8
    for ch in prange(nchunks):
        a = np.empty((8, 64), dtype=np.uint64)
        for st in range(ch * steps // nchunks, (ch + 1) * steps // nchunks):
            c0 = 8 * st
            nc = min(8, W - c0)
            for w in range(2):
                for jj in range(64):
                    for cc in range(nc):
                        a[cc, jj] = cols[64 * w + jj, c0 + cc]
                for cc in range(nc):
                    _t64(a[cc])
                for cc in range(nc):
                    base = 64 * (c0 + cc)
                    for ii in range(64):
                        out[base + ii, w] = a[cc, ii]


@njit(cache=True, parallel=True)
def xor_rows_masked(cols, u, sel):
    """cols[j] ^= u[j] for the rows j with sel[j] != 0 (IKNP sender)."""
    for j in prange(cols.shape[0]):
        if sel[j]:
            for i in range(cols.shape[1]):
                cols[j, i] ^= u[j, i]


@njit(cache=True, parallel=True)
def xor3_rows(a, b, v):
    """a ^= b ^ v (v broadcast over rows) (IKNP receiver's u)."""
    for j in prange(a.shape[0]):
        for i in range(a.shape[1]):
            a[j, i] ^= b[j, i] ^ v[i]


@njit(cache=True, parallel=True)
def sigma_xor(x, tw, s, buf):
    """s = sigma(x); buf = s xor tw (the AES input of H)."""
    for i in prange(x.shape[0]):
        lo = x[i, 0]
        hi = x[i, 1]
        s[i, 0] = hi
        s[i, 1] = lo ^ hi
        buf[i, 0] = hi ^ tw[i, 0]
        buf[i, 1] = (lo ^ hi) ^ tw[i, 1]


@njit(cache=True, parallel=True)
def prg_inputs(keys, hi, x):
    """x[j, i] = keys[j] xor (i, hi): the AES inputs of the IKNP column PRG."""
    m, nblk = x.shape[0], x.shape[1]
    for j in prange(m):
        k0 = keys[j, 0]
        k1 = keys[j, 1] ^ hi
        for i in range(nblk):
            x[j, i, 0] = k0 ^ np.uint64(i)
            x[j, i, 1] = k1


@njit(cache=True, parallel=True)
def xor_into(a, b):
    """a ^= b for (n, 2) arrays."""
    for i in prange(a.shape[0]):
        a[i, 0] ^= b[i, 0]
        a[i, 1] ^= b[i, 1]


@njit(cache=True, parallel=True)
def ggm_prep(nodes, kids):
    """nodes (t, w, 2) -> kids (t, 2w, 2) with kid 2j+b = node j xor b (b on the low word)."""
    t, w = nodes.shape[0], nodes.shape[1]
    for r in prange(t):
        for j in range(w):
            lo = nodes[r, j, 0]
            hi = nodes[r, j, 1]
            kids[r, 2 * j, 0] = lo
            kids[r, 2 * j, 1] = hi
            kids[r, 2 * j + 1, 0] = lo ^ np.uint64(1)
            kids[r, 2 * j + 1, 1] = hi


@njit(cache=True, parallel=True)
def ggm_finish(enc, kids, sums, level):
    """kids ^= enc (MMO); sums[:, level, b] = xor of the kids of parity b."""
    t, w = kids.shape[0], kids.shape[1]
    for r in prange(t):
        e0l = np.uint64(0)
        e0h = np.uint64(0)
        e1l = np.uint64(0)
        e1h = np.uint64(0)
        for j in range(0, w, 2):
            a0 = kids[r, j, 0] ^ enc[r, j, 0]
            a1 = kids[r, j, 1] ^ enc[r, j, 1]
            b0 = kids[r, j + 1, 0] ^ enc[r, j + 1, 0]
            b1 = kids[r, j + 1, 1] ^ enc[r, j + 1, 1]
            kids[r, j, 0] = a0
            kids[r, j, 1] = a1
            kids[r, j + 1, 0] = b0
            kids[r, j + 1, 1] = b1
            e0l ^= a0
            e0h ^= a1
            e1l ^= b0
            e1h ^= b1
        sums[r, level, 0, 0] = e0l
        sums[r, level, 0, 1] = e0h
        sums[r, level, 1, 0] = e1l
        sums[r, level, 1, 1] = e1h


@njit(cache=True, parallel=True)
def ggm_fix(kids, known, alpha, h, level, sums):
    """Receiver, after expanding depth level+1 (``ggm_finish`` wrote ``sums[:, level]``, the
    parity sums including the two garbage children of the unknown on-path parent): zero the
    on-path node and set its sibling = known sum xor (parity sum without the garbage child)."""
    t = kids.shape[0]
    for r in prange(t):
        on = alpha[r] >> (h - 1 - level)
        sib = on ^ 1
        par = sib & 1
        s0 = known[r, level, 0] ^ sums[r, level, par, 0] ^ kids[r, sib, 0]
        s1 = known[r, level, 1] ^ sums[r, level, par, 1] ^ kids[r, sib, 1]
        kids[r, on, 0] = 0
        kids[r, on, 1] = 0
        kids[r, sib, 0] = s0
        kids[r, sib, 1] = s1


@njit(cache=True, parallel=True)
def xor_reduce_leaves(leaves, out):
    """out[r] = xor of leaves[r, :]."""
    for r in prange(leaves.shape[0]):
        a = np.uint64(0)
        b = np.uint64(0)
        for j in range(leaves.shape[1]):
            a ^= leaves[r, j, 0]
            b ^= leaves[r, j, 1]
        out[r, 0] = a
        out[r, 1] = b


@njit(cache=True, parallel=True)
def lpn_gather(x, words, noise, out, r0, d, wpr):
    """Rows r0..r0+R of ``noise xor A x``: words (R, wpr) uint32 from AES; idx = (w * k) >> 32.
    (``wpr`` = words per row in ``words``; the first ``d`` are used.) The secret x (k = 589,824
    blocks = 9.4 MB at 128-bit security) does not fit in L2: the entries of row i + 16 are
    prefetched while row i is summed (3x fewer stalls measured)."""
    k = np.uint64(x.shape[0])
    R = words.shape[0]
    D = PREFETCH_ROWS
    nch = max(1, min(R // 1024, 64))
    for ch in prange(nch):
        end = (ch + 1) * R // nch
        for i in range(ch * R // nch, end):
            if i + D < end:
                for j in range(d):
                    prefetch(x, np.intp((np.uint64(words[i + D, j]) * k) >> np.uint64(32)))
            lo = noise[r0 + i, 0]
            hi = noise[r0 + i, 1]
            for j in range(d):
                idx = (np.uint64(words[i, j]) * k) >> np.uint64(32)
                lo ^= x[idx, 0]
                hi ^= x[idx, 1]
            out[r0 + i, 0] = lo
            out[r0 + i, 1] = hi
