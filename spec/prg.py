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
* ``uniform_signed_wide(label, shape, bound)`` for ``1 <= bound < 2^127`` (the noise-flooding
  width, see ``he``): uniform on ``[-bound, bound]`` by exact rejection sampling over 128-bit
  candidates. With ``r = 2*bound + 1`` and ``b = bitlen(r - 1)`` (``<= 128``), candidate j is read
  from the words ``w_{2j}, w_{2j+1}`` (``w_i = u64le(stream[8i:8i+8])``) as
  ``x_j = (w_{2j} + 2^64 * w_{2j+1}) mod 2^b`` (low limb first: two words per candidate, even when
  ``b <= 64``); keep ``x_j`` when ``x_j < r``; the output is the first ``n`` kept values in stream
  order. Returned in *offset form*: two uint64 arrays ``(lo, hi)`` of the given shape with
  ``v = lo + 2^64 * hi = e + bound`` in ``[0, 2*bound]`` (so ``e = v - bound``); reduce mod a
  prime p as ``(hi * (2^64 mod p) + lo - bound) mod p`` (:func:`wide_residues`).

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

__all__ = ["PRG", "Stream", "derive_key", "SEED_BYTES", "WIDE_BOUND_LIMIT", "wide_residues", "wide_to_ints"]

SEED_BYTES = 32
#: ``uniform_signed_wide`` takes bounds below this (2^127: the candidates are 128-bit).
WIDE_BOUND_LIMIT = 1 << 127
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


_M64 = (1 << 64) - 1


def wide_to_ints(lo: np.ndarray, hi: np.ndarray, offset: int = 0) -> np.ndarray:
    """Python-int (object) array ``lo + 2^64 hi - offset`` (definitional; tests and reference)."""
    return (np.asarray(hi).astype(object) << 64) + np.asarray(lo).astype(object) - int(offset)


def wide_residues(lo: np.ndarray, hi: np.ndarray, offset: int, p: int) -> np.ndarray:
    """``(lo + 2^64 hi - offset) mod p`` as uint64 in [0, p), for any modulus p < 2^63.

    Normative reduction of an offset-form draw (:meth:`PRG.uniform_signed_wide`); computed here
    in Python integers (reference speed)."""
    v = wide_to_ints(lo, hi, offset) % int(p)
    return v.astype(np.uint64) if v.size else np.zeros(v.shape, np.uint64)


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

    def uniform_signed_wide(self, label: str, shape, bound: int) -> tuple[np.ndarray, np.ndarray]:
        """Uniform on [-bound, bound] for bound < 2^127, in offset form ``(lo, hi)``: the value
        ``lo + 2^64 hi - bound`` (module docstring: exact rejection over 128-bit candidates)."""
        bound = int(bound)
        if not 0 < bound < WIDE_BOUND_LIMIT:
            raise ParameterError(f"bound must be in (0, 2^127), got {bound}")
        shape, n = _shape_size(shape)
        r = 2 * bound + 1
        b = (r - 1).bit_length()
        r_lo, r_hi = np.uint64(r & _M64), np.uint64(r >> 64)
        if b <= 64:
            m_lo, m_hi = np.uint64((1 << b) - 1), np.uint64(0)
        else:
            m_lo, m_hi = np.uint64(_M64), np.uint64((1 << (b - 64)) - 1)
        st = self.stream(label)
        lo_out = np.empty(n, dtype=np.uint64)
        hi_out = np.empty(n, dtype=np.uint64)
        got = 0
        per = (1 << b) / r  # expected candidates per kept value, in [1, 2)
        while got < n:
            need = n - got
            w = st.words(2 * (int(need * per * 1.05) + 16)).reshape(-1, 2)
            lo, hi = w[:, 0] & m_lo, w[:, 1] & m_hi
            keep = (hi < r_hi) | ((hi == r_hi) & (lo < r_lo))
            lo, hi = lo[keep], hi[keep]
            take = min(need, lo.size)
            lo_out[got : got + take] = lo[:take]
            hi_out[got : got + take] = hi[:take]
            got += take
        return lo_out.reshape(shape), hi_out.reshape(shape)

    def labels_used(self) -> Iterable[str]:
        return frozenset(self._used)
