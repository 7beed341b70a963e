"""Randomly initialised BERT models (no download): BERT-base for benchmarks, tiny ones for tests.

Built with ``transformers`` (``BertConfig`` -> ``BertModel`` / ``BertForSequenceClassification``,
its own initialisation: normal(0, 0.02) weights) under a fixed torch seed, then imported through
the same path as a checkpoint (``hf.weights_from_state``). ``perturb=True`` also gives the
LayerNorm gammas, betas and biases non-trivial values (the HF initialisation sets them to 1 and 0,
which would hide folding mistakes in tests). Model weights are not secrets; the seed only makes
runs reproducible.
"""

from __future__ import annotations

import numpy as np

from . import hf

__all__ = ["random_bert", "BERT_BASE_CONFIG", "TINY_WORDS", "tiny_tokenizer_json", "save_tiny_checkpoint"]

#: ``transformers.BertConfig()`` defaults (BERT-base uncased), restated for readers.
BERT_BASE_CONFIG = dict(vocab_size=30522, hidden_size=768, num_attention_heads=12, intermediate_size=3072,
                        num_hidden_layers=12, max_position_embeddings=512)


def random_bert(*, hidden: int = 768, heads: int = 12, ffn: int = 3072, layers: int = 12, vocab: int = 30522,
                max_positions: int = 512, labels: int = 0, pooling: str = "cls", seed: int = 0,
                perturb: bool = False) -> hf.BertWeights:
    """A randomly initialised BERT (``labels`` > 0: with a classification head)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_attention_heads=heads, intermediate_size=ffn,
                     num_hidden_layers=layers, max_position_embeddings=max_positions, num_labels=max(labels, 2))
    torch.manual_seed(seed)
    model = (BertForSequenceClassification(cfg) if labels else BertModel(cfg)).eval()
    state = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    if perturb:
        g = torch.Generator().manual_seed(seed + 1)
        for k in sorted(state):
            if k.endswith("LayerNorm.weight"):
                state[k] = state[k] + 0.2 * torch.randn(state[k].shape, generator=g, dtype=torch.float64).numpy()
            elif k.endswith(".bias"):
                state[k] = state[k] + 0.05 * torch.randn(state[k].shape, generator=g, dtype=torch.float64).numpy()
    d = cfg.to_dict()
    d["nimbus_pooling"] = pooling
    if labels:
        d["id2label"] = {str(i): f"LABEL_{i}" for i in range(labels)}
        if labels == 1:
            raise ValueError("labels must be 0 (no head) or >= 2")
    if not labels:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    return hf.weights_from_state(d, state)


#: The words of :func:`save_tiny_checkpoint`'s vocabulary (after the special tokens).
TINY_WORDS = tuple("""a an the film movie story plot actor actors cast scene scenes it is was are be this that
and but or not no very too so quite really good great fine bad awful boring dull brilliant funny sad smart
gripping beautiful beautifully shot never lets go of in on to with for by as at from its his her their
one two best worst love hate like fun mess moving charming tedious clever well made acting script music
director long short slow fast hour minutes""".split())
_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def tiny_tokenizer_json() -> str:
    """A WordPiece tokenizer (BERT normaliser and pre-tokeniser, [CLS] ... [SEP]) over
    :data:`TINY_WORDS`, as ``tokenizer.json`` text: real text in, a vocabulary of ~130 ids."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    vocab = {t: i for i, t in enumerate(_SPECIALS + TINY_WORDS + tuple(".,!?'-"))}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok.to_str()


def save_tiny_checkpoint(out, *, hidden: int = 32, heads: int = 2, ffn: int = 64, layers: int = 1,
                         labels: int = 2, pooling: str = "cls", max_positions: int = 64, seed: int = 0):
    """A small random ``BertForSequenceClassification`` checkpoint directory with a tiny real
    tokenizer (tests and quick demos: setup moves a few MB instead of gigabytes)."""
    import json
    from pathlib import Path

    from safetensors.numpy import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tj = tiny_tokenizer_json()
    vocab = len(json.loads(tj)["model"]["vocab"])
    w = random_bert(hidden=hidden, heads=heads, ffn=ffn, layers=layers, vocab=vocab, max_positions=max_positions,
                    labels=labels, pooling=pooling, seed=seed, perturb=True)
    (out / "tokenizer.json").write_text(tj)
    state = _state_of(w)
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}, str(out / "model.safetensors"))
    cfg = dict(model_type="bert", hidden_act="gelu", vocab_size=vocab, hidden_size=hidden, num_attention_heads=heads,
               intermediate_size=ffn, num_hidden_layers=layers, max_position_embeddings=max_positions, type_vocab_size=2,
               layer_norm_eps=1e-12, pad_token_id=0, nimbus_pooling=pooling,
               architectures=["BertForSequenceClassification" if labels else "BertModel"])
    if labels:
        cfg.update(num_labels=labels, id2label={str(i): f"LABEL_{i}" for i in range(labels)})
    (out / "config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True))
    return out


def _state_of(w: hf.BertWeights) -> dict:
    """The HF state dict of ``w`` (``bert.`` prefix when it has a head), inverse of the import."""
    p = "bert." if w.head is not None else ""
    e = w.embeddings
    s = {p + "embeddings.word_embeddings.weight": e.word, p + "embeddings.position_embeddings.weight": e.position,
         p + "embeddings.token_type_embeddings.weight": e.token_type, p + "embeddings.LayerNorm.weight": e.ln_gamma,
         p + "embeddings.LayerNorm.bias": e.ln_beta}
    for i, lw in enumerate(w.layers):
        l = f"{p}encoder.layer.{i}."
        for key, mat, bias in (("attention.self.query", lw.wq, lw.bq), ("attention.self.key", lw.wk, lw.bk),
                               ("attention.self.value", lw.wv, lw.bv), ("attention.output.dense", lw.wo, lw.bo),
                               ("intermediate.dense", lw.w1, lw.b1), ("output.dense", lw.w2, lw.b2)):
            s[l + key + ".weight"], s[l + key + ".bias"] = mat.T, bias
        s[l + "attention.output.LayerNorm.weight"], s[l + "attention.output.LayerNorm.bias"] = lw.ln1_gamma, lw.ln1_beta
        s[l + "output.LayerNorm.weight"], s[l + "output.LayerNorm.bias"] = lw.ln2_gamma, lw.ln2_beta
    if w.pooler is not None:
        s[p + "pooler.dense.weight"], s[p + "pooler.dense.bias"] = w.pooler.w.T, w.pooler.b
    if w.head is not None:
        s["classifier.weight"], s["classifier.bias"] = w.head.w.T, w.head.b
    return s
