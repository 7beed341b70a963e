"""One contract: every component has the same names and signatures in every implementation."""

from __future__ import annotations

import importlib
import inspect

import pytest

from nimbus.registry import COMPONENTS, IMPLEMENTATIONS, implementation
from nimbus.spec.protocols import PROTOCOLS


@pytest.mark.parametrize("component", COMPONENTS)
def test_same_names_and_signatures(component):
    mods = {name: importlib.import_module(f"{pkg}.{component}") for name, pkg in IMPLEMENTATIONS.items()}
    ref = mods["reference"]
    for name, mod in mods.items():
        assert sorted(mod.__all__) == sorted(ref.__all__), f"{name}.{component}: __all__ differs"
        for fn in ref.__all__:
            a, b = getattr(ref, fn), getattr(mod, fn)
            if callable(a):
                assert inspect.signature(a) == inspect.signature(b), f"{name}.{component}.{fn}: signature"


@pytest.mark.parametrize("component", COMPONENTS)
def test_optimized_rewrites_what_it_does_not_declare_reused(component):
    """The reference stays independent: an optimized name is either its own code or listed in
    REUSED (protocol orchestration taken from the reference on purpose)."""
    ref = importlib.import_module(f"nimbus.reference.{component}")
    opt = importlib.import_module(f"nimbus.optimized.{component}")
    reused = getattr(opt, "REUSED", frozenset())
    for fn in opt.__all__:
        same = getattr(opt, fn) is getattr(ref, fn)
        assert same == (fn in reused), f"optimized.{component}.{fn}: reused={same}, declared={fn in reused}"


def test_reference_never_imports_numba():
    import subprocess
    import sys

    code = ("import sys, nimbus, nimbus.spec; im = nimbus.implementation('reference');"
            + "".join(f"im.{c};" for c in COMPONENTS)
            + "bad = [m for m in sys.modules if m.split('.')[0] in ('numba', 'sympy')]; print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_registered_protocol_resolves_in_every_implementation():
    for p in PROTOCOLS.values():
        for name in IMPLEMENTATIONS:
            comp = getattr(implementation(name), p.component)
            assert callable(getattr(comp, p.client)) and callable(getattr(comp, p.server)), p.name
            assert p.learns and p.reference
