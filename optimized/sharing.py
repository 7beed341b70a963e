"""Sharing protocols, optimized: the reference orchestration, run with the optimized kernels.

The protocol text is cheap and reused as is (DESIGN.md section 4 allows it); the arithmetic goes
through ``ctx.impl.ring``, which is ``nimbus.optimized.ring`` here.
"""

from nimbus.reference.sharing import (  # noqa: F401
    input_client, input_server, open_client, open_server,
    reshare_client, reshare_server, reveal_client, reveal_server,
)

__all__ = [
    "input_client", "input_server", "reshare_client", "reshare_server",
    "open_client", "open_server", "reveal_client", "reveal_server",
]

#: Functions taken from the reference unchanged (orchestration only).
REUSED = frozenset(__all__)
