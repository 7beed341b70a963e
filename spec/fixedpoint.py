"""Fixed-point numbers in Z_{2^l} and the ring maps every protocol is defined with.

Encoding (normative): a real x becomes ``v = floor(x * 2^f + 1/2)`` (round half up), which must
satisfy ``-2^(l-1) <= v < 2^(l-1)``, stored as ``v mod 2^l`` in a ``numpy.uint64``.
Decoding: lift ``u`` to the signed value ``u - 2^l`` if ``u >= 2^(l-1)``, then divide by ``2^f``.
Floats exist only at this edge; everything in between is exact ring arithmetic.
"""

from __future__ import annotations

import numpy as np

from .errors import ShapeError
from .params import Ring

__all__ = ["encode", "decode", "to_signed", "from_signed", "wrap", "downcast", "as_ring_array"]


def as_ring_array(x, ring: Ring, name: str = "input") -> np.ndarray:
    """Check that ``x`` is a uint64 array of elements of Z_{2^bits}; return it as such."""
    a = np.asarray(x)
    if a.dtype != np.uint64:
        raise ShapeError(f"{name} must be a uint64 array of ring elements, got dtype {a.dtype}")
    if ring.bits < 64 and a.size and int(a.max()) >> ring.bits:
        raise ShapeError(f"{name} has elements outside Z_2^{ring.bits}")
    return a


def wrap(v, bits: int) -> np.ndarray:
    """Signed integers (int64 array or Python ints) -> their residues mod 2^bits as uint64."""
    a = np.asarray(v)
    if a.dtype == object:
        return np.array([int(t) % (1 << bits) for t in a.reshape(-1)], dtype=np.uint64).reshape(a.shape)
    u = a.astype(np.int64).view(np.uint64)
    return u if bits == 64 else u & np.uint64((1 << bits) - 1)


def from_signed(v, ring: Ring) -> np.ndarray:
    return wrap(v, ring.bits)


def to_signed(u, ring: Ring | int) -> np.ndarray:
    """Ring elements -> signed int64 values in ``[-2^(l-1), 2^(l-1))``."""
    bits = ring if isinstance(ring, int) else ring.bits
    a = np.asarray(u, dtype=np.uint64)
    if bits == 64:
        return a.view(np.int64)
    half = 1 << (bits - 1)
    shifted = (a + np.uint64(half)) & np.uint64((1 << bits) - 1)  # (u + 2^(l-1)) mod 2^l < 2^63
    return shifted.astype(np.int64) - np.int64(half)


def encode(x, ring: Ring) -> np.ndarray:
    """Reals -> ring elements (see module docstring); out-of-range or non-finite raises."""
    a = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ShapeError("cannot encode NaN or infinity")
    v = np.floor(a * float(1 << ring.frac) + 0.5)
    lim = float(1 << (ring.bits - 1))
    if a.size and (v.min() < -lim or v.max() >= lim):
        raise ShapeError(f"value out of range for Z_2^{ring.bits} with {ring.frac} fraction bits")
    return wrap(v.astype(np.int64), ring.bits)


def decode(u, ring: Ring) -> np.ndarray:
    return to_signed(u, ring).astype(np.float64) / float(1 << ring.frac)


def downcast(u, bits_to: int) -> np.ndarray:
    """Z_{2^l} -> Z_{2^k}, k <= l: ``u mod 2^k`` (local on each share, exact on the secret)."""
    a = np.asarray(u, dtype=np.uint64)
    return a if bits_to == 64 else a & np.uint64((1 << bits_to) - 1)
