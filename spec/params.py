"""Parameter sets: frozen dataclasses with ``validate()`` and the one registry of named presets.

A :class:`ParamSet` fixes everything both parties must agree on before a session: the ring of the
linear layers, the ring of the non-linear layers, and (filled in by the layers that need them) the
RLWE and OT parameters. Its :attr:`ParamSet.id` is a digest of the canonical description; the TCP
handshake compares it, so two parties can never run with different parameters.

Presets are registered once, here or by the module that defines a component's parameters, with
:func:`register_preset`; everything else (CLI listing, docs tables, tests) derives from
:data:`PRESETS`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ParameterError

__all__ = ["Ring", "ParamSet", "PRESETS", "register_preset", "get_preset", "preset_names"]


@dataclass(frozen=True)
class Ring:
    """The ring Z_{2^bits} with a fixed-point format of ``frac`` fraction bits.

    Representation: ring elements are ``numpy.uint64`` values in ``[0, 2^bits)``; a signed value
    v in ``[-2^(bits-1), 2^(bits-1))`` is stored as ``v mod 2^bits`` (two's complement).
    """

    bits: int
    frac: int

    def validate(self) -> "Ring":
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 64:
            raise ParameterError(f"ring size must be an int in [2, 64], got {self.bits!r}")
        if not isinstance(self.frac, int) or not 0 <= self.frac < self.bits - 1:
            raise ParameterError(
                f"fraction bits must be an int in [0, {self.bits - 2}] for Z_2^{self.bits}, "
                f"got {self.frac!r}"
            )
        return self

    @property
    def modulus(self) -> int:
        return 1 << self.bits

    @property
    def mask(self) -> int:
        return (1 << self.bits) - 1

    def describe(self) -> dict:
        return {"bits": self.bits, "frac": self.frac}


def _canonical(obj: Any) -> Any:
    """JSON-able canonical form of a (nested) parameter object, used for the fingerprint."""
    if dataclasses.is_dataclass(obj):
        out = {"__type__": type(obj).__name__}
        for f in dataclasses.fields(obj):
            out[f.name] = _canonical(getattr(obj, f.name))
        return out
    if isinstance(obj, (list, tuple)):
        return [_canonical(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items())}
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return repr(obj)
    raise ParameterError(f"parameter value of type {type(obj).__name__} has no canonical form")


@dataclass(frozen=True)
class ParamSet:
    """Everything two parties must agree on.

    Attributes:
        name: preset name (for humans; the :attr:`id` is what is compared).
        linear: ring of the linear layers (the paper: Z_2^64).
        nonlinear: ring of the non-linear layers (the paper: Z_2^32 with 13 fraction bits).
        he: RLWE parameters for the linear layers (``nimbus.spec.he``), or ``None``.
        ot: OT-extension parameters (``nimbus.spec.ot``), or ``None``.
        extra: further named components (a tuple of ``(name, params)`` pairs, kept sorted).
    """

    name: str
    linear: Ring
    nonlinear: Ring
    he: Any = None
    ot: Any = None
    extra: tuple = field(default=())

    def validate(self) -> "ParamSet":
        if not self.name or not isinstance(self.name, str):
            raise ParameterError("a parameter set needs a non-empty name")
        self.linear.validate()
        self.nonlinear.validate()
        if self.nonlinear.bits > self.linear.bits:
            raise ParameterError(
                f"non-linear ring Z_2^{self.nonlinear.bits} is larger than the linear ring "
                f"Z_2^{self.linear.bits}"
            )
        for comp in (self.he, self.ot, *(v for _, v in self.extra)):
            if comp is not None and hasattr(comp, "validate"):
                comp.validate()
        return self

    def describe(self) -> dict:
        return _canonical(self)

    @property
    def id(self) -> bytes:
        """32-byte fingerprint of the canonical description (compared in the handshake)."""
        blob = json.dumps(self.describe(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(b"nimbus-params-v1\x00" + blob).digest()

    @property
    def test_only(self) -> bool:
        """True when any component is flagged as insecure test parameters (e.g. the tiny preset)."""
        comps = (self.he, self.ot, *(v for _, v in self.extra))
        return any(getattr(c, "insecure", False) or getattr(c, "insecure_test_only", False) for c in comps)

    def require_secure(self) -> "ParamSet":
        """Refuse test-only parameters: production entry points (servers, clients, demos) call this."""
        if self.test_only:
            raise ParameterError(f"parameter set {self.name!r} is for tests only (insecure components)")
        return self

    def component(self, name: str) -> Any:
        for k, v in self.extra:
            if k == name:
                return v
        raise ParameterError(f"parameter set {self.name!r} has no component {name!r}")


PRESETS: dict[str, ParamSet] = {}


def register_preset(ps: ParamSet) -> ParamSet:
    """Validate ``ps`` and add it to :data:`PRESETS` (a name may be registered once)."""
    ps.validate()
    if ps.name in PRESETS and PRESETS[ps.name] != ps:
        raise ParameterError(f"preset {ps.name!r} is already registered with other values")
    PRESETS[ps.name] = ps
    return ps


def get_preset(name: str) -> ParamSet:
    try:
        return PRESETS[name]
    except KeyError:
        raise ParameterError(
            f"unknown parameter preset {name!r}; known: {', '.join(sorted(PRESETS))}"
        ) from None


def preset_names() -> list[str]:
    return sorted(PRESETS)


# The presets. Components defined by later layers (RLWE, OT) are attached in
# ``nimbus.spec.presets``, which imports their parameter modules; this module stays dependency-free.
