"""Typed protocol messages and their canonical byte encoding.

A message type is a subclass of :class:`Message` with a unique 16-bit ``TAG`` and a tuple
``FIELDS`` of ``(name, codec)`` pairs. Encoding (normative, little-endian throughout)::

    message := u16 TAG || field_1 || ... || field_k
    ring    := u8 ndim || u32 dim_1 .. dim_ndim || packed elements    (bit width from the codec)
    bytes   := u32 len || len bytes              fixed(n) := n bytes        u64 := 8 bytes

Packed elements: element i occupies bits ``[i*b, (i+1)*b)`` of the payload, least significant bit
first; the payload is ``ceil(n*b/8)`` bytes and its padding bits are zero. The bit width ``b`` of a
ring field comes from the parameter set (``RingField("linear")`` = the linear ring, a fixed int,
or a function of the parameters), so it is never on the wire and never depends on the values
(a value-dependent width would leak).

:meth:`Message.decode` accepts exactly the canonical encoding of a well-typed message: unknown
tags, short or trailing bytes, non-zero padding, values out of range and too many dimensions all
raise :class:`~nimbus.spec.errors.DecodeError` and nothing else.

Order: each direction is one ordered stream and a receiver asks for the type it expects next,
except for ``ASYNC`` types (the OT layer's look-ahead refills): a sender may emit those early, and
the drivers set one aside while its receiver waits for something else, handing it over when the
receiver asks for its type (:func:`is_async`). A run that ends with one set aside is an error.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, ClassVar

import numpy as np

from .errors import DecodeError, ParameterError, ShapeError

__all__ = [
    "Message",
    "RingField",
    "BytesField",
    "FixedBytes",
    "U64Field",
    "MESSAGE_TYPES",
    "message_type",
    "pack_bits",
    "unpack_bits",
    "packed_size",
    "MAX_NDIM",
    "is_async",
]

MAX_NDIM = 8
MESSAGE_TYPES: dict[int, type["Message"]] = {}


def is_async(payload: bytes) -> int:
    """The tag of an encoded ``ASYNC`` message (one that may overtake others), else 0."""
    if len(payload) < 2:
        return 0
    tag = int.from_bytes(payload[:2], "little")
    t = MESSAGE_TYPES.get(tag)
    return tag if t is not None and t.ASYNC else 0


def packed_size(n: int, bits: int) -> int:
    return (n * bits + 7) // 8


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Definitional packer: ``values`` (uint64, each < 2^bits) -> ``packed_size`` bytes."""
    v = np.ascontiguousarray(values, dtype=np.uint64).reshape(-1)
    if bits == 64:
        return v.astype("<u8").tobytes()
    if bits in (8, 16, 32):
        return v.astype(f"<u{bits // 8}").tobytes()
    out = bytearray()
    step = 1 << 16  # bounded temporaries; chunk boundaries fall on byte boundaries (x8 elements)
    for s in range(0, v.size, step):
        chunk = v[s : s + step]
        b = np.unpackbits(chunk.astype("<u8").view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
        out += np.packbits(b[:, :bits].reshape(-1), bitorder="little").tobytes()
    return bytes(out)


def unpack_bits(data: bytes | memoryview, n: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits` (caller checks the length and padding)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if bits == 64:
        return raw.view("<u8").astype(np.uint64)
    if bits in (8, 16, 32):
        return raw.view(f"<u{bits // 8}").astype(np.uint64)
    out = np.empty(n, dtype=np.uint64)
    step = 1 << 16
    for s in range(0, n, step):
        m = min(step, n - s)
        lo = s * bits // 8
        chunk = raw[lo : lo + packed_size(m, bits)]
        b = np.unpackbits(chunk, bitorder="little")[: m * bits].reshape(m, bits)
        full = np.zeros((m, 64), dtype=np.uint8)
        full[:, :bits] = b
        out[s : s + m] = np.packbits(full, axis=1, bitorder="little").view("<u8").reshape(-1)
    return out


class _Reader:
    def __init__(self, data: bytes | memoryview):
        self.mv = memoryview(data).cast("B")
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.mv):
            raise DecodeError(f"message truncated: need {n} bytes at offset {self.pos}, have {len(self.mv) - self.pos}")
        out = self.mv[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]


Packer = Callable[[np.ndarray, int], bytes]
Unpacker = Callable[[Any, int, int], np.ndarray]


class RingField:
    """An n-dimensional array of ring elements (``numpy.uint64``) of a known bit width."""

    def __init__(self, bits: int | str | Callable[[Any], int]):
        if bits is None:
            raise ParameterError("a ring field needs a bit width (int, ring name or function)")
        self.bits = bits

    def width(self, params) -> int:
        b = self.bits
        if isinstance(b, str):
            if params is None:
                raise ParameterError(f"ring field of the {b!r} ring needs a parameter set")
            b = getattr(params, b).bits
        elif callable(b):
            b = b(params)
        return int(b)

    def check(self, name: str, value: Any, params) -> np.ndarray:
        arr = np.asarray(value)
        if arr.dtype != np.uint64:
            raise ShapeError(f"field {name!r} must be a uint64 array, got {arr.dtype}")
        if arr.ndim > MAX_NDIM:
            raise ShapeError(f"field {name!r} has {arr.ndim} > {MAX_NDIM} dimensions")
        b = self.width(params)
        if b < 64 and arr.size and int(arr.max()) >> b:
            raise ShapeError(f"field {name!r} has an element >= 2^{b}")
        return arr

    def size(self, shape: tuple[int, ...], params) -> int:
        n = 1
        for s in shape:
            n *= int(s)
        return 1 + 4 * len(shape) + packed_size(n, self.width(params))

    def encode(self, arr: np.ndarray, params, out: list, packer: Packer) -> None:
        b = self.width(params)
        out.append(struct.pack(f"<B{arr.ndim}I", arr.ndim, *arr.shape))
        out.append(packer(arr, b))

    def decode(self, r: _Reader, params, unpacker: Unpacker) -> np.ndarray:
        b = self.width(params)
        ndim = r.u8()
        if ndim > MAX_NDIM:
            raise DecodeError(f"{ndim} dimensions > {MAX_NDIM}")
        shape = tuple(r.u32() for _ in range(ndim))
        n = 1
        for s in shape:
            n *= s
        nbytes = packed_size(n, b)
        payload = r.take(nbytes)  # raises before any allocation if the frame is too short
        arr = unpacker(payload, n, b)
        tail = (n * b) % 8
        if tail and payload[-1] >> tail:
            raise DecodeError("non-zero padding bits")
        return arr.reshape(shape)


class BytesField:
    """A variable-length byte string."""

    def check(self, name, value, params):
        if not isinstance(value, (bytes, bytearray)):
            raise ShapeError(f"field {name!r} must be bytes")
        return bytes(value)

    def size(self, length: int, params) -> int:
        return 4 + int(length)

    def encode(self, value, params, out, packer):
        out.append(struct.pack("<I", len(value)))
        out.append(value)

    def decode(self, r, params, unpacker):
        return bytes(r.take(r.u32()))


class FixedBytes:
    """A byte string of a fixed length (seeds, digests)."""

    def __init__(self, length: int):
        self.length = length

    def check(self, name, value, params):
        if not isinstance(value, (bytes, bytearray)) or len(value) != self.length:
            raise ShapeError(f"field {name!r} must be {self.length} bytes")
        return bytes(value)

    def size(self, _unused, params) -> int:
        return self.length

    def encode(self, value, params, out, packer):
        out.append(value)

    def decode(self, r, params, unpacker):
        return bytes(r.take(self.length))


class U64Field:
    """An unsigned 64-bit integer."""

    def check(self, name, value, params):
        if not isinstance(value, (int, np.integer)) or not 0 <= int(value) < 1 << 64:
            raise ShapeError(f"field {name!r} must be an int in [0, 2^64)")
        return int(value)

    def size(self, _unused, params) -> int:
        return 8

    def encode(self, value, params, out, packer):
        out.append(struct.pack("<Q", value))

    def decode(self, r, params, unpacker):
        return r.u64()


class Message:
    """Base class of typed messages; see the module docstring for the wire format."""

    TAG: ClassVar[int]
    FIELDS: ClassVar[tuple[tuple[str, Any], ...]] = ()
    #: may be sent ahead of its turn (see the module docstring); receivers still ask for it
    ASYNC: ClassVar[bool] = False

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        tag = cls.__dict__.get("TAG")
        if tag is None:
            return  # abstract intermediate class
        if not 0 < tag < 1 << 16:
            raise ParameterError(f"{cls.__name__}: TAG must be in (0, 2^16)")
        if tag in MESSAGE_TYPES and MESSAGE_TYPES[tag].__qualname__ != cls.__qualname__:
            raise ParameterError(f"message tag {tag:#06x} used by {MESSAGE_TYPES[tag].__name__} and {cls.__name__}")
        MESSAGE_TYPES[tag] = cls

    def __init__(self, **values):
        names = [n for n, _ in self.FIELDS]
        if sorted(values) != sorted(names):
            raise ShapeError(f"{type(self).__name__} takes fields {names}, got {sorted(values)}")
        for n in names:
            object.__setattr__(self, n, values[n])

    def __repr__(self):
        parts = []
        for n, c in self.FIELDS:
            v = getattr(self, n)
            parts.append(f"{n}=<{v.dtype}{list(v.shape)}>" if isinstance(v, np.ndarray) else f"{n}={v!r}"[:60])
        return f"{type(self).__name__}({', '.join(parts)})"

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        for n, _ in self.FIELDS:
            a, b = getattr(self, n), getattr(other, n)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if not (np.asarray(a).shape == np.asarray(b).shape and np.array_equal(a, b)):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None

    # -- encoding --------------------------------------------------------------------------
    def encode(self, params=None, packer: Packer = pack_bits) -> bytes:
        out = [struct.pack("<H", self.TAG)]
        for n, codec in self.FIELDS:
            codec.encode(codec.check(n, getattr(self, n), params), params, out, packer)
        return b"".join(out)

    def size_bytes(self, params=None) -> int:
        """Length of :meth:`encode`'s output, computed without encoding."""
        total = 2
        for n, codec in self.FIELDS:
            v = getattr(self, n)
            if isinstance(codec, RingField):
                total += codec.size(np.shape(v), params)
            elif isinstance(codec, BytesField):
                total += codec.size(len(v), params)
            else:
                total += codec.size(None, params)
        return total

    @classmethod
    def declared_size(cls, params=None, **dims) -> int:
        """Size from shapes alone: ``dims[name]`` is a ring field's shape or a bytes field's
        length."""
        total = 2
        for n, codec in cls.FIELDS:
            if isinstance(codec, RingField):
                total += codec.size(tuple(dims[n]), params)
            elif isinstance(codec, BytesField):
                total += codec.size(dims[n], params)
            else:
                total += codec.size(None, params)
        return total

    @staticmethod
    def decode(data: bytes | memoryview, params=None, expect: type["Message"] | None = None,
               unpacker: Unpacker = unpack_bits) -> "Message":
        """Decode one message; raises :class:`DecodeError` on anything non-canonical."""
        try:
            r = _Reader(data)
            tag = struct.unpack("<H", r.take(2))[0]
            cls = MESSAGE_TYPES.get(tag)
            if cls is None:
                raise DecodeError(f"unknown message tag {tag:#06x}")
            if expect is not None and cls is not expect:
                raise DecodeError(f"expected {expect.__name__}, got {cls.__name__}")
            vals = {n: codec.decode(r, params, unpacker) for n, codec in cls.FIELDS}
            if r.pos != len(r.mv):
                raise DecodeError(f"{len(r.mv) - r.pos} trailing bytes after {cls.__name__}")
        except DecodeError:
            raise
        except (ValueError, struct.error, MemoryError, OverflowError, TypeError) as e:
            raise DecodeError(f"malformed message: {e}") from None
        msg = object.__new__(cls)
        for n, v in vals.items():
            object.__setattr__(msg, n, v)
        return msg


def message_type(tag: int) -> type[Message]:
    try:
        return MESSAGE_TYPES[tag]
    except KeyError:
        raise DecodeError(f"unknown message tag {tag:#06x}") from None
