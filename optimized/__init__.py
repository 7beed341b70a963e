"""nimbus.optimized: HOW, fast. numba kernels behind the same API as nimbus.reference."""

NAME = "optimized"
