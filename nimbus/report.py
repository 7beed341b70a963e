"""Per-category reports of a secure inference run (time, bytes, rounds, network projections).

A transcript (``nimbus.runtime.transcript.Transcript``) labels every message and every stretch of
computation with the protocol path that produced it; ``nimbus.spec.model.category`` maps a path to
its operator category (Embedding, Linear_qkv, ..., Softmax, GELU, LayerNorm, Head). Rounds of a
category are the flights (one-way message waves on the critical path) that carry its messages;
a round trip is two flights.
"""

from __future__ import annotations

from collections import defaultdict

from nimbus.spec.cost import NETWORKS, Cost
from nimbus.spec.model import CATEGORIES, category
from nimbus.spec.proto import CLIENT, SERVER

__all__ = ["category_table", "render_table", "projections"]


def category_table(tr, prefix: str | None = None) -> dict[str, dict]:
    """``{category: {bytes_c2s, bytes_s2c, flights, compute_s: {client, server}, waiting_s: {...}}}``
    for the labels under ``prefix`` (all when None), in graph order, plus ``"total"``."""
    acc = defaultdict(lambda: {"bytes_c2s": 0, "bytes_s2c": 0, "depths": set(),
                               "compute_s": {CLIENT: 0.0, SERVER: 0.0}, "waiting_s": {CLIENT: 0.0, SERVER: 0.0}})

    def under(lab):
        return prefix is None or lab == prefix or lab.startswith(prefix + "/")

    for e in tr.entries:
        if under(e.label):
            a = acc[category(e.label)]
            a["bytes_c2s" if e.direction == "c2s" else "bytes_s2c"] += e.nbytes
            a["depths"].add(e.depth)
    for kind in ("compute", "waiting"):
        for role in (CLIENT, SERVER):
            for lab, t in getattr(tr, kind)[role].items():
                if under(lab):
                    acc[category(lab)][f"{kind}_s"][role] += t
    order = [c for c in CATEGORIES if c in acc] + sorted(c for c in acc if c not in CATEGORIES)
    out = {}
    tot = {"bytes_c2s": 0, "bytes_s2c": 0, "depths": set(), "compute_s": {CLIENT: 0.0, SERVER: 0.0},
           "waiting_s": {CLIENT: 0.0, SERVER: 0.0}}
    for c in order:
        a = acc[c]
        out[c] = {"bytes_c2s": a["bytes_c2s"], "bytes_s2c": a["bytes_s2c"], "flights": len(a["depths"]),
                  "compute_s": dict(a["compute_s"]), "waiting_s": dict(a["waiting_s"])}
        tot["bytes_c2s"] += a["bytes_c2s"]
        tot["bytes_s2c"] += a["bytes_s2c"]
        tot["depths"] |= a["depths"]
        for k in ("compute_s", "waiting_s"):
            for r in (CLIENT, SERVER):
                tot[k][r] += a[k][r]
    out["total"] = {"bytes_c2s": tot["bytes_c2s"], "bytes_s2c": tot["bytes_s2c"], "flights": len(tot["depths"]),
                    "compute_s": tot["compute_s"], "waiting_s": tot["waiting_s"]}
    return out


def projections(row: dict, networks=tuple(NETWORKS)) -> dict[str, float]:
    """Projected seconds of one row on each network preset: the slower party's compute plus the
    slower direction's serialisation plus flights x latency."""
    cost = Cost(row["bytes_c2s"], row["bytes_s2c"], row["flights"])
    compute = max(row["compute_s"][CLIENT], row["compute_s"][SERVER])
    return {n: cost.project(n, compute) for n in networks}


def render_table(table: dict[str, dict], networks=("lan", "wan")) -> str:
    """A fixed-width text table of :func:`category_table` with projections."""
    head = f"{'category':<12}{'c2s MB':>9}{'s2c MB':>9}{'flights':>8}{'client s':>9}{'server s':>9}"
    head += "".join(f"{n + ' s':>12}" for n in networks)
    lines = [head]
    for c, r in table.items():
        p = projections(r, networks)
        lines.append(f"{c:<12}{r['bytes_c2s'] / 1e6:>9.2f}{r['bytes_s2c'] / 1e6:>9.2f}{r['flights']:>8}"
                     f"{r['compute_s'][CLIENT]:>9.2f}{r['compute_s'][SERVER]:>9.2f}"
                     + "".join(f"{p[n]:>12.2f}" for n in networks))
    return "\n".join(lines)
