"""optimized rlwe component (to be written)."""

__all__: list[str] = []
