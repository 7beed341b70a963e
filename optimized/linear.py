"""Optimized linear layers: the reference orchestration with fast kernels.

Twin of :mod:`nimbus.reference.linear`. :func:`mac` computes the COP multiply-accumulate as exact
float64 BLAS products of balanced digit planes (``_linear_kernels``); :func:`pack` is one numba
pass over the layout. Protocol text is reused from the reference (REUSED).
"""

from __future__ import annotations

import numpy as np

from nimbus.reference.linear import (  # noqa: F401
    client_setup, cop_client, cop_server, embed_client, embed_server, matmul_client, matmul_keys_client,
    matmul_keys_server, matmul_server, server_setup,
)
from nimbus.spec import linear as S
from nimbus.spec.errors import ShapeError

from . import _linear_kernels as K
from . import rlwe as _rlwe

__all__ = [
    "mac", "pack", "server_setup", "client_setup", "cop_client", "cop_server",
    "embed_client", "embed_server", "matmul_client", "matmul_server", "plain_mac",
    "matmul_keys_client", "matmul_keys_server", "pack_responses",
]

#: Functions taken from the reference unchanged (orchestration only).
REUSED = frozenset({"server_setup", "client_setup", "cop_client", "cop_server", "embed_client", "embed_server",
                    "matmul_client", "matmul_server", "matmul_keys_client", "matmul_keys_server"})


def mac(he, cts, x) -> np.ndarray:
    """Twin of :func:`nimbus.reference.linear.mac` (BLAS digit planes; see ``_linear_kernels``)."""
    return K.mac(he, cts, x)


def pack(he, res, lay: S.PackLayout) -> np.ndarray:
    """Twin of :func:`nimbus.reference.linear.pack` (one numba pass)."""
    res = np.asarray(res)
    if res.ndim != 4 or res.shape[0] != len(lay.widths):
        raise ShapeError(f"pack: {len(lay.widths)} results expected, got {res.shape}")
    return K.pack(he, res, lay)


def plain_mac(he, cts, polys) -> np.ndarray:
    """Twin of :func:`nimbus.reference.linear.plain_mac` (NTT once per input, accumulate in the
    NTT domain, one inverse NTT per output)."""
    cts, polys = np.asarray(cts), np.asarray(polys)
    if cts.ndim != 4 or polys.ndim != 3 or polys.shape[0] != cts.shape[0] or polys.shape[2] != he.n:
        raise ShapeError(f"plain_mac: cts {cts.shape} with polys {polys.shape}")
    return K.plain_mac(he, cts, polys)


def pack_responses(he, res, packing: S.MatmulPacking, galois) -> np.ndarray:
    """Twin of :func:`nimbus.reference.linear.pack_responses`: the members are shifted (and scaled
    by D^-1, ``pack_trace``'s step 1) straight into their group slots in one parallel numba pass,
    then all groups of one stride go through one batched trace (numba automorphisms, NTT key
    switching)."""
    res = np.asarray(res)
    if res.ndim != 4 or res.shape[0] != packing.products:
        raise ShapeError(f"pack_responses: {packing.products} products expected, got {res.shape}")
    res = np.ascontiguousarray(res, dtype=np.uint64)
    L = res.shape[2]
    primes = np.array(he.primes[:L], np.uint64)
    out = np.empty((packing.count,) + res.shape[1:], np.uint64)
    for D in dict.fromkeys(D for D, _ in packing.groups):
        idx = [c for c, (d, _) in enumerate(packing.groups) if d == D]
        if D == 1:
            out[idx] = res[[packing.groups[c][1][0] for c in idx]]
            continue
        batch = np.zeros((len(idx) * D,) + res.shape[1:], np.uint64)  # missing members: zero
        src = np.array([t for c in idx for t in packing.groups[c][1]], np.int64)
        dst = np.array([b * D + i for b, c in enumerate(idx) for i in range(len(packing.groups[c][1]))], np.int64)
        inv = [pow(D, -1, p) for p in he.primes[:L]]  # pack_trace's step 1 (D^-1) fused in
        K.shift_members(res, src, dst, (1 - D) % (2 * he.n), np.array(inv, np.uint64),
                        np.array([(v << 64) // p for v, p in zip(inv, he.primes)], np.uint64), primes, batch)
        out[idx] = _rlwe._trace_levels(he, batch.reshape((len(idx), D) + res.shape[1:]), galois)
    return out
