"""A float64 numpy BERT forward pass with pluggable non-linearities.

The same forward serves three purposes, chosen by the `Nonlinear` hooks passed in:
exact float inference (the default, matches `transformers` to ~1e-6), calibration capture
(hooks that record the inputs of every GELU and softmax exp per layer) and fixed-point
simulation (hooks that evaluate the approximation tables; see `nimbus.approx.study`).

Softmax is computed as `exp_hook(layer, s - rowmax(s), valid) * valid / sum(...)`, so the exp
hook always sees non-positive inputs; `valid` marks the real (non-padding) keys. Padding uses
the additive mask `MASK_NEG` on the scores and an exact zero after the exp.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .hf import BertWeights, LayerWeights

__all__ = [
    "MASK_NEG", "Nonlinear", "ForwardOutput", "gelu_exact", "exp_exact", "tanh_exact",
    "pad_batch", "layer_norm", "encoder_layer", "forward", "run_texts",
]

MASK_NEG = -1.0e9   # additive attention mask on padded keys (exp underflows to exactly 0)


def gelu_exact(x: np.ndarray) -> np.ndarray:
    """GELU(x) = x * Phi(x) with the exact erf (via torch, float64)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    return (t * 0.5 * (1.0 + torch.special.erf(t * 0.7071067811865476))).numpy()


def exp_exact(x: np.ndarray) -> np.ndarray:
    return np.exp(x)


def tanh_exact(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


def _no_observe(name: str, layer: int, value: np.ndarray) -> None:
    return None


@dataclass
class Nonlinear:
    """Hooks for the non-linear functions. Signatures:

    gelu(layer, x) -> GELU(x); softmax_exp(layer, x, valid) -> exp(x) for x <= 0 (valid: bool
    mask of real keys, broadcastable to x); tanh(x) for the pooler; observe(name, layer, value)
    sees "ln_var" (LayerNorm variances; layer = LayerNorm index, 0 = embeddings) and
    "softmax_sum" (row sums before the reciprocal).
    """

    gelu: Callable[[int, np.ndarray], np.ndarray] = lambda layer, x: gelu_exact(x)
    softmax_exp: Callable[[int, np.ndarray, np.ndarray], np.ndarray] = (
        lambda layer, x, valid: exp_exact(x))
    tanh: Callable[[np.ndarray], np.ndarray] = tanh_exact
    observe: Callable[[str, int, np.ndarray], None] = field(default=_no_observe)


@dataclass(frozen=True)
class ForwardOutput:
    hidden: np.ndarray            # (B, L, D) last encoder layer
    pooled: np.ndarray            # (B, D) pooler output (cls) or masked mean (mean)
    logits: np.ndarray | None     # (B, labels) when the model has a head


def pad_batch(ids: Sequence[np.ndarray], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id arrays; returns (ids (B, L), valid (B, L) bool)."""
    length = max(len(a) for a in ids)
    out = np.full((len(ids), length), pad_id, dtype=np.int64)
    valid = np.zeros((len(ids), length), dtype=bool)
    for i, a in enumerate(ids):
        out[i, :len(a)], valid[i, :len(a)] = a, True
    return out, valid


def layer_norm(x, gamma, beta, eps, observe=None, index: int = 0) -> np.ndarray:
    """LayerNorm over the last axis (biased variance, as in BERT)."""
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    if observe is not None:
        observe("ln_var", index, var[..., 0])
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def _softmax(i: int, scores: np.ndarray, valid: np.ndarray, nl: Nonlinear) -> np.ndarray:
    """Row softmax over keys; `valid` is (B, 1, 1, L) bool."""
    shifted = scores - scores.max(axis=-1, keepdims=True)
    e = nl.softmax_exp(i, shifted, valid) * valid
    total = e.sum(axis=-1, keepdims=True)
    nl.observe("softmax_sum", i, np.broadcast_to(total, e.shape[:-1] + (1,))[..., 0])
    return e / total


def _attention(i: int, x: np.ndarray, lw: LayerWeights, valid: np.ndarray, heads: int,
               nl: Nonlinear) -> np.ndarray:
    b, n, d = x.shape
    dh = d // heads

    def split(t):  # (B, L, D) -> (B, H, L, dh)
        return t.reshape(b, n, heads, dh).transpose(0, 2, 1, 3)

    q, k, v = split(x @ lw.wq + lw.bq), split(x @ lw.wk + lw.bk), split(x @ lw.wv + lw.bv)
    key_valid = valid[:, None, None, :]
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh) + np.where(key_valid, 0.0, MASK_NEG)
    ctx = _softmax(i, scores, key_valid, nl) @ v
    return ctx.transpose(0, 2, 1, 3).reshape(b, n, d) @ lw.wo + lw.bo


def encoder_layer(i: int, x: np.ndarray, lw: LayerWeights, valid: np.ndarray, heads: int,
                  eps: float, nl: Nonlinear) -> np.ndarray:
    """One post-LN BERT encoder layer."""
    h = layer_norm(x + _attention(i, x, lw, valid, heads, nl), lw.ln1_gamma, lw.ln1_beta, eps,
                   nl.observe, 2 * i + 1)
    ff = nl.gelu(i, h @ lw.w1 + lw.b1) @ lw.w2 + lw.b2
    return layer_norm(h + ff, lw.ln2_gamma, lw.ln2_beta, eps, nl.observe, 2 * i + 2)


def _embed(w: BertWeights, ids: np.ndarray, nl: Nonlinear) -> np.ndarray:
    e = w.embeddings
    x = e.word[ids] + e.position[: ids.shape[1]][None] + e.token_type[0][None, None]
    return layer_norm(x, e.ln_gamma, e.ln_beta, w.shape.eps, nl.observe, 0)


def _pool(w: BertWeights, h: np.ndarray, valid: np.ndarray, nl: Nonlinear) -> np.ndarray:
    if w.pooling == "mean":
        m = valid[..., None].astype(np.float64)
        return (h * m).sum(axis=1) / m.sum(axis=1)
    if w.pooler is None:
        return h[:, 0]
    return nl.tanh(h[:, 0] @ w.pooler.w + w.pooler.b)


def forward(w: BertWeights, ids: np.ndarray, valid: np.ndarray | None = None,
            nl: Nonlinear | None = None) -> ForwardOutput:
    """Run the model on a padded batch `ids` (B, L) with `valid` (B, L) bool."""
    nl = nl or Nonlinear()
    valid = np.ones(ids.shape, dtype=bool) if valid is None else valid
    x = _embed(w, ids, nl)
    for i, lw in enumerate(w.layers):
        x = encoder_layer(i, x, lw, valid, w.shape.heads, w.shape.eps, nl)
    pooled = _pool(w, x, valid, nl)
    logits = None if w.head is None else pooled @ w.head.w + w.head.b
    return ForwardOutput(x, pooled, logits)


def run_texts(w: BertWeights, tokenizer, texts: Sequence[str], nl: Nonlinear | None = None,
              batch_size: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
    """Pooled outputs and logits for many texts, batched by length, in the input order."""
    ids = tokenizer.encode_batch(texts)
    order = np.argsort([len(a) for a in ids], kind="stable")
    pooled = np.zeros((len(ids), w.shape.hidden))
    logits = None if w.head is None else np.zeros((len(ids), w.head.w.shape[1]))
    for start in range(0, len(order), batch_size):
        sel = order[start:start + batch_size]
        out = forward(w, *pad_batch([ids[j] for j in sel], w.shape.pad_token_id), nl)
        pooled[sel] = out.pooled
        if logits is not None:
            logits[sel] = out.logits
    return pooled, logits
