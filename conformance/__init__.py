"""nimbus.conformance: the suite that ties spec, reference and optimized together.

Run it with ``python -m pytest conformance`` (or ``pytest --pyargs nimbus.conformance``).
Every test takes the ``impl`` fixture (reference, optimized, and optimized with
``NUMBA_DISABLE_JIT=1`` when that variable is set) or compares the two implementations directly.
Helpers: :mod:`nimbus.conformance.assertions`, :mod:`nimbus.conformance.strategies`,
:mod:`nimbus.conformance.harness`.
"""
