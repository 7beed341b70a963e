"""Hypothesis strategies derived from the specification."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nimbus.spec.params import PRESETS, Ring

__all__ = ["rings", "ring_arrays", "ring_array_pairs", "shapes", "presets", "EDGE_VALUES"]


def shapes(max_dims: int = 3, max_side: int = 6):
    return hnp.array_shapes(min_dims=1, max_dims=max_dims, min_side=0, max_side=max_side)


def rings(min_bits: int = 2, max_bits: int = 64):
    return st.integers(min_bits, max_bits).flatmap(
        lambda b: st.integers(0, b - 2).map(lambda f: Ring(bits=b, frac=f))
    )


def EDGE_VALUES(bits: int) -> list[int]:
    """0, 1, the largest positive, the most negative, -1 (as ring elements)."""
    m = (1 << bits) - 1
    return sorted({0, 1, (1 << (bits - 1)) - 1, 1 << (bits - 1), m})


def _elements(bits: int):
    return st.one_of(st.integers(0, (1 << bits) - 1), st.sampled_from(EDGE_VALUES(bits)))


def ring_arrays(bits: int, shape=None):
    shp = shapes() if shape is None else st.just(tuple(shape))
    return shp.flatmap(
        lambda s: hnp.arrays(np.uint64, s, elements=_elements(bits).map(np.uint64))
    )


def ring_array_pairs(bits: int):
    return shapes().flatmap(
        lambda s: st.tuples(
            hnp.arrays(np.uint64, s, elements=_elements(bits).map(np.uint64)),
            hnp.arrays(np.uint64, s, elements=_elements(bits).map(np.uint64)),
        )
    )


def presets():
    return st.sampled_from(sorted(PRESETS))
