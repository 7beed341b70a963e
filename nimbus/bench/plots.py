"""PNG plots of the end-to-end benchmark (``nimbus.bench.bert``) and of the accuracy study
(``nimbus.approx.study``). Needs matplotlib (the ``bench`` extra); rendered off-screen (Agg, no GUI).

    python -m nimbus.bench.plots --out DIR [--results RUN/results.json] [--study STUDY.json]

``--results``: (re)draws the benchmark's plots from a ``results.json`` it wrote; ``--study``: the
accuracy-vs-approximation plot of a study JSON (``python -m nimbus.approx.study --out STUDY.json``).
Prints the names of the files written in ``DIR``.

File names (fixed, listed in ``results.json`` under ``"plots"``):

- ``categories-<tokens>-<local|preset>.png``: per run, the time of one query per operator category
  on each network preset (projected; compute solid, network hatched) and as measured, beside the
  bytes per category and direction;
- ``amortisation.png``: setup + q online queries against q baseline queries, in time and in bytes,
  with the break-even query counts (only when the run has BERT-base sizes at 128 tokens);
- ``accuracy-approx.png``: held-out accuracy, top-1 agreement with float and |logit difference| per
  approximation table of the study.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["available", "bench_plots", "category_plot", "amortisation_plot", "accuracy_plot", "main",
           "AMORTISATION_PNG", "ACCURACY_PNG"]

AMORTISATION_PNG = "amortisation.png"
ACCURACY_PNG = "accuracy-approx.png"
DPI = 110
#: The accuracy budget of the approximations (docs/approx.md): at most 0.1 pp below float.
ACCURACY_BUDGET_PP = 0.1


def available() -> bool:
    """Whether matplotlib can be imported (otherwise no plots are drawn)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(w: float, h: float, ncols: int = 1, **kw):
    # The object-oriented API with the Agg canvas: no pyplot state, no GUI backend, no windows to close.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, **kw)
    return fig, axes


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return path.name


def _network_label(n: str) -> str:
    from nimbus.spec.cost import NETWORKS

    net = NETWORKS.get(n)
    if net is None:
        return n
    bw = net.bandwidth_bps
    bw_s = f"{bw / 1e9:g} Gbps" if bw >= 1e9 else f"{bw / 1e6:g} Mbps"
    return f"{n}\n{bw_s}\n{net.latency_s * 1e3:g} ms"


# -- per-category bars ---------------------------------------------------------------------------------
def category_name(run: dict) -> str:
    return f"categories-{run['tokens']}-{run['network'] or 'local'}.png"


