"""The named parameter presets (registered into :data:`nimbus.spec.params.PRESETS`).

Components that later layers define (RLWE ``he``, OT ``ot``) are attached here, so this module is
the one place where a preset is put together.
"""

from __future__ import annotations

from .he import COP64, MATMUL64
from .ot import OT_128, OT_TEST
from .params import ParamSet, Ring, register_preset

__all__ = ["TINY", "BERT_BASE"]

#: Tiny rings for exhaustive and Hypothesis tests (every value of Z_2^12 can be enumerated).
TINY = register_preset(ParamSet(name="tiny", linear=Ring(bits=16, frac=6), nonlinear=Ring(bits=12, frac=4),
                                ot=OT_TEST))  # OT_TEST: INSECURE Ferret/IKNP sizes for tests

#: BERT-base as in [NIMBUS24]: linear layers in Z_2^64 (18 fraction bits, as SPU), non-linear in
#: Z_2^32 with 13 fraction bits (the prototype's choice). RLWE: the sound COP set of
#: ``nimbus.spec.he`` (N = 8192, log Q = 218, 2^-40 statistical distance per query; docs/rlwe.md),
#: and MATMUL64 for the products of two shared matrices (Q K^T, P V), counted in the same budget.
BERT_BASE = register_preset(
    ParamSet(name="bert-base", linear=Ring(bits=64, frac=18), nonlinear=Ring(bits=32, frac=13), ot=OT_128,
             he=COP64, extra=(("matmul", MATMUL64),))
)
