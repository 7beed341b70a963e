"""Linear layers: the client-side outer product (COP), its setup, the private embedding lookup,
and the products of two shared matrices (Q K^T, P V: ``linear.matmul``).

Message tags 0x4000-0x40ff. Everything here is normative and shared by both implementations:
the row-wise weight encoding, the output-packing layout, the mask relation, costs, ideal
functionalities. Protocol text: ``nimbus.reference.linear`` (reused by ``optimized``).

Conventions (docs/linear.md):

* Ring: the linear ring Z_2^l of the parameter set (l = he.plain_bits). Inputs X are shared
  ``X = X_c + X_s``; weights W (d_in x d_out) and bias b (d_out) are the server's, at fixed-point
  scales 2^f and 2^(2f); the output ``Y = X W + b`` is at scale 2^(2f) (truncation belongs to the
  next non-linear layer).
* Output shares: the client's share is a uniform ``U``; the server's is ``Y - U``.
* Row-wise encoding [NIMBUS24, §3.2]: the columns of W are cut into chunks of at most N
  (:func:`column_chunks`); row j_in of chunk c is the polynomial whose coefficient t is
  ``W[j_in, start_c + t]``. Encrypted rows are stored ``(chunks, d_in, 2, L, N)``.
* Output packing ("stream packing", :class:`PackLayout`): the results (token i, chunk c), each a
  polynomial with ``w_c`` used coefficients, are laid at stream offsets ``P_r = r * stride``
  (r = i * chunks + c) of a stream cut into ciphertexts of N coefficients; result r goes into
  every ciphertext it overlaps, multiplied by the monomial ``X^(P_r - c N)``. A result that
  straddles ciphertexts c|c+1 wraps (negated) onto the start of c and the end of c+1, so the
  decrypted plaintexts are ``M(Y_ext)`` for a unit-triangular-by-blocks relation M
  (:func:`mask_relation`), which the server inverts exactly (:func:`solve_relation`). With
  ``stride = d_out`` (every BERT-base shape) the utilisation is T / (C N) -> 100 %.
* Masking: the client draws ``U`` uniform over all C N stream positions and subtracts
  ``R = M(U)`` from the packed plaintexts; the server decrypts ``M(Y_ext - U)`` (uniform),
  solves, and keeps the used positions. What the server sees is uniform and independent of X_c,
  including the unused and wrapped coefficients; the noise is flooded after modulus switching.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .cost import Cost
from .errors import ParameterError, ShapeError
from .he import (Ciphertexts, HEParams, PublicKeyMsg, RnsField, SecretKey, SeededCiphertexts, analyze,
                 cop_workload, galois_key_count, he_of, pack_elements)
from .messages import FixedBytes, Message, U64Field
from .params import ParamSet
from .protocols import ProtocolSpec, register_protocol

__all__ = [
    "PROTOCOL_VERSION", "SETUP_CHUNK_ROWS", "WeightShape", "bert_shapes", "column_chunks",
    "encode_rows", "PackLayout", "pack_layout", "pack_limit", "mask_relation", "solve_relation",
    "model_fingerprint", "SetupHeader", "ideal_linear", "ideal_embedding", "cop_cost",
    "setup_cost", "embedding_cost", "check_linear_params", "setup_bytes", "cache_it_bytes",
    "cop_layout", "embed_layout", "stream_to_rows", "MatmulPlan", "matmul_plan", "encode_s", "encode_c",
    "target_positions", "decode_targets", "ideal_matmul", "matmul_cost", "matmul_he",
    "MatmulBlocks", "MatmulResponse", "SETUP_WINDOW", "SetupAck", "setup_messages", "setup_acks",
    "query_flooded", "max_query_tokens", "check_query_tokens", "MatmulKeys", "matmul_keys_cost",
    "matmul_galois", "MatmulPacking", "matmul_packing", "unpack_responses", "KS_WEIGHT_BYTES", "INPUT_WEIGHT_BYTES",
    "plan_cost", "MatmulKeyring", "ideal_matmul_keys",
]

#: Version of the linear-layer protocols and their setup/cache format (bound into the cache).
PROTOCOL_VERSION = 1

#: Rows of a weight matrix per setup message (bounded memory on both sides).
SETUP_CHUNK_ROWS = 64

#: Setup flow control: the server waits for the client's ``SetupAck`` after every window of this
#: many row messages (~270 MB at COP64), so neither side nor the driver holds more than two
#: windows, whatever the transport does.
SETUP_WINDOW = 16


@dataclass(frozen=True)
class WeightShape:
    """A named server weight matrix of the model: ``d_in x d_out`` (public: the architecture)."""

    name: str
    d_in: int
    d_out: int


def bert_shapes(layers: int = 12, hidden: int = 768, ffn: int = 3072, vocab: int = 30522,
                fused_qkv: bool = True) -> tuple[WeightShape, ...]:
    """The weight matrices of a BERT encoder (and the word-embedding table, ``embed``)."""
    out = [WeightShape("embed", vocab, hidden)]
    for i in range(layers):
        if fused_qkv:
            out.append(WeightShape(f"layer{i}.qkv", hidden, 3 * hidden))
        else:
            out += [WeightShape(f"layer{i}.{m}", hidden, hidden) for m in ("q", "k", "v")]
        out += [WeightShape(f"layer{i}.o", hidden, hidden), WeightShape(f"layer{i}.h1", hidden, ffn),
                WeightShape(f"layer{i}.h2", ffn, hidden)]
    return tuple(out)


def column_chunks(n: int, d_out: int) -> tuple[tuple[int, int], ...]:
    """``(start, width)`` of the column chunks of a d_out-wide matrix for ring degree n."""
    if d_out < 1:
        raise ShapeError(f"d_out must be >= 1, got {d_out}")
    return tuple((s, min(n, d_out - s)) for s in range(0, d_out, n))


def encode_rows(he: HEParams, W: np.ndarray) -> np.ndarray:
    """Row-wise encoding: polynomials ``(chunks, d_in, N)`` with coefficient t of [c, j] =
    ``W[j, start_c + t]`` (zero beyond the chunk). Reference: [NIMBUS24, §3.2]."""
    W = np.asarray(W)
    if W.dtype != np.uint64 or W.ndim != 2:
        raise ShapeError(f"weights must be a uint64 matrix, got {W.dtype}{W.shape}")
    ch = column_chunks(he.n, W.shape[1])
    out = np.zeros((len(ch), W.shape[0], he.n), dtype=np.uint64)
    for c, (s, w) in enumerate(ch):
        out[c, :, :w] = W[:, s:s + w]
    return out


# -- packing ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PackLayout:
    """Where every result goes (see the module docstring).

    ``starts[r]``, ``widths[r]``: stream offset and used length of result r; ``count``: C, the
    number of packed ciphertexts; ``members[c]``: ``((r, exponent), ...)`` of ciphertext c;
    ``wrap_next[c]`` / ``wrap_prev[c]``: the coefficient ranges ``(lo, hi)`` of ciphertext c that
    also hold (negated) the next / previous ciphertext's straddler.
    """

    n: int
    starts: tuple
    widths: tuple
    count: int
    members: tuple
    wrap_next: tuple
    wrap_prev: tuple

    @property
    def used(self) -> int:
        return sum(self.widths)

    @property
    def utilisation(self) -> float:
        return self.used / (self.count * self.n)

    @property
    def max_members(self) -> int:
        return max(len(m) for m in self.members)


@lru_cache(maxsize=256)
def pack_layout(n: int, widths: tuple, stride: int) -> PackLayout:
    """Layout of results of ``widths`` (each <= n) at offsets ``r * stride``."""
    if not widths or any(not 1 <= w <= n for w in widths) or stride < max(widths):
        raise ShapeError(f"bad packing: widths in [1, {n}], stride {stride} >= max width")
    starts = tuple(r * stride for r in range(len(widths)))
    count = (starts[-1] + widths[-1] + n - 1) // n
    members = [[] for _ in range(count)]
    nxt = [(0, 0)] * count
    prv = [(0, 0)] * count
    for r, (p, w) in enumerate(zip(starts, widths)):
        first, last = p // n, (p + w - 1) // n
        for c in range(first, last + 1):
            members[c].append((r, p - c * n))
        if last == first + 1:  # straddler c|c+1: wraps onto [0, p+w-(c+1)n) of c, [p-cn, n) of c+1
            nxt[first] = (0, p + w - last * n)
            prv[last] = (p - first * n, n)
    return PackLayout(n, starts, tuple(widths), count, tuple(tuple(m) for m in members), tuple(nxt), tuple(prv))


@lru_cache(maxsize=256)
def pack_limit(he: HEParams, d_in: int) -> int:
    """The most results one ciphertext may carry for a d_in-term COP with this HE set: the
    largest p <= 64 whose workload :func:`~nimbus.spec.he.cop_workload` floods soundly and
    decrypts correctly. Raises ParameterError if even p = 1 does not."""
    best = 0
    for p in range(1, 65):
        rep = analyze(he, cop_workload(d_in, p, he.plain_bits, he.response_level or he.levels))
        if not (rep.correct and rep.flooding_ok):
            break
        best = p
    if best == 0:
        raise ParameterError(f"HE set {he.name!r} cannot run a {d_in}-term COP soundly")
    return best


def cop_layout(he: HEParams, n_rows: int, d_in: int, d_out: int) -> PackLayout:
    """The packing of an (n_rows x d_in) @ (d_in x d_out) COP: dense (stride = widest chunk)
    unless the noise budget limits the results per ciphertext. Raises ParameterError when
    n_rows (tokens) exceeds :func:`max_query_tokens` of the set (its per-query flooding budget)."""
    check_query_tokens(he, n_rows)
    return _cop_layout(he, n_rows, d_in, d_out)


def _cop_layout(he: HEParams, n_rows: int, d_in: int, d_out: int) -> PackLayout:
    widths = tuple(w for _ in range(n_rows) for _, w in column_chunks(he.n, d_out))
    limit = pack_limit(he, d_in)
    stride = max(widths)
    while True:
        lay = pack_layout(he.n, widths, stride)
        if lay.max_members <= limit:
            return lay
        stride = he.n if limit == 1 else max(stride + 1, -(-he.n // (limit - 1)))


def mask_relation(u: np.ndarray, lay: PackLayout, bits: int) -> np.ndarray:
    """``R = M(U)``: ``R_c = U_c - [wrap_next] U_{c+1} - [wrap_prev] U_{c-1}`` mod 2^bits,
    the plaintext that packing turns a stream ``U`` (C, N) into."""
    m = _mask(bits)
    u = np.asarray(u, dtype=np.uint64)
    out = u.copy()
    for c in range(lay.count):
        lo, hi = lay.wrap_next[c]
        if hi > lo:
            out[c, lo:hi] = (out[c, lo:hi] - u[c + 1, lo:hi]) & m
        lo, hi = lay.wrap_prev[c]
        if hi > lo:
            out[c, lo:hi] = (out[c, lo:hi] - u[c - 1, lo:hi]) & m
    return out


def _mask(bits: int) -> np.uint64:
    return np.uint64((1 << bits) - 1)


def solve_relation(z: np.ndarray, lay: PackLayout, bits: int) -> np.ndarray:
    """The stream V with ``M(V) = Z`` (exact mod 2^bits; M is invertible because a straddler's
    two wrap ranges are disjoint when its width is <= N):
    forward ``Z'_c = Z_c + [wrap_prev] Z'_{c-1}``, backward ``V_c = Z'_c + [wrap_next] V_{c+1}``."""
    m = _mask(bits)
    z = np.array(z, dtype=np.uint64, copy=True)
    for c in range(1, lay.count):
        lo, hi = lay.wrap_prev[c]
        if hi > lo:
            z[c, lo:hi] = (z[c, lo:hi] + z[c - 1, lo:hi]) & m
    for c in range(lay.count - 2, -1, -1):
        lo, hi = lay.wrap_next[c]
        if hi > lo:
            z[c, lo:hi] = (z[c, lo:hi] + z[c + 1, lo:hi]) & m
    return z


