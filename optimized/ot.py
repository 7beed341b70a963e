"""optimized ot component (to be written)."""

__all__: list[str] = []
