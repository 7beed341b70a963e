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

__all__ = ["category_table", "step_table", "render_table", "projections"]


def category_table(tr, prefix: str | None = None) -> dict[str, dict]:
    """``{category: {bytes_c2s, bytes_s2c, flights, compute_s: {client, server}, waiting_s: {...},
    cpu_s: {...}}}`` for the labels under ``prefix`` (all when None), in graph order, plus
    ``"total"``. ``cpu_s`` is process CPU time of the compute segments (TCP driver; 0 otherwise)."""
    kinds = ("compute", "waiting", "cpu")
    acc = defaultdict(lambda: {"bytes_c2s": 0, "bytes_s2c": 0, "depths": set(),
                               **{f"{k}_s": {CLIENT: 0.0, SERVER: 0.0} for k in kinds}})

    def under(lab):
        return prefix is None or lab == prefix or lab.startswith(prefix + "/")

    for e in tr.entries:
        if under(e.label):
            a = acc[category(e.label)]
            a["bytes_c2s" if e.direction == "c2s" else "bytes_s2c"] += e.nbytes
            a["depths"].add(e.depth)
    for kind in kinds:
        for role in (CLIENT, SERVER):
            for lab, t in getattr(tr, kind)[role].items():
                if under(lab):
                    acc[category(lab)][f"{kind}_s"][role] += t
    order = [c for c in CATEGORIES if c in acc] + sorted(c for c in acc if c not in CATEGORIES)
    out = {}
    tot = {"bytes_c2s": 0, "bytes_s2c": 0, "depths": set(), **{f"{k}_s": {CLIENT: 0.0, SERVER: 0.0} for k in kinds}}
    for c in order:
        a = acc[c]
        out[c] = {"bytes_c2s": a["bytes_c2s"], "bytes_s2c": a["bytes_s2c"], "flights": len(a["depths"]),
                  **{f"{k}_s": dict(a[f"{k}_s"]) for k in kinds}}
        tot["bytes_c2s"] += a["bytes_c2s"]
        tot["bytes_s2c"] += a["bytes_s2c"]
        tot["depths"] |= a["depths"]
        for k in kinds:
            for r in (CLIENT, SERVER):
                tot[f"{k}_s"][r] += a[f"{k}_s"][r]
    out["total"] = {"bytes_c2s": tot["bytes_c2s"], "bytes_s2c": tot["bytes_s2c"], "flights": len(tot["depths"]),
                    **{f"{k}_s": tot[f"{k}_s"] for k in kinds}}
    return out


def step(label: str, depth: int = 4, fold: bool = True) -> str:
    """A label without its query index, with the layer index folded if ``fold``
    (``q0/layer3/GELU/trunc/cot`` -> ``layer*/GELU/trunc``: the steps that repeat in every layer
    add up), cut to ``depth`` components."""
    parts = [("layer*" if fold and p.startswith("layer") and p[5:].isdigit() else p) for p in label.split("/")
             if not (p.startswith("q") and p[1:].isdigit())]
    return "/".join(parts[:depth])


def step_table(tr, depth: int = 4, fold: bool = True) -> dict[str, dict]:
    """``{step: {compute_s, cpu_s, waiting_s: {role: seconds}}}`` of one party's transcript over
    :func:`step` labels, in first-seen order (each party times only itself over TCP)."""
    out: dict[str, dict] = {}
    for kind in ("compute", "cpu", "waiting"):
        for role in (CLIENT, SERVER):
            for lab, t in getattr(tr, kind)[role].items():
                row = out.setdefault(step(lab, depth, fold), {f"{k}_s": {CLIENT: 0.0, SERVER: 0.0}
                                                          for k in ("compute", "cpu", "waiting")})
                row[f"{kind}_s"][role] += t
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