def stream_to_rows(v: np.ndarray, lay: PackLayout, n_rows: int, d_out: int) -> np.ndarray:
    """Gather the used stream positions of (C, N) ``v`` into the (n_rows, d_out) output."""
    flat = np.asarray(v).reshape(-1)
    idx = np.concatenate([np.arange(p, p + w) for p, w in zip(lay.starts, lay.widths)])
    return flat[idx].reshape(n_rows, d_out)


# -- fingerprints and messages ----------------------------------------------------------------
def model_fingerprint(weights: dict, shapes) -> bytes:
    """SHA-256 over the names, shapes and canonical bytes of the encrypted matrices."""
    h = hashlib.sha256(b"nimbus-model-v1\x00")
    for s in shapes:
        W = np.ascontiguousarray(weights[s.name], dtype="<u8")
        if W.shape != (s.d_in, s.d_out):
            raise ShapeError(f"{s.name}: weights {W.shape} != declared ({s.d_in}, {s.d_out})")
        h.update(f"{s.name}:{s.d_in}x{s.d_out};".encode())
        h.update(W.tobytes())
    return h.digest()


class SetupHeader(Message):
    """First setup message: model fingerprint, parameter-set id, protocol version."""

    TAG = 0x4001
    FIELDS = (("fingerprint", FixedBytes(32)), ("param_id", FixedBytes(32)), ("version", U64Field()))


