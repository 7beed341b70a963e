"""Reference linear layers: COP setup, COP online, private embedding lookup [NIMBUS24, §3].

Protocol text (the ``*_client`` / ``*_server`` generators) calls its kernels through ``ctx.impl``
(``ctx.impl.linear.mac``, ``ctx.impl.linear.pack``, ``ctx.impl.rlwe.*``), so the optimized
implementation reuses this orchestration with its own kernels. The two kernels here are
definitional: :func:`mac` is the RLWE scalar multiply-accumulate, :func:`pack` sums
monomial-shifted results ciphertext by ciphertext (``nimbus.spec.linear.PackLayout``).

Shares: the client's output share of every protocol here is a uniform U; the server's is Y - U.
Scales: inputs at 2^f, weights at 2^f, bias and outputs at 2^(2f) (truncation is the next layer's).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from nimbus.reference import rlwe as _rlwe
from nimbus.spec import linear as S
from nimbus.spec.errors import ProtocolError, ShapeError
from nimbus.spec.fixedpoint import as_ring_array
from nimbus.spec.he import Ciphertexts, PublicKeyMsg, SecretKey, SeededCiphertexts
from nimbus.spec.proto import Ctx, Proto

__all__ = [
    "mac", "pack", "server_setup", "client_setup", "cop_client", "cop_server",
    "embed_client", "embed_server", "matmul_client", "matmul_server", "plain_mac",
    "matmul_keys_client", "matmul_keys_server", "pack_responses",
]


# -- kernels --------------------------------------------------------------------------------------
def mac(he, cts, x) -> np.ndarray:
    """``out[i] = sum_j lift(x[i, j]) * cts[j]``: the client's outer-product accumulation.

    Runs on: the client. Private inputs: x (n, k) uint64 in Z_2^l. Public inputs: cts
    (k, 2, L, N). Returns: (n, 2, L, N). Cost: 2 n k L N multiply-adds.
    Reference: [NIMBUS24, §3.2] step 2 (definitional: ``rlwe.mac_scalar``).
    """
    return _rlwe.mac_scalar(he, cts, x)


def pack(he, res, lay: S.PackLayout) -> np.ndarray:
    """Packed ciphertexts ``(C, 2, L, N)``: ciphertext c = sum over its members (r, e) of
    ``res[r] * X^e`` (right-shift packing, negacyclic monomials, exact).

    Runs on: the client. Inputs: res (R, 2, L, N) results. Cost: C * members monomial shifts.
    Reference: [NIMBUS24, §3.3].
    """
    res = np.asarray(res)
    if res.ndim != 4 or res.shape[0] != len(lay.widths):
        raise ShapeError(f"pack: {len(lay.widths)} results expected, got {res.shape}")
    out = []
    for members in lay.members:
        acc = None
        for r, e in members:
            term = _rlwe.mul_monomial(he, res[r], e)
            acc = term if acc is None else _rlwe.add(he, acc, term)
        out.append(acc)
    return np.stack(out)


# -- setup ----------------------------------------------------------------------------------------
def server_setup(ctx: Ctx, weights: dict, shapes) -> Proto[tuple]:
    """Server side of the COP setup: encrypt every weight matrix row-wise and stream it.

    Runs on: server. Private inputs: weights {name: W (d_in, d_out) uint64 in Z_2^l}.
    Public inputs: shapes (the architecture, a sequence of ``WeightShape``).
    Returns: ``(sk, pk)`` (the server keeps sk for every online COP).
    Cost: ``setup_cost``: header + public key + seeded ciphertexts in messages of
    ``SETUP_CHUNK_ROWS`` rows, sent in windows of ``SETUP_WINDOW`` messages, each but the last
    acknowledged by the client (bounded memory on both sides, whatever the driver).
    Reference: [NIMBUS24, §3.2]. The client learns IND-CPA encryptions of W and the fingerprint.
    """
    he = S.check_linear_params(ctx.params)
    sk = ctx.impl.rlwe.keygen(he, ctx.prg, ctx.path("sk"))  # 1. keys
    pk = ctx.impl.rlwe.keygen_public(he, sk, ctx.prg, ctx.path("pk"))
    fp = S.model_fingerprint(weights, shapes)
    yield ctx.send(S.SetupHeader(fingerprint=fp, param_id=ctx.params.id, version=S.PROTOCOL_VERSION))  # 2.
    yield ctx.send(PublicKeyMsg(pk=pk))  # 3. the public key (for the client's flooding)
    total, sent = S.setup_messages(he, shapes), 0
    for s in shapes:  # 4. every matrix, chunk of columns, block of rows: seeded c0
        W = as_ring_array(weights[s.name], ctx.params.linear, s.name)
        if W.shape != (s.d_in, s.d_out):
            raise ShapeError(f"{s.name}: weights {W.shape} != declared ({s.d_in}, {s.d_out})")
        for c in range(len(S.column_chunks(he.n, s.d_out))):
            for r0 in range(0, s.d_in, S.SETUP_CHUNK_ROWS):  # bounded memory: one block at a time
                tag = f"{s.name}/{c}/{r0}"
                polys = S.encode_rows(he, W[r0:r0 + S.SETUP_CHUNK_ROWS])[c]
                seed = ctx.seed("seed/" + tag)
                c0 = ctx.impl.rlwe.encrypt_symmetric(he, sk, polys, seed, ctx.prg, ctx.path("enc/" + tag))
                yield ctx.send(SeededCiphertexts(seed=seed, c0=c0))
                sent += 1
                if sent % S.SETUP_WINDOW == 0 and sent < total:  # 5. flow control
                    ack = yield ctx.recv(S.SetupAck)
                    if ack.received != sent:
                        raise ProtocolError(f"setup ack for {ack.received} messages, sent {sent}")
    return sk, pk


def client_setup(ctx: Ctx, shapes, sink: Callable | None = None) -> Proto[dict]:
    """Client side of the COP setup: receive, check and store the encrypted weights.

    Runs on: client. Public inputs: shapes. ``sink(kind, name, chunk, row0, msg)`` receives every
    message as it arrives (kind "header", "pk", "rows"; a cache writer); without a sink the
    expanded ciphertexts are kept in memory.
    Returns: ``{"header": SetupHeader, "pk": pk, "weights": {name: (chunks, d_in, 2, L, N)}}``
    (weights empty when a sink is given). Reference: [NIMBUS24, §3.2].
    """
    he = S.check_linear_params(ctx.params)
    hdr = yield ctx.recv(S.SetupHeader)  # 1. header: refuse other parameters or versions
    if hdr.param_id != ctx.params.id or hdr.version != S.PROTOCOL_VERSION:
        raise ProtocolError("setup header: parameter set or protocol version differs")
    pkm = yield ctx.recv(PublicKeyMsg)  # 2. public key
    if pkm.pk.shape != (2, he.levels, he.n):
        raise ProtocolError(f"public key shape {pkm.pk.shape}")
    if sink:
        sink("header", "", 0, 0, hdr)
        sink("pk", "", 0, 0, pkm)
    weights = {}
    total, got = S.setup_messages(he, shapes), 0
    for s in shapes:  # 3. every matrix: expand the seeded rows (or hand them to the sink)
        chunks = S.column_chunks(he.n, s.d_out)
        store = None if sink else np.empty((len(chunks), s.d_in, 2, he.levels, he.n), np.uint64)
        for c in range(len(chunks)):
            for r0 in range(0, s.d_in, S.SETUP_CHUNK_ROWS):
                msg = yield ctx.recv(SeededCiphertexts)
                rows = min(S.SETUP_CHUNK_ROWS, s.d_in - r0)
                if msg.c0.shape != (rows, he.levels, he.n):
                    raise ProtocolError(f"{s.name}: chunk shape {msg.c0.shape}")
                if sink:
                    sink("rows", s.name, c, r0, msg)
                else:
                    store[c, r0:r0 + rows] = ctx.impl.rlwe.expand_seeded(he, msg.seed, msg.c0)
                got += 1
                if got % S.SETUP_WINDOW == 0 and got < total:  # 4. flow control: ask for the next window
                    yield ctx.send(S.SetupAck(received=got))
        if store is not None:
            weights[s.name] = store
    return {"header": hdr, "pk": pkm.pk, "weights": weights}


# -- online: shared response path -----------------------------------------------------------------
def _respond(ctx: Ctx, he, res, lay: S.PackLayout, pk) -> Proto[np.ndarray]:
    """Steps 3-6 of the COP client: pack, switch, flood, mask, send. Returns the stream U."""
    l, lvl = he.plain_bits, he.response_level or he.levels
    packed = ctx.impl.linear.pack(he, res, lay)  # 3. right-shift packing (stream layout)
    packed = ctx.impl.rlwe.mod_switch(he, packed, lvl)  # 4. modulus switching
    packed = ctx.impl.rlwe.flood(he, pk, packed, ctx.prg, ctx.path("flood"))  # 5. re-randomise + flood
    u = ctx.uniform("u", (lay.count, he.n), l)  # 6. mask: subtract R = M(U)
    r = S.mask_relation(u, lay, l)
    trivial = np.stack([ctx.impl.rlwe.encode(he, r, lvl), np.zeros((lay.count, lvl, he.n), np.uint64)], axis=1)
    yield ctx.send(Ciphertexts(ct=ctx.impl.rlwe.sub(he, packed, trivial)))
    return u


def _receive(ctx: Ctx, he, lay: S.PackLayout, sk: SecretKey) -> Proto[np.ndarray]:
    """Steps 1-3 of the COP server: receive, decrypt, solve the packing relation: M^-1 Z."""
    lvl = he.response_level or he.levels
    msg = yield ctx.recv(Ciphertexts)
    if msg.ct.shape != (lay.count, 2, lvl, he.n):
        raise ProtocolError(f"COP response shape {msg.ct.shape}, expected {(lay.count, 2, lvl, he.n)}")
    z = ctx.impl.rlwe.decrypt(he, sk, msg.ct)
    return S.solve_relation(z, lay, he.plain_bits)


def _pk(pk, he) -> np.ndarray:
    pk = np.asarray(pk)
    if pk.dtype != np.uint64 or pk.shape != (2, he.levels, he.n):
        raise ShapeError(f"public key must be uint64 (2, {he.levels}, {he.n})")
    return pk


# -- online: COP ----------------------------------------------------------------------------------
def cop_client(ctx: Ctx, x_c: np.ndarray, enc_w: np.ndarray, pk: np.ndarray, d_out: int) -> Proto[np.ndarray]:
    """Client side of ``Y = X W + b`` with X shared (client-side outer product).

    Runs on: client. Private inputs: x_c (n, d_in) its share. Public inputs: enc_w
    (chunks, d_in, 2, L, N) the cached encrypted rows of W, pk, d_out.
    Pre-conditions: enc_w from the setup of this parameter set. Returns: U (n, d_out) uniform.
    Cost: ``cop_cost``: C packed ciphertexts at the response level, 1 round.
    Reference: [NIMBUS24, §3.2-3.3]. The client learns nothing.
    """
    he = S.check_linear_params(ctx.params)
    x_c = as_ring_array(x_c, ctx.params.linear, "x_c")
    enc_w = np.asarray(enc_w)
    chunks = S.column_chunks(he.n, int(d_out))
    if x_c.ndim != 2 or enc_w.shape[:2] != (len(chunks), x_c.shape[1]):
        raise ShapeError(f"cop: x_c {x_c.shape} vs encrypted weights {enc_w.shape} (d_out {d_out})")
    n, d_in = x_c.shape
    lay = S.cop_layout(he, n, d_in, int(d_out))
    res = np.stack([ctx.impl.linear.mac(he, _rows_of(enc_w[c], he), x_c) for c in range(len(chunks))], axis=1)  # 1-2.
    u = yield from _respond(ctx, he, res.reshape((n * len(chunks),) + res.shape[2:]), lay, _pk(pk, he))
    return S.stream_to_rows(u, lay, n, int(d_out))  # 7. the client's share U


def cop_server(ctx: Ctx, x_s: np.ndarray, W: np.ndarray, b, sk: SecretKey) -> Proto[np.ndarray]:
    """Server side of :func:`cop_client`.

    Runs on: server. Private inputs: x_s (n, d_in), W (d_in, d_out), b (d_out,) or None, sk.
    Returns: Y - U (n, d_out) at scale 2^(2f). The server decrypts M(X_c W - U): uniform.
    """
    he = S.check_linear_params(ctx.params)
    R = ctx.params.linear
    x_s, W = as_ring_array(x_s, R, "x_s"), as_ring_array(W, R, "W")
    if x_s.ndim != 2 or W.ndim != 2 or x_s.shape[1] != W.shape[0]:
        raise ShapeError(f"cop: x_s {x_s.shape} @ W {W.shape}")
    n, (d_in, d_out) = x_s.shape[0], W.shape
    lay = S.cop_layout(he, n, d_in, d_out)
    v = yield from _receive(ctx, he, lay, sk)  # 1-3. decrypt and unpack X_c W - U
    y = ctx.impl.ring.add(S.stream_to_rows(v, lay, n, d_out), ctx.impl.ring.matmul(x_s, W, R.bits), R.bits)  # 4.
    if b is not None:  # 5. bias (scale 2^(2f))
        b = as_ring_array(b, R, "b")
        if b.shape != (d_out,):
            raise ShapeError(f"bias shape {b.shape}, expected ({d_out},)")
        y = ctx.impl.ring.add(y, np.ascontiguousarray(np.broadcast_to(b, y.shape)), R.bits)
    return y


def _rows_of(cts, he):
    if cts.ndim != 4 or cts.shape[1:] != (2, he.levels, he.n):
        raise ShapeError(f"encrypted rows must be (d_in, 2, {he.levels}, {he.n}), got {cts.shape}")
    return cts


# -- online: private embedding lookup -------------------------------------------------------------
def embed_client(ctx: Ctx, tokens, enc_table: np.ndarray, pk: np.ndarray, hidden: int) -> Proto[np.ndarray]:
    """Client side of the private word-embedding lookup.

    Runs on: client. Private inputs: tokens (n,) ids in the clear. Public inputs: enc_table
    (1, vocab, 2, L, N) cached encrypted rows of E, pk, hidden (<= N).
    Returns: U (n, hidden). Cost: ``embedding_cost``, 1 round.
    Reference: [NIMBUS24, §3] (a COP whose input is one-hot: select, pack, flood, mask).
    The server sees uniform masked values: nothing about the tokens.
    """
    he = S.check_linear_params(ctx.params)
    enc_table = np.asarray(enc_table)
    tokens = np.asarray(tokens)
    if enc_table.ndim != 5 or enc_table.shape[0] != 1 or tokens.ndim != 1 or tokens.dtype.kind not in "iu":
        raise ShapeError(f"embedding: tokens (n,) ints and a one-chunk table, got {tokens.shape}, {enc_table.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= enc_table.shape[1]):
        raise ShapeError("token id out of the vocabulary")
    hidden = int(hidden)
    if not 1 <= hidden <= he.n:
        raise ShapeError(f"hidden {hidden} must be in [1, N]")
    lay = S.embed_layout(he, tokens.size, hidden)
    res = _rows_of(enc_table[0], he)[tokens.astype(np.int64)]  # 1. select the cached rows
    u = yield from _respond(ctx, he, res, lay, _pk(pk, he))  # 2-5. pack, switch, flood, mask, send
    return S.stream_to_rows(u, lay, tokens.size, hidden)


def embed_server(ctx: Ctx, n_tokens: int, extra: np.ndarray, sk: SecretKey) -> Proto[np.ndarray]:
    """Server side of :func:`embed_client`.

    Runs on: server. Private inputs: sk; extra (n, hidden): what the server adds to its share
    (position and token-type embeddings: public positions, the server's table). Returns
    E[tokens] + extra - U (n, hidden) at scale 2^f (the table's scale).
    """
    he = S.check_linear_params(ctx.params)
    R = ctx.params.linear
    extra = as_ring_array(extra, R, "extra")
    if extra.shape[0] != int(n_tokens) or extra.ndim != 2:
        raise ShapeError(f"extra must be ({n_tokens}, hidden), got {extra.shape}")
    lay = S.embed_layout(he, int(n_tokens), extra.shape[1])
    v = yield from _receive(ctx, he, lay, sk)
    return ctx.impl.ring.add(S.stream_to_rows(v, lay, int(n_tokens), extra.shape[1]), extra, R.bits)



# -- products of two shared matrices (Q K^T, P V) ---------------------------------------------------
def plain_mac(he, cts, polys) -> np.ndarray:
    """``out[j] = sum_k cts[k] * polys[k, j]``: ciphertexts times plaintext polynomials (centred
    lifts, negacyclic), summed over k.

    Runs on: the client (attention products). Inputs: cts (K, 2, L, N); polys (K, J, N) uint64
    in Z_2^l. Returns: (J, 2, L, N). Cost: K J plaintext products (NTT in optimized).
    Reference: [CHEETAH22, §3.1] (definitional: ``rlwe.mul_plain`` and ``rlwe.add``).
    """
    cts, polys = np.asarray(cts), np.asarray(polys)
    if cts.ndim != 4 or polys.ndim != 3 or polys.shape[0] != cts.shape[0] or polys.shape[2] != he.n:
        raise ShapeError(f"plain_mac: cts {cts.shape} with polys {polys.shape}")
    out = []
    for j in range(polys.shape[1]):
        prod = _rlwe.mul_plain(he, cts, np.ascontiguousarray(polys[:, j]))
        acc = prod[0]
        for k in range(1, cts.shape[0]):
            acc = _rlwe.add(he, acc, prod[k])
        out.append(acc)
    return np.stack(out)


def _cross(ctx: Ctx, he, cts, C, plan) -> np.ndarray:
    """``sum_kb Enc(S[ib, kb]) * C[kb, jb]`` for every (ib, jb): (nr * nc, 2, L, N).

    cts: the expanded S blocks (nr, nd, 2, L, N); C: the plaintext (d, c) matrix."""
    polys = S.encode_c(C, plan, he.n)  # (nd, nc, N)
    return np.concatenate([ctx.impl.linear.plain_mac(he, cts[ib], polys) for ib in range(plan.nr)])


def pack_responses(he, res, packing: S.MatmulPacking, galois) -> np.ndarray:
    """The packed response ciphertexts (C, 2, L, N) of ``linear.matmul`` at the full level.

    Runs on: the client, before modulus switching and flooding. Inputs: res (products, 2, L, N)
    the unpacked cross-term products (targets at ``D - 1 mod D``); packing; galois (G, L, 2, L, N)
    the session's Galois keys. Steps per group of stride D > 1: shift every member by X^-(D-1)
    (targets onto the multiples of D), then ``rlwe.pack_trace`` (member i onto the slots
    ``= i mod D``; missing members are zero ciphertexts); groups of stride 1 pass unchanged.
    Cost: ``packing.key_switches`` key switches. Reference: [CDKS21, Alg. 2], [BUMBLEBEE25, §3.2].
    """
    res = np.asarray(res)
    if res.ndim != 4 or res.shape[0] != packing.products:
        raise ShapeError(f"pack_responses: {packing.products} products expected, got {res.shape}")
    out = [None] * packing.count
    for D in dict.fromkeys(D for D, _ in packing.groups):
        idx = [c for c, (d, _) in enumerate(packing.groups) if d == D]
        if D == 1:
            for c in idx:
                out[c] = res[packing.groups[c][1][0]]
            continue
        batch = np.zeros((len(idx), D) + res.shape[1:], np.uint64)
        for b, c in enumerate(idx):  # 1. targets onto the multiples of D
            for i, t in enumerate(packing.groups[c][1]):
                batch[b, i] = _rlwe.mul_monomial(he, res[t], -(D - 1))
        packed = _rlwe.pack_trace(he, batch, galois)  # 2. trace-pack D at a time
        for b, c in enumerate(idx):
            out[c] = packed[b]
    return np.stack(out)


def _galois_shape(he) -> tuple:
    G = len(S.matmul_galois(he))
    return (G, he.levels, 2, he.levels, he.n)


def matmul_keys_server(ctx: Ctx, sk: SecretKey) -> Proto[S.MatmulKeyring]:
    """Server side of the session's key step for ``linear.matmul``: send the products' public key
    and seeded Galois keys, once per session (a query runs 2 products per layer).

    Runs on: server. Private inputs: sk (the setup key; its s keys the products' HE set).
    Returns: the :class:`~nimbus.spec.linear.MatmulKeyring` the client obtains.
    Cost: ``matmul_keys_cost``: one ``MatmulKeys`` (s2c), 1 round.
    Reference: [CDKS21, §2.2], [BUMBLEBEE25]. The client learns RLWE samples under the server's key.
    """
    he = S.matmul_he(ctx.params)
    pk = ctx.impl.rlwe.keygen_public(he, sk, ctx.prg, ctx.path("pk"))  # 1. public key (flooding)
    seed = ctx.seed("galois")  # 2. Galois keys, seeded (half size on the wire)
    gk = ctx.impl.rlwe.galois_keygen(he, sk, S.matmul_galois(he), seed, ctx.prg, ctx.path("galois"))
    yield ctx.send(S.MatmulKeys(pk=pk, seed=seed, gk=gk))
    return S.MatmulKeyring(pk, ctx.impl.rlwe.expand_galois(he, seed, gk))


def matmul_keys_client(ctx: Ctx) -> Proto[S.MatmulKeyring]:
    """Client side of :func:`matmul_keys_server`: receive, check the shapes, expand the seeds.

    Runs on: client. Returns: the session's :class:`~nimbus.spec.linear.MatmulKeyring`.
    Raises ProtocolError on a key of the wrong shape (DecodeError on a malformed message).
    """
    he = S.matmul_he(ctx.params)
    msg = yield ctx.recv(S.MatmulKeys)
    want = _galois_shape(he)
    if msg.pk.shape != (2, he.levels, he.n) or msg.gk.shape != want[:2] + want[3:]:
        raise ProtocolError(f"matmul keys: pk {msg.pk.shape}, Galois keys {msg.gk.shape}, expected "
                            f"{(2, he.levels, he.n)}, {want[:2] + want[3:]}")
    return S.MatmulKeyring(msg.pk, ctx.impl.rlwe.expand_galois(he, msg.seed, msg.gk))


def _keyring(keys, he) -> S.MatmulKeyring:
    if not isinstance(keys, S.MatmulKeyring):
        raise ShapeError("matmul_client needs the session's MatmulKeyring (run matmul_keys_client first)")
    _pk(keys.pk, he)
    g = np.asarray(keys.galois)
    if g.dtype != np.uint64 or g.shape != _galois_shape(he):
        raise ShapeError(f"Galois keys must be uint64 {_galois_shape(he)}, got {g.dtype}{g.shape}")
    return keys


def matmul_client(ctx: Ctx, a_c: np.ndarray, b_c: np.ndarray, keys: S.MatmulKeyring) -> Proto[np.ndarray]:
    """Client side of shares of ``A B`` per head for shared A (H, m, d) and B (H, d, p).

    Runs on: client. Private inputs: a_c, b_c (its shares). Public inputs: the shapes; keys, the
    session's key material (:func:`matmul_keys_client`). Returns: its share (H, m, p) at scale
    2^(2f): ``A_c B_c + M`` (M: its masks at the targets).
    Cost: ``matmul_cost``: the server's seeded ciphertexts of A_s and B_s^T blocks (s2c); the
    cross terms ``A_s B_c`` and ``(B_s^T A_c^T)^T`` packed (``matmul_packing``, key switching at
    the full level), switched, flooded and masked (c2s): 2 rounds.
    Reference: [CHEETAH22, §3.1] encoding, cross terms as in [BUMBLEBEE25]; output packing
    [CDKS21, Alg. 2], [BUMBLEBEE25, §3.2]; [NIMBUS24, §5]. The client learns IND-CPA ciphertexts only.
    """
    he = S.matmul_he(ctx.params)
    R = ctx.params.linear
    a_c, b_c = as_ring_array(a_c, R, "a_c"), as_ring_array(b_c, R, "b_c")
    if a_c.ndim != 3 or b_c.ndim != 3 or a_c.shape[0] != b_c.shape[0] or a_c.shape[2] != b_c.shape[1]:
        raise ShapeError(f"matmul: A {a_c.shape} @ B {b_c.shape} per head")
    H, m, d = a_c.shape
    p = b_c.shape[2]
    p1, p2 = S.matmul_plan(he, m, d, p), S.matmul_plan(he, p, d, m)
    keys = _keyring(keys, he)
    packing = S.matmul_packing(p1, p2, H)
    n1, n2 = p1.nr * p1.nd, p2.nr * p2.nd
    msg = yield ctx.recv(S.MatmulBlocks)  # 1. the server's encrypted share blocks
    if msg.c0.shape != (H * (n1 + n2), he.levels, he.n):
        raise ProtocolError(f"matmul: {msg.c0.shape[0]} encrypted blocks, expected {H * (n1 + n2)}")
    cts = ctx.impl.rlwe.expand_seeded(he, msg.seed, msg.c0)
    res = []
    for h in range(H):  # 2. cross terms: A_s B_c and B_s^T A_c^T, plaintexts from my shares
        base = h * (n1 + n2)
        res.append(_cross(ctx, he, cts[base:base + n1].reshape((p1.nr, p1.nd) + cts.shape[1:]), b_c[h], p1))
        res.append(_cross(ctx, he, cts[base + n1:base + n1 + n2].reshape((p2.nr, p2.nd) + cts.shape[1:]),
                          a_c[h].T, p2))
    res = ctx.impl.linear.pack_responses(he, np.concatenate(res), packing, keys.galois)  # 3. pack (full level)
    lvl = he.response_level or he.levels
    res = ctx.impl.rlwe.mod_switch(he, res, lvl)  # 4. switch, flood
    res = ctx.impl.rlwe.flood(he, keys.pk, res, ctx.prg, ctx.path("flood"))
    mask = ctx.uniform("mask", (res.shape[0], he.n), R.bits)  # 5. mask every coefficient
    trivial = np.stack([ctx.impl.rlwe.encode(he, mask, lvl), np.zeros((res.shape[0], lvl, he.n), np.uint64)], axis=1)
    yield ctx.send(S.MatmulResponse(ct=ctx.impl.rlwe.sub(he, res, trivial)))
    return _shares(ctx, he, S.unpack_responses(mask, packing, he.n), a_c, b_c, p1, p2)  # 6. A_c B_c + masks


def _shares(ctx: Ctx, he, z, x, y, p1, p2) -> np.ndarray:
    """``x[h] y[h] + t1 + t2^T`` per head, t1, t2 the targets of the unpacked plaintexts z."""
    R = ctx.params.linear
    H, m, p = x.shape[0], x.shape[1], y.shape[2]
    k1, k2 = p1.nr * p1.nc, p2.nr * p2.nc
    out = np.empty((H, m, p), np.uint64)
    for h in range(H):
        base = h * (k1 + k2)
        t1 = S.decode_targets(z[base:base + k1].reshape(p1.nr, p1.nc, he.n), p1)
        t2 = S.decode_targets(z[base + k1:base + k1 + k2].reshape(p2.nr, p2.nc, he.n), p2).T
        v = ctx.impl.ring.add(ctx.impl.ring.matmul(x[h], y[h], R.bits), np.ascontiguousarray(t1), R.bits)
        out[h] = ctx.impl.ring.add(v, np.ascontiguousarray(t2), R.bits)
    return out


def matmul_server(ctx: Ctx, a_s: np.ndarray, b_s: np.ndarray, sk: SecretKey) -> Proto[np.ndarray]:
    """Server side of :func:`matmul_client` (after the session's :func:`matmul_keys_server`).
    Private inputs: a_s (H, m, d), b_s (H, d, p), sk (the setup key; its ternary s also keys the
    products' HE set). Returns: ``A_s B_s + (cross terms - M)`` (H, m, p). The server decrypts
    uniformly masked values with flooded noise; it unpacks the slots (``unpack_responses``)."""
    he = S.matmul_he(ctx.params)
    R = ctx.params.linear
    a_s, b_s = as_ring_array(a_s, R, "a_s"), as_ring_array(b_s, R, "b_s")
    if a_s.ndim != 3 or b_s.ndim != 3 or a_s.shape[0] != b_s.shape[0] or a_s.shape[2] != b_s.shape[1]:
        raise ShapeError(f"matmul: A {a_s.shape} @ B {b_s.shape} per head")
    H, m, d = a_s.shape
    p = b_s.shape[2]
    p1, p2 = S.matmul_plan(he, m, d, p), S.matmul_plan(he, p, d, m)
    packing = S.matmul_packing(p1, p2, H)
    polys = []  # 1. encode and encrypt my share blocks (A_s for A_s B_c, B_s^T for B_s^T A_c^T)
    for h in range(H):
        polys.append(S.encode_s(a_s[h], p1, he.n).reshape(-1, he.n))
        polys.append(S.encode_s(np.ascontiguousarray(b_s[h].T), p2, he.n).reshape(-1, he.n))
    seed = ctx.seed("seed")
    c0 = ctx.impl.rlwe.encrypt_symmetric(he, sk, np.concatenate(polys), seed, ctx.prg, ctx.path("enc"))
    yield ctx.send(S.MatmulBlocks(seed=seed, c0=c0))
    lvl = he.response_level or he.levels
    msg = yield ctx.recv(S.MatmulResponse)  # 2. the masked, packed cross terms
    if msg.ct.shape != (packing.count, 2, lvl, he.n):
        raise ProtocolError(f"matmul response shape {msg.ct.shape}, expected {(packing.count, 2, lvl, he.n)}")
    z = S.unpack_responses(ctx.impl.rlwe.decrypt(he, sk, msg.ct), packing, he.n)  # 3. decrypt, unpack
    return _shares(ctx, he, z, a_s, b_s, p1, p2)  # 4. A_s B_s + decrypted cross terms
