"""The message codec: canonical round trips, exact sizes, and decoders that only raise DecodeError."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from nimbus.conformance.strategies import ring_arrays
from nimbus.spec import get_preset
from nimbus.spec.errors import DecodeError, NimbusError
from nimbus.spec.messages import (MESSAGE_TYPES, BytesField, FixedBytes, Message, RingField, U64Field,
                                  pack_bits, packed_size, unpack_bits)

P = get_preset("tiny")


class _Probe(Message):
    """A test-only message with one field of every kind."""

    TAG = 0xFFF0
    FIELDS = (("a", RingField(5)), ("b", BytesField()), ("s", FixedBytes(4)), ("n", U64Field()),
              ("c", RingField("nonlinear")))


def _probe(draw_a, draw_c, blob=b"xyz", n=7):
    return _Probe(a=draw_a, b=blob, s=b"seed", n=n, c=draw_c)


@given(bits=st.integers(1, 64), data=st.data())
def test_pack_unpack_round_trip(bits, data):
    a = data.draw(ring_arrays(bits)).reshape(-1)
    raw = pack_bits(a, bits)
    assert len(raw) == packed_size(a.size, bits)
    assert np.array_equal(unpack_bits(raw, a.size, bits), a)


@given(data=st.data(), blob=st.binary(max_size=20), n=st.integers(0, (1 << 64) - 1))
def test_round_trip_and_size(data, blob, n):
    m = _probe(data.draw(ring_arrays(5)), data.draw(ring_arrays(12)), blob, n)
    raw = m.encode(P)
    assert len(raw) == m.size_bytes(P)
    assert len(raw) == _Probe.declared_size(P, a=m.a.shape, b=len(blob), c=m.c.shape)
    back = Message.decode(raw, P, expect=_Probe)
    assert back == m and back.encode(P) == raw


@given(raw=st.binary(max_size=200))
def test_decoding_garbage_raises_only_decode_error(raw):
    for tag in list(MESSAGE_TYPES)[:64]:
        data = tag.to_bytes(2, "little") + raw
        try:
            Message.decode(data, P)
        except DecodeError:
            pass
        except NimbusError as e:  # pragma: no cover - would be a bug
            raise AssertionError(f"decoder raised {type(e).__name__}, not DecodeError") from e


@given(data=st.data())
def test_mutations_of_valid_messages_raise_only_decode_error(data):
    m = _probe(data.draw(ring_arrays(5)), data.draw(ring_arrays(12)))
    raw = bytearray(m.encode(P))
    op = data.draw(st.sampled_from(["truncate", "extend", "flip"]))
    if op == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif op == "extend":
        raw += data.draw(st.binary(min_size=1, max_size=8))
    else:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 1 << data.draw(st.integers(0, 7))
    try:
        out = Message.decode(bytes(raw), P)
    except DecodeError:
        return
    # a flip may land in a value and still decode: then it re-encodes canonically
    assert op == "flip" and out.encode(P) == bytes(raw)


def test_specific_malformations():
    m = _probe(np.array([1, 2, 3], dtype=np.uint64), np.zeros((2, 2), dtype=np.uint64))
    raw = m.encode(P)
    with pytest.raises(DecodeError, match="truncated"):
        Message.decode(raw[:-1], P)
    with pytest.raises(DecodeError, match="trailing"):
        Message.decode(raw + b"\0", P)
    with pytest.raises(DecodeError, match="unknown message tag"):
        Message.decode(b"\xfe\xff" + raw[2:], P)
    # 3 elements x 5 bits = 15 bits: the 16th bit is padding and must be zero
    off = 2 + 1 + 4
    bad = bytearray(raw)
    bad[off + 1] |= 0x80
    with pytest.raises(DecodeError, match="padding"):
        Message.decode(bytes(bad), P)
    # a huge declared shape is refused before allocating anything
    huge = bytearray(raw[:2]) + bytes([2]) + (1 << 31).to_bytes(4, "little") * 2
    with pytest.raises(DecodeError):
        Message.decode(bytes(huge), P)
    from nimbus.spec.sharing import ShareLinear
    with pytest.raises(DecodeError, match="expected ShareLinear"):
        Message.decode(raw, P, expect=ShareLinear)


def test_encoder_rejects_out_of_range_values():
    from nimbus.spec.errors import ShapeError

    with pytest.raises(ShapeError):
        _probe(np.array([32], dtype=np.uint64), np.zeros(1, dtype=np.uint64)).encode(P)
    with pytest.raises(ShapeError):
        _probe(np.array([1], dtype=np.int64), np.zeros(1, dtype=np.uint64)).encode(P)
