"""The labelled PRG: every random value in nimbus-2pc comes from here.

Construction (normative):

* ``key(seed, label) = SHA3-256("nimbus-prg-v1" || 0x00 || u32le(len(seed)) || seed || utf8(label))``
* ``stream(seed, label) = AES-256-CTR(key(seed, label), counter block 0^16)`` applied to zeros,
  via the ``cryptography`` package (OpenSSL).

Each label names an independent stream, so an implementation may batch or reorder draws and still
produce the same values. A :class:`PRG` refuses to open the same label twice
(:class:`~nimbus.spec.errors.RandomnessReuseError`): reusing a mask is a two-time pad.

Sampling algorithms (normative, so that every implementation draws identical values):

* ``uniform(label, shape, bits)``: element i is ``u64le(stream[8i:8i+8]) mod 2^bits``.
* ``uniform_mod(label, shape, q)`` for ``2 <= q <= 2^64``: rejection sampling without modulo
  bias: read u64le words in order, keep ``w mod 2^b`` with ``b = bitlen(q - 1)`` when it is ``< q``;
  the output is the first ``n`` kept values in stream order.
* ``bits(label, shape)``: bit i is ``(stream[i >> 3] >> (i & 7)) & 1``.
* ``ternary(label, shape)``: read bytes in order, keep ``b < 255``, output ``(b mod 3) - 1``.
* ``cbd(label, shape, eta)`` (centred binomial, variance eta/2, ``1 <= eta <= 32``): element i
  from word ``w = u64le(stream[8i:8i+8])`` as ``popcount(w mod 2^eta) - popcount((w >> eta) mod 2^eta)``.
* ``uniform_signed(label, shape, bound)``: ``uniform_mod(2*bound + 1) - bound`` (uniform on
  ``[-bound, bound]``, ``bound < 2^62``).

Seeds: 32 bytes from ``os.urandom`` in production (:func:`PRG.from_os`); fixed seeds only in
tests, vectors and benchmarks.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Iterable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import ParameterError, RandomnessReuseError

__all__ = ["PRG", "Stream", "derive_key", "SEED_BYTES"]

SEED_BYTES = 32
_DOMAIN = b"nimbus-prg-v1\x00"


def derive_key(seed: bytes, label: str) -> bytes:
    """The AES-256 key of the stream named ``label`` under ``seed``."""
    lab = label.encode("utf-8")
    return hashlib.sha3_256(_DOMAIN + struct.pack("<I", len(seed)) + seed + lab).digest()


def _shape_size(shape) -> tuple[tuple[int, ...], int]:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ParameterError(f"negative dimension in shape {shape}")
    n = 1
    for s in shape:
        n *= s
    return shape, n


class Stream:
    """An AES-256-CTR keystream read sequentially (``read`` continues where it stopped)."""

    def __init__(self, key: bytes):
        self._enc = Cipher(algorithms.AES(key), modes.CTR(b"\x00" * 16)).encryptor()

    def read(self, n: int) -> bytes:
        return self.read_into(np.empty(n, dtype=np.uint8)).tobytes()

    def read_into(self, out: np.ndarray) -> np.ndarray:
        """Fill the C-contiguous array ``out`` with the next ``out.nbytes`` keystream bytes."""
        buf = out.view(np.uint8).reshape(-1)
        if buf.size == 0:
            return out
        zeros = np.zeros(buf.size + 15, dtype=np.uint8)
        tmp = np.empty(buf.size + 15, dtype=np.uint8)
        k = self._enc.update_into(zeros[: buf.size], tmp)
        buf[:] = tmp[:k]
        return out

    def words(self, n: int) -> np.ndarray:
        return self.read_into(np.empty(n, dtype="<u8")).astype(np.uint64, copy=False)


class PRG:
    """A party's labelled PRG. Thread-compatible, not thread-safe.

    ``seed`` must be secret and uniformly random (32 bytes); :meth:`from_os` makes one.
    """

    def __init__(self, seed: bytes):
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_BYTES:
            raise ParameterError(f"PRG seed must be {SEED_BYTES} bytes")
        self._seed = bytes(seed)
        self._used: set[str] = set()

    @classmethod
    def from_os(cls) -> "PRG":
        return cls(os.urandom(SEED_BYTES))

    @classmethod
    def for_tests(cls, name: str) -> "PRG":
        """A deterministic PRG for tests and vectors (never for production secrets)."""
        return cls(hashlib.sha256(b"nimbus-test-seed\x00" + name.encode()).digest())

    def __repr__(self) -> str:  # never print the seed
        return f"PRG(<secret seed>, {len(self._used)} labels used)"

    # -- streams -------------------------------------------------------------------------------
    def stream(self, label: str) -> Stream:
        """Open the stream ``label`` (once per PRG; a second open raises)."""
        if not isinstance(label, str) or not label:
            raise ParameterError("PRG labels are non-empty strings")
        if label in self._used:
            raise RandomnessReuseError(f"PRG label {label!r} drawn twice")
        self._used.add(label)
        return Stream(derive_key(self._seed, label))

    def child_seed(self, label: str) -> bytes:
        """32 fresh bytes (e.g. a seed to send to the peer for a seeded ciphertext)."""
        return self.stream(label).read(SEED_BYTES)

    # -- sampling algorithms (see module docstring) --------------------------------------------
    def uniform(self, label: str, shape, bits: int) -> np.ndarray:
        if not 1 <= int(bits) <= 64:
            raise ParameterError(f"bits must be in [1, 64], got {bits}")
        shape, n = _shape_size(shape)
        w = self.stream(label).words(n)
        if bits < 64:
            w &= np.uint64((1 << bits) - 1)
        return w.reshape(shape)

    def uniform_mod(self, label: str, shape, q: int) -> np.ndarray:
        q = int(q)
        if not 2 <= q <= 1 << 64:
            raise ParameterError(f"modulus must be in [2, 2^64], got {q}")
        shape, n = _shape_size(shape)
        b = (q - 1).bit_length()
        if q == 1 << b:
            return self.uniform(label, shape, b)
        st = self.stream(label)
        mask = np.uint64((1 << b) - 1)
        out = np.empty(n, dtype=np.uint64)
        got = 0
        while got < n:
            need = n - got
            w = st.words(need + need // 2 + 16) & mask
            keep = w[w < np.uint64(q)]
            take = min(need, keep.size)
            out[got : got + take] = keep[:take]
            got += take
        return out.reshape(shape)

    def draw(self, label: str, shape, modulus: int) -> np.ndarray:
        """Uniform mod ``modulus`` (a power of two uses :meth:`uniform`, else rejection)."""
        return self.uniform_mod(label, shape, modulus)

    def bits(self, label: str, shape) -> np.ndarray:
        shape, n = _shape_size(shape)
        raw = self.stream(label).read_into(np.empty((n + 7) // 8, dtype=np.uint8))
        return np.unpackbits(raw, bitorder="little")[:n].reshape(shape)

    def ternary(self, label: str, shape) -> np.ndarray:
        shape, n = _shape_size(shape)
        st = self.stream(label)
        out = np.empty(n, dtype=np.int64)
        got = 0
        while got < n:
            need = n - got
            b = st.read_into(np.empty(need + need // 64 + 16, dtype=np.uint8))
            keep = b[b < 255]
            take = min(need, keep.size)
            out[got : got + take] = (keep[:take] % 3).astype(np.int64) - 1
            got += take
        return out.reshape(shape)

    def cbd(self, label: str, shape, eta: int) -> np.ndarray:
        if not 1 <= int(eta) <= 32:
            raise ParameterError(f"eta must be in [1, 32], got {eta}")
        shape, n = _shape_size(shape)
        w = self.stream(label).words(n)
        m = np.uint64((1 << eta) - 1)
        a = np.bitwise_count(w & m).astype(np.int64)
        b = np.bitwise_count((w >> np.uint64(eta)) & m).astype(np.int64)
        return (a - b).reshape(shape)

    def uniform_signed(self, label: str, shape, bound: int) -> np.ndarray:
        bound = int(bound)
        if not 0 < bound < 1 << 62:
            raise ParameterError(f"bound must be in (0, 2^62), got {bound}")
        u = self.uniform_mod(label, shape, 2 * bound + 1)
        return u.astype(np.int64) - bound

    def labels_used(self) -> Iterable[str]:
        return frozenset(self._used)
