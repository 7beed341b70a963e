"""Calibration capture: input histograms of every GELU and softmax exp, per layer, on real text.

Recipe (the paper's): shuffle the training snippets with a fixed seed and take them in order
until the total token count reaches 512; run each snippet alone (no padding) through the
plaintext float64 forward with recording hooks. We keep histograms, never text: fixed bins of
width 2^-BIN_LOG2 on a per-function range, integer counts, plus exact atoms (the softmax max,
x = 0 exactly, occurs once per row) and under/overflow counts. Also recorded, as summaries for
stating input ranges: the pooler's tanh inputs (histogram), LayerNorm variances and softmax row
sums (min / max / quantiles).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

import numpy as np

__all__ = [
    "BIN_LOG2", "RANGES", "TOKEN_BUDGET", "CALIBRATION_SEED", "Histogram", "sample_snippets", "capture",
    "capture_minilm", "capture_bert_base_random",
]

BIN_LOG2 = 6                       # bin width 1/64: breakpoints on a 1/16 grid split no bin
RANGES = {"gelu": (-16, 16), "exp": (-32, 0), "tanh": (-16, 16)}
TOKEN_BUDGET = 512
CALIBRATION_SEED = 7


@dataclass
class Histogram:
    """Counts of x in bins [lo + j w, lo + (j+1) w), w = 2^-BIN_LOG2; `atoms` are exact values."""

    lo: int
    hi: int
    counts: np.ndarray
    atoms: dict[str, int] = field(default_factory=dict)
    under: int = 0
    over: int = 0

    @classmethod
    def empty(cls, lo: int, hi: int) -> "Histogram":
        return cls(lo, hi, np.zeros((hi - lo) << BIN_LOG2, dtype=np.int64))

    @property
    def width(self) -> float:
        return 2.0 ** -BIN_LOG2

    def midpoints(self) -> np.ndarray:
        return self.lo + (np.arange(len(self.counts)) + 0.5) * self.width

    def add(self, x: np.ndarray, atoms: Sequence[float] = ()) -> None:
        x = np.asarray(x, dtype=np.float64).ravel()
        for a in atoms:
            hit = x == a
            self.atoms[str(a)] = self.atoms.get(str(a), 0) + int(hit.sum())
            x = x[~hit]
        j = np.floor((x - self.lo) * 2.0**BIN_LOG2)
        self.under += int((j < 0).sum())
        self.over += int((j >= len(self.counts)).sum())
        ok = (j >= 0) & (j < len(self.counts))
        self.counts += np.bincount(j[ok].astype(np.int64), minlength=len(self.counts))

    def merged(self, other: "Histogram") -> "Histogram":
        atoms = dict(self.atoms)
        for k, v in other.atoms.items():
            atoms[k] = atoms.get(k, 0) + v
        return Histogram(self.lo, self.hi, self.counts + other.counts, atoms,
                         self.under + other.under, self.over + other.over)

    def total(self) -> int:
        return int(self.counts.sum()) + sum(self.atoms.values()) + self.under + self.over

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, count) pairs: bin midpoints, atoms, under/overflow placed at the range ends;
        counts are integers (float64 dtype), zero-count bins dropped."""
        xs = [self.midpoints(), np.array([float(Fraction(k)) for k in self.atoms]),
              np.array([float(self.lo), float(self.hi)])]
        ws = [self.counts, np.array(list(self.atoms.values())), np.array([self.under, self.over])]
        x, w = np.concatenate(xs), np.concatenate(ws).astype(np.float64)
        keep = w > 0
        return x[keep], w[keep]

    def to_json(self) -> dict:
        nz = np.nonzero(self.counts)[0]
        first, last = (int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 0)
        return dict(lo=self.lo, hi=self.hi, bin_log2=BIN_LOG2, offset=first,
                    counts=[int(c) for c in self.counts[first:last]], atoms=self.atoms,
                    under=self.under, over=self.over)

    @classmethod
    def from_json(cls, d: dict) -> "Histogram":
        if d["bin_log2"] != BIN_LOG2:
            raise ValueError("histogram bin width mismatch")
        h = cls.empty(d["lo"], d["hi"])
        h.counts[d["offset"]:d["offset"] + len(d["counts"])] = d["counts"]
        h.atoms, h.under, h.over = dict(d["atoms"]), d["under"], d["over"]
        return h


