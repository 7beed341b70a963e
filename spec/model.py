"""The secure BERT graph: public architecture, the server's fixed-point model, the session
messages and the exact fixed-point semantics of one query (``ideal_forward``).

What is public (both parties know it): the architecture (:class:`ModelArch`: sizes, number of
layers and heads, pooling, labels), the parameter set, the sequence length of each query (the
padded length when the client pads), and whether the client pads. Everything else is private:
the weights are the server's, the token ids, the padding mask and the result are the client's.

One query, in fixed point (``F = params.linear.frac``; every tensor is a sharing in the linear
ring Z_2^64 at scale 2^F unless said otherwise; "trunc" is the exact floor division by 2^F that the
known-MSB truncation computes for |x| < 2^62):

1. ``x = E[tokens] + P[:n] + T[0]`` (private lookup; P, T the server's, added to its share);
   ``x = LN_emb(x)`` (``ideal_layernorm`` with the server's gamma, beta).
2. Per layer i: ``qkv = trunc(x Wqkv + bqkv)`` (Wq, bq carry the 1/sqrt(d_head) of attention,
   folded over the reals); per head ``s = Q K^T`` (scale 2^2F) with the client's padding mask;
   ``p = softmax(s)``; ``c = trunc(p V)``; ``a = c Wo + bo`` and ``h = LN1(x 2^F + a)`` (from
   scale 2^2F: the truncation is fused into LayerNorm's down-casts, ``in_frac = 2F``);
   ``g = GELU(h W1 + b1)`` (from scale 2^2F); ``y = g W2 + b2``; ``x = LN2(h 2^F + y)``. The
   last LN2's gamma and beta are folded into what follows where that is exact over the reals
   (the pooler or the head); otherwise applied after pooling (one row).
3. Pooling: ``cls``: row 0, then the HF pooler ``tanh(trunc(x0 Wp + bp))``; ``mean``:
   ``trunc_K(sum_j w_j x_j)`` with ``w_j = valid_j * round(2^K / count)`` (K = ``LN_K``; the
   weights are public without padding, the client's with it).
4. Head: ``logits = pooled Wh + bh`` at scale 2^2F, opened to the client only (or, for an
   embedding model, the pooled vector at scale 2^F).

Reference: [NIMBUS24, §3-§5]; BERT [DEVLIN19].
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import ParameterError, ShapeError
from .fixedpoint import to_signed
from .linear import WeightShape, max_query_tokens
from .messages import BytesField, FixedBytes, Message, U64Field
from .nonlinear_fn import (
    FN_TRUNC, LN_K, TANH_TABLE, entry_for, ideal_gelu, ideal_layernorm, ideal_softmax, ideal_tanh,
)
from .params import ParamSet

__all__ = [
    "MODEL_PROTOCOL_VERSION", "MODEL_SETUP_VERSION", "CATEGORIES", "ModelArch", "FixedModel", "SecureConfig", "category",
    "ClientHello", "ModelInfo", "SessionHello", "QueryHeader", "MASK_VALUE", "attention_mask",
    "pool_weights", "ideal_forward", "pk_digest", "max_tokens", "GRAPH_TABLE",
]

#: Version of the secure-graph protocol (bound into the session hello).
MODEL_PROTOCOL_VERSION = 6  # 2: the attention products' keys travel once per session (after the hello);
#: 3: LayerNorm's gamma by its digits in a 49-bit ring (same results, fewer bytes);
#: 4: the attention products' plans weigh the work per input ciphertext (denser inputs, same results);
#: 5: products by a per-row operand (softmax's 1/s, LayerNorm's rsqrt, mean pooling's weights) by
#: vector ACOTs (one COT per row and bit: same results, fewer COTs and choice bits), and the
#: session's Ferret refills one iteration ahead (``FerretAhead``: nobody waits for the trees);
#: 6: fewer rounds, new semantics: softmax's reciprocal by a thermometer and piecewise-linear fit,
#: LayerNorm without a truncation for the mean and with the preceding linear layer's truncation
#: fused in (``ideal_forward`` changed), the row maximum by a tournament (same results)

#: Version of what the setup sends and the client caches (bound into the cache description): a
#: change of the online protocol alone bumps MODEL_PROTOCOL_VERSION and keeps caches valid.
MODEL_SETUP_VERSION = 3

#: Operator categories of a query, in graph order (labels of the transcript map onto these).
CATEGORIES = ("Hello", "OT", "Embedding", "Linear_qkv", "Linear_o", "Linear_h1", "Linear_h2",
              "QK^T&PV", "Softmax", "GELU", "LayerNorm", "Trunc", "Head", "Output")

#: The approximation table of the graph's GELU and softmax exp (certified; docs/approx.md).
GRAPH_TABLE = "ours-minilm-precise"

#: The client's additive attention mask on padded keys (reals; the exp tables are 0 below -16).
MASK_VALUE = -1024.0


def category(label: str) -> str:
    """The operator category of a transcript label (``q0/layer3/Linear_qkv/...`` -> ``Linear_qkv``)."""
    for part in label.split("/"):
        if part in ("QK^T", "PV"):
            return "QK^T&PV"
        for c in CATEGORIES:
            if part == c or (part.startswith(c) and part[len(c):].lstrip("_").isalnum()):
                return c
    return "Other"


@dataclass(frozen=True)
class ModelArch:
    """The public architecture of a BERT encoder (what the client learns besides the output)."""

    vocab: int
    hidden: int
    heads: int
    ffn: int
    layers: int
    max_positions: int
    eps: float
    pooling: str = "cls"                 # "cls" or "mean"
    pooler: bool = True                   # cls pooling through the HF pooler (tanh)
    labels: tuple[str, ...] = ()          # empty: an embedding model (the pooled vector is the output)
    pad_token_id: int = 0
    name: str = ""

    def __post_init__(self):
        if self.pooling not in ("cls", "mean"):
            raise ParameterError(f"pooling must be 'cls' or 'mean', got {self.pooling!r}")
        if min(self.vocab, self.hidden, self.heads, self.ffn, self.layers, self.max_positions) < 1:
            raise ParameterError("architecture sizes must be positive")
        if self.hidden % self.heads:
            raise ParameterError(f"hidden {self.hidden} is not divisible by {self.heads} heads")
        object.__setattr__(self, "labels", tuple(str(s) for s in self.labels))

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def uses_pooler(self) -> bool:
        return self.pooling == "cls" and self.pooler

    def shapes(self) -> tuple[WeightShape, ...]:
        """Every matrix the server encrypts in setup, in order (embedding table first)."""
        d = self.hidden
        out = [WeightShape("embed", self.vocab, d)]
        for i in range(self.layers):
            out += [WeightShape(f"layer{i}.qkv", d, 3 * d), WeightShape(f"layer{i}.o", d, d),
                    WeightShape(f"layer{i}.h1", d, self.ffn), WeightShape(f"layer{i}.h2", self.ffn, d)]
        if self.uses_pooler:
            out.append(WeightShape("pooler", d, d))
        if self.labels:
            out.append(WeightShape("head", d, len(self.labels)))
        return tuple(out)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "ModelArch":
        try:
            d = json.loads(bytes(data))
            d["labels"] = tuple(d.get("labels", ()))
            return cls(**d)
        except (ValueError, TypeError, KeyError) as e:
            raise ShapeError(f"bad model description: {e}") from None

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(b"nimbus-arch-v1\x00" + self.to_json()).digest()


@dataclass(frozen=True)
class SecureConfig:
    """Public protocol choices of the graph (both parties must agree; bound into the hello).

    ``softmax_trunc``/``gelu_trunc``: ``exact`` makes the query equal ``ideal_forward`` bit for
    bit; ``faithful`` lets the named truncations be 1 ulp low (cheaper; within the functions'
    stated bounds). The tables default to :data:`GRAPH_TABLE`: on the held-out sentiment snippets
    its GELU and exp keep 99.8% of float's predictions (docs/approx.md); ``ot_kind`` picks the
    COT extension of the session."""

    gelu_table: str = GRAPH_TABLE
    exp_table: str = GRAPH_TABLE
    tanh_table: str = TANH_TABLE
    softmax_trunc: str = "exact"
    gelu_trunc: str = "exact"
    ot_kind: str = ""  # "" = the parameter set's (Ferret for bert-base); "iknp": more bytes, no setup

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "SecureConfig":
        try:
            return cls(**json.loads(bytes(data)))
        except (ValueError, TypeError) as e:
            raise ShapeError(f"bad secure-graph configuration: {e}") from None

    @property
    def exact(self) -> bool:
        return self.softmax_trunc == "exact" and self.gelu_trunc == "exact"

    def check(self, params: ParamSet) -> "SecureConfig":
        """Every choice names something that exists and fits ``params`` (the server checks when it
        is built, the client when the hello brings the configuration): a ParameterError naming
        the field otherwise, never a failure at the first GELU of a query."""
        from .ot import KINDS

        for fld, fn in (("gelu_table", "gelu"), ("exp_table", "exp"), ("tanh_table", "tanh")):
            try:
                entry_for(getattr(self, fld), fn, params)
            except ParameterError as e:
                raise ParameterError(f"SecureConfig.{fld}: {e}") from None
        for fld in ("softmax_trunc", "gelu_trunc"):
            if getattr(self, fld) not in FN_TRUNC:
                raise ParameterError(f"SecureConfig.{fld} must be one of {FN_TRUNC}, got {getattr(self, fld)!r}")
        if self.ot_kind and self.ot_kind not in KINDS:
            raise ParameterError(f"SecureConfig.ot_kind must be '' or one of {KINDS}, got {self.ot_kind!r}")
        return self


@dataclass(frozen=True)
class FixedModel:
    """The server's model in fixed point (private to the server).

    ``weights[name]``: (d_in, d_out) uint64 at scale 2^F for every ``arch.shapes()`` entry (the
    embedding table included); ``biases[name]``: (d_out,) at scale 2^2F; ``positions``:
    (max_positions, hidden) at 2^F (position + token-type-0 embeddings); ``ln[k]``: (gamma, beta)
    float64 arrays of LayerNorm k (0: embeddings, 2i+1 / 2i+2: layer i), either None where it was
    folded; ``out_gamma``/``out_beta``: the last LayerNorm's weights applied after pooling (an
    embedding model), or None."""

    arch: ModelArch
    weights: dict
    biases: dict
    positions: np.ndarray
    ln: tuple
    out_gamma: np.ndarray | None = None
    out_beta: np.ndarray | None = None
    source: str = ""
    _fp: list = field(default_factory=list, repr=False, compare=False)
    _limbs: dict = field(default_factory=dict, repr=False, compare=False)

    def matrices(self) -> dict:
        return {s.name: self.weights[s.name] for s in self.arch.shapes()}

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 over the architecture, every weight, bias, LayerNorm parameter and position table
        (what the client's cache and every session are bound to)."""
        if not self._fp:
            h = hashlib.sha256(b"nimbus-fixed-model-v1\x00" + self.arch.to_json())
            for s in self.arch.shapes():
                h.update(s.name.encode() + b"\x00")
                h.update(np.ascontiguousarray(self.weights[s.name], dtype="<u8").tobytes())
                if s.name in self.biases:
                    h.update(np.ascontiguousarray(self.biases[s.name], dtype="<u8").tobytes())
            h.update(np.ascontiguousarray(self.positions, dtype="<u8").tobytes())
            for pair in tuple(self.ln) + ((self.out_gamma, self.out_beta),):
                for a in pair:
                    h.update(b"-" if a is None else np.ascontiguousarray(a, dtype="<f8").tobytes())
            self._fp.append(h.digest())
        return self._fp[0]