class SetupAck(Message):
    """Client -> server: the number of row messages received so far (flow control)."""

    TAG = 0x4002
    FIELDS = (("received", U64Field()),)


def setup_messages(he: HEParams, shapes) -> int:
    """Row messages of a setup: one per (matrix, column chunk, block of SETUP_CHUNK_ROWS rows)."""
    return sum(len(column_chunks(he.n, s.d_out)) * -(-s.d_in // SETUP_CHUNK_ROWS) for s in shapes)


def setup_acks(he: HEParams, shapes) -> int:
    """Acks of a setup: one after every full window that is followed by more row messages."""
    return max(0, -(-setup_messages(he, shapes) // SETUP_WINDOW) - 1)


def check_linear_params(params: ParamSet) -> HEParams:
    """The HE set of ``params``, checked against the linear ring (same l)."""
    he = he_of(params)
    if he.plain_bits != params.linear.bits:
        raise ParameterError(f"HE plaintext modulus 2^{he.plain_bits} != linear ring Z_2^{params.linear.bits}")
    return he


# -- ideal functionalities --------------------------------------------------------------------
def ideal_linear(x_c, x_s, W, b, u, bits: int):
    """F_linear: shares ``(U, X W + b - U)`` of ``Y = (X_c + X_s) W + b`` mod 2^bits."""
    m = (1 << bits) - 1
    X = (np.asarray(x_c, dtype=object) + np.asarray(x_s, dtype=object)) % (1 << bits)
    Y = X.dot(np.asarray(W, dtype=object))
    if b is not None:
        Y = Y + np.asarray(b, dtype=object)[None, :]
    Y = (Y % (1 << bits)).astype(np.uint64)
    u = np.asarray(u, dtype=np.uint64) & np.uint64(m)
    return u, (Y - u) & np.uint64(m)


def ideal_embedding(tokens, table, u, bits: int, extra=None):
    """F_embed: shares ``(U, E[tokens] + extra - U)`` (extra: the server's public additions)."""
    m = np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    Y = np.asarray(table, dtype=np.uint64)[np.asarray(tokens)]
    if extra is not None:
        Y = (Y + np.asarray(extra, dtype=np.uint64)) & m
    u = np.asarray(u, dtype=np.uint64) & m
    return u, (Y - u) & m


# -- costs ------------------------------------------------------------------------------------
def cop_cost(params: ParamSet, n_rows: int, d_in: int, d_out: int) -> Cost:
    """COP online: one packed-ciphertext message client -> server at the response level."""
    he = check_linear_params(params)
    lay = cop_layout(he, n_rows, d_in, d_out)
    lvl = he.response_level or he.levels
    return Cost(Ciphertexts.declared_size(he, ct=(lay.count, 2, lvl, he.n)), 0, 1)


def embedding_cost(params: ParamSet, n_tokens: int, vocab: int, hidden: int) -> Cost:
    """Embedding lookup: a COP with one-hot rows (``d_in = 1`` noise-wise: a selection)."""
    he = check_linear_params(params)
    lay = embed_layout(he, n_tokens, hidden)
    lvl = he.response_level or he.levels
    return Cost(Ciphertexts.declared_size(he, ct=(lay.count, 2, lvl, he.n)), 0, 1)


def embed_layout(he: HEParams, n_tokens: int, hidden: int) -> PackLayout:
    """Packing of the embedding lookup: a selection is a 1-term COP (noise-wise)."""
    return cop_layout(he, n_tokens, 1, hidden)


def setup_bytes(he: HEParams, s: WeightShape, chunk_rows: int = SETUP_CHUNK_ROWS) -> int:
    """Setup bytes of one matrix: its seeded ciphertexts in messages of ``chunk_rows`` rows."""
    total = 0
    for _c, _w in column_chunks(he.n, s.d_out):
        for r0 in range(0, s.d_in, chunk_rows):
            total += SeededCiphertexts.declared_size(he, c0=(min(chunk_rows, s.d_in - r0), he.levels, he.n))
    return total


def cache_it_bytes(he: HEParams, s: WeightShape) -> int:
    """Information-theoretic size of a matrix's full ciphertexts: 2 N log2(Q) bits each."""
    cts = len(column_chunks(he.n, s.d_out)) * s.d_in
    return math.ceil(cts * 2 * he.n * he.log_q() / 8)


def setup_cost(params: ParamSet, shapes) -> Cost:
    """Setup: header + public key + every matrix's seeded ciphertexts (s2c), in windows of
    ``SETUP_WINDOW`` row messages, each but the last acknowledged (c2s): 2 acks + 1 rounds."""
    he = check_linear_params(params)
    s2c = SetupHeader.declared_size(params) + PublicKeyMsg.declared_size(he, pk=(2, he.levels, he.n))
    s2c += sum(setup_bytes(he, s) for s in shapes)
    acks = setup_acks(he, shapes)
    return Cost(acks * SetupAck.declared_size(params), s2c, 2 * acks + 1)


def _random_cts(he: HEParams, shape: tuple, label: str) -> np.ndarray:
    """Uniform residues of the given (..., 2, L, N) shape: stand-ins for encrypted rows in the
    docs examples (the message flow and cost do not depend on the ciphertexts' contents)."""
    from .prg import PRG

    g = PRG(hashlib.sha256(label.encode()).digest())
    out = np.empty(shape, np.uint64)
    for i, p in enumerate(he.primes[: shape[-2]]):
        out[..., i, :] = g.uniform_mod(f"{label}/{i}", shape[:-2] + (he.n,), p)
    return out


def _keys(he: HEParams):
    from .prg import PRG

    g = PRG(b"\x00" * 32)
    sk = SecretKey(g.ternary("sk", he.n).astype(np.int64))
    return sk, _random_cts(he, (2, he.levels, he.n), "pk")


def _cop_example(params: ParamSet):
    """128 tokens @ (16 x 3072): the response (the only message) depends on n and d_out only."""
    he = check_linear_params(params)
    n, d_in, d_out = 128, 16, 3072
    sk, pk = _keys(he)
    enc = _random_cts(he, (1, d_in, 2, he.levels, he.n), "w")
    x = np.zeros((n, d_in), np.uint64)
    W = np.zeros((d_in, d_out), np.uint64)
    return (x, enc, pk, d_out), (x, W, None, sk), {}, (n, d_in, d_out)


def _setup_example(params: ParamSet):
    shapes = (WeightShape("example", 128, 768),)
    W = {"example": np.zeros((128, 768), np.uint64)}
    return (shapes,), (W, shapes), {}, (shapes,)


def _embedding_example(params: ParamSet):
    he = check_linear_params(params)
    sk, pk = _keys(he)
    table = _random_cts(he, (1, 64, 2, he.levels, he.n), "embed")
    tokens = np.arange(128) % 64
    return (tokens, table, pk, 768), (128, np.zeros((128, 768), np.uint64), sk), {}, (128, 30522, 768)


register_protocol(ProtocolSpec(
    name="linear.cop", component="linear", client="cop_client", server="cop_server",
    ideal=ideal_linear, cost=cop_cost,
    learns=("The client learns nothing (its output share U is uniform); the server decrypts "
            "M(X_c W - U) with U uniform and flooded noise: nothing about X_c."),
    reference="[NIMBUS24, §3.2-3.3] (COP, row-wise encoding, right-shift packing)", example=_cop_example))
register_protocol(ProtocolSpec(
    name="linear.setup", component="linear", client="client_setup", server="server_setup",
    ideal=model_fingerprint, cost=setup_cost,
    learns="The client learns the architecture, the fingerprint and RLWE encryptions of W (IND-CPA).",
    reference="[NIMBUS24, §3.2] (setup)", example=_setup_example))
register_protocol(ProtocolSpec(
    name="linear.embedding", component="linear", client="embed_client", server="embed_server",
    ideal=ideal_embedding, cost=embedding_cost,
    learns="The client learns nothing new; the server sees uniform masked values: nothing about the tokens.",
    reference="[NIMBUS24, §3] (COP with one-hot inputs: private lookup of cached rows)",
    example=_embedding_example))


# -- products of two shared matrices (Q K^T, P V) ---------------------------------------------------
@dataclass(frozen=True)
class MatmulPlan:
    """Block encoding of ``S (r x d) @ C (d x c)`` with S encrypted and C as plaintext polynomials
    (Cheetah's encoding, [CHEETAH22, §3.1]): blocks ``rb x db`` of S and ``db x cb`` of C with
    ``rb db cb <= N``; ``nr, nd, nc`` blocks along r, d, c. The ``nr nc`` products hold their
    ``rb cb`` results at the coefficients ``= db - 1 mod db`` (:func:`target_positions`);
    ``pack``: 1 (responses sent as they are) or ``db`` (a power of two <= 2^PACK_MAX_LEVELS:
    responses of this stride are packed ``db`` to a ciphertext, :func:`matmul_packing`)."""

    r: int
    d: int
    c: int
    rb: int
    db: int
    cb: int
    pack: int = 1

    @property
    def nr(self) -> int:
        return -(-self.r // self.rb)

    @property
    def nd(self) -> int:
        return -(-self.d // self.db)

    @property
    def nc(self) -> int:
        return -(-self.c // self.cb)

    @property
    def products(self) -> int:
        """Products (response ciphertexts before packing): nr nc."""
        return self.nr * self.nc


def _pow2_upto(v: int) -> list[int]:
    out, x = [], 1
    while x < v:
        out.append(x)
        x *= 2
    return out + [v]


def matmul_plan(he: HEParams, r: int, d: int, c: int) -> MatmulPlan:
    """The block sizes and packing factor of least :func:`plan_cost` whose noise workload
    (fresh symmetric ciphertext, product by a plaintext with db*cb non-zero l-bit coefficients,
    sum of nd products, packing of ``pack`` results at the full level, switch, flood) decrypts
    correctly and floods soundly. Raises ParameterError when no plan is sound, or when a
    dimension (tokens) exceeds :func:`max_query_tokens` of the set."""
    check_query_tokens(he, max(int(r), int(d), int(c)))
    return _matmul_plan(he, int(r), int(d), int(c))


@lru_cache(maxsize=4096)
def _matmul_sound(he: HEParams, terms: int, products: int, lvl: int, pack: int = 1) -> bool:
    packing = (("pack", pack.bit_length() - 1),) if pack > 1 else ()
    rep = analyze(he, (("fresh_sk",), ("plain_mul", he.plain_bits, terms), ("add", products)) + packing
                  + (("mod_switch", lvl), ("flood",)))
    return rep.correct and rep.flooding_ok


#: Weight of one key switch in the plan's cost model, in bytes, at N = 8192 with L = 5 primes
#: (35 NTTs: L^2 for the digits, 2L inverse, plus 2 L^2 N Montgomery products and the
#: automorphism): ~3.6 ms per key switch measured inside the packing on the development machine
#: (2 vCPUs, otherwise idle; BERT-base P V: 360 instead of 168 key switches cost the client
#: +0.7 s), the time the paper's WAN link (400 Mbit/s = 50 MB/s) moves 180 KB. Scaled by
#: (L^2 + 2L) N / (35 * 8192) for other sets.
KS_WEIGHT_BYTES = 180_000

#: Weight of the compute one seeded input ciphertext costs, in bytes, at N = 8192 with L = 5:
#: the server encrypts it (~2.1 ms: sampling, NTTs) and the client expands and transforms it
#: (~4.5 ms), ~6.7 ms together, what the same link moves in 335 KB (measured with the key
#: switches above: halving the inputs of Q K^T saved the server 0.4 s and the client more than
#: its 192 extra key switches cost). Scaled by L N / (5 * 8192) for other sets.
INPUT_WEIGHT_BYTES = 335_000


def _c0_bytes(he: HEParams, level: int) -> int:
    return he.n * sum(p.bit_length() for p in he.primes[:level]) // 8


def plan_cost(he: HEParams, p: MatmulPlan, inputs: bool = True) -> float:
    """The plan's cost model (bytes-equivalent, per cross term, packing amortised over heads):
    ``nr nd`` seeded inputs (c0 at the top level, plus ``INPUT_WEIGHT_BYTES L N / (5 * 8192)``
    of compute each unless ``inputs`` is False) + ``nr nc / pack`` responses (two components at
    the response level) + ``nr nc (1 - 1/pack)`` key switches of weight
    ``KS_WEIGHT_BYTES (L^2 + 2L) N / (35 * 8192)`` each."""
    L, lvl = he.levels, he.response_level or he.levels
    ks_w = KS_WEIGHT_BYTES * (L * L + 2 * L) * he.n / (35 * 8192)
    in_w = INPUT_WEIGHT_BYTES * L * he.n / (5 * 8192) if inputs else 0.0
    out = p.products / p.pack
    return (p.nr * p.nd * (_c0_bytes(he, L) + in_w) + out * 2 * _c0_bytes(he, lvl)
            + p.products * (1 - 1 / p.pack) * ks_w)


def _responses(p: MatmulPlan) -> float:
    return p.products / p.pack


@lru_cache(maxsize=1024)
def _matmul_plan(he: HEParams, r: int, d: int, c: int) -> MatmulPlan:
    """Least :func:`plan_cost` among the sound plans that spend no more of the flooding budget
    (response ciphertexts) than the least-cost plan without the input weight: M (``max_flooded``)
    is sized for those, and the input compute must not trade it away (without packing, denser
    inputs mean more responses)."""
    lvl = he.response_level or he.levels
    kmax = galois_key_count(he)
    sound = []
    for rb in _pow2_upto(r):
        for db in _pow2_upto(d):
            for cb in _pow2_upto(c):
                if rb * db * cb > he.n:
                    continue
                packs = [1] + ([db] if 1 < db <= 1 << kmax and not db & (db - 1) else [])
                for pk in packs:
                    p = MatmulPlan(r, d, c, rb, db, cb, pk)
                    if _matmul_sound(he, db * cb, p.nd, lvl, pk):
                        sound.append(p)
    best = None
    if sound:
        cap = _responses(min(sound, key=lambda p: plan_cost(he, p, inputs=False)))
        best = min(((plan_cost(he, p), p) for p in sound if _responses(p) <= cap), key=lambda t: t[0])
    if best is None:
        raise ParameterError(f"HE set {he.name!r} cannot multiply {r}x{d} @ {d}x{c} shared matrices soundly")
    return best[1]


@dataclass(frozen=True)
class MatmulPacking:
    """How the responses of one ``linear.matmul`` call are packed.

    ``plans``: the two cross terms' plans; ``heads``; ``groups[c] = (D, members)``: response
    ciphertext c packs the products ``members`` (indices into the unpacked list, ordered head by
    head, term 1's ``nr nc`` products then term 2's), ``len(members) <= D``; member i lands on
    the slots ``= i mod D`` (D = 1: the product as it is). Groups: for each stride D > 1 in order
    of first appearance, its products in order, D at a time (across heads and cross terms); the
    unpacked products (pack = 1) follow, one per ciphertext."""

    plans: tuple
    heads: int
    groups: tuple

    @property
    def count(self) -> int:
        return len(self.groups)

    @property
    def products(self) -> int:
        return self.heads * sum(p.products for p in self.plans)

    @property
    def key_switches(self) -> int:
        """Key switches of the packing (a level's pair costs one even when it is half empty)."""
        ks = 0
        for D, members in self.groups:
            s = D // 2
            while s >= 1:
                ks += s
                s //= 2
        return ks


@lru_cache(maxsize=1024)
def matmul_packing(p1: MatmulPlan, p2: MatmulPlan, heads: int) -> MatmulPacking:
    """The :class:`MatmulPacking` of ``heads`` heads of the cross terms planned by p1, p2."""
    strides = [pl.pack for _ in range(heads) for pl in (p1, p2) for _ in range(pl.products)]
    groups = []
    for D in dict.fromkeys(x for x in strides if x > 1):
        idx = [t for t, x in enumerate(strides) if x == D]
        groups += [(D, tuple(idx[j:j + D])) for j in range(0, len(idx), D)]
    groups += [(1, (t,)) for t, x in enumerate(strides) if x == 1]
    return MatmulPacking((p1, p2), int(heads), tuple(groups))


def unpack_responses(z: np.ndarray, pk: MatmulPacking, n: int) -> np.ndarray:
    """Decrypted (or mask) packed plaintexts (C, N) -> the unpacked products' plaintexts
    (products, N) at their target coefficients (``= D - 1 mod D``; the other coefficients 0):
    member i of a group of stride D has its coefficient ``D u + D - 1`` at ``D u + i``."""
    z = np.asarray(z)
    out = np.zeros((pk.products, n), np.uint64)
    for c, (D, members) in enumerate(pk.groups):
        for i, t in enumerate(members):
            out[t, D - 1::D] = z[c, i::D]
    return out


# -- the per-query flooding budget (spec/he.py: M = max_flooded) -----------------------------
def query_flooded(he: HEParams, tokens: int) -> int:
    """Flooded coefficients the key owner decrypts in one BERT-base query of ``tokens`` tokens
    under ``he``: the COP responses (embedding lookup + 12 layers) and the packed responses of the
    attention products (Q K^T, P V: both cross terms of 12 heads per call, :func:`matmul_packing`;
    12 layers), every coefficient of every response ciphertext (the count
    ``spec.he.BERT_BASE_FLOODED`` is sized for)."""
    t = int(tokens)
    cts = 0
    for s in bert_shapes():
        cts += (_cop_layout(he, t, 1, s.d_out) if s.name == "embed" else _cop_layout(he, t, s.d_in, s.d_out)).count
    for m, d, p in ((t, 64, t), (t, t, 64)):  # Q K^T, P V: 12 heads per call, 12 layers
        cts += 12 * matmul_packing(_matmul_plan(he, m, d, p), _matmul_plan(he, p, d, m), 12).count
    return cts * he.n


@lru_cache(maxsize=64)
def max_query_tokens(he: HEParams) -> int | None:
    """The most tokens per query the set's flooding budget allows: the largest T such that every
    BERT-base query of t <= T tokens floods at most M = ``he.max_flooded`` coefficients
    (:func:`query_flooded`). None for sets whose budget is per coefficient (M = 1: test sets)."""
    if he.max_flooded <= 1:
        return None
    t = 0
    while t < 1 << 16 and query_flooded(he, t + 1) <= he.max_flooded:
        t += 1
    return t


def check_query_tokens(he: HEParams, tokens: int) -> None:
    """Refuse a query longer than :func:`max_query_tokens` with a ParameterError (both
    implementations call it through :func:`cop_layout`, :func:`embed_layout`, :func:`matmul_plan`)."""
    limit = max_query_tokens(he)
    if limit is not None and int(tokens) > limit:
        raise ParameterError(
            f"HE set {he.name!r}: {int(tokens)} tokens exceed the per-query flooding budget "
            f"(M = 2^{math.log2(he.max_flooded):.0f} coefficients allows at most {limit} tokens per query)")


def encode_s(S_: np.ndarray, p: MatmulPlan, n: int) -> np.ndarray:
    """Polynomials (nr, nd, N): coefficient ``i db cb + k`` of block (ib, kb) = S[ib rb + i, kb db + k]."""
    pad = np.zeros((p.nr * p.rb, p.nd * p.db), np.uint64)
    pad[: p.r, : p.d] = S_
    blk = pad.reshape(p.nr, p.rb, p.nd, p.db).transpose(0, 2, 1, 3)  # (nr, nd, rb, db)
    out = np.zeros((p.nr, p.nd, n), np.uint64)
    idx = (np.arange(p.rb)[:, None] * (p.db * p.cb) + np.arange(p.db)[None, :]).reshape(-1)
    out[:, :, idx] = blk.reshape(p.nr, p.nd, -1)
    return out


def encode_c(C: np.ndarray, p: MatmulPlan, n: int) -> np.ndarray:
    """Polynomials (nd, nc, N): coefficient ``j db + db - 1 - k`` of block (kb, jb) = C[kb db + k, jb cb + j]."""
    pad = np.zeros((p.nd * p.db, p.nc * p.cb), np.uint64)
    pad[: p.d, : p.c] = C
    blk = pad.reshape(p.nd, p.db, p.nc, p.cb).transpose(0, 2, 1, 3)  # (nd, nc, db, cb)
    out = np.zeros((p.nd, p.nc, n), np.uint64)
    idx = (np.arange(p.cb)[None, :] * p.db + (p.db - 1 - np.arange(p.db))[:, None]).reshape(-1)
    out[:, :, idx] = blk.reshape(p.nd, p.nc, -1)
    return out


def target_positions(p: MatmulPlan) -> np.ndarray:
    """Coefficients holding the products: ``i db cb + j db + db - 1`` (rb, cb). Every other
    coefficient of a product holds garbage (cross terms k != k'), which the client masks too."""
    return np.arange(p.rb)[:, None] * (p.db * p.cb) + np.arange(p.cb)[None, :] * p.db + (p.db - 1)


def decode_targets(v: np.ndarray, p: MatmulPlan) -> np.ndarray:
    """(nr, nc, N) plaintexts -> the (r, c) product."""
    t = np.asarray(v)[:, :, target_positions(p)]  # (nr, nc, rb, cb)
    return t.transpose(0, 2, 1, 3).reshape(p.nr * p.rb, p.nc * p.cb)[: p.r, : p.c]


def matmul_he(params) -> HEParams:
    """The HE set of the attention products: the parameter set's ``("matmul", HEParams)``
    component if it has one (bert-base should attach ``he.MATMUL64``: its per-query flooding
    budget counts these products, COP64's does not), else ``params.he``."""
    he = params.he
    for k, v in getattr(params, "extra", ()):
        if k == "matmul":
            he = v
    if not isinstance(he, HEParams) or he.plain_bits != params.linear.bits:
        raise ParameterError("the attention products need an HE set with plaintext modulus 2^l of the linear ring")
    return he


class _MatmulRns(RnsField):
    """An RNS array of the attention products' HE set (``matmul_he(params)``)."""

    def _limbs(self, shape, params):
        return super()._limbs(shape, matmul_he(params) if isinstance(params, ParamSet) else params)


class MatmulKeys(Message):
    """Once per session, server -> client: the attention products' key material under the
    server's key: its public key ``pk`` (2, L, N) (the client's flooding) and its seeded Galois
    keys ``gk`` (G, L, L, N) with ``seed`` (output packing, :func:`matmul_galois`)."""

    TAG = 0x4013
    FIELDS = (("pk", _MatmulRns()), ("seed", FixedBytes(32)), ("gk", _MatmulRns()))


@dataclass(frozen=True)
class MatmulKeyring:
    """A session's public key material for ``linear.matmul`` (what the client keeps):
    ``pk`` (2, L, N) and the expanded Galois keys ``galois`` (G, L, 2, L, N), key t for
    ``galois_element(N, 2^t)``. Public (RLWE samples under the server's key)."""

    pk: np.ndarray
    galois: np.ndarray

    def __repr__(self):
        return f"MatmulKeyring(pk{list(np.shape(self.pk))}, galois{list(np.shape(self.galois))})"


def matmul_galois(he: HEParams) -> tuple[int, ...]:
    """The Galois elements a session's keys cover: one per packing level,
    ``pack_elements(N, galois_key_count(he))`` (N + 1, N/2 + 1, ...)."""
    return pack_elements(he.n, galois_key_count(he))


class MatmulBlocks(Message):
    """The server's seeded encryptions of its share blocks: seed and c0 (count, L, N)."""

    TAG = 0x4011
    FIELDS = (("seed", FixedBytes(32)), ("c0", _MatmulRns()))


class MatmulResponse(Message):
    """The client's masked, flooded cross terms (count, 2, L', N)."""

    TAG = 0x4012
    FIELDS = (("ct", _MatmulRns()),)


def ideal_matmul(a_c, a_s, b_c, b_s, u, bits: int):
    """F_matmul: shares ``(U, A B - U)`` of ``A B`` per head, A = a_c + a_s (H, m, d),
    B = b_c + b_s (H, d, p), mod 2^bits."""
    M = 1 << bits
    A = (np.asarray(a_c, dtype=object) + np.asarray(a_s, dtype=object)) % M
    B = (np.asarray(b_c, dtype=object) + np.asarray(b_s, dtype=object)) % M
    Y = (np.stack([A[h].dot(B[h]) for h in range(A.shape[0])]) % M).astype(np.uint64)
    mask = np.uint64(M - 1)
    u = np.asarray(u, dtype=np.uint64) & mask
    return u, (Y - u) & mask


def matmul_cost(params: ParamSet, heads: int, m: int, d: int, p: int) -> Cost:
    """``linear.matmul`` (after the session's :func:`matmul_keys_cost`): the server's seeded
    encryptions of both cross terms' S blocks (s2c), then the masked, packed responses
    (:func:`matmul_packing`, c2s): 2 rounds."""
    he = matmul_he(params)
    lvl = he.response_level or he.levels
    p1, p2 = matmul_plan(he, m, d, p), matmul_plan(he, p, d, m)
    n_in = heads * (p1.nr * p1.nd + p2.nr * p2.nd)
    n_out = matmul_packing(p1, p2, heads).count
    return Cost(MatmulResponse.declared_size(params, ct=(n_out, 2, lvl, he.n)),
                MatmulBlocks.declared_size(params, c0=(n_in, he.levels, he.n)), 2)


def matmul_keys_cost(params: ParamSet) -> Cost:
    """``linear.matmul_keys``, once per session: one :class:`MatmulKeys` (s2c), 1 round."""
    he = matmul_he(params)
    G = len(matmul_galois(he))
    return Cost(0, MatmulKeys.declared_size(params, pk=(2, he.levels, he.n), gk=(G, he.levels, he.levels, he.n)), 1)


def ideal_matmul_keys(pk, galois):
    """F_keys: the client obtains the server's public key material (nothing is secret)."""
    return MatmulKeyring(np.asarray(pk), np.asarray(galois))


def _matmul_example(params: ParamSet):
    """One head of Q K^T at 128 tokens (d = 64), after the session's key step (label ``keys``);
    the product's own messages are under ``p``; the cost scales with the heads."""
    from .protocols import Example

    a = np.zeros((1, 128, 64), np.uint64)
    b = np.zeros((1, 64, 128), np.uint64)
    sk, _ = _keys(matmul_he(params))

    def client(c):
        keys = yield from c.impl.linear.matmul_keys_client(c.sub("keys"))
        return (yield from c.impl.linear.matmul_client(c.sub("p"), a, b, keys))

    def server(s):
        yield from s.impl.linear.matmul_keys_server(s.sub("keys"), sk)
        return (yield from s.impl.linear.matmul_server(s.sub("p"), a, b, sk))

    return Example(client, server, "p", (1, 128, 64, 128))


def _matmul_keys_example(params: ParamSet):
    sk, _ = _keys(matmul_he(params))
    return (), (sk,), {}, ()


register_protocol(ProtocolSpec(
    name="linear.matmul_keys", component="linear", client="matmul_keys_client", server="matmul_keys_server",
    ideal=ideal_matmul_keys, cost=matmul_keys_cost,
    learns=("The client learns the server's public key and its Galois (key-switching) keys: RLWE samples "
            "under the server's key (IND-CPA, with the circular-security assumption of every Galois key). "
            "The server learns nothing."),
    reference="[CDKS21, §2.2] key switching with an RNS gadget, seeded as in [CHEETAH22]; sent once "
              "per session as in [BUMBLEBEE25]", example=_matmul_keys_example))
register_protocol(ProtocolSpec(
    name="linear.matmul", component="linear", client="matmul_client", server="matmul_server",
    ideal=ideal_matmul, cost=matmul_cost,
    learns=("The client learns RLWE encryptions of the server's shares (IND-CPA); the server decrypts "
            "uniformly masked values with flooded noise (the responses packed before flooding): "
            "nothing about the client's shares."),
    reference="[CHEETAH22, §3.1] block encoding for the cross terms, as used for QK^T and PV by "
              "[BUMBLEBEE25] and [NIMBUS24, §5]; output packing [CDKS21, Alg. 2], [BUMBLEBEE25, §3.2]",
    example=_matmul_example))
