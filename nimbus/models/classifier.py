"""Sentiment classifier: frozen MiniLM + a logistic-regression head on Rotten Tomatoes.

`python -m nimbus.models.classifier --out DIR` embeds the snippets with the packaged
all-MiniLM-L6-v2 (cached in DIR/embeddings-*.npz so reruns are fast), fits an L2-regularised
logistic regression by Newton's method (deterministic: no random initialisation; the ridge
strength is chosen on the validation split), reports float accuracy on the held-out split and
writes a checkpoint directory that `nimbus.models.hf.load_weights` loads: BertForSequenceClassification
key names (`bert.*`, `classifier.*`), `config.json` with `num_labels`/`id2label`, tokenizer files.

Pooling is recorded in config.json as `nimbus_pooling`: "mean" (masked mean of the last hidden
states; our default, the better head) or "cls" (the HF pooler + tanh, exactly what
`transformers.BertForSequenceClassification` computes). With "mean", HF's own class would apply
its CLS pooler instead, so only `nimbus.models` evaluates that checkpoint faithfully.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from . import data, hf
from .plain import pad_batch

__all__ = [
    "LAMBDAS", "embed_texts", "cached_embeddings", "fit_logistic", "accuracy",
    "train_head", "save_checkpoint", "build", "main",
]

LAMBDAS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 0.3, 1.0, 3.0)   # ridge grid (per-sample loss scale)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def embed_texts(texts: Sequence[str], model_dir: Path | None = None,
                batch_size: int = 64) -> dict[str, np.ndarray]:
    """Mean-pooled and CLS-pooler embeddings (torch float32, the fast path for the cache)."""
    import torch
    from transformers import BertModel

    model_dir = Path(model_dir or hf.minilm_dir())
    tok = hf.load_tokenizer(model_dir)
    torch.manual_seed(0)
    model = BertModel.from_pretrained(str(model_dir)).eval()
    ids = tok.encode_batch(texts)
    order = np.argsort([len(a) for a in ids], kind="stable")
    out = {k: np.zeros((len(ids), model.config.hidden_size)) for k in ("mean", "cls")}
    for s in range(0, len(order), batch_size):
        sel = order[s:s + batch_size]
        batch, valid = pad_batch([ids[j] for j in sel])
        with torch.no_grad():
            r = model(input_ids=torch.tensor(batch), attention_mask=torch.tensor(valid.astype(np.int64)))
        m = valid[..., None].astype(np.float64)
        out["mean"][sel] = (r.last_hidden_state.double().numpy() * m).sum(1) / m.sum(1)
        out["cls"][sel] = r.pooler_output.double().numpy()
    return out


def _fingerprint(texts: Sequence[str], model_dir: Path) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    h.update(hashlib.sha256((model_dir / "model.safetensors").read_bytes()).digest())
    return h.hexdigest()[:16]


def cached_embeddings(texts: Sequence[str], cache_dir: Path, model_dir: Path | None = None):
    """`embed_texts`, cached in cache_dir under a fingerprint of texts and weights."""
    model_dir = Path(model_dir or hf.minilm_dir())
    path = Path(cache_dir) / f"embeddings-{_fingerprint(texts, model_dir)}.npz"
    if path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    emb = embed_texts(texts, model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **emb)
    return emb


def fit_logistic(x: np.ndarray, y: np.ndarray, lam: float, iters: int = 50) -> tuple[np.ndarray, float]:
    """Minimise mean log-loss + lam/2 |w|^2 by Newton's method; returns (w, b)."""
    mu, sd = x.mean(0), x.std(0) + 1e-12
    z = np.hstack([(x - mu) / sd, np.ones((len(x), 1))])
    theta = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], lam)
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(z @ theta)))
        grad = z.T @ (p - y) / len(y) + reg * theta
        hess = (z * (p * (1 - p))[:, None]).T @ z / len(y) + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    w = theta[:-1] / sd
    return w, float(theta[-1] - mu @ w)


def accuracy(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: float) -> float:
    return float(((x @ w + b > 0).astype(np.int64) == y).mean())


def train_head(xtr, ytr, xval, yval) -> tuple[np.ndarray, float, float]:
    """Fit for every ridge strength in LAMBDAS; keep the best on validation."""
    best = None
    for lam in LAMBDAS:
        w, b = fit_logistic(xtr, ytr, lam)
        acc = accuracy(xval, yval, w, b)
        if best is None or acc > best[3]:
            best = (w, b, lam, acc)
    return best[0], best[1], best[2]


def save_checkpoint(out: Path, w: np.ndarray, b: float, pooling: str,
                    base_dir: Path | None = None) -> None:
    """Write a BertForSequenceClassification-style directory (2 labels, logits -z/2, z/2)."""
    from safetensors.numpy import load_file, save_file

    base_dir = Path(base_dir or hf.minilm_dir())
    out.mkdir(parents=True, exist_ok=True)
    state = {("bert." + k): v for k, v in load_file(str(base_dir / "model.safetensors")).items()}
    state["classifier.weight"] = np.stack([-w / 2, w / 2]).astype(np.float32)
    state["classifier.bias"] = np.array([-b / 2, b / 2], dtype=np.float32)
    save_file(state, str(out / "model.safetensors"))
    cfg = json.loads((base_dir / "config.json").read_text())
    cfg.update(architectures=["BertForSequenceClassification"], num_labels=2,
               id2label={"0": data.LABELS[0], "1": data.LABELS[1]},
               label2id={data.LABELS[0]: 0, data.LABELS[1]: 1}, nimbus_pooling=pooling)
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    for name in _TOKENIZER_FILES:
        if (base_dir / name).is_file():
            shutil.copy(base_dir / name, out / name)


def _first(s: data.Snippets, n: int | None) -> data.Snippets:
    return s.take(np.arange(min(n or len(s), len(s))))


def build(out: Path, pooling: str = "mean", n_train: int | None = None,
          n_heldout: int | None = None, cache_dir: Path | None = None,
          n_validation: int | None = None) -> dict:
    """Embed, fit, evaluate and save; returns the report (also written to out/report.json).
    The n_* arguments take only the first N snippets of a split (quick runs and tests)."""
    s = data.load_splits()
    tr, va, he = _first(s.train, n_train), _first(s.validation, n_validation), _first(s.heldout, n_heldout)
    emb = cached_embeddings(tr.texts + va.texts + he.texts, Path(cache_dir or out))
    x = emb[pooling]
    xtr, xval, xhe = x[:len(tr)], x[len(tr):len(tr) + len(va)], x[len(tr) + len(va):]
    w, b, lam = train_head(xtr, tr.labels, xval, va.labels)
    save_checkpoint(Path(out), w, b, pooling)
    report = dict(pooling=pooling, n_train=len(tr), n_validation=len(va), n_heldout=len(he),
                  ridge=lam, seed=s.seed, train_accuracy=accuracy(xtr, tr.labels, w, b),
                  validation_accuracy=accuracy(xval, va.labels, w, b),
                  heldout_accuracy=accuracy(xhe, he.labels, w, b))
    (Path(out) / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nimbus.models.classifier", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    ap.add_argument("--pooling", choices=("mean", "cls"), default="mean")
    ap.add_argument("--n-train", type=int, default=None, help="use only the first N training snippets")
    ap.add_argument("--n-validation", type=int, default=None)
    ap.add_argument("--n-heldout", type=int, default=None)
    ap.add_argument("--cache-dir", type=Path, default=None, help="embedding cache (default: --out)")
    a = ap.parse_args(argv)
    report = build(a.out, a.pooling, a.n_train, a.n_heldout, a.cache_dir, a.n_validation)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
