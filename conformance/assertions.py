"""Exact-equality assertions with a reproduction line on failure."""

from __future__ import annotations

import numpy as np

__all__ = ["assert_same", "assert_ring_equal", "repro"]


def repro(case: dict) -> str:
    items = ", ".join(f"{k}={v!r}" for k, v in case.items())
    return f"reproduce with: {items}"


def _describe(a) -> str:
    if isinstance(a, np.ndarray):
        return f"ndarray(dtype={a.dtype}, shape={a.shape})"
    return repr(a)[:200]


def assert_same(ref, opt, case: dict | None = None, path: str = "output") -> None:
    """Assert ``ref`` and ``opt`` are identical (arrays: dtype, shape and every element)."""
    case = case or {}
    if isinstance(ref, (tuple, list)) and isinstance(opt, (tuple, list)):
        assert len(ref) == len(opt), f"{path}: lengths {len(ref)} != {len(opt)}; {repro(case)}"
        for i, (a, b) in enumerate(zip(ref, opt)):
            assert_same(a, b, case, f"{path}[{i}]")
        return
    if isinstance(ref, dict) and isinstance(opt, dict):
        assert ref.keys() == opt.keys(), f"{path}: keys differ; {repro(case)}"
        for k in ref:
            assert_same(ref[k], opt[k], case, f"{path}[{k!r}]")
        return
    if isinstance(ref, np.ndarray) or isinstance(opt, np.ndarray):
        a, b = np.asarray(ref), np.asarray(opt)
        assert a.dtype == b.dtype, f"{path}: dtype {a.dtype} != {b.dtype}; {repro(case)}"
        assert a.shape == b.shape, f"{path}: shape {a.shape} != {b.shape}; {repro(case)}"
        if not np.array_equal(a, b):
            idx = np.argwhere(a != b)[0]
            raise AssertionError(
                f"{path}: first difference at {tuple(idx)}: {a[tuple(idx)]} != {b[tuple(idx)]} "
                f"({int((a != b).sum())} elements differ); {repro(case)}"
            )
        return
    assert type(ref) is type(opt) and ref == opt, f"{path}: {_describe(ref)} != {_describe(opt)}; {repro(case)}"


def assert_ring_equal(got, want, case: dict | None = None, path: str = "reconstruction") -> None:
    """Ring tensors equal as uint64 arrays."""
    assert_same(np.asarray(want, dtype=np.uint64), np.asarray(got, dtype=np.uint64), case, path)
