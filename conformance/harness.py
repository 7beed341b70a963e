"""Running a registered protocol on both parties, the way every conformance test does."""

from __future__ import annotations

from typing import Any, Callable

from nimbus.registry import implementation
from nimbus.runtime import LocalResult, run_local
from nimbus.spec.params import ParamSet
from nimbus.spec.prg import PRG
from nimbus.spec.proto import CLIENT, SERVER, Ctx
from nimbus.spec.protocols import get_protocol

__all__ = ["contexts", "run_protocol", "run_pair"]


def contexts(params: ParamSet, impl, seed: str = "conformance") -> tuple[Ctx, Ctx]:
    """Client and server contexts with deterministic test PRGs (never for production)."""
    impl = implementation(impl)
    return (
        Ctx(CLIENT, params, PRG.for_tests(f"{seed}/client"), impl),
        Ctx(SERVER, params, PRG.for_tests(f"{seed}/server"), impl),
    )


def run_pair(client_fn: Callable, server_fn: Callable, params: ParamSet, impl, *, client_args=(),
             server_args=(), kwargs: dict | None = None, seed: str = "conformance",
             label: str = "p") -> LocalResult:
    c, s = contexts(params, impl, seed)
    kw = kwargs or {}
    return run_local(client_fn(c.sub(label), *client_args, **kw), server_fn(s.sub(label), *server_args, **kw))


def run_protocol(name: str, params: ParamSet, impl, *, client_args=(), server_args=(),
                 kwargs: dict | None = None, seed: str = "conformance") -> LocalResult:
    """Run the registered protocol ``name`` with ``impl``'s party functions."""
    spec = get_protocol(name)
    im = implementation(impl)
    comp = getattr(im, spec.component)
    return run_pair(getattr(comp, spec.client), getattr(comp, spec.server), params, im,
                    client_args=client_args, server_args=server_args, kwargs=kwargs, seed=seed,
                    label=name.split(".")[-1])


def outputs(res: LocalResult) -> tuple[Any, Any]:
    return res.client, res.server