def category_plot(data: dict, run: dict, path: Path) -> str:
    """Per-category stacked bars of one run: left, seconds per query on each network preset
    (projected: the category's compute, solid, = its slower party; its network time, hatched, =
    bytes / bandwidth + flights x latency) and as measured (``local``: both parties' compute, which
    alternate in one thread; ``tcp``: the client's compute, solid, and its waiting on the peer,
    hatched); a black bar marks each session total (categories sharing a message wave make the
    stack exceed it). Right, megabytes per category and direction."""
    from matplotlib.patches import Patch

    cats = {c: row for c, row in run["categories"].items() if c != "total"}
    tot = run["categories"]["total"]
    nets = list(data["options"]["networks"])
    measured = run["network"] or "local"
    tcp = run["network"] is not None
    colors = _colors(len(cats))

    legend_in, width = 3.4, 1.0 + 1.1 * max(len(nets) + 1, 3) + 2.8 + 3.4
    fig, (ax, bx) = _figure(max(width, 9.0), 5.0, 2, gridspec_kw={"width_ratios": [max(len(nets) + 1.3, 3.6), 2.2]})
    xs = list(range(len(nets) + 1))
    labels = [_network_label(n) for n in nets] + [f"measured\n({'TCP, ' + measured if tcp else 'in process'})"]
    bottom = [0.0] * len(xs)
    for (c, row), col in zip(cats.items(), colors):
        comp = max(row["compute_s"]["client"], row["compute_s"]["server"])
        solid = [comp] * len(nets)
        hatch = [max(0.0, row["projected_s"][n] - comp) for n in nets]
        if tcp:
            solid.append(row["compute_s"]["client"])
            hatch.append(row["waiting_s"]["client"])
        else:
            solid.append(row["compute_s"]["client"] + row["compute_s"]["server"])
            hatch.append(0.0)
        ax.bar(xs, solid, bottom=bottom, color=col, edgecolor="white", linewidth=0.3, width=0.7)
        bottom = [b + v for b, v in zip(bottom, solid)]
        ax.bar(xs, hatch, bottom=bottom, color=col, alpha=0.6, hatch="///", edgecolor="white", linewidth=0.3,
               width=0.7)
        bottom = [b + v for b, v in zip(bottom, hatch)]
    totals = [tot["projected_s"][n] for n in nets] + [run["wall_s"]]
    ax.hlines(totals, [x - 0.42 for x in xs], [x + 0.42 for x in xs], colors="black", linewidth=2)
    top = max(max(bottom), max(totals))
    for x, t in zip(xs, totals):
        ax.text(x, max(t, bottom[x]) + 0.01 * top, f"{t:.3g} s", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylim(0, top * 1.1)
    ax.set_ylabel("seconds per query")
    ax.set_title("time by category: projected per preset, measured", fontsize=10)
    ax.grid(axis="y", alpha=0.3)

    mb_c2s = [row["bytes_c2s"] / 1e6 for row in cats.values()]
    mb_s2c = [row["bytes_s2c"] / 1e6 for row in cats.values()]
    for i, vals in enumerate((mb_c2s, mb_s2c)):
        b = 0.0
        for v, col in zip(vals, colors):
            bx.bar(i, v, bottom=b, color=col, edgecolor="white", linewidth=0.3, width=0.6)
            b += v
        bx.text(i, b, f"{b:.3g} MB", ha="center", va="bottom", fontsize=8)
    bx.set_xticks([0, 1], ["client -> server", "server -> client"], fontsize=8)
    bx.set_ylabel("MB per query (payload)")
    bx.set_title("bytes per category", fontsize=10)
    bx.set_ylim(0, max(sum(mb_c2s), sum(mb_s2c)) * 1.12 or 1)
    bx.grid(axis="y", alpha=0.3)

    handles = [Patch(facecolor=col, label=c) for c, col in zip(cats, colors)]
    handles += [Patch(facecolor="white", edgecolor="black", label="compute: slower party\n(measured: "
                      + ("client" if tcp else "both parties") + ")"),
                Patch(facecolor="white", edgecolor="black", hatch="///",
                      label="network: bytes / bandwidth\n+ flights x latency" + ("\n(measured: client waiting)" if tcp
                                                                               else "")),
                Patch(facecolor="black", label="session total\n(projected / measured wall)")]
    right = 1 - legend_in / fig.get_figwidth()
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(right + 0.01, 0.5), fontsize=7.5, frameon=False)
    rt = tot["round_trips"]
    fig.suptitle(f"{data['model']['name']}: one {run['tokens']}-token query, {rt:g} round trips, "
                 f"{(tot['bytes_c2s'] + tot['bytes_s2c']) / 1e6:.3g} MB "
                 f"(median of {run['repeats']}, {'TCP shaped to ' + measured if tcp else 'both parties in process'})",
                 fontsize=11)
    fig.subplots_adjust(left=0.85 / fig.get_figwidth(), right=right, bottom=0.17, top=0.87, wspace=0.3)
    return _save(fig, path)


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]  # the ten strong hues first, then their light partners
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))
    return [cmap(order[i % 20]) for i in range(n)]