# -- messages (tags 0x50xx) ------------------------------------------------------------------------
class ClientHello(Message):
    """Client -> server, first message of a connection: ``kind`` 1 = setup, 2 = inference session."""

    TAG = 0x5001
    FIELDS = (("kind", U64Field()), ("version", U64Field()))


class ModelInfo(Message):
    """Server -> client in setup: the public architecture (JSON), the model fingerprint and the
    model's tokenizer (``tokenizer.json``, public; empty when the client brings its own)."""

    TAG = 0x5002
    FIELDS = (("arch", BytesField()), ("fingerprint", FixedBytes(32)), ("tokenizer", BytesField()))


class SessionHello(Message):
    """Server -> client at the start of a session: what the client's cache must match."""

    TAG = 0x5003
    FIELDS = (("fingerprint", FixedBytes(32)), ("pk_digest", FixedBytes(32)), ("arch_digest", FixedBytes(32)),
              ("config", BytesField()), ("version", U64Field()))


class QueryHeader(Message):
    """Client -> server per query: its public length (0 ends the session) and the padding flag."""

    TAG = 0x5004
    FIELDS = (("tokens", U64Field()), ("padded", U64Field()))


def pk_digest(pk: np.ndarray) -> bytes:
    return hashlib.sha256(b"nimbus-pk-v1\x00" + np.ascontiguousarray(pk, dtype="<u8").tobytes()).digest()


