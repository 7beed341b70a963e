"""The exception types of nimbus-2pc.

Every error that a caller can provoke with bad input is one of these, so a caller (or a fuzzer)
can tell "you gave me something wrong" from "the library is broken". Both implementations raise
the same type for the same bad input.
"""

from __future__ import annotations

__all__ = [
    "NimbusError",
    "ParameterError",
    "ShapeError",
    "DecodeError",
    "ProtocolError",
    "RandomnessReuseError",
    "TransportError",
    "HandshakeError",
    "FrameTooLarge",
    "PeerDisconnected",
    "PeerTimeout",
    "RemoteError",
    "CacheError",
]


class NimbusError(Exception):
    """Base class of every error raised on purpose by nimbus-2pc."""


class ParameterError(NimbusError, ValueError):
    """A parameter set, ring or option is invalid, insecure or inconsistent."""


class ShapeError(NimbusError, ValueError):
    """An input has the wrong shape, dtype or range for the operation."""


class DecodeError(NimbusError):
    """Bytes received do not encode a well-formed message of the expected type."""


class ProtocolError(NimbusError):
    """The two parties disagree about the protocol: unexpected message type, deadlock, ..."""


class RandomnessReuseError(NimbusError):
    """A PRG label was drawn from twice; reusing randomness would break security."""


class TransportError(NimbusError):
    """The link to the peer failed."""


class HandshakeError(TransportError):
    """The peers disagree on protocol version, parameter set, session or role."""


class FrameTooLarge(TransportError):
    """A frame exceeds the negotiated maximum frame size."""


class PeerDisconnected(TransportError):
    """The peer closed the connection (possibly mid-frame)."""


class PeerTimeout(TransportError):
    """The peer sent nothing within the timeout."""


class RemoteError(TransportError):
    """The peer aborted the protocol and told us why."""


class CacheError(NimbusError):
    """A cache file is missing, stale, truncated, corrupted or for another model/parameter set."""
