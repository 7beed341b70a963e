"""Optimized kernels for Z_{2^l} share arithmetic (numba).

Twin of ``nimbus.reference.ring``: same names, signatures, results (bit for bit) and errors.
Representation: ``numpy.uint64`` arrays, elements in ``[0, 2^bits)``. Arithmetic mod 2^64 is the
native uint64 wrap; every kernel then reduces explicitly with the mask ``2^bits - 1``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from nimbus.spec.errors import ShapeError

__all__ = ["add", "sub", "neg", "mul", "mul_scalar", "matmul", "downcast", "sum_last"]


def _mask(bits: int) -> np.uint64:
    return np.uint64((1 << bits) - 1)


def _flat(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.uint64).reshape(-1)


def _same_shape(a, b):
    if np.shape(a) != np.shape(b):
        raise ShapeError(f"shape mismatch: {np.shape(a)} vs {np.shape(b)}")


@njit(cache=True)
def _add(a, b, m, out):
    for i in range(a.size):
        out[i] = (a[i] + b[i]) & m


@njit(cache=True)
def _sub(a, b, m, out):
    for i in range(a.size):
        out[i] = (a[i] - b[i]) & m


@njit(cache=True)
def _mul(a, b, m, out):
    for i in range(a.size):
        out[i] = (a[i] * b[i]) & m


@njit(cache=True)
def _mul_scalar(a, c, m, out):
    for i in range(a.size):
        out[i] = (a[i] * c) & m


_MM_ROWS = 8  # rows of A sharing one pass over B (B is read once per row block)
_MM_COLS = 512  # accumulator tile: 8 x 512 uint64 = 32 KiB


@njit(cache=True, parallel=True)
def _matmul(a, b, m, out):
    n, k = a.shape
    cols = b.shape[1]
    nblk = (n + _MM_ROWS - 1) // _MM_ROWS
    for blk in prange(nblk):
        i0 = blk * _MM_ROWS
        i1 = min(n, i0 + _MM_ROWS)
        acc = np.zeros((_MM_ROWS, _MM_COLS), dtype=np.uint64)
        for j0 in range(0, cols, _MM_COLS):
            j1 = min(cols, j0 + _MM_COLS)
            w = j1 - j0
            acc[:, :] = 0
            for t in range(k):
                brow = b[t, j0:j1]
                for r in range(i1 - i0):
                    x = a[i0 + r, t]
                    ar = acc[r]
                    for j in range(w):
                        ar[j] += x * brow[j]
            for r in range(i1 - i0):
                for j in range(w):
                    out[i0 + r, j0 + j] = acc[r, j] & m


@njit(cache=True)
def _sum_rows(a, m, out):
    rows, cols = a.shape
    for i in range(rows):
        s = np.uint64(0)
        for j in range(cols):
            s += a[i, j]
        out[i] = s & m


def _binary(kernel, a, b, bits):
    _same_shape(a, b)
    out = np.empty(np.shape(a), dtype=np.uint64)
    kernel(_flat(a), _flat(b), _mask(bits), out.reshape(-1))
    return out


def add(a, b, bits: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.ring.add`."""
    return _binary(_add, a, b, bits)


def sub(a, b, bits: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.ring.sub`."""
    return _binary(_sub, a, b, bits)


def neg(a, bits: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.ring.neg`."""
    return _binary(_sub, np.zeros(np.shape(a), dtype=np.uint64), a, bits)


def mul(a, b, bits: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.ring.mul`."""
    return _binary(_mul, a, b, bits)


def mul_scalar(a, c: int, bits: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.ring.mul_scalar` (c reduced mod 2^64 first: exact mod 2^bits)."""
    out = np.empty(np.shape(a), dtype=np.uint64)
    _mul_scalar(_flat(a), np.uint64(int(c) % (1 << 64)), _mask(bits), out.reshape(-1))
    return out


def matmul(a, b, bits: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.ring.matmul`."""
    if np.ndim(a) != 2 or np.ndim(b) != 2 or np.shape(a)[1] != np.shape(b)[0]:
        raise ShapeError(f"matmul shapes {np.shape(a)} @ {np.shape(b)}")
    A = np.ascontiguousarray(a, dtype=np.uint64)
    B = np.ascontiguousarray(b, dtype=np.uint64)
    out = np.empty((A.shape[0], B.shape[1]), dtype=np.uint64)
    _matmul(A, B, _mask(bits), out)
    return out


def sum_last(a, bits: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.ring.sum_last`."""
    arr = np.ascontiguousarray(a, dtype=np.uint64)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    rows = arr.reshape(-1, arr.shape[-1])
    out = np.empty(rows.shape[0], dtype=np.uint64)
    _sum_rows(rows, _mask(bits), out)
    return out.reshape(arr.shape[:-1])


def downcast(a, bits_to: int) -> np.ndarray:
    """Twin of :func:`nimbus.reference.ring.downcast`."""
    out = np.empty(np.shape(a), dtype=np.uint64)
    _mul_scalar(_flat(a), np.uint64(1), _mask(bits_to), out.reshape(-1))
    return out
