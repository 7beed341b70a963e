"""The one registry of two-party protocols.

Each entry names a protocol, where its party functions live in an implementation (the component
module and the function names, identical in ``reference`` and ``optimized``), its ideal
functionality, its declared cost, what each party learns, and the paper section it follows.
Docs pages, the conformance suite's cost checks and the API-parity checks derive from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import ParameterError

__all__ = ["Example", "ProtocolSpec", "PROTOCOLS", "register_protocol", "get_protocol"]


@dataclass(frozen=True)
class ProtocolSpec:
    name: str
    component: str  # implementation component module, e.g. "sharing"
    client: str  # client party function in that module
    server: str  # server party function in that module
    ideal: Callable  # the ideal functionality (numpy, exact)
    cost: Callable  # (params, **shape) -> Cost
    learns: str  # what each party learns
    reference: str  # e.g. "[NIMBUS24, §4.1]"
    #: A representative run at BERT-base shapes, used for the docs' message-flow figure and cost
    #: table and checked by the conformance suite (measured cost == ``cost(params, *cost_args)``).
    #: ``example(params)`` returns either ``(client_args, server_args, kwargs, cost_args)`` for the
    #: registered party functions, or an :class:`Example` when the protocol needs a prelude (e.g.
    #: an OT session): whole-run generator factories plus the label whose cost is the protocol's.
    example: Callable | None = None


@dataclass(frozen=True)
class Example:
    """A protocol run with a prelude: ``client(ctx)`` / ``server(ctx)`` make the generators; the
    messages under ``label`` are the protocol's own and must cost ``cost(params, *cost_args)``."""

    client: Callable
    server: Callable
    label: str
    cost_args: tuple


PROTOCOLS: dict[str, ProtocolSpec] = {}


def register_protocol(p: ProtocolSpec) -> ProtocolSpec:
    if p.name in PROTOCOLS and PROTOCOLS[p.name] != p:
        raise ParameterError(f"protocol {p.name!r} registered twice")
    PROTOCOLS[p.name] = p
    return p


def get_protocol(name: str) -> ProtocolSpec:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ParameterError(f"unknown protocol {name!r}") from None
