"""numba kernels of the optimized OT (private; wrapped and validated by ``nimbus.optimized.ot``).

Representation: blocks are ``(n, 2)`` uint64 ``[lo, hi]`` (see ``nimbus.spec.ot``); bit matrices
are uint64 words with little-endian bit order. AES itself is never done here: the wrappers call
the ``cryptography`` package (OpenSSL, AES-NI/VAES) on preallocated buffers and these kernels do
the surrounding xors, gathers and bit shuffles. All loops index explicitly; no reliance on
overflow except the uint64 wrap of xor-only data. ``prange`` loops split independent rows.

With one numba thread (the default to use on this 2-core machine, where the two parties share
the cores) the wrappers call serial, fused kernels instead of the parallel ones: no parallel
region to wake, and each pass works on a cache-resident chunk (``ggm_level``: one pass per GGM
level and tree group; ``iknp_recv_chunk``/``iknp_send_chunk``: PRG xors and the transpose of a
chunk of columns; ``lpn_gather_1``: the prefetched gather). Outputs never depend on the choice.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange, types

__all__ = [
    "transpose_128", "xor_rows_masked", "xor3_rows", "prg_inputs", "sigma_xor", "xor_into",
    "ggm_level", "ggm_level_par", "lpn_indices", "lpn_gather", "lpn_gather_1",
    "iknp_prg_in", "iknp_recv_chunk", "iknp_send_chunk", "xor_reduce_leaves", "prefetch", "PREFETCH_ROWS",
]


PREFETCH_ROWS = 32  # LPN rows prefetched ahead (a tuning knob: never changes outputs)

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
        """``llvm.prefetch(&arr[i, 0], read, locality 2)`` (``prefetcht1``: measured 15-20% faster
        LPN gathers than locality 3 on Zen 4): a cache hint, no semantic effect."""
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
            builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)])
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


@njit(cache=True)
def lpn_indices(words, k):
    """words (flat uint32, from AES) <- (w * k) >> 32 in place: the LPN column indices (all words
    of a row, used or not: one vectorised pass)."""
    kk = np.uint64(k)
    for q in range(words.size):
        words[q] = np.uint32((np.uint64(words[q]) * kk) >> np.uint64(32))


@njit(cache=True, parallel=True)
def lpn_gather(x, idx, noise, out, r0, d, nch):
    """Rows r0..r0+R of ``noise xor A x``; idx (R, wpr) uint32 column indices (the first ``d`` of
    each row are used). The secret x (k = 589,824 blocks = 9.4 MB at 128-bit security) does not
    fit in L2: the entries of row i + PREFETCH_ROWS are prefetched while row i is summed. ``nch``
    ranges of rows run in parallel (a tuning knob: never changes the output)."""
    R = idx.shape[0]
    D = PREFETCH_ROWS
    for ch in prange(nch):
        beg = ch * R // nch
        end = (ch + 1) * R // nch
        for i in range(beg, min(beg + D, end)):
            for j in range(d):
                prefetch(x, np.intp(idx[i, j]))
        for i in range(beg, end):
            if i + D < end:
                for j in range(d):
                    prefetch(x, np.intp(idx[i + D, j]))
            lo = noise[r0 + i, 0]
            hi = noise[r0 + i, 1]
            for j in range(d):
                t = np.intp(idx[i, j])
                lo ^= x[t, 0]
                hi ^= x[t, 1]
            out[r0 + i, 0] = lo
            out[r0 + i, 1] = hi


@njit(cache=True)
def lpn_gather_1(x, idx, noise, out, r0, d):
    """Single-threaded :func:`lpn_gather` (no parallel region: tighter code, no thread wake-ups)."""
    R = idx.shape[0]
    D = PREFETCH_ROWS
    for i in range(min(D, R)):
        for j in range(d):
            prefetch(x, np.intp(idx[i, j]))
    for i in range(R):
        if i + D < R:
            for j in range(d):
                prefetch(x, np.intp(idx[i + D, j]))
        lo = noise[r0 + i, 0]
        hi = noise[r0 + i, 1]
        for j in range(d):
            t = np.intp(idx[i, j])
            lo ^= x[t, 0]
            hi ^= x[t, 1]
        out[r0 + i, 0] = lo
        out[r0 + i, 1] = hi


@njit(cache=True, inline="always")
def _put(out, r, j, lo, hi, expand):
    """Store kid j: as the next level's two AES inputs (j xor 0, j xor 1) or as a leaf."""
    if expand:
        out[r, 2 * j, 0] = lo
        out[r, 2 * j, 1] = hi
        out[r, 2 * j + 1, 0] = lo ^ np.uint64(1)
        out[r, 2 * j + 1, 1] = hi
    else:
        out[r, j, 0] = lo
        out[r, j, 1] = hi


