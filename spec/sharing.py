"""Additive secret sharing over Z_{2^l}: ideal functionalities, messages and costs.

A secret x in Z_{2^l} is held as shares ``x = x_c + x_s mod 2^l`` (client, server). The protocols
here move shares around; they are the smallest two-party protocols and the driver tests'
workhorse. Which ring is used is named by ``ring`` ("linear" or "nonlinear" of the parameter set).

| protocol       | client -> server | server -> client | rounds | who learns x        |
|----------------|------------------|------------------|--------|---------------------|
| ``input``      | n elements       | -                | 1      | client (its input)  |
| ``reshare``    | n elements       | -                | 1      | nobody              |
| ``open``       | n elements       | n elements       | 1      | both                |
| ``reveal``     | -                | n elements       | 1      | client only         |
"""

from __future__ import annotations

import numpy as np

from .cost import Cost
from .errors import ParameterError
from .messages import Message, RingField
from .params import ParamSet, Ring
from .protocols import ProtocolSpec, register_protocol

__all__ = [
    "ShareLinear",
    "ShareNonlinear",
    "share_message",
    "ring_of",
    "ideal_share",
    "ideal_reconstruct",
    "ideal_reshare",
    "share_cost",
    "input_cost",
    "reshare_cost",
    "open_cost",
    "reveal_cost",
]


class ShareLinear(Message):
    """A tensor of shares (or masked values) in the linear ring."""

    TAG = 0x0101
    FIELDS = (("share", RingField("linear")),)


class ShareNonlinear(Message):
    """A tensor of shares (or masked values) in the non-linear ring."""

    TAG = 0x0102
    FIELDS = (("share", RingField("nonlinear")),)


_SHARE_MESSAGES = {"linear": ShareLinear, "nonlinear": ShareNonlinear}


def share_message(ring: str) -> type[Message]:
    try:
        return _SHARE_MESSAGES[ring]
    except KeyError:
        raise ParameterError(f"ring must be 'linear' or 'nonlinear', got {ring!r}") from None


def ring_of(params: ParamSet, ring: str) -> Ring:
    share_message(ring)
    return getattr(params, ring)


# -- ideal functionalities ------------------------------------------------------------------
def ideal_share(x: np.ndarray, r: np.ndarray, ring: Ring) -> tuple[np.ndarray, np.ndarray]:
    """Shares of x with client share r: returns ``(x_c, x_s) = (r, x - r mod 2^l)``."""
    m = np.uint64(ring.mask)
    return r & m, (x - r) & m


def ideal_reconstruct(x_c: np.ndarray, x_s: np.ndarray, ring: Ring) -> np.ndarray:
    """``x_c + x_s mod 2^l``."""
    return (x_c + x_s) & np.uint64(ring.mask)


def ideal_reshare(x_c, x_s, r, ring: Ring):
    """Fresh shares of the same secret, with the client's new share r."""
    return ideal_share(ideal_reconstruct(x_c, x_s, ring), r, ring)


# -- costs -----------------------------------------------------------------------------------
def share_cost(params: ParamSet, ring: str, shape, c2s: int, s2c: int, rounds: int = 1) -> Cost:
    """``c2s``/``s2c`` share messages of ``shape`` each way, in ``rounds`` flights."""
    size = share_message(ring).declared_size(params, share=tuple(shape))
    return Cost(c2s * size, s2c * size, rounds)


def input_cost(params: ParamSet, ring: str, shape) -> Cost:
    """``input``: one share tensor client -> server, 1 round."""
    return share_cost(params, ring, shape, 1, 0)


def reshare_cost(params: ParamSet, ring: str, shape) -> Cost:
    """``reshare``: one share tensor client -> server, 1 round."""
    return share_cost(params, ring, shape, 1, 0)


def open_cost(params: ParamSet, ring: str, shape) -> Cost:
    """``open``: one share tensor each way, sent at once: 1 round."""
    return share_cost(params, ring, shape, 1, 1)


def reveal_cost(params: ParamSet, ring: str, shape) -> Cost:
    """``reveal``: one share tensor server -> client, 1 round."""
    return share_cost(params, ring, shape, 0, 1)


def _example(name: str):
    def example(params: ParamSet):
        shape = (128, 768)
        x = np.zeros(shape, dtype=np.uint64)
        server = (shape,) if name == "input" else (x,)
        return (x,), server, {"ring": "linear"}, ("linear", shape)
    return example


for _name, _c2s, _s2c, _learns in (
    ("input", 1, 0, "The server learns nothing (it receives x - r for a uniform r)."),
    ("reshare", 1, 0, "Nobody learns anything: the server receives x_c - r for a uniform r."),
    ("open", 1, 1, "Both parties learn x; each share is uniform given x."),
    ("reveal", 0, 1, "The client learns x; the server learns nothing."),
):
    register_protocol(
        ProtocolSpec(
            name=f"sharing.{_name}",
            component="sharing",
            client=f"{_name}_client",
            server=f"{_name}_server",
            ideal={"input": ideal_share, "reshare": ideal_reshare, "open": ideal_reconstruct,
                   "reveal": ideal_reconstruct}[_name],
            cost={"input": input_cost, "reshare": reshare_cost, "open": open_cost, "reveal": reveal_cost}[_name],
            learns=_learns,
            reference="[NIMBUS24, §3 (preliminaries: additive secret sharing)]",
            example=_example(_name),
        )
    )
