"""Every registered protocol's example: measured cost == declared cost, reference = optimized."""

from __future__ import annotations

import os

import pytest

from nimbus.docsgen import run_example
from nimbus.spec import get_preset
from nimbus.spec.errors import ParameterError
from nimbus.spec.protocols import PROTOCOLS

NOJIT = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
WITH_EXAMPLE = sorted(n for n, p in PROTOCOLS.items() if p.example is not None)


@pytest.mark.parametrize("name", WITH_EXAMPLE)
def test_example_cost_is_declared(name):
    if NOJIT:
        pytest.skip("BERT-size example: interpreted kernels would take hours (covered with the JIT on)")
    p = PROTOCOLS[name]
    params = get_preset("bert-base")
    tr, label, cost_args = run_example(p, params, "optimized")
    assert tr.cost(label) == p.cost(params, *cost_args)


@pytest.mark.parametrize("name", WITH_EXAMPLE)
def test_example_same_transcript_in_both_implementations(name):
    p = PROTOCOLS[name]
    params = get_preset("tiny")
    try:
        ref, _, _ = run_example(p, params, "reference")
    except ParameterError as e:  # e.g. no RLWE set in the tiny preset: the component's suite covers it
        pytest.skip(f"example needs components the tiny preset lacks: {e}")
    opt, _, _ = run_example(p, params, "optimized")
    assert ref.digest() == opt.digest() and ref.cost() == opt.cost()
