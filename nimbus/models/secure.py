"""The secure BERT graph as sans-IO generators: setup, sessions, queries.

Semantics: ``nimbus.spec.model`` (``ideal_forward`` is what a query reconstructs to, bit for bit
with an exact ``SecureConfig``). Every operator runs under a sub-context named by its category
(``Embedding``, ``Linear_qkv``, ``QK^T``, ``Softmax`` ...; ``nimbus.spec.model.category`` maps
transcript labels back), so a run's transcript gives time, bytes and rounds per category.

A connection starts with the client's :class:`ClientHello`: ``kind`` 1 runs the setup (the server
sends the public architecture, then its encrypted weights: ``linear.server_setup``), ``kind`` 2 an
inference session: the server announces the model fingerprint, the digest of its public key, the
architecture digest and the graph configuration (:class:`SessionHello`); the client refuses to go
on when its cache does not match (a stale cache is an error, never a wrong answer). Then one OT
session (Ferret), then queries: the client sends each query's public length
(:class:`QueryHeader`; 0 ends the session), both run :func:`query`, the result is opened to the
client only.

Keys: the server derives its RLWE key and its setup randomness from a long-term 32-byte secret and
the model fingerprint (:func:`setup_prg`), so every client of one model receives the same
ciphertexts and the server needs no per-client state; a new model (another fingerprint) gets an
independent key and independent encryption randomness. Online randomness is fresh (OS seeded).

Who learns what: the server learns the public length of each query and whether the client pads;
the client learns the architecture, the ciphertexts of the weights (IND-CPA) and the output.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from nimbus.spec import model as M
from nimbus.spec.errors import CacheError, ProtocolError, ShapeError
from nimbus.spec.linear import check_linear_params
from nimbus.spec.prg import PRG
from nimbus.spec.proto import Ctx, Proto

__all__ = [
    "KIND_SETUP", "KIND_SESSION", "ServerState", "ClientState", "setup_prg", "server_keys",
    "server_setup", "client_setup", "server_connection", "client_session", "query", "QueryResult",
]

KIND_SETUP, KIND_SESSION = 1, 2


def setup_prg(secret: bytes, model: M.FixedModel, params) -> PRG:
    """The server's setup PRG for one model: keyed by its long-term secret, the model fingerprint
    and the parameter set (independent keys and randomness per model)."""
    if len(secret) != 32:
        raise ShapeError("the server secret is 32 bytes")
    return PRG(hashlib.sha256(b"nimbus-server-setup-v1\x00" + secret + model.fingerprint + params.id).digest())


def _setup_ctx(params, impl, secret: bytes, model: M.FixedModel) -> Ctx:
    return Ctx("server", params, setup_prg(secret, model, params), impl).sub("setup")


def server_keys(params, impl, secret: bytes, model: M.FixedModel):
    """``(sk, pk)`` exactly as :func:`server_setup` derives them (for the online phase)."""
    he = check_linear_params(params)
    ctx = _setup_ctx(params, impl, secret, model)
    sk = impl.rlwe.keygen(he, ctx.prg, ctx.path("sk"))
    return sk, impl.rlwe.keygen_public(he, sk, ctx.prg, ctx.path("pk"))


@dataclass
class ServerState:
    """What the server holds: the fixed-point model, its keys, the graph configuration."""

    model: M.FixedModel
    secret: bytes
    params: object
    impl: object
    config: M.SecureConfig = field(default_factory=M.SecureConfig)
    sk: object = None
    pk: np.ndarray | None = None
    tokenizer: bytes = b""

    def __post_init__(self):
        has, out_gamma = _layer_structure(self.model.arch)
        got = tuple(g is not None for g, _ in self.model.ln)
        if got != has or (self.model.out_gamma is not None) != out_gamma:
            raise ShapeError("the fixed-point model's LayerNorm folding does not match its architecture")
        self.config.check(self.params)
        if self.sk is None:
            self.sk, self.pk = server_keys(self.params, self.impl, self.secret, self.model)
        self.hello = M.SessionHello(fingerprint=self.model.fingerprint, pk_digest=M.pk_digest(self.pk),
                                    arch_digest=self.model.arch.digest, config=self.config.to_json(),
                                    version=M.MODEL_PROTOCOL_VERSION)


@dataclass
class ClientState:
    """What the client holds after setup: the architecture, the server's public key, and access to
    its encrypted weights: ``matrix(name)`` -> (chunks, d_in, 2, L, N), ``embed_rows(tokens)`` ->
    (1, n, 2, L, N)."""

    arch: M.ModelArch
    fingerprint: bytes
    pk: np.ndarray
    matrix: Callable[[str], np.ndarray]
    embed_rows: Callable[[np.ndarray], np.ndarray]


# -- setup ----------------------------------------------------------------------------------------------
def server_setup(ctx: Ctx, state: ServerState) -> Proto[None]:
    """Server side of the model setup: the public architecture, then ``linear.server_setup``.

    Runs on: server, with ``ctx = _setup_ctx(...)`` semantics (its PRG from :func:`setup_prg`).
    Cost: ``ModelInfo`` + ``nimbus.spec.linear.setup_cost(arch.shapes())``."""
    m = state.model
    yield ctx.send(M.ModelInfo(arch=m.arch.to_json(), fingerprint=m.fingerprint, tokenizer=state.tokenizer))
    sk, pk = yield from ctx.impl.linear.server_setup(ctx, m.matrices(), m.arch.shapes())
    if not np.array_equal(pk, state.pk):
        raise ProtocolError("setup key differs from the server's derived key")
    return None


def client_setup(ctx: Ctx, sink_factory=None) -> Proto[dict]:
    """Client side of the model setup. ``sink_factory(arch, fingerprint, tokenizer)`` returns a sink for
    ``linear.client_setup`` (a cache writer); without it the expanded ciphertexts stay in memory.
    Returns ``{"arch", "fingerprint", "pk", "weights"}``."""
    info = yield ctx.recv(M.ModelInfo)
    arch = M.ModelArch.from_json(info.arch)
    sink = sink_factory(arch, info.fingerprint, info.tokenizer) if sink_factory else None
    st = yield from ctx.impl.linear.client_setup(ctx, arch.shapes(), sink)
    return {"arch": arch, "fingerprint": info.fingerprint, "pk": st["pk"], "weights": st["weights"],
            "tokenizer": info.tokenizer}


# -- one query --------------------------------------------------------------------------------------
def _lin(ctx: Ctx, party, x: np.ndarray, name: str) -> Proto[np.ndarray]:
    """X W + b (scale 2^2F) by the client-side outer product."""
    im = ctx.impl.linear
    if ctx.is_client:
        d_out = next(s.d_out for s in party.arch.shapes() if s.name == name)
        return (yield from im.cop_client(ctx, x, party.matrix(name), party.pk, d_out))
    m = party.model
    return (yield from im.cop_server(ctx, x, m.weights[name], m.biases[name], party.sk))


def _trunc(ctx: Ctx, ot, x: np.ndarray) -> Proto[np.ndarray]:
    """floor(x / 2^F) in Z_2^64: known-MSB truncation, exact for |x| < 2^62 (|value| < 2^26)."""
    F = ctx.params.linear.frac
    shp = x.shape
    y = yield from ctx.impl.nonlinear.trunc(ctx, ot, x.reshape(-1), 64, F, "msb")
    return y.reshape(shp)


def _ln(ctx: Ctx, ot, party, x: np.ndarray, k: int, in_frac: int | None = None) -> Proto[np.ndarray]:
    arch = party.arch if ctx.is_client else party.model.arch
    nl = ctx.impl.nonlinear
    if ctx.is_client:
        has_gamma = party.ln_has_gamma[k]
        return (yield from nl.layernorm_client(ctx, ot, x, arch.eps, None, True if has_gamma else None, in_frac))
    g, b = party.model.ln[k]
    return (yield from nl.layernorm_server(ctx, ot, x, arch.eps, b, g, in_frac))


def query(ctx: Ctx, ot, party, n: int, padded: bool, tokens=None, valid=None) -> Proto[np.ndarray | None]:
    """One query of the secure graph (party-symmetric; see ``nimbus.spec.model``).

    Runs on: both. Client private inputs: ``tokens`` (n,) and ``valid`` (n,) (with ``padded``);
    server private inputs: the model and sk (in ``party``). Public: n, padded, the architecture
    and the configuration. Returns: the client the output (uint64: logits at 2^2F, or the
    embedding at 2^F); the server None. Each party learns nothing else (every message is an HE
    ciphertext under the server's key with flooded noise and uniform masks, or OT traffic)."""
    params = ctx.params
    F, L = params.linear.frac, params.linear.bits
    im, nl = ctx.impl, ctx.impl.nonlinear
    client = ctx.is_client
    arch = party.arch if client else party.model.arch
    cfg = party.config
    d, H, dh = arch.hidden, arch.heads, arch.head_dim
    # 1. private embedding lookup, the server adds positions; LayerNorm
    e = ctx.sub("Embedding")
    if client:
        x = yield from im.linear.embed_client(e, np.arange(n), party.embed_rows(tokens), party.pk, d)
    else:
        x = yield from im.linear.embed_server(e, n, np.ascontiguousarray(party.model.positions[:n]), party.sk)
    x = yield from _ln(ctx.sub("LayerNorm_emb"), ot, party, x, 0)
    mask = M.attention_mask(valid) if (client and padded) else None
    for i in range(arch.layers):  # 2. encoder layers
        c = ctx.sub(f"layer{i}")
        qkv = yield from _lin(c.sub("Linear_qkv"), party, x, f"layer{i}.qkv")
        qkv = yield from _trunc(c.sub("Trunc_qkv"), ot, qkv)
        q, k, v = (np.ascontiguousarray(qkv[:, j * d:(j + 1) * d].reshape(n, H, dh).transpose(1, 0, 2)) for j in range(3))
        kt = np.ascontiguousarray(k.transpose(0, 2, 1))
        s = yield from _matmul(c.sub("QK^T"), party, q, kt)
        if client:
            p = yield from nl.softmax_client(c.sub("Softmax"), ot, s, 2 * F, mask, cfg.exp_table, cfg.softmax_trunc)
        else:
            p = yield from nl.softmax_server(c.sub("Softmax"), ot, s, 2 * F, None, cfg.exp_table, cfg.softmax_trunc)
        cv = yield from _matmul(c.sub("PV"), party, p, v)
        cv = yield from _trunc(c.sub("Trunc_pv"), ot, cv)
        cv = np.ascontiguousarray(cv.transpose(1, 0, 2).reshape(n, d))
        a = yield from _lin(c.sub("Linear_o"), party, cv, f"layer{i}.o")  # 2^2F: LN1 truncates
        h = yield from _ln(c.sub("LayerNorm1"), ot, party, (x << np.uint64(F)) + a, 2 * i + 1, 2 * F)
        g = yield from _lin(c.sub("Linear_h1"), party, h, f"layer{i}.h1")
        gelu = nl.gelu_client if client else nl.gelu_server
        g = yield from gelu(c.sub("GELU"), ot, g, 2 * F, cfg.gelu_table, cfg.gelu_trunc)
        y = yield from _lin(c.sub("Linear_h2"), party, g, f"layer{i}.h2")  # 2^2F: LN2 truncates
        x = yield from _ln(c.sub("LayerNorm2"), ot, party, (h << np.uint64(F)) + y, 2 * i + 2, 2 * F)
    hd = ctx.sub("Head")  # 3. pooling, pooler, head
    if arch.pooling == "cls":
        pooled = np.ascontiguousarray(x[:1])
        if arch.uses_pooler:
            pooled = yield from _lin(hd.sub("Linear_pooler"), party, pooled, "pooler")
            pooled = yield from _trunc(hd.sub("Trunc_pooler"), ot, pooled)
            th = nl.tanh_client if client else nl.tanh_server
            pooled = yield from th(hd.sub("Tanh"), ot, pooled, F, cfg.tanh_table)
    else:
        if padded:  # the client's private weights valid_j / count: a product of shares (server's: 0)
            w = M.pool_weights(valid) if client else np.zeros(n, np.uint64)
            wx = yield from nl.mul_rows(hd.sub("Pool_mul"), ot, x.reshape(n, d), w, L)
        else:
            wx = x * M.pool_weights(np.ones(n, bool))[:, None]
        s = wx.sum(axis=0, dtype=np.uint64)[None, :]
        pooled = yield from ctx.impl.nonlinear.trunc(hd.sub("Pool_trunc"), ot, s.reshape(-1), 64, M.LN_K, "msb")
        pooled = pooled.reshape(1, d)
    if arch.labels:
        out = yield from _lin(hd.sub("Linear_head"), party, pooled, "head")
    else:
        out = yield from _out_ln(hd.sub("Out_ln"), ot, party, pooled)
    o = ctx.sub("Output")  # 4. opened to the client only
    if client:
        return (yield from im.sharing.reveal_client(o, out))[0]
    yield from im.sharing.reveal_server(o, out)
    return None


def _matmul(ctx: Ctx, party, a: np.ndarray, b: np.ndarray) -> Proto[np.ndarray]:
    """Q K^T or P V: the client uses the session's key material (``matmul_keys``, sent once)."""
    im = ctx.impl.linear
    if ctx.is_client:
        return (yield from im.matmul_client(ctx, a, b, party.matmul_keys))
    return (yield from im.matmul_server(ctx, a, b, party.sk))


def _out_ln(ctx: Ctx, ot, party, pooled: np.ndarray) -> Proto[np.ndarray]:
    """An embedding model's last gamma (one-sided product by the server's plaintext) and beta."""
    F = ctx.params.linear.frac
    client = ctx.is_client
    has_g = party.out_gamma if client else party.model.out_gamma is not None
    if has_g:  # |pooled| < 2^(F + 6): a mean of LayerNorm outputs
        from nimbus.reference._nl_functions import apply_gamma
        from nimbus.spec.nonlinear_fn import encode_gamma

        g = None if client else encode_gamma(party.model.out_gamma, pooled.shape[-1], ctx.params)
        pooled = (yield from apply_gamma(ctx, ot, pooled.reshape(-1), g)).reshape(1, -1)
    if not client and party.model.out_beta is not None:
        pooled = pooled + M._encode_param(party.model.out_beta, F)[None, :]
    return pooled


# -- sessions -----------------------------------------------------------------------------------------
@dataclass
class _ClientParty:
    arch: M.ModelArch
    pk: np.ndarray
    matrix: Callable
    embed_rows: Callable
    config: M.SecureConfig
    ln_has_gamma: tuple
    out_gamma: bool


@dataclass
class _ServerParty:
    model: M.FixedModel
    sk: object
    config: M.SecureConfig


@dataclass(frozen=True)
class QueryResult:
    output: np.ndarray        # uint64 (labels,) at 2^2F or (hidden,) at 2^F
    values: np.ndarray        # float64 decoded
    tokens: int


def server_connection(ctx: Ctx, state: ServerState, on_query=None) -> Proto[str]:
    """Server side of one connection: setup or a session (chosen by the client's hello).

    Returns ``"setup"`` or ``"session:<queries>"``. ``on_query(k, n)`` is called per query."""
    hello = yield ctx.recv(M.ClientHello)
    if hello.version != M.MODEL_PROTOCOL_VERSION:
        raise ProtocolError(f"client speaks model protocol {hello.version}, server {M.MODEL_PROTOCOL_VERSION}")
    if hello.kind == KIND_SETUP:
        sctx = Ctx(ctx.role, ctx.params, setup_prg(state.secret, state.model, ctx.params), ctx.impl, ctx.label)
        yield from server_setup(sctx.sub("setup"), state)
        return "setup"
    if hello.kind != KIND_SESSION:
        raise ProtocolError(f"unknown connection kind {hello.kind}")
    yield ctx.sub("Hello").send(state.hello)
    # the attention products' public and Galois keys, once per session (category QK^T&PV)
    yield from ctx.impl.linear.matmul_keys_server(ctx.sub("QK^T").sub("keys"), state.sk)
    ot = yield from ctx.impl.ot.ot_setup_server(ctx.sub("OT"), state.config.ot_kind or None, ahead=True)
    party = _ServerParty(state.model, state.sk, state.config)
    limit = M.max_tokens(ctx.params, state.model.arch)
    k = 0
    while True:
        hdr = yield ctx.recv(M.QueryHeader)
        qctx = ctx.sub(f"q{k}") if hdr.tokens else None
        if hdr.tokens == 0:
            yield from ot.finish()  # the client's look-ahead refill still on its way
            return f"session:{k}"
        if hdr.tokens > limit or hdr.padded not in (0, 1):
            raise ShapeError(f"query of {hdr.tokens} tokens: this model takes at most {limit}")
        if on_query:
            on_query(k, int(hdr.tokens))
        yield from query(qctx, ot, party, int(hdr.tokens), bool(hdr.padded))
        k += 1


def client_hello_setup(ctx: Ctx) -> Proto[None]:
    yield ctx.sub("Hello").send(M.ClientHello(kind=KIND_SETUP, version=M.MODEL_PROTOCOL_VERSION))


def client_run_setup(ctx: Ctx, sink_factory=None) -> Proto[dict]:
    """Client side of a setup connection (hello, then :func:`client_setup`)."""
    yield from client_hello_setup(ctx)
    return (yield from client_setup(ctx.sub("setup"), sink_factory))


def client_session(ctx: Ctx, state: ClientState, queries: Sequence, on_result=None) -> Proto[list]:
    """Client side of an inference session: check the server's hello against the cache, set up
    OT, run every query ``(tokens, valid_or_None)``, end the session. Returns QueryResults.

    Raises :class:`CacheError` when the cache was made for another model, key, architecture or
    protocol version (run setup again)."""
    yield ctx.sub("Hello").send(M.ClientHello(kind=KIND_SESSION, version=M.MODEL_PROTOCOL_VERSION))
    hello = yield ctx.recv(M.SessionHello)
    if hello.version != M.MODEL_PROTOCOL_VERSION:
        raise ProtocolError(f"server speaks model protocol {hello.version}, client {M.MODEL_PROTOCOL_VERSION}")
    if hello.fingerprint != state.fingerprint or hello.arch_digest != state.arch.digest:
        raise CacheError("the cache does not match the server's model (the server has model "
                         f"{hello.fingerprint.hex()[:16]}..., the cache {state.fingerprint.hex()[:16]}...): "
                         "run setup again")
    if hello.pk_digest != M.pk_digest(state.pk):
        raise CacheError("the cache does not match the server's key (same model, but the server's key "
                         "changed, e.g. another --key-file): run setup again")
    config = M.SecureConfig.from_json(hello.config).check(ctx.params)
    mm_keys = yield from ctx.impl.linear.matmul_keys_client(ctx.sub("QK^T").sub("keys"))  # once per session
    ot = yield from ctx.impl.ot.ot_setup_client(ctx.sub("OT"), config.ot_kind or None, ahead=True)
    info = _layer_structure(state.arch)
    party = _ClientParty(state.arch, state.pk, state.matrix, state.embed_rows, config, *info)
    party.matmul_keys = mm_keys
    out = []
    for k, item in enumerate(queries):
        tokens, valid, padded = _unpack_query(item)
        tokens, valid = M._check_query(ctx.params, state.arch, tokens, valid)
        padded = bool(padded) or not valid.all()
        qctx = ctx.sub(f"q{k}")
        yield qctx.sub("Hello").send(M.QueryHeader(tokens=tokens.size, padded=int(padded)))
        res = yield from query(qctx, ot, party, tokens.size, padded, tokens, valid)
        r = QueryResult(res, M.decode_output(state.arch, ctx.params, res), int(valid.sum()))
        out.append(r)
        if on_result:
            on_result(k, r)
    yield ctx.sub("Hello_end").send(M.QueryHeader(tokens=0, padded=0))
    yield from ot.finish()  # the server's look-ahead refill still on its way
    return out


def _unpack_query(item):
    """A query: token ids, or ``(tokens, valid)``, or ``(tokens, valid, padded)`` (``padded``: the
    client pads to a public length; then the server is told "padded" even when nothing was
    padded, so the flag reveals nothing about the true length)."""
    if isinstance(item, tuple):
        if len(item) == 3:
            return item
        if len(item) == 2:
            return item[0], item[1], False
        raise ShapeError("a query is tokens, (tokens, valid) or (tokens, valid, padded)")
    return item, None, False


def _layer_structure(arch: M.ModelArch):
    """Which LayerNorms apply gamma by protocol (public: it follows from the architecture)."""
    has = [True] * (2 * arch.layers + 1)
    has[-1] = False
    out_gamma = not (arch.uses_pooler or arch.labels)
    return tuple(has), out_gamma
