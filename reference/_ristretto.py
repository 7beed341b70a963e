"""ristretto255 from the system libsodium (``libsodium.so.23``) through ctypes.

Only the vetted library does group arithmetic; this module validates lengths and points and turns
libsodium's return codes into :class:`~nimbus.spec.errors.ProtocolError` (a peer's bad point) or
:class:`~nimbus.spec.errors.ParameterError` (libsodium missing). Scalars are 32-byte little-endian
values reduced mod the group order (``crypto_core_ristretto255_scalar_reduce`` of 64 bytes).
"""

from __future__ import annotations

import ctypes
import ctypes.util

from nimbus.spec.errors import ParameterError, ProtocolError

__all__ = ["lib", "POINT_BYTES", "SCALAR_BYTES", "scalar_reduce", "base_mul", "mul", "add", "sub",
           "is_valid_point"]

POINT_BYTES = 32
SCALAR_BYTES = 32
_LIB = None


def lib():
    """The loaded libsodium (initialised once); a clear error if it is missing or too old."""
    global _LIB
    if _LIB is None:
        names = ["libsodium.so.23", "libsodium.so", ctypes.util.find_library("sodium")]
        last = None
        for n in names:
            if not n:
                continue
            try:
                cand = ctypes.CDLL(n)
                break
            except OSError as e:
                last = e
        else:
            raise ParameterError(
                "base OT needs the system libsodium (libsodium.so.23, e.g. `apt-get install libsodium23`); "
                f"it could not be loaded: {last}"
            )
        if cand.sodium_init() < 0:
            raise ParameterError("libsodium failed to initialise")
        if not hasattr(cand, "crypto_scalarmult_ristretto255"):
            raise ParameterError("the system libsodium has no ristretto255 (need >= 1.0.18)")
        _LIB = cand
    return _LIB


def _buf(data: bytes, n: int, what: str):
    if len(data) != n:
        raise ProtocolError(f"{what} must be {n} bytes, got {len(data)}")
    return ctypes.create_string_buffer(bytes(data), n)


def scalar_reduce(wide: bytes) -> bytes:
    """64 uniform bytes -> a uniform scalar mod the group order."""
    out = ctypes.create_string_buffer(SCALAR_BYTES)
    lib().crypto_core_ristretto255_scalar_reduce(out, _buf(wide, 64, "wide scalar"))
    return out.raw


def is_valid_point(p: bytes) -> bool:
    """True iff ``p`` is the canonical encoding of a ristretto255 group element."""
    return len(p) == POINT_BYTES and lib().crypto_core_ristretto255_is_valid_point(_buf(p, 32, "point")) == 1


def base_mul(s: bytes) -> bytes:
    """``s * G``; fails on the zero scalar (libsodium refuses to output the identity)."""
    out = ctypes.create_string_buffer(POINT_BYTES)
    if lib().crypto_scalarmult_ristretto255_base(out, _buf(s, 32, "scalar")) != 0:
        raise ProtocolError("scalar multiple is the identity")
    return out.raw


def mul(s: bytes, p: bytes) -> bytes:
    """``s * P`` for a peer's point P (validated; the identity result is rejected)."""
    if not is_valid_point(p):
        raise ProtocolError("peer sent an invalid ristretto255 point")
    out = ctypes.create_string_buffer(POINT_BYTES)
    if lib().crypto_scalarmult_ristretto255(out, _buf(s, 32, "scalar"), _buf(p, 32, "point")) != 0:
        raise ProtocolError("peer's point gave the identity (small-order or zero)")
    return out.raw


def add(p: bytes, q: bytes) -> bytes:
    out = ctypes.create_string_buffer(POINT_BYTES)
    if lib().crypto_core_ristretto255_add(out, _buf(p, 32, "point"), _buf(q, 32, "point")) != 0:
        raise ProtocolError("invalid point in addition")
    return out.raw


def sub(p: bytes, q: bytes) -> bytes:
    out = ctypes.create_string_buffer(POINT_BYTES)
    if lib().crypto_core_ristretto255_sub(out, _buf(p, 32, "point"), _buf(q, 32, "point")) != 0:
        raise ProtocolError("invalid point in subtraction")
    return out.raw
