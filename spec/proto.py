"""The sans-IO protocol convention.

A two-party protocol is written once per party as a generator that *yields I/O requests* and
*returns its output*::

    def open_client(ctx: Ctx, x: np.ndarray) -> Proto[np.ndarray]:
        yield ctx.send(OpenShare(share=x))            # 1. send my share
        msg = yield ctx.recv(OpenShare)               # 2. receive the peer's share
        return ctx.impl.ring.add(x, msg.share, bits)  # 3. reconstruct

``yield ctx.send(m)`` evaluates to ``None``; ``yield ctx.recv(T)`` to a decoded ``T``.
Composition is ``y = yield from sub_protocol(ctx.sub("name"), ...)``. Drivers
(``nimbus.runtime.run_local`` and ``nimbus.runtime.run_tcp``) move the messages; no protocol code
touches a socket. Messages are attributed to ``ctx.label``, the ``/``-joined path of ``sub`` names,
which is also the prefix of every PRG label drawn through the context, so random streams are named
by where they are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generator, TypeVar

from .errors import ParameterError, ProtocolError
from .messages import Message
from .params import ParamSet
from .prg import PRG

__all__ = ["CLIENT", "SERVER", "ROLES", "Ctx", "Send", "Recv", "Proto", "peer_of"]

CLIENT = "client"
SERVER = "server"
ROLES = (CLIENT, SERVER)

T = TypeVar("T")
Proto = Generator["Send | Recv", Any, T]


def peer_of(role: str) -> str:
    if role not in ROLES:
        raise ParameterError(f"role must be 'client' or 'server', got {role!r}")
    return SERVER if role == CLIENT else CLIENT


@dataclass(frozen=True)
class Send:
    """Request: deliver ``msg`` to the peer (non-blocking for the protocol)."""

    msg: Message
    ctx: "Ctx"


@dataclass(frozen=True)
class Recv:
    """Request: the next message from the peer, which must be of type ``msg_type``."""

    msg_type: type
    ctx: "Ctx"


class Ctx:
    """Per-party protocol context: role, parameters, labelled PRG, label path, implementation.

    ``impl`` is an implementation object from ``nimbus.implementation(name)``: protocol code calls
    its kernels as ``ctx.impl.<component>.<function>``, so the same protocol text runs on either
    implementation. Contexts are cheap; ``sub`` makes a child that shares the PRG.
    """

    __slots__ = ("role", "params", "prg", "impl", "label", "_children")

    def __init__(self, role: str, params: ParamSet, prg: PRG, impl: Any, label: str = ""):
        peer_of(role)
        if not isinstance(params, ParamSet):
            raise ParameterError("ctx.params must be a ParamSet")
        self.role = role
        self.params = params
        self.prg = prg
        self.impl = impl
        self.label = label
        self._children: set[str] = set()

    def __repr__(self):
        return f"Ctx({self.role}, {self.params.name}, {getattr(self.impl, 'name', self.impl)}, {self.label or '/'})"

    @property
    def peer(self) -> str:
        return peer_of(self.role)

    @property
    def is_client(self) -> bool:
        return self.role == CLIENT

    def sub(self, name: str) -> "Ctx":
        """Child context ``label/name``; each name may be used once per context."""
        if not name or "/" in name:
            raise ParameterError(f"bad sub-protocol name {name!r}")
        if name in self._children:
            raise ProtocolError(f"sub-context {name!r} used twice under {self.label or '/'!r}")
        self._children.add(name)
        return Ctx(self.role, self.params, self.prg, self.impl, f"{self.label}/{name}" if self.label else name)

    def path(self, name: str) -> str:
        """The PRG label ``label/name`` (prefixed by the role, so party streams never collide)."""
        return f"{self.role}:{self.label}/{name}"

    def send(self, msg: Message) -> Send:
        if not isinstance(msg, Message):
            raise ProtocolError(f"can only send Message instances, not {type(msg).__name__}")
        return Send(msg, self)

    def recv(self, msg_type: type) -> Recv:
        if not (isinstance(msg_type, type) and issubclass(msg_type, Message)):
            raise ProtocolError(f"can only receive Message types, not {msg_type!r}")
        return Recv(msg_type, self)

    # -- randomness, named by where it is drawn --------------------------------------------
    def uniform(self, name: str, shape, bits: int):
        return self.prg.uniform(self.path(name), shape, bits)

    def uniform_mod(self, name: str, shape, q: int):
        return self.prg.uniform_mod(self.path(name), shape, q)

    def bits(self, name: str, shape):
        return self.prg.bits(self.path(name), shape)

    def seed(self, name: str) -> bytes:
        return self.prg.child_seed(self.path(name))
