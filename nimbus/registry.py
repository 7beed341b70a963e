"""The one registry of implementations: ``implementation("reference" | "optimized")``.

An implementation is a namespace of *components* (``ring``, ``sharing``, ``rlwe``, ``ot``, ...),
each a module with the same ``__all__`` and signatures in every implementation, imported lazily
(so choosing ``reference`` never imports numba). No global switch, no monkey-patching.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from nimbus.spec.errors import ParameterError

__all__ = ["IMPLEMENTATIONS", "COMPONENTS", "Implementation", "implementation"]

IMPLEMENTATIONS = {"reference": "nimbus.reference", "optimized": "nimbus.optimized"}

#: Component modules every implementation provides (append when a layer lands).
COMPONENTS = ("ring", "sharing", "rlwe", "ot", "nonlinear", "linear")


class Implementation:
    """A named implementation; ``impl.ring`` etc. are its component modules."""

    def __init__(self, name: str, package: str):
        self.name = name
        self.package = package

    def __repr__(self):
        return f"<implementation {self.name}>"

    def __getattr__(self, component: str) -> ModuleType:
        if component.startswith("_") or component not in COMPONENTS:
            raise AttributeError(f"implementation {self.name!r} has no component {component!r}")
        mod = importlib.import_module(f"{self.package}.{component}")
        setattr(self, component, mod)
        return mod

    def __reduce__(self):
        return (implementation, (self.name,))


_CACHE: dict[str, Implementation] = {}


def implementation(name: str) -> Implementation:
    """The implementation registered as ``name``."""
    if isinstance(name, Implementation):
        return name
    if name not in IMPLEMENTATIONS:
        raise ParameterError(f"unknown implementation {name!r}; known: {', '.join(IMPLEMENTATIONS)}")
    if name not in _CACHE:
        _CACHE[name] = Implementation(name, IMPLEMENTATIONS[name])
    return _CACHE[name]
