"""nimbus.runtime: drivers that move protocol messages, transcripts and network emulation.

``run_local`` runs both parties in one thread (tests, vectors, cost checks); ``run_tcp`` runs one
party over a socket opened with ``connect`` / ``listen(...).accept()`` (optionally TLS, optionally
shaped to a network preset, see ``netem``).
"""

from .local import LocalResult, run_local
from .netem import LinkShaper, NetCheckResult, net_check
from .tcp import Connection, Listener, TcpResult, TlsConfig, connect, listen, run_tcp
from .transcript import Entry, Transcript
from .tuning import tune_party_process

__all__ = [
    "run_local", "LocalResult", "Transcript", "Entry",
    "run_tcp", "TcpResult", "connect", "listen", "Listener", "Connection", "TlsConfig",
    "LinkShaper", "net_check", "NetCheckResult", "tune_party_process",
]