@njit(cache=True, inline="always")
def _ggm_row(enc, kin, out, sums, level, r, rg, expand, recv, known, alpha, h):
    """One tree row of :func:`ggm_level` in one pass: kids = enc xor kin (MMO) stored at their
    destination, the level's parity sums, then the receiver's fix-up of the two on-path kids."""
    w2 = kin.shape[1]
    e0l = np.uint64(0)
    e0h = np.uint64(0)
    e1l = np.uint64(0)
    e1h = np.uint64(0)
    for j in range(0, w2, 2):
        a0 = kin[r, j, 0] ^ enc[r, j, 0]
        a1 = kin[r, j, 1] ^ enc[r, j, 1]
        b0 = kin[r, j + 1, 0] ^ enc[r, j + 1, 0]
        b1 = kin[r, j + 1, 1] ^ enc[r, j + 1, 1]
        _put(out, r, j, a0, a1, expand)
        _put(out, r, j + 1, b0, b1, expand)
        e0l ^= a0
        e0h ^= a1
        e1l ^= b0
        e1h ^= b1
    sums[rg, level, 0, 0] = e0l
    sums[rg, level, 0, 1] = e0h
    sums[rg, level, 1, 0] = e1l
    sums[rg, level, 1, 1] = e1h
    if recv:
        on = alpha[rg] >> (h - 1 - level)
        sib = on ^ 1
        par = sib & 1
        s0 = known[rg, level, 0] ^ sums[rg, level, par, 0] ^ kin[r, sib, 0] ^ enc[r, sib, 0]
        s1 = known[rg, level, 1] ^ sums[rg, level, par, 1] ^ kin[r, sib, 1] ^ enc[r, sib, 1]
        _put(out, r, on, np.uint64(0), np.uint64(0), expand)
        _put(out, r, sib, s0, s1, expand)


@njit(cache=True)
def ggm_level(enc, kin, out, sums, level, r0, expand, recv, known, alpha, h):
    """GGM level ``level`` of trees r0..r0+G (whole rows), from enc = AES_G(kin): the kids (MMO),
    sums[r0 + r, level] = parity sums (assigned), the receiver's fix-up (``recv``: zero the
    on-path node, sibling = known xor parity sum without the garbage child), written to ``out``
    as the next level's AES inputs (kid 2j+b = node j xor b) when ``expand``, else as leaves."""
    for r in range(kin.shape[0]):
        _ggm_row(enc, kin, out, sums, level, r, r0 + r, expand, recv, known, alpha, h)


@njit(cache=True, parallel=True)
def ggm_level_par(enc, kin, out, sums, level, r0, expand, recv, known, alpha, h):
    """:func:`ggm_level` with the trees split over the threads."""
    for r in prange(kin.shape[0]):
        _ggm_row(enc, kin, out, sums, level, r, r0 + r, expand, recv, known, alpha, h)


@njit(cache=True)
def iknp_prg_in(keys, hi, c0, x):
    """x[s, j, i] = keys[s, j] xor (c0 + i, hi): AES inputs of blocks c0..c0+C of the IKNP column
    PRG for the key sets s (keys (S, m, 2) uint64, x (S, m, C, 2))."""
    for s in range(x.shape[0]):
        for j in range(x.shape[1]):
            k0 = keys[s, j, 0]
            k1 = keys[s, j, 1] ^ hi
            for i in range(x.shape[2]):
                x[s, j, i, 0] = k0 ^ np.uint64(c0 + i)
                x[s, j, i, 1] = k1


