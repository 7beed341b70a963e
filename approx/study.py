"""Accuracy study: the sentiment classifier in plaintext fixed-point simulation.

    python -m nimbus.approx.study [--model DIR] [--n N] [--out results.json]

Every GELU and every softmax exp of the classifier (frozen all-MiniLM-L6-v2 + logistic head,
built by `python -m nimbus.models.classifier`) is evaluated with a table entry under the exact
fixed-point semantics of `nimbus.approx.fxp` (input down-cast by floor to the entry's format);
everything else stays float64. Variants: float, the Nimbus prototype's coefficients, the
BumbleBee baseline, ours (global), ours (per layer), ours (precise: degree-6 GELU, two-piece
exp). Reported on the held-out Rotten Tomatoes
split: accuracy, its difference to float, agreement of predictions with float, max and mean
|logit diff|.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from . import fxp, tables

__all__ = ["VARIANTS", "DEFAULT_MODEL_DIR", "table_nonlinear", "ensure_classifier", "run_study", "main"]

VARIANTS = {  # name -> table stem (None: float)
    "float": None,
    "nimbus-prototype": "nimbus-prototype",
    "bumblebee": "bumblebee",
    "ours-global": "ours-minilm-global",
    "ours-per-layer": "ours-minilm-layers",
    "ours-precise": "ours-minilm-precise",
}
DEFAULT_MODEL_DIR = Path.home() / ".cache" / "nimbus" / "classifier-minilm-rt"


def _simulate(entry: dict, x: np.ndarray) -> np.ndarray:
    l, f = entry["ring_bits"], entry["frac_bits"]
    return fxp.from_fxp(fxp.evaluate_fxp_array(entry, fxp.to_fxp(x, l, f)), f)


def table_nonlinear(stem: str, table_dir: Path | None = None):
    """`plain.Nonlinear` hooks evaluating GELU and exp with the entries of table `stem`."""
    from nimbus.models import plain

    entries = tables.load(stem, table_dir)["entries"]

    def pick(fn, i):
        e = entries[fn]
        return e[i] if isinstance(e, list) else e

    return plain.Nonlinear(gelu=lambda i, x: _simulate(pick("gelu", i), x),
                           softmax_exp=lambda i, x, valid: _simulate(pick("exp", i), x))


def ensure_classifier(model_dir: Path) -> Path:
    """Build the classifier checkpoint if `model_dir` has none."""
    if not (Path(model_dir) / "model.safetensors").is_file():
        from nimbus.models import classifier

        classifier.build(Path(model_dir))
    return Path(model_dir)


def run_study(model_dir: Path, n: int | None = None, variants: Sequence[str] = tuple(VARIANTS),
              table_dir: Path | None = None) -> dict:
    """Accuracy of every variant on the first n held-out snippets."""
    from nimbus.models import data, hf, plain

    w, tok = hf.load_weights(model_dir), hf.load_tokenizer(model_dir)
    held = data.load_splits().heldout
    texts, labels = held.texts[:n], held.labels[:n]
    results, base = {}, None
    for name in variants:
        t0 = time.time()
        nl = None if VARIANTS[name] is None else table_nonlinear(VARIANTS[name], table_dir)
        _, logits = plain.run_texts(w, tok, texts, nl, batch_size=64)
        pred = logits.argmax(1)
        base = logits if base is None else base
        results[name] = {
            "accuracy": float((pred == labels).mean()),
            "agreement_with_float": float((pred == base.argmax(1)).mean()),
            "max_abs_logit_diff": float(np.abs(logits - base).max()),
            "mean_abs_logit_diff": float(np.abs(logits - base).mean()),
            "seconds": round(time.time() - t0, 1)}
    acc0 = results[variants[0]]["accuracy"]
    for r in results.values():
        r["accuracy_delta_vs_float"] = r["accuracy"] - acc0
    return {"model": str(model_dir), "n_heldout": len(texts), "results": results}


def _markdown(report: dict) -> str:
    rows = ["| variant | accuracy | delta vs float | agreement with float | max abs logit diff | mean abs logit diff |",
            "|---|---|---|---|---|---|"]
    for name, r in report["results"].items():
        rows.append(f"| {name} | {100 * r['accuracy']:.2f}% | {100 * r['accuracy_delta_vs_float']:+.2f} pp | "
                    f"{100 * r['agreement_with_float']:.2f}% | {r['max_abs_logit_diff']:.4f} | "
                    f"{r['mean_abs_logit_diff']:.4f} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nimbus.approx.study")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR,
                    help="classifier checkpoint (built there if missing)")
    ap.add_argument("--n", type=int, default=None, help="first N held-out snippets (default all)")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    a = ap.parse_args(argv)
    report = run_study(ensure_classifier(a.model), a.n, a.variants)
    if a.out:
        a.out.write_text(json.dumps(report, indent=1) + "\n")
    print(_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