# -- amortisation --------------------------------------------------------------------------------------
def amortisation_plot(am: dict, path: Path, model: str = "") -> str:
    """Setup + q x online (Nimbus) against q x online (the baseline) for q queries, in seconds
    (this machine, loopback) and in GB, with the break-even query counts marked."""
    qt, qb = am.get("queries_time"), am.get("queries_bytes")
    known = [q for q in (qt, qb) if q]
    nq = max(10, math.ceil(1.6 * max(known))) if known else 10
    qs = list(range(0, nq + 1))
    b = am["baseline"]
    fig, axes = _figure(11.5, 4.4, 2)
    panels = ((axes[0], am["setup_s"], am["online_s"], b["seconds"], qt, 1.0, "s", "time (this machine, loopback)"),
              (axes[1], am["setup_bytes"], am["online_bytes"], b["bytes"], qb, 1e9, "GB", "bytes"))
    for ax, setup, online, base, q, unit, uname, title in panels:
        ours = [(setup + q_ * online) / unit for q_ in qs]
        theirs = [q_ * base / unit for q_ in qs]
        ax.plot(qs, ours, color="tab:blue",
                label=f"Nimbus: setup {setup / unit:.3g} {uname} + q x {online / unit:.3g} {uname}")
        ax.plot(qs, theirs, color="tab:red", label=f"baseline (SPU/BumbleBee): q x {base / unit:.3g} {uname}")
        ax.fill_between(qs, ours, theirs, where=[o > t for o, t in zip(ours, theirs)], color="tab:red", alpha=0.15,
                        interpolate=True, label="Nimbus costs more")
        ax.fill_between(qs, ours, theirs, where=[o <= t for o, t in zip(ours, theirs)], color="tab:green",
                        alpha=0.2, interpolate=True, label="Nimbus costs less")
        if q:
            y = (setup + q * online) / unit
            ax.axvline(q, color="grey", linestyle=":", linewidth=1)
            ax.plot([q], [y], "o", color="black")
            ax.annotate(f"break-even: {q} quer{'y' if q == 1 else 'ies'}", (q, y), textcoords="offset points",
                        xytext=(-10, 12), ha="right", fontsize=9)
        else:
            ax.text(0.97, 0.04, "never breaks even (online is not cheaper)", transform=ax.transAxes, ha="right",
                    fontsize=9)
        ax.set_xlabel("queries q")
        ax.set_ylabel(f"cumulative {'seconds' if uname == 's' else uname}")
        ax.set_title(title, fontsize=10)
        ax.set_xlim(0, nq)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"Setup amortisation{' of ' + model if model else ''}: {am['tokens']}-token queries; "
                 f"baseline {b['basis']}", fontsize=11)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.86, wspace=0.25)
    return _save(fig, path)


# -- accuracy vs approximation -------------------------------------------------------------------------
def _table_stems() -> dict:
    try:
        from nimbus.approx.study import VARIANTS
    except Exception:  # pragma: no cover - the labels only lose their table names
        return {}
    return dict(VARIANTS)