@njit(cache=True)
def _transpose_tile(cols, out, row0):
    """cols (128, W) uint64 -> out rows row0 .. row0 + 64 W (as :func:`transpose_128`, serial;
    full steps of 8 words with constant trip counts, which compile 1.5x faster, then the tail)."""
    W = cols.shape[1]
    a = np.empty((8, 64), dtype=np.uint64)
    full = W // 8
    for st in range(full):
        c0 = 8 * st
        for w in range(2):
            for jj in range(64):
                for cc in range(8):
                    a[cc, jj] = cols[64 * w + jj, c0 + cc]
            for cc in range(8):
                _t64(a[cc])
            for cc in range(8):
                base = row0 + 64 * (c0 + cc)
                for ii in range(64):
                    out[base + ii, w] = a[cc, ii]
    c0 = 8 * full
    nc = W - c0
    if nc:
        for w in range(2):
            for jj in range(64):
                for cc in range(nc):
                    a[cc, jj] = cols[64 * w + jj, c0 + cc]
            for cc in range(nc):
                _t64(a[cc])
            for cc in range(nc):
                base = row0 + 64 * (c0 + cc)
                for ii in range(64):
                    out[base + ii, w] = a[cc, ii]


@njit(cache=True)
def iknp_recv_chunk(enc, keys, hi, c0, r, u, tile, out):
    """IKNP receiver, blocks c0..c0+C of every column (enc = AES_PI of ``iknp_prg_in``'s x for the
    key sets 0 and 1): t_j = G(k_j0), u_j = t_j xor G(k_j1) xor r (written to u (128, m/64)
    uint64), column 0 of t replaced by r, then t transposed into rows 128 c0 .. of out."""
    C = enc.shape[2]
    w0 = 2 * c0
    for j in range(128):
        a0 = keys[0, j, 0]
        a1 = keys[0, j, 1] ^ hi
        b0 = keys[1, j, 0]
        b1 = keys[1, j, 1] ^ hi
        for i in range(C):
            ctr = np.uint64(c0 + i)
            t0 = enc[0, j, i, 0] ^ a0 ^ ctr
            t1 = enc[0, j, i, 1] ^ a1
            rl = r[w0 + 2 * i]
            rh = r[w0 + 2 * i + 1]
            u[j, w0 + 2 * i] = t0 ^ enc[1, j, i, 0] ^ b0 ^ ctr ^ rl
            u[j, w0 + 2 * i + 1] = t1 ^ enc[1, j, i, 1] ^ b1 ^ rh
            if j == 0:
                t0 = rl
                t1 = rh
            tile[j, 2 * i] = t0
            tile[j, 2 * i + 1] = t1
    _transpose_tile(tile[:, : 2 * C], out, 128 * c0)


@njit(cache=True)
def iknp_send_chunk(enc, keys, hi, c0, sel, u, tile, out):
    """IKNP sender, blocks c0..c0+C: q_j = G(k_j) xor Delta_j u_j (u (128, m/64) uint64), column 0
    zero, transposed into rows 128 c0 .. of out."""
    C = enc.shape[2]
    w0 = 2 * c0
    for j in range(128):
        a0 = keys[0, j, 0]
        a1 = keys[0, j, 1] ^ hi
        m = np.uint64(0xFFFFFFFFFFFFFFFF) if sel[j] else np.uint64(0)
        for i in range(C):
            t0 = enc[0, j, i, 0] ^ a0 ^ np.uint64(c0 + i)
            t1 = enc[0, j, i, 1] ^ a1
            t0 ^= u[j, w0 + 2 * i] & m
            t1 ^= u[j, w0 + 2 * i + 1] & m
            if j == 0:
                t0 = np.uint64(0)
                t1 = np.uint64(0)
            tile[j, 2 * i] = t0
            tile[j, 2 * i + 1] = t1
    _transpose_tile(tile[:, : 2 * C], out, 128 * c0)
