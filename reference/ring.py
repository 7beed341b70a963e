"""Reference kernels for Z_{2^l} arithmetic on share tensors: Python integers, one element at a time.

Representation: inputs and outputs are ``numpy.uint64`` arrays whose elements lie in
``[0, 2^bits)``; every result is reduced mod ``2^bits`` explicitly. Slow on purpose: this is the
definition the optimized twins (``nimbus.optimized.ring``) are checked against.
"""

from __future__ import annotations

import numpy as np

from nimbus.spec.errors import ShapeError

__all__ = ["add", "sub", "neg", "mul", "mul_scalar", "matmul", "downcast", "sum_last"]


def _ints(a: np.ndarray) -> list:
    return np.asarray(a, dtype=np.uint64).reshape(-1).tolist()


def _out(vals: list, shape) -> np.ndarray:
    return np.array(vals, dtype=np.uint64).reshape(shape)


def _same_shape(a, b):
    if np.shape(a) != np.shape(b):
        raise ShapeError(f"shape mismatch: {np.shape(a)} vs {np.shape(b)}")


def add(a, b, bits: int) -> np.ndarray:
    """(a + b) mod 2^bits, element-wise."""
    _same_shape(a, b)
    m = 1 << bits
    return _out([(x + y) % m for x, y in zip(_ints(a), _ints(b))], np.shape(a))


def sub(a, b, bits: int) -> np.ndarray:
    """(a - b) mod 2^bits, element-wise."""
    _same_shape(a, b)
    m = 1 << bits
    return _out([(x - y) % m for x, y in zip(_ints(a), _ints(b))], np.shape(a))


def neg(a, bits: int) -> np.ndarray:
    """(-a) mod 2^bits."""
    m = 1 << bits
    return _out([(-x) % m for x in _ints(a)], np.shape(a))


def mul(a, b, bits: int) -> np.ndarray:
    """(a * b) mod 2^bits, element-wise."""
    _same_shape(a, b)
    m = 1 << bits
    return _out([(x * y) % m for x, y in zip(_ints(a), _ints(b))], np.shape(a))


def mul_scalar(a, c: int, bits: int) -> np.ndarray:
    """(c * a) mod 2^bits for a public integer c (any sign)."""
    m = 1 << bits
    return _out([(int(c) * x) % m for x in _ints(a)], np.shape(a))


def matmul(a, b, bits: int) -> np.ndarray:
    """(A @ B) mod 2^bits for 2-D A (n x k) and B (k x m)."""
    if np.ndim(a) != 2 or np.ndim(b) != 2 or np.shape(a)[1] != np.shape(b)[0]:
        raise ShapeError(f"matmul shapes {np.shape(a)} @ {np.shape(b)}")
    m = 1 << bits
    A = np.asarray(a, dtype=np.uint64).tolist()
    Bt = np.asarray(b, dtype=np.uint64).T.tolist()
    return _out([[sum(x * y for x, y in zip(row, col)) % m for col in Bt] for row in A], (len(A), len(Bt)))


def sum_last(a, bits: int) -> np.ndarray:
    """Sum along the last axis mod 2^bits."""
    arr = np.asarray(a, dtype=np.uint64)
    m = 1 << bits
    rows = arr.reshape(-1, arr.shape[-1]).tolist() if arr.ndim else [[int(arr)]]
    return _out([sum(r) % m for r in rows], arr.shape[:-1])


def downcast(a, bits_to: int) -> np.ndarray:
    """a mod 2^bits_to (local ring down-cast of a share; exact on the secret)."""
    m = 1 << bits_to
    return _out([x % m for x in _ints(a)], np.shape(a))
