"""Float64 BERT weights -> the server's fixed-point model (``nimbus.spec.model.FixedModel``).

Encodings (``F = params.linear.frac``): matrices at 2^F, biases at 2^2F (the scale of a product),
the position + token-type-0 embeddings at 2^F (the server adds them to its share of the lookup).
Folds, each exact over the reals:

* attention's 1/sqrt(d_head) into Wq and bq;
* the last LayerNorm's gamma and beta into what reads the last hidden state, where that is
  linear: the pooler (cls pooling: ``W' = diag(gamma) W``, ``b' = beta W + b``) or the head
  (mean pooling, or cls without a pooler). An embedding model keeps them and applies them to the
  pooled row (``FixedModel.out_gamma``/``out_beta``).

Every other LayerNorm keeps gamma and beta: its output feeds both a linear layer and the residual
path, so a fold would be wrong on the residual.
"""

from __future__ import annotations

import numpy as np

from nimbus.spec.fixedpoint import encode
from nimbus.spec.model import FixedModel, ModelArch
from nimbus.spec.params import ParamSet, Ring

from .hf import BertWeights

__all__ = ["arch_of", "to_fixed"]


def arch_of(w: BertWeights, name: str = "") -> ModelArch:
    """The public architecture of a model."""
    s = w.shape
    return ModelArch(vocab=s.vocab_size, hidden=s.hidden, heads=s.heads, ffn=s.intermediate, layers=s.layers,
                     max_positions=s.max_positions, eps=s.eps, pooling=w.pooling, pooler=w.pooler is not None,
                     labels=w.head.labels if w.head is not None else (), pad_token_id=s.pad_token_id, name=name)


def to_fixed(w: BertWeights, params: ParamSet, name: str = "") -> FixedModel:
    """Encode a float model for the secure graph (see the module docstring)."""
    arch = arch_of(w, name)
    R = params.linear
    R2 = Ring(R.bits, 2 * R.frac)
    scale = 1.0 / np.sqrt(arch.head_dim)
    W, B = {"embed": encode(w.embeddings.word, R)}, {}
    for i, lw in enumerate(w.layers):
        wqkv = np.concatenate([lw.wq * scale, lw.wk, lw.wv], axis=1)
        bqkv = np.concatenate([lw.bq * scale, lw.bk, lw.bv])
        for key, mat, bias in (("qkv", wqkv, bqkv), ("o", lw.wo, lw.bo), ("h1", lw.w1, lw.b1), ("h2", lw.w2, lw.b2)):
            W[f"layer{i}.{key}"], B[f"layer{i}.{key}"] = encode(mat, R), encode(bias, R2)
    ln = [(w.embeddings.ln_gamma, w.embeddings.ln_beta)]
    for lw in w.layers:
        ln += [(lw.ln1_gamma, lw.ln1_beta), (lw.ln2_gamma, lw.ln2_beta)]
    g_last, b_last = ln[-1]
    out_gamma = out_beta = None
    folded = False
    if arch.uses_pooler:
        W["pooler"] = encode(g_last[:, None] * w.pooler.w, R)
        B["pooler"] = encode(b_last @ w.pooler.w + w.pooler.b, R2)
        folded = True
    if arch.labels:
        hw, hb = w.head.w, w.head.b
        if not folded:
            hw, hb = g_last[:, None] * hw, b_last @ hw + hb
            folded = True
        W["head"], B["head"] = encode(hw, R), encode(hb, R2)
    if not folded:
        out_gamma, out_beta = g_last, b_last
    ln[-1] = (None, None)
    from nimbus.spec.nonlinear_fn import encode_gamma  # refuses a gamma beyond the protocol's bound, now

    for g in [g for g, _ in ln] + [out_gamma]:
        if g is not None:
            encode_gamma(g, np.size(g), params)
    pos = w.embeddings.position + w.embeddings.token_type[0][None, :]
    return FixedModel(arch=arch, weights=W, biases=B, positions=encode(pos, R),
                      ln=tuple((None if g is None else np.asarray(g, np.float64), None if b is None else np.asarray(b, np.float64))
                               for g, b in ln),
                      out_gamma=out_gamma, out_beta=out_beta, source=name)
