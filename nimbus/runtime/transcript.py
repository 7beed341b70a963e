"""Transcripts: what crossed the wire, from which protocol label, at which depth.

Every driver records one. Costs (bytes each way, rounds) and compute times come from here; nothing
is counted by hand. The *digest* covers, for each direction separately, the ordered sequence of
(message tag, encoded payload); it is the same for ``run_local`` and both sides of ``run_tcp``,
since each direction is a FIFO whatever the interleaving.
"""

from __future__ import annotations

import hashlib
import struct
from collections import defaultdict
from dataclasses import dataclass, field

from nimbus.spec.cost import Cost, Network, get_network
from nimbus.spec.proto import CLIENT, SERVER

__all__ = ["Entry", "Transcript", "C2S", "S2C"]

C2S = "c2s"
S2C = "s2c"


@dataclass(frozen=True)
class Entry:
    direction: str  # "c2s" or "s2c"
    label: str  # the label path of the context that sent (or, in a TCP view, received) it
    msg_type: str
    nbytes: int  # encoded message bytes (framing excluded)
    depth: int  # flight number on the critical path (1-based)


def _under(label: str, prefix: str | None) -> bool:
    return prefix is None or prefix == "" or label == prefix or label.startswith(prefix + "/")


@dataclass
class Transcript:
    entries: list[Entry] = field(default_factory=list)
    #: seconds of computation per party per label (time between the party's I/O requests,
    #: encoding and decoding included, attributed to the label of the request that followed).
    compute: dict = field(default_factory=lambda: {CLIENT: defaultdict(float), SERVER: defaultdict(float)})
    #: process CPU seconds (all threads) of a party's compute segments per label (TCP driver only:
    #: in ``run_local`` both parties share one process).
    cpu: dict = field(default_factory=lambda: {CLIENT: defaultdict(float), SERVER: defaultdict(float)})
    #: seconds a party spent blocked waiting for the peer (TCP driver only).
    waiting: dict = field(default_factory=lambda: {CLIENT: defaultdict(float), SERVER: defaultdict(float)})
    framing_bytes: int = 0

    def __post_init__(self):
        self._h = {C2S: hashlib.sha256(b"nimbus-transcript-v1 c2s"), S2C: hashlib.sha256(b"nimbus-transcript-v1 s2c")}

    def record(self, direction: str, label: str, msg_type: str, tag: int, payload: bytes, depth: int) -> None:
        self.entries.append(Entry(direction, label, msg_type, len(payload), depth))
        h = self._h[direction]
        h.update(struct.pack("<HQ", tag, len(payload)))
        h.update(payload)

    def add_compute(self, role: str, label: str, seconds: float) -> None:
        self.compute[role][label] += seconds

    def add_cpu(self, role: str, label: str, seconds: float) -> None:
        self.cpu[role][label] += seconds

    def add_waiting(self, role: str, label: str, seconds: float) -> None:
        self.waiting[role][label] += seconds

    # -- derived ---------------------------------------------------------------------------
    def digest(self) -> str:
        return hashlib.sha256(self._h[C2S].digest() + self._h[S2C].digest()).hexdigest()

    def cost(self, prefix: str | None = None) -> Cost:
        """Bytes each way and rounds of the messages under ``prefix`` (all if None).

        Rounds under a prefix = the number of distinct depths of its messages.
        """
        c2s = s2c = 0
        depths = set()
        for e in self.entries:
            if _under(e.label, prefix):
                if e.direction == C2S:
                    c2s += e.nbytes
                else:
                    s2c += e.nbytes
                depths.add(e.depth)
        return Cost(c2s, s2c, len(depths))

    @property
    def rounds(self) -> int:
        return max((e.depth for e in self.entries), default=0)

    def compute_time(self, role: str, prefix: str | None = None) -> float:
        return sum(t for lab, t in self.compute[role].items() if _under(lab, prefix))

    def cpu_time(self, role: str, prefix: str | None = None) -> float:
        return sum(t for lab, t in self.cpu[role].items() if _under(lab, prefix))

    def waiting_time(self, role: str, prefix: str | None = None) -> float:
        return sum(t for lab, t in self.waiting[role].items() if _under(lab, prefix))

    def labels(self, level: int = 1) -> list[str]:
        """Distinct label prefixes of ``level`` components, in first-seen order."""
        seen: dict[str, None] = {}
        for lab in [e.label for e in self.entries] + [l for r in self.compute.values() for l in r]:
            seen.setdefault("/".join(lab.split("/")[:level]), None)
        return list(seen)

    def breakdown(self, level: int = 1) -> dict[str, dict]:
        out = {}
        for p in self.labels(level):
            c = self.cost(p)
            out[p or "/"] = {
                "bytes_c2s": c.c2s, "bytes_s2c": c.s2c, "rounds": c.rounds,
                "compute_s": {r: self.compute_time(r, p) for r in (CLIENT, SERVER)},
                "waiting_s": {r: self.waiting_time(r, p) for r in (CLIENT, SERVER)},
                "cpu_s": {r: self.cpu_time(r, p) for r in (CLIENT, SERVER)},
            }
        return out

    def project(self, network: Network | str, prefix: str | None = None) -> float:
        """Projected seconds on ``network``: the slower party's compute + wire + latency."""
        net = get_network(network) if isinstance(network, str) else network
        compute = max(self.compute_time(CLIENT, prefix), self.compute_time(SERVER, prefix))
        return self.cost(prefix).project(net, compute)

    def summary(self) -> dict:
        c = self.cost()
        return {
            "bytes_c2s": c.c2s, "bytes_s2c": c.s2c, "rounds": self.rounds, "messages": len(self.entries),
            "compute_s": {r: self.compute_time(r) for r in (CLIENT, SERVER)},
            "digest": self.digest(),
        }
