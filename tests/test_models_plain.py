"""The numpy float64 BERT forward against transformers, and the HF import checks."""

import os

import numpy as np
import pytest

from nimbus.models import hf, plain

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = ["A gorgeous, witty, seductive movie.",
         "It's a bad sign when you're rooting for the film to end, and it does not end for a very long time.",
         "Meh."]


@pytest.fixture(scope="module")
def minilm():
    return hf.load_model(), hf.load_tokenizer()


def test_forward_matches_transformers_with_padding(minilm):
    torch = pytest.importorskip("torch")
    from transformers import BertModel

    w, tok = minilm
    ids, valid = plain.pad_batch(tok.encode_batch(TEXTS))
    out = plain.forward(w, ids, valid)
    model = BertModel.from_pretrained(str(hf.minilm_dir())).double().eval()
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(valid.astype(np.int64)))
    diff = np.abs(ref.last_hidden_state.numpy() - out.hidden)[valid]
    assert diff.max() < 1e-6
    assert np.abs(ref.pooler_output.numpy() - out.pooled).max() < 1e-6


def test_padding_does_not_change_outputs(minilm):
    w, tok = minilm
    ids = tok.encode_batch(TEXTS)
    batch = plain.forward(w, *plain.pad_batch(ids))
    alone = plain.forward(w, ids[2][None, :])
    n = len(ids[2])
    assert np.abs(batch.hidden[2, :n] - alone.hidden[0]).max() < 1e-9


def test_hooks_see_every_gelu_and_softmax_exp(minilm):
    w, tok = minilm
    seen = {"gelu": [], "exp": []}

    def gelu(i, x):
        seen["gelu"].append((i, x.shape))
        return plain.gelu_exact(x)

    def exp(i, x, valid):
        seen["exp"].append((i, float(x.max())))
        return np.exp(x)

    ids, valid = plain.pad_batch(tok.encode_batch(TEXTS[:2]))
    plain.forward(w, ids, valid, plain.Nonlinear(gelu=gelu, softmax_exp=exp))
    assert [i for i, _ in seen["gelu"]] == list(range(6))
    assert all(s == (2, ids.shape[1], 1536) for _, s in seen["gelu"])
    assert [i for i, _ in seen["exp"]] == list(range(6))
    assert all(m == 0.0 for _, m in seen["exp"])  # inputs are s - rowmax(s)


def test_changing_a_hook_changes_the_output(minilm):
    w, tok = minilm
    ids = tok.encode(TEXTS[0])[None, :]
    relu = plain.Nonlinear(gelu=lambda i, x: np.maximum(x, 0))
    assert np.abs(plain.forward(w, ids).hidden - plain.forward(w, ids, None, relu).hidden).max() > 1e-3


@pytest.mark.parametrize("change, word", [
    ({"hidden_act": "relu"}, "hidden_act"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
    ({"model_type": "roberta"}, "model_type"),
    ({"is_decoder": True}, "decoder"),
])
def test_unsupported_configs_are_rejected(change, word):
    import json

    cfg = json.loads((hf.minilm_dir() / "config.json").read_text())
    cfg.update(change)
    with pytest.raises(hf.UnsupportedModelError, match=word):
        hf.parse_config(cfg)


def test_missing_tensor_is_reported():
    import json

    cfg = json.loads((hf.minilm_dir() / "config.json").read_text())
    with pytest.raises(hf.UnsupportedModelError, match="checkpoint lacks tensor"):
        hf.weights_from_state(cfg, {})
