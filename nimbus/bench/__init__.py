"""nimbus.bench: benchmark scripts. Each writes JSON (stable schema) and a readable report.

Benchmarks are never timed tests. Warm the JIT first, quote medians, compare with a baseline in
the same run, record machine, commit and parameter sets.
"""
