"""Fixtures of the conformance suite: the implementation under test and Hypothesis profiles.

``impl`` runs every test against ``reference`` and ``optimized``. With ``NUMBA_DISABLE_JIT=1`` in
the environment the optimized kernels run as plain Python (coverage of the kernel source, as
stumpy and galois do); the fixture then reports itself as ``optimized-nojit``.
Hypothesis profiles: ``dev`` (default), ``ci`` (derandomized, bounded), ``nightly`` (thorough);
choose with ``HYPOTHESIS_PROFILE``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from nimbus.registry import implementation

settings.register_profile("dev", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("nightly", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

NOJIT = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
IMPL_IDS = ["reference", "optimized-nojit" if NOJIT else "optimized"]


@pytest.fixture(params=IMPL_IDS, scope="session")
def impl(request):
    """The implementation under test."""
    return implementation(request.param.replace("-nojit", ""))


@pytest.fixture(scope="session")
def ref():
    return implementation("reference")


@pytest.fixture(scope="session")
def opt():
    return implementation("optimized")


def pytest_configure(config):
    if NOJIT:  # interpreted kernels wrap uint64 scalars on purpose (mod 2^64); numpy warns
        config.addinivalue_line("filterwarnings", "ignore:overflow encountered:RuntimeWarning")