def max_tokens(params: ParamSet, arch: ModelArch) -> int:
    """The longest query: the model's positions and the flooding budget of the HE set."""
    lim = max_query_tokens(params.he) if params.he is not None else None
    return min(arch.max_positions, lim) if lim else arch.max_positions


# -- helpers shared by the protocol and the ideal functionality -----------------------------------
def attention_mask(valid: np.ndarray) -> np.ndarray:
    """The client's additive mask (1, 1, n) on the keys: 0 on real tokens, MASK_VALUE on padding."""
    v = np.asarray(valid, dtype=bool).reshape(-1)
    return np.where(v, 0.0, MASK_VALUE)[None, None, :]


def pool_weights(valid: np.ndarray) -> np.ndarray:
    """Mean-pooling weights (n,) uint64: ``valid_j * round(2^K / count)``."""
    v = np.asarray(valid, dtype=bool).reshape(-1)
    count = int(v.sum())
    if count < 1:
        raise ShapeError("a query needs at least one real token")
    return v.astype(np.uint64) * np.uint64(round((1 << LN_K) / count))


def _check_query(params: ParamSet, arch: ModelArch, tokens, valid):
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or tokens.dtype.kind not in "iu" or tokens.size < 1:
        raise ShapeError("tokens must be a non-empty 1-d integer array")
    n = tokens.size
    if n > max_tokens(params, arch):
        raise ShapeError(f"{n} tokens: this model and parameter set take at most {max_tokens(params, arch)}")
    if tokens.min() < 0 or tokens.max() >= arch.vocab:
        raise ShapeError("token id out of the vocabulary")
    valid = np.ones(n, dtype=bool) if valid is None else np.asarray(valid, dtype=bool).reshape(-1)
    if valid.shape != (n,) or not valid.any():
        raise ShapeError("valid must be a (n,) boolean mask with at least one real token")
    return tokens.astype(np.int64), valid


