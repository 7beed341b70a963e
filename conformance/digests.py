"""Transcript digests of deterministic protocol runs: regression baselines (emp-ot style).

``CASES`` lists named runs (protocol, parameter preset, inputs from a fixed test PRG). The file
``conformance/vectors/digests.json`` records each run's transcript digest, bytes and rounds; a
conformance test replays every case with every implementation and compares. Performance knobs
must never change a digest. Regenerate with ``python -m nimbus.generated`` after an intended
change of the wire format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from nimbus.conformance.harness import run_protocol
from nimbus.spec import get_preset
from nimbus.spec.prg import PRG

__all__ = ["CASES", "DIGEST_FILE", "case_record", "compute", "render", "register_case"]

DIGEST_FILE = Path(__file__).with_name("vectors") / "digests.json"

#: name -> function(impl) -> LocalResult
CASES: dict[str, Callable] = {}


def register_case(name: str):
    def deco(fn):
        CASES[name] = fn
        return fn
    return deco


def _sharing_case(proto: str, preset: str, ring: str, shape):
    def run(impl):
        P = get_preset(preset)
        x = PRG.for_tests(f"vector/{proto}/{preset}/{ring}").uniform("x", shape, getattr(P, ring).bits)
        server = (shape,) if proto == "sharing.input" else (x,)
        return run_protocol(proto, P, impl, client_args=(x,), server_args=server, kwargs={"ring": ring})
    return run


for _p in ("sharing.input", "sharing.reshare", "sharing.open", "sharing.reveal"):
    for _preset, _ring in (("tiny", "nonlinear"), ("bert-base", "linear")):
        register_case(f"{_p}/{_preset}/{_ring}")(_sharing_case(_p, _preset, _ring, (3, 5)))


def _example_case(name: str):
    def run(impl):
        from nimbus.docsgen import run_example
        from nimbus.spec.protocols import get_protocol

        tr, _, _ = run_example(get_protocol(name), get_preset("tiny"), impl, seed=f"vector/{name}")

        class _R:  # the shape of a LocalResult that compute() needs
            transcript = tr
        return _R
    return run


def _register_examples() -> None:
    """Every registered protocol whose example runs at the ``tiny`` preset gets a digest case."""
    import nimbus.spec  # noqa: F401
    from nimbus.spec.protocols import PROTOCOLS

    for name, p in sorted(PROTOCOLS.items()):
        if p.example is not None and not name.startswith("sharing."):
            register_case(f"{name}/example/tiny")(_example_case(name))


_register_examples()


def case_record(name: str, impl) -> dict:
    """Digest, bytes and rounds of one case; a case whose example needs a component the tiny
    preset lacks (e.g. RLWE) records why it does not apply."""
    from nimbus.spec.errors import ParameterError

    try:
        tr = CASES[name](impl).transcript
    except ParameterError as e:
        return {"not_applicable": str(e)}
    c = tr.cost()
    return {"digest": tr.digest(), "bytes_c2s": c.c2s, "bytes_s2c": c.s2c, "rounds": tr.rounds}


def compute(impl="reference") -> dict:
    return {name: case_record(name, impl) for name in sorted(CASES)}


def render() -> str:
    doc = {"generated_by": "python -m nimbus.generated (nimbus.conformance.digests); do not edit",
           "cases": compute("reference")}
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"