def accuracy_plot(study: dict, path: Path) -> str:
    """Accuracy vs approximation choice from a study JSON (``nimbus.approx.study``'s schema:
    ``{"model", "n_heldout", "results": {variant: {"accuracy", "agreement_with_float",
    "max_abs_logit_diff", "mean_abs_logit_diff", ...}}}``): per variant (table), the held-out
    accuracy with its difference to float, the top-1 agreement with the float predictions, and the
    mean and max |logit difference|."""
    res = study["results"]
    if not res:
        raise ValueError("the study has no results")
    names = list(res)
    stems = _table_stems()
    labels = [n if not stems.get(n) or stems[n] == n else f"{n}\n({stems[n]})" for n in names]
    acc = [100 * res[n]["accuracy"] for n in names]
    ref_name = "float" if "float" in res else names[0]
    ref = 100 * res[ref_name]["accuracy"]
    delta = [100 * res[n].get("accuracy_delta_vs_float", res[n]["accuracy"] - res[ref_name]["accuracy"])
             for n in names]
    agree = [100 * res[n]["agreement_with_float"] for n in names]
    colors = ["0.6" if n == ref_name else ("tab:green" if d >= -ACCURACY_BUDGET_PP - 1e-9 else "tab:red")
              for n, d in zip(names, delta)]
    xs = list(range(len(names)))
    fig, (ax, bx, cx) = _figure(14.5, 5.0, 3)

    # markers, not bars: the axis is zoomed to the differences that matter (tenths of a point)
    span = max(max(acc) - min(acc), 4 * ACCURACY_BUDGET_PP)
    lo, hi = min(acc) - 0.45 * span, max(acc) + 0.55 * span
    ax.axhline(ref, color="black", linestyle="--", linewidth=1, label=f"{ref_name}: {ref:.2f}%")
    ax.axhspan(lo - span, ref - ACCURACY_BUDGET_PP, color="tab:red", alpha=0.08,
               label=f"more than {ACCURACY_BUDGET_PP:g} pp below {ref_name} (over budget)")
    ax.scatter(xs, acc, c=colors, s=70, zorder=3, edgecolors="black", linewidths=0.5)
    for x, a, d in zip(xs, acc, delta):
        below = a < ref - 1e-9  # the label away from the reference line
        ax.annotate(f"{a:.2f}%\n{d:+.2f} pp", (x, a), textcoords="offset points", xytext=(0, -8 if below else 7),
                    ha="center", va="top" if below else "bottom", fontsize=7.5)
    ax.set_xlim(-0.6, len(xs) - 0.4)
    ax.set_ylim(lo, hi)
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title("accuracy (label: delta vs float)", fontsize=10)
    ax.legend(fontsize=7.5, loc="upper right")

    bx.bar(xs, agree, color=colors, width=0.65)
    for x, g in zip(xs, agree):
        bx.text(x, g, f"{g:.2f}%", ha="center", va="bottom", fontsize=7.5)
    glo = min(agree)
    bx.set_ylim(max(0.0, glo - 0.25 * (100.5 - glo) - 1), 100.8)
    bx.set_ylabel("top-1 agreement with float (%)")
    bx.set_title("same prediction as float64", fontsize=10)

    w = 0.38
    cx.bar([x - w / 2 for x in xs], [res[n].get("mean_abs_logit_diff", 0.0) for n in names], width=w,
           color="tab:blue", label="mean")
    cx.bar([x + w / 2 for x in xs], [res[n].get("max_abs_logit_diff", 0.0) for n in names], width=w,
           color="tab:orange", label="max")
    cx.set_ylabel("|logit - float logit|")
    cx.set_title("logit error vs float", fontsize=10)
    cx.legend(fontsize=8, loc="upper right")

    for a in (ax, bx, cx):
        a.set_xticks(xs, labels, fontsize=7.5, rotation=35, ha="right", rotation_mode="anchor")
        a.grid(axis="y", alpha=0.3)
    n = study.get("n_heldout")
    model = Path(str(study.get("model", ""))).name
    fig.suptitle("Accuracy vs approximation table (plaintext fixed-point simulation of GELU and exp)"
                 + (f": {model}" if model else "")
                 + (f", {n} held-out snippets (1 snippet = {100 / n:.3g} pp)" if n else ""), fontsize=11)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.25, top=0.86, wspace=0.28)
    return _save(fig, path)


# -- all of a benchmark run ----------------------------------------------------------------------------
def bench_plots(data: dict, out: Path, study: str | Path | None = None) -> list[str]:
    """All PNGs of a benchmark run in ``out`` (file names, in a fixed order); none without
    matplotlib. ``study``: a study JSON to draw ``accuracy-approx.png`` from."""
    if not available():
        return []
    out = Path(out)
    made = [category_plot(data, r, out / category_name(r)) for r in data.get("runs", [])]
    if data.get("amortisation"):
        made.append(amortisation_plot(data["amortisation"], out / AMORTISATION_PNG, data["model"]["name"]))
    if study:
        made.append(accuracy_plot(json.loads(Path(study).read_text()), out / ACCURACY_PNG))
    return made


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nimbus.bench.plots", description=__doc__.splitlines()[0])
    ap.add_argument("study_pos", nargs="?", type=Path, default=None, metavar="STUDY.json",
                    help="same as --study")
    ap.add_argument("--out", type=Path, required=True, metavar="DIR", help="where the PNGs go")
    ap.add_argument("--results", type=Path, default=None, metavar="results.json",
                    help="a results.json of nimbus bench: draw its plots")
    ap.add_argument("--study", type=Path, default=None, metavar="STUDY.json",
                    help="a study JSON (python -m nimbus.approx.study --out): draw " + ACCURACY_PNG)
    a = ap.parse_args(argv)
    study = a.study or a.study_pos
    if a.results is None and study is None:
        ap.error("give --results and/or a study JSON")
    if not available():
        print("matplotlib is not installed: pip install 'nimbus-2pc[bench]'", file=sys.stderr)
        return 1
    a.out.mkdir(parents=True, exist_ok=True)
    made = []
    if a.results is not None:
        made += bench_plots(json.loads(a.results.read_text()), a.out)
    if study is not None:
        made.append(accuracy_plot(json.loads(study.read_text()), a.out / ACCURACY_PNG))
    for m in made:
        print(a.out / m)
    return 0


if __name__ == "__main__":
    sys.exit(main())