def _floor_shift(x: np.ndarray, f: int) -> np.ndarray:
    """floor(lift_64(x) / 2^f) mod 2^64 (the exact truncation)."""
    return (np.asarray(x, dtype=np.uint64).view(np.int64) >> np.int64(f)).view(np.uint64)


def _limbs(b: np.ndarray) -> list:
    """16-bit limbs of a uint64 array as float64 arrays (least significant first), and its signed
    value as float64 when |b| < 2^24 (else None): what :func:`_matmul` needs of a weight."""
    b = np.asarray(b, dtype=np.uint64)
    sb = b.view(np.int64)
    small = not sb.size or (sb.max() < 1 << 24 and sb.min() >= -(1 << 24))
    return [((b >> np.uint64(16 * j)) & np.uint64(0xFFFF)).astype(np.float64) for j in range(4)] + \
        [sb.astype(np.float64) if small else None]


def _small_matmul(a: np.ndarray, bl: list) -> np.ndarray | None:
    """The same product when both operands are small signed values (the usual case: |a| < 2^42,
    |b| < 2^24, k < 2^11): three signed 14-bit limbs of a, exact float64 partial sums (< 2^49).
    None when a bound does not hold (the caller then takes the general path)."""
    k = a.shape[-1]
    if k >= 1 << 11 or len(bl) < 5:
        return None
    sa = a.view(np.int64)
    if sa.size and (sa.max() >= 1 << 41 or sa.min() < -(1 << 41)):
        return None
    bs = bl[4]  # the signed float64 value of b (attached by _limbs when |b| < 2^24), else None
    if bs is None:
        return None
    out = np.zeros(a.shape[:-1] + bs.shape[-1:], dtype=np.int64)
    rest = sa
    for i in range(3):  # balanced digits: a = sum_i d_i 2^(14 i), |d_i| <= 2^13 (the last one: < 2^14)
        d = rest if i == 2 else ((rest + (1 << 13)) & ((1 << 14) - 1)) - (1 << 13)
        rest = (rest - d) >> 14
        out += np.matmul(d.astype(np.float64), bs).astype(np.int64) << np.int64(14 * i)
    return out.view(np.uint64)


def _matmul(a: np.ndarray, b, b_limbs: list | None = None) -> np.ndarray:
    """Exact a @ b mod 2^64 (16-bit limbs in float64: every partial sum stays below 2^53)."""
    a = np.asarray(a, dtype=np.uint64)
    bl = b_limbs if b_limbs is not None else _limbs(b)
    if a.shape[-1] > 1 << 20:
        raise ShapeError("inner dimension too large for the exact matmul")
    fast = _small_matmul(a, bl)
    if fast is not None:
        return fast
    out = np.zeros(a.shape[:-1] + bl[0].shape[-1:], dtype=np.uint64)
    al = _limbs(a)
    for i in range(4):
        for j in range(4 - i):
            # each limb product sum < 2^32 * 2^20 = 2^52: exact in float64
            p = np.matmul(al[i], bl[j])
            out += p.astype(np.uint64) << np.uint64(16 * (i + j))
    return out


