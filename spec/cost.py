"""Costs: bytes each way and rounds, declared by protocols and measured by drivers.

A *round* is one one-way message flight on the critical path: a message's depth is one more than
the deepest message its sender had received before sending it, and a run's round count is the
largest depth (so both parties sending at once is one round, and a request-response is two).
Round trips are ``ceil(rounds / 2)``.

Network presets (DESIGN.md section 6) live here too, so that every declared or measured cost can
be projected onto a named link: ``time = compute + bytes_each_way / bandwidth + rounds * latency``
(each direction's bytes are serialised on its own link; the two directions overlap).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ParameterError

__all__ = ["Cost", "Network", "NETWORKS", "get_network", "ZERO"]


@dataclass(frozen=True)
class Cost:
    """Communication cost: bytes client->server, bytes server->client, rounds (flights)."""

    c2s: int = 0
    s2c: int = 0
    rounds: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        """Sequential composition: bytes and rounds add."""
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(self.c2s + other.c2s, self.s2c + other.s2c, self.rounds + other.rounds)

    def __mul__(self, k: int) -> "Cost":
        """``k`` sequential repetitions."""
        return Cost(self.c2s * k, self.s2c * k, self.rounds * k)

    __rmul__ = __mul__

    def parallel(self, other: "Cost") -> "Cost":
        """Both at once: bytes add, rounds take the maximum."""
        return Cost(self.c2s + other.c2s, self.s2c + other.s2c, max(self.rounds, other.rounds))

    @property
    def total_bytes(self) -> int:
        return self.c2s + self.s2c

    @property
    def round_trips(self) -> int:
        return (self.rounds + 1) // 2

    def project(self, network: "Network | str", compute_s: float = 0.0) -> float:
        """Seconds on ``network``: compute + the slower direction's serialisation + latency."""
        net = get_network(network) if isinstance(network, str) else network
        wire = max(self.c2s, self.s2c) * 8 / net.bandwidth_bps
        return compute_s + wire + self.rounds * net.latency_s


ZERO = Cost()


@dataclass(frozen=True)
class Network:
    """A network setting: bandwidth (bits per second) and one-way latency (seconds)."""

    name: str
    bandwidth_bps: float
    latency_s: float

    def validate(self) -> "Network":
        if not (self.bandwidth_bps > 0 and self.latency_s >= 0):
            raise ParameterError(f"network {self.name!r}: bandwidth must be > 0 and latency >= 0")
        return self


NETWORKS: dict[str, Network] = {
    n.name: n.validate()
    for n in (
        Network("lan", 3e9, 1e-3),  # [NIMBUS24] LAN: 3 Gbps, 1 ms
        Network("wan", 400e6, 10e-3),  # [NIMBUS24] WAN: 400 Mbps, 10 ms
        Network("bolt-lan", 3e9, 0.8e-3),  # [NIMBUS24, appendix] after BOLT
        Network("bolt-wan", 200e6, 40e-3),  # [NIMBUS24, appendix] after BOLT
    )
}


def get_network(name: str) -> Network:
    try:
        return NETWORKS[name]
    except KeyError:
        raise ParameterError(f"unknown network preset {name!r}; known: {', '.join(NETWORKS)}") from None
