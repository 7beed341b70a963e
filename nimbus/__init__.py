"""nimbus-2pc: secure two-party inference for BERT-family Transformers (Nimbus, NeurIPS 2024)."""

from nimbus._version import PROTOCOL_VERSION, __version__
from nimbus.registry import implementation

__all__ = ["__version__", "PROTOCOL_VERSION", "implementation"]