def ideal_forward(model: FixedModel, params: ParamSet, tokens, valid=None,
                  config: SecureConfig | None = None) -> np.ndarray:
    """The exact fixed-point result of one query (see the module docstring): the logits (labels,)
    at scale 2^2F, or for an embedding model the pooled vector (hidden,) at scale 2^F; uint64.

    With ``config.exact`` the secure query reconstructs to this bit for bit."""
    cfg = config or SecureConfig()
    arch = model.arch
    tokens, valid = _check_query(params, arch, tokens, valid)
    F = params.linear.frac
    n, d, H, dh = tokens.size, arch.hidden, arch.heads, arch.head_dim
    W, B = model.weights, model.biases

    def lin(x, name):
        if name not in model._limbs:  # the weights' limbs, once per model
            model._limbs[name] = _limbs(W[name])
        return _matmul(x, None, model._limbs[name]) + B[name][None, :]

    def ln(x, k, in_frac=None):
        g, b = model.ln[k]
        return ideal_layernorm(x, params, arch.eps, beta=b, gamma=g, in_frac=in_frac)

    x = W["embed"][tokens] + model.positions[:n]
    x = ln(x, 0)
    mask = attention_mask(valid) if not valid.all() else None
    for i in range(arch.layers):
        qkv = _floor_shift(lin(x, f"layer{i}.qkv"), F)
        q, k, v = (qkv[:, j * d:(j + 1) * d].reshape(n, H, dh).transpose(1, 0, 2) for j in range(3))
        s = _matmul(q, k.transpose(0, 2, 1))
        p = ideal_softmax(s, params, in_frac=2 * F, mask=mask, table=cfg.exp_table)
        c = _floor_shift(_matmul(p, v), F).transpose(1, 0, 2).reshape(n, d)
        a = lin(c, f"layer{i}.o")  # scale 2^2F: the truncation is LN1's
        h = ln((x << np.uint64(F)) + a, 2 * i + 1, 2 * F)
        g = ideal_gelu(lin(h, f"layer{i}.h1"), params, in_frac=2 * F, table=cfg.gelu_table)
        y = lin(g, f"layer{i}.h2")  # scale 2^2F: the truncation is LN2's
        x = ln((h << np.uint64(F)) + y, 2 * i + 2, 2 * F)
    if arch.pooling == "cls":
        pooled = x[:1]
        if arch.uses_pooler:
            pooled = ideal_tanh(_floor_shift(lin(pooled, "pooler"), F), params, in_frac=F, table=cfg.tanh_table)
    else:
        w = pool_weights(valid)
        pooled = _floor_shift((x * w[:, None]).sum(axis=0, dtype=np.uint64)[None, :], LN_K)
    if not arch.labels:
        return _apply_out_ln(model, params, pooled)[0]
    return lin(pooled, "head")[0]


def _apply_out_ln(model: FixedModel, params: ParamSet, pooled: np.ndarray) -> np.ndarray:
    """An embedding model's last gamma (one-sided product, exact truncation) and beta, on one row."""
    F = params.linear.frac
    if model.out_gamma is not None:
        from .nonlinear_fn import encode_gamma

        g = encode_gamma(model.out_gamma, model.out_gamma.size, params).view(np.uint64)
        pooled = _floor_shift(pooled * g[None, :], F)
    if model.out_beta is not None:
        pooled = pooled + _encode_param(model.out_beta, F)[None, :]
    return pooled


def _encode_param(v, F: int) -> np.ndarray:
    """floor(v 2^F + 1/2) in Z_2^64 (the encoding of LayerNorm's gamma and beta)."""
    return np.floor(np.asarray(v, dtype=np.float64) * (1 << F) + 0.5).astype(np.int64).view(np.uint64)


def decode_output(arch: ModelArch, params: ParamSet, out: np.ndarray) -> np.ndarray:
    """Float values of a query result (logits at 2^2F, or the embedding at 2^F)."""
    F = params.linear.frac
    scale = 2 * F if arch.labels else F
    return to_signed(np.asarray(out, dtype=np.uint64), params.linear.bits).astype(np.float64) / math.ldexp(1.0, scale)


__all__ += ["decode_output"]
