"""Reference protocols for additive sharing: input, reshare, open, reveal.

Each party function runs on one side, yields I/O requests (see ``nimbus.spec.proto``) and returns
its output. Kernels are called through ``ctx.impl`` so the optimized implementation reuses this
orchestration with its own kernels.
"""

from __future__ import annotations

import numpy as np

from nimbus.spec.fixedpoint import as_ring_array
from nimbus.spec.proto import Ctx, Proto
from nimbus.spec.sharing import ring_of, share_message

__all__ = [
    "input_client", "input_server",
    "reshare_client", "reshare_server",
    "open_client", "open_server",
    "reveal_client", "reveal_server",
]


def input_client(ctx: Ctx, x: np.ndarray, ring: str = "linear") -> Proto[np.ndarray]:
    """Client shares its private input x.

    Runs on: client. Private inputs: x (ring elements). Public: shape, ring.
    Returns: the client's share r (uniform). Cost: one share tensor c2s, 1 round.
    Reference: [NIMBUS24, §3].
    """
    R = ring_of(ctx.params, ring)
    x = as_ring_array(x, R, "x")
    r = ctx.uniform("r", x.shape, R.bits)  # 1. draw the client's share
    yield ctx.send(share_message(ring)(share=ctx.impl.ring.sub(x, r, R.bits)))  # 2. send x - r
    return r


def input_server(ctx: Ctx, shape, ring: str = "linear") -> Proto[np.ndarray]:
    """Server side of :func:`input_client`: receives ``x - r`` as its share. Learns nothing."""
    msg = yield ctx.recv(share_message(ring))
    _check_shape(msg.share, shape)
    return msg.share


def reshare_client(ctx: Ctx, x_c: np.ndarray, ring: str = "linear") -> Proto[np.ndarray]:
    """Re-randomise a sharing: the client's new share is a fresh uniform r.

    Runs on: client. Private: x_c. Returns r. Cost: one tensor c2s, 1 round.
    """
    R = ring_of(ctx.params, ring)
    x_c = as_ring_array(x_c, R, "x_c")
    r = ctx.uniform("r", x_c.shape, R.bits)  # 1. fresh client share
    yield ctx.send(share_message(ring)(share=ctx.impl.ring.sub(x_c, r, R.bits)))  # 2. x_c - r
    return r


def reshare_server(ctx: Ctx, x_s: np.ndarray, ring: str = "linear") -> Proto[np.ndarray]:
    """Server side of :func:`reshare_client`: new share ``x_s + (x_c - r)``."""
    R = ring_of(ctx.params, ring)
    x_s = as_ring_array(x_s, R, "x_s")
    msg = yield ctx.recv(share_message(ring))
    _check_shape(msg.share, x_s.shape)
    return ctx.impl.ring.add(x_s, msg.share, R.bits)


def _open(ctx: Ctx, mine: np.ndarray, ring: str) -> Proto[np.ndarray]:
    R = ring_of(ctx.params, ring)
    mine = as_ring_array(mine, R, "share")
    yield ctx.send(share_message(ring)(share=mine))  # 1. send my share
    msg = yield ctx.recv(share_message(ring))  # 2. receive the peer's share
    _check_shape(msg.share, mine.shape)
    return ctx.impl.ring.add(mine, msg.share, R.bits)  # 3. reconstruct


def open_client(ctx: Ctx, x_c: np.ndarray, ring: str = "linear") -> Proto[np.ndarray]:
    """Open x to both parties (both send at once: 1 round). Both learn x."""
    return (yield from _open(ctx, x_c, ring))


def open_server(ctx: Ctx, x_s: np.ndarray, ring: str = "linear") -> Proto[np.ndarray]:
    """Server side of :func:`open_client`."""
    return (yield from _open(ctx, x_s, ring))


def reveal_client(ctx: Ctx, x_c: np.ndarray, ring: str = "linear") -> Proto[np.ndarray]:
    """Open x to the client only. Runs on: client. Returns x. The server learns nothing."""
    R = ring_of(ctx.params, ring)
    x_c = as_ring_array(x_c, R, "x_c")
    msg = yield ctx.recv(share_message(ring))  # 1. the server's share
    _check_shape(msg.share, x_c.shape)
    return ctx.impl.ring.add(x_c, msg.share, R.bits)  # 2. reconstruct


def reveal_server(ctx: Ctx, x_s: np.ndarray, ring: str = "linear") -> Proto[None]:
    """Server side of :func:`reveal_client`: sends its share, returns nothing."""
    R = ring_of(ctx.params, ring)
    yield ctx.send(share_message(ring)(share=as_ring_array(x_s, R, "x_s")))
    return None


def _check_shape(arr: np.ndarray, shape) -> None:
    from nimbus.spec.errors import ProtocolError

    if tuple(arr.shape) != tuple(shape):
        raise ProtocolError(f"peer sent shape {tuple(arr.shape)}, expected {tuple(shape)}")
