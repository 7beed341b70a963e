"""Process settings for a party process: keep freed memory, freeze the long-lived heap.

A party moves and computes on arrays of tens to hundreds of MB per protocol step (ciphertext
blocks, COT batches, received frames). glibc serves every allocation above its mmap threshold
with a fresh ``mmap`` and returns it on ``free``; the kernel zeroes every page again on the next
first touch. Measured on BERT-base (``python -m nimbus.bench.bert``, two processes on this 2-core
machine), the kernel's page clearing was ~19% of all CPU samples and the system time ~30% of the
CPU time (docs/bench.md, "Process settings"). :func:`tune_party_process` makes glibc keep freed
memory in the process (no ``mmap`` for large blocks, no trimming of the heap top, one arena), so
the pages are faulted in once and reused; and it moves the objects alive after loading (model,
cache index, numba dispatchers) into the garbage collector's permanent generation, so that the
collections triggered by the protocol's many short-lived objects do not traverse them.

Cost: the process keeps its peak heap until it exits (the memory is reused, not returned). Neither
setting changes any output or message: they are allocator and collector policy only. Other
platforms (no glibc ``mallopt``): the allocator part is skipped.
"""

from __future__ import annotations

import ctypes
import gc
import sys

__all__ = ["tune_party_process", "TUNED"]

# glibc <malloc.h> parameter numbers
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_TRIM = 2**31 - 1  # mallopt takes a C int: the largest trim threshold it accepts

#: what :func:`tune_party_process` did in this process (None: not called yet)
TUNED: dict | None = None


def _mallopt() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(p, v) == 1 for p, v in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM), (_M_ARENA_MAX, 1)))


def tune_party_process() -> dict:
    """Apply the party-process settings once per process (later calls return the first result).

    Runs on: either party, in its own process, after loading the model or cache and before the
    first session (the bench, ``nimbus serve`` / ``infer`` / ``setup``, the demo call it).
    Returns ``{"malloc": bool, "gc_frozen": int}``: whether glibc accepted the allocator
    settings, and how many objects were moved to the permanent generation."""
    global TUNED
    if TUNED is None:
        ok = _mallopt()
        gc.collect()
        gc.freeze()
        TUNED = {"malloc": ok, "gc_frozen": gc.get_freeze_count()}
    return TUNED
