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


KINDS = ("compute", "waiting", "cpu")  #: the transcript's per-party seconds: ``<kind>_s`` columns


def _timings(tr, key, under=lambda lab: True) -> dict[str, dict]:
    """``{key(label): {"<kind>_s": {role: seconds}}}`` over the transcript's per-label seconds of
    both parties (labels passing ``under``), in first-seen order."""
    out: dict[str, dict] = {}
    for kind in KINDS:
        for role in (CLIENT, SERVER):
            for lab, t in getattr(tr, kind)[role].items():
                if under(lab):
                    row = out.setdefault(key(lab), {f"{k}_s": {CLIENT: 0.0, SERVER: 0.0} for k in KINDS})
                    row[f"{kind}_s"][role] += t
    return out


def category_table(tr, prefix: str | None = None) -> dict[str, dict]:
    """``{category: {bytes_c2s, bytes_s2c, flights, compute_s: {client, server}, waiting_s: {...},
    cpu_s: {...}}}`` for the labels under ``prefix`` (all when None), in graph order, plus
    ``"total"``. ``cpu_s`` is process CPU time of the compute segments (TCP driver; 0 otherwise)."""
    def under(lab):
        return prefix is None or lab == prefix or lab.startswith(prefix + "/")

    zero = {f"{k}_s": {CLIENT: 0.0, SERVER: 0.0} for k in KINDS}
    acc = defaultdict(lambda: {"bytes_c2s": 0, "bytes_s2c": 0, "depths": set()})
    for e in tr.entries:
        if under(e.label):
            a = acc[category(e.label)]
            a["bytes_c2s" if e.direction == "c2s" else "bytes_s2c"] += e.nbytes
            a["depths"].add(e.depth)
    times = _timings(tr, category, under)
    for c in times:
        acc[c]  # a category with compute but no message
    order = [c for c in CATEGORIES if c in acc] + sorted(c for c in acc if c not in CATEGORIES)
    out = {}
    tot = {"bytes_c2s": 0, "bytes_s2c": 0, "depths": set(), **{k: dict(v) for k, v in zero.items()}}
    for c in order:
        a, t = acc[c], times.get(c, zero)
        out[c] = {"bytes_c2s": a["bytes_c2s"], "bytes_s2c": a["bytes_s2c"], "flights": len(a["depths"]),
                  **{k: dict(v) for k, v in t.items()}}
        tot["bytes_c2s"] += a["bytes_c2s"]
        tot["bytes_s2c"] += a["bytes_s2c"]
        tot["depths"] |= a["depths"]
        for k, v in t.items():
            for r in (CLIENT, SERVER):
                tot[k][r] += v[r]
    out["total"] = {"bytes_c2s": tot["bytes_c2s"], "bytes_s2c": tot["bytes_s2c"], "flights": len(tot["depths"]),
                    **{k: tot[k] for k in zero}}
    return out


def step(label: str, depth: int = 4, fold: bool = True) -> str:
    """A label without its query index, with the layer index folded if ``fold``
    (``q0/layer3/GELU/trunc/cot`` -> ``layer*/GELU/trunc``: the steps that repeat in every layer
    add up), cut to ``depth`` components."""
    parts = [("layer*" if fold and p.startswith("layer") and p[5:].isdigit() else p) for p in label.split("/")
             if not (p.startswith("q") and p[1:].isdigit())]
    return "/".join(parts[:depth])


def step_table(tr, depth: int = 4, fold: bool = True) -> dict[str, dict]:
    """``{step: {compute_s, waiting_s, cpu_s: {role: seconds}}}`` of one party's transcript over
    :func:`step` labels, in first-seen order (each party times only itself over TCP)."""
    return _timings(tr, lambda lab: step(lab, depth, fold))


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
