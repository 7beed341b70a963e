"""Party-process settings (nimbus.runtime.tuning), in a child process: the settings apply once,
the collector's permanent generation holds the loaded objects, and results do not change."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import gc, json
import numpy as np
from nimbus.runtime import tune_party_process
from nimbus.runtime import tuning
before = [np.arange(1 << 20, dtype=np.uint64) * np.uint64(3)]  # alive before: frozen
first = tune_party_process()
again = tune_party_process()
big = [np.full(1 << 23, k, dtype=np.uint64) for k in range(4)]  # 64 MB blocks after the settings
del big
x = (np.arange(1 << 22, dtype=np.uint64) * np.uint64(2654435761)).sum(dtype=np.uint64)
print(json.dumps({"first": first, "again": again, "same": first is again, "tuned": tuning.TUNED,
                  "frozen_now": gc.get_freeze_count(), "sum": int(x)}))
"""


def test_tune_party_process_once_in_a_child():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["same"] and r["first"] == r["again"] == r["tuned"]
    assert r["first"]["gc_frozen"] > 1000 and r["frozen_now"] >= r["first"]["gc_frozen"]
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None).mallopt
            glibc = True
        except AttributeError:
            glibc = False
        assert r["first"]["malloc"] == glibc
    n = 1 << 22
    assert r["sum"] == (2654435761 * (n * (n - 1) // 2)) % (1 << 64)


KEEP = r"""
import json, sys
import numpy as np
from nimbus.runtime import tune_party_process

def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))

ok = tune_party_process()["malloc"] if sys.argv[1] == "tuned" else None
a = np.ones(256 << 20, dtype=np.uint8)  # 256 MiB, touched
held = rss()
del a
print(json.dumps([held, rss(), ok]))
"""


def test_freed_memory_stays_with_the_tuned_process_only():
    """What the allocator setting is for: a freed large block stays resident (to be reused
    without the kernel zeroing it again) in a tuned process, and goes back by default."""
    import pytest

    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self/status")
    out = {}
    for mode in ("tuned", "default"):
        r = subprocess.run([sys.executable, "-c", KEEP, mode], capture_output=True, text=True, timeout=120, check=True)
        out[mode] = json.loads(r.stdout.strip().splitlines()[-1])
    mb = 1 << 20
    held, after, _ = out["default"]
    assert held - after > 200 * mb  # returned to the kernel on free
    held, after, malloc = out["tuned"]
    if not malloc:
        pytest.skip("no glibc mallopt here")
    assert held - after < 16 * mb  # kept
