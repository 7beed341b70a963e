"""nimbus.runtime: drivers that move protocol messages, transcripts and network emulation."""

from .local import LocalResult, run_local
from .transcript import Entry, Transcript

__all__ = ["run_local", "LocalResult", "Transcript", "Entry"]
