"""Peak resident memory of this process, per measured interval (Linux: VmHWM, reset through
``/proc/self/clear_refs``).

``reset_peak_rss()`` before a query and ``peak_rss()`` after it give the query's own peak
(model, cache index and whatever the process already holds count too: they are resident). Where
the high-water mark cannot be reset (not Linux), ``peak_rss`` is the process lifetime peak and
``reset_peak_rss`` says so by returning False.
"""

from __future__ import annotations

__all__ = ["reset_peak_rss", "peak_rss"]


def reset_peak_rss() -> bool:
    """Reset this process's resident-set high-water mark (Linux >= 4.0); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int | None:
    """Peak resident bytes since the last reset (or process start); None if unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
        import sys

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return kb if sys.platform == "darwin" else kb * 1024
    except (ImportError, OSError):
        return None