def sample_snippets(texts: Sequence[str], tokenizer, budget: int = TOKEN_BUDGET,
                    seed: int = CALIBRATION_SEED) -> list[np.ndarray]:
    """Token ids of shuffled snippets, taken until the total reaches `budget` tokens."""
    out, total = [], 0
    for i in np.random.default_rng(seed).permutation(len(texts)):
        ids = tokenizer.encode(texts[i])
        out.append(ids)
        total += len(ids)
        if total >= budget:
            break
    return out


def _summary(values: list[np.ndarray]) -> dict:
    v = np.concatenate([np.ravel(a) for a in values])
    q = np.quantile(v, [0.0, 0.001, 0.5, 0.999, 1.0])
    return dict(count=int(v.size), min=float(q[0]), q001=float(q[1]), median=float(q[2]),
                q999=float(q[3]), max=float(q[4]))


def capture(weights, ids_list: Sequence[np.ndarray]) -> dict:
    """Run each snippet through the plaintext forward and histogram the non-linear inputs."""
    from nimbus.models import plain

    n = len(weights.layers)
    gelu = [Histogram.empty(*RANGES["gelu"]) for _ in range(n)]
    exp = [Histogram.empty(*RANGES["exp"]) for _ in range(n)]
    tanh = Histogram.empty(*RANGES["tanh"])
    seen: dict[str, list] = {"ln_var": [], "softmax_sum": []}

    def rec_gelu(i, x):
        gelu[i].add(x)
        return plain.gelu_exact(x)

    def rec_exp(i, x, valid):
        exp[i].add(x[np.broadcast_to(valid, x.shape)], atoms=(0.0,))
        return np.exp(x)

    def rec_tanh(x):
        tanh.add(x)
        return np.tanh(x)

    nl = plain.Nonlinear(rec_gelu, rec_exp, rec_tanh, lambda name, i, v: seen[name].append(v))
    for ids in ids_list:
        plain.forward(weights, ids[None, :], None, nl)
    return dict(tokens=int(sum(len(a) for a in ids_list)), snippets=len(ids_list),
                gelu=[h.to_json() for h in gelu], exp=[h.to_json() for h in exp],
                tanh=tanh.to_json(), ln_var=_summary(seen["ln_var"]),
                softmax_sum=_summary(seen["softmax_sum"]))


def capture_minilm() -> dict:
    """The packaged all-MiniLM-L6-v2 on Rotten Tomatoes training snippets."""
    from nimbus.models import data, hf

    tok = hf.load_tokenizer()
    ids = sample_snippets(data.load_splits().train.texts, tok)
    return dict(model="all-MiniLM-L6-v2", text="rotten-tomatoes train split", seed=CALIBRATION_SEED,
                **capture(hf.load_model(), ids))


def capture_bert_base_random() -> dict:
    """BERT-base shapes, `BertModel(BertConfig())` with torch.manual_seed(0) weights (optional)."""
    import torch
    from transformers import BertConfig, BertModel

    from nimbus.models import data, hf

    torch.manual_seed(0)
    model = BertModel(BertConfig())
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    w = hf.weights_from_state(model.config.to_dict(), state)
    ids = sample_snippets(data.load_splits().train.texts, hf.load_tokenizer())
    return dict(model="bert-base-uncased shapes, random weights (torch seed 0)",
                text="rotten-tomatoes train split", seed=CALIBRATION_SEED, **capture(w, ids))
