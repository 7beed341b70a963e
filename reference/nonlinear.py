"""Reference non-linear protocols on shares: comparison, DReLU, AND, mux, B2A, products,
truncation and ring conversion, max; and the functions built on them (``nonlinear_fn``).

Every party function takes ``(ctx, ot, ...)``: ``ot`` is this party's random-COT session (see
``nimbus.spec.nonlinear``). Arithmetic shares are ``uint64`` arrays in Z_2^bits, boolean shares
``uint8`` arrays of 0/1. Local kernels are called through ``ctx.impl.nonlinear`` so the optimized
implementation reuses this orchestration with its own kernels (numba).

Each protocol's messages and rounds are fixed by ``nimbus.spec.nonlinear`` (costs and ideal
functionalities there). What a party learns: only uniformly masked values (OT choice
corrections, OT-masked tables, Beaver openings); see each registry entry.
"""

from __future__ import annotations

import numpy as np

from nimbus.spec.errors import ParameterError, ProtocolError, ShapeError
from nimbus.spec.nonlinear import (
    DOM_NL_ACOT, DOM_NL_LEAF, DOM_NL_TRIPLE, DOM_NL_VACOT, RADIX, TRUNC_MODES, AcotChoices, AcotCorrections,
    AndOpen, LeafChoices, LeafTables, crh, max_schedule, nblocks, ring_mask, take_pair, take_recv,
    take_send, vacot_lanes,
)
from nimbus.spec.ot import pack_choice, pack_ring, unpack_choice, unpack_ring
from nimbus.spec.proto import Ctx, Proto

__all__ = [
    # kernels (twins in nimbus.optimized.nonlinear)
    "hash_pair", "hash_one", "hash_pair_words", "hash_one_words", "pack_words", "unpack_words", "acot_sender", "acot_receiver", "leaf_encrypt", "leaf_decrypt", "acot_send_words", "acot_recv_words", "split_blocks",
    "bits_lsb_first", "vacot_pads", "vacot_sender", "vacot_receiver",
    # primitives
    "and_client", "and_server", "millionaire_client", "millionaire_server",
    "drelu_client", "drelu_server", "msb_client", "msb_server", "wrap_client", "wrap_server",
    "b2a_client", "b2a_server", "mux_client", "mux_server", "mul_client", "mul_server",
    "mul_rows_client", "mul_rows_server", "square_client", "square_server", "trunc_client", "trunc_server",
    "trunc_upcast_client", "trunc_upcast_server", "downcast_trunc_client", "downcast_trunc_server",
    "max_client", "max_server",
    # party-symmetric building blocks (used by nonlinear_fn)
    "and_bits", "millionaire", "b2a", "mux", "mul", "mul_rows", "vacot", "square", "trunc", "trunc_upcast",
    "downcast_trunc", "drelu", "drelu_group", "drelu_finish", "maximum",
    # functions (nimbus.reference._nl_functions)
    "gelu_client", "gelu_server", "softmax_client", "softmax_server", "tanh_client", "tanh_server",
    "layernorm_client", "layernorm_server", "reciprocal_client", "reciprocal_server",
    "rsqrt_client", "rsqrt_server",
]


# ===================================================================== kernels (reference)
def hash_pair(q: np.ndarray, delta: np.ndarray, d: np.ndarray, index0: int, domain: int):
    """COT sender's two keys per COT: ``H(q ^ d*delta)``, ``H(q ^ (1-d)*delta)`` (blocks (n, 2)),
    tweaks ``(index0 + i, domain)``; d = 0/1 per COT (the receiver's correction)."""
    dm = (np.uint64(0) - np.asarray(d, dtype=np.uint64))[:, None] & delta[None, :]
    return crh(q ^ dm, index0, domain), crh(q ^ dm ^ delta[None, :], index0, domain)


def hash_one(t: np.ndarray, index0: int, domain: int) -> np.ndarray:
    """COT receiver's key per COT: ``H(t)`` (blocks (n, 2))."""
    return crh(t, index0, domain)


def hash_pair_words(q: np.ndarray, delta: np.ndarray, d: np.ndarray, index0: int, domain: int):
    """Low 64-bit words of :func:`hash_pair` (ACOT pads, triple bits)."""
    h0, h1 = hash_pair(q, delta, d, index0, domain)
    return h0[:, 0].copy(), h1[:, 0].copy()


def hash_one_words(t: np.ndarray, index0: int, domain: int) -> np.ndarray:
    """Low 64-bit words of :func:`hash_one`."""
    return hash_one(t, index0, domain)[:, 0].copy()


def _bit(block: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Bit ``pos`` (0..127) of each 128-bit block (n, 2)."""
    pos = np.asarray(pos, dtype=np.uint64)
    word = np.where(pos >= 64, block[:, 1], block[:, 0])
    return ((word >> (pos & np.uint64(63))) & np.uint64(1)).astype(np.uint8)


def _two_words(k: np.ndarray) -> np.ndarray:
    """Keys (L, m, nw): nw = 1 (low words suffice for m <= 5) is zero-extended to blocks."""
    if k.shape[2] == 2:
        return k
    return np.concatenate([k, np.zeros_like(k)], axis=2)


def leaf_encrypt(k0: np.ndarray, k1: np.ndarray, b: np.ndarray, gt_s: np.ndarray,
                 eq_s: np.ndarray, m: int) -> bytes:
    """Sender's leaf tables, packed: for leaf j and v in [0, 2^m), the bits
    ``[v > b_j] ^ gt_s_j ^ pad_v[2v]`` and ``[v == b_j] ^ eq_s_j ^ pad_v[2v+1]`` at bit positions
    ``(j 2^m + v) 2`` and ``+ 1`` of the payload (little-endian bit order).

    Representation: k0, k1 (L, m, nw) uint64 words of ``K_i^0, K_i^1`` (nw = 1 when
    2^(m+1) <= 64: only the low word is used, else 2); pad_v = ``xor_i K_i^{v_i}``.
    """
    L = b.shape[0]
    k0, k1 = _two_words(k0), _two_words(k1)
    out = np.zeros((L, 1 << m, 2), dtype=np.uint8)
    for v in range(1 << m):  # 1. every possible choice v of the receiver
        pad = np.zeros((L, 2), dtype=np.uint64)
        for i in range(m):  # 2. the pad of v: xor of the keys selected by v's bits
            pad ^= k1[:, i] if (v >> i) & 1 else k0[:, i]
        gt = (np.uint64(v) > b).astype(np.uint8) ^ gt_s  # 3. masked payload bits
        eq = (np.uint64(v) == b).astype(np.uint8) ^ eq_s
        out[:, v, 0] = gt ^ _bit(pad, np.full(L, 2 * v))
        out[:, v, 1] = eq ^ _bit(pad, np.full(L, 2 * v + 1))
    return pack_choice(out.reshape(-1))  # 4. packed, leaf-major


def leaf_decrypt(kt: np.ndarray, a: np.ndarray, data: bytes, m: int):
    """Receiver's leaf outputs from the packed tables: the (gt, eq) pair at its choice a,
    unmasked with its keys ``xor_i H(t_i)``."""
    L = a.shape[0]
    tables = unpack_choice(data, L << (m + 1)).reshape(L, 1 << m, 2)
    kt = _two_words(kt)
    pad = np.zeros((L, 2), dtype=np.uint64)
    for i in range(m):
        pad ^= kt[:, i]
    idx = np.arange(L)
    av = a.astype(np.int64)
    gt = tables[idx, av, 0] ^ _bit(pad, 2 * a)
    eq = tables[idx, av, 1] ^ _bit(pad, 2 * a + np.uint64(1))
    return gt.astype(np.uint8), eq.astype(np.uint8)


def pack_words(values: np.ndarray, bits: int) -> bytes:
    """Ring values packed at ``bits`` bits each (the spec's canonical packer)."""
    return pack_ring(values, bits)


def unpack_words(data: bytes, n: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_words`; rejects a wrong length or non-zero padding."""
    return unpack_ring(data, n, bits)


def acot_send_words(h0: np.ndarray, h1: np.ndarray, c: np.ndarray, bits: int):
    """ACOT sender: ``u = h1 - h0 - c`` and output ``-h0``, all mod 2^bits."""
    mk = ring_mask(bits)
    return (h1 - h0 - c) & mk, (np.uint64(0) - h0) & mk


def acot_recv_words(ht: np.ndarray, b: np.ndarray, u: np.ndarray, bits: int) -> np.ndarray:
    """ACOT receiver: ``ht - b*u mod 2^bits``."""
    return (ht - b.astype(np.uint64) * u) & ring_mask(bits)


def acot_sender(q: np.ndarray, delta: np.ndarray, d: np.ndarray, index0: int, c: np.ndarray, bits: int):
    """ACOT sender on COTs (q, delta) with the receiver's corrections d and correlations c:
    ``(u, out)`` with h_b = low word of H(q ^ (d ^ b) delta) (tweaks from index0),
    ``u = h1 - h0 - c``, ``out = -h0`` mod 2^bits."""
    h0, h1 = hash_pair_words(q, delta, d, index0, DOM_NL_ACOT)
    return acot_send_words(h0, h1, c, bits)


def acot_receiver(t: np.ndarray, index0: int, b: np.ndarray, u: np.ndarray, bits: int) -> np.ndarray:
    """ACOT receiver: ``H(t) - b*u`` mod 2^bits (low word of the hash)."""
    return acot_recv_words(hash_one_words(t, index0, DOM_NL_ACOT), b, u, bits)


def vacot_pads(keys: np.ndarray, index0: int, n: int, bits: int) -> np.ndarray:
    """Vector-ACOT pads (m, n) of the keys (m, 2): pad j of key i is word j of the stream
    ``H(keys[i], index0 + i, DOM_NL_VACOT + (g << 16))``, g = 0, 1, ... (``vacot_lanes(bits)``
    words per block, little-endian), reduced mod 2^bits."""
    keys = np.ascontiguousarray(keys, dtype=np.uint64).reshape(-1, 2)
    lanes = vacot_lanes(bits)
    G = -(-n // lanes)
    if G == 0:
        return np.zeros((keys.shape[0], 0), dtype=np.uint64)
    blocks = np.stack([crh(keys, index0, DOM_NL_VACOT + (g << 16)) for g in range(G)], axis=1)
    words = blocks.reshape(keys.shape[0], -1).view(np.uint32 if lanes == 4 else np.uint64)
    return words[:, :n].astype(np.uint64) & ring_mask(bits)


def vacot_sender(q: np.ndarray, delta: np.ndarray, d: np.ndarray, index0: int, c: np.ndarray, bits: int):
    """Vector-ACOT sender on COTs (q, delta), the receiver's corrections d and correlations
    c (m, n): with P_b the pads of ``q ^ (d ^ b) delta``, ``u = P_1 - P_0 - c``, ``out = -P_0``
    (mod 2^bits), both (m, n)."""
    dm = (np.uint64(0) - np.asarray(d, dtype=np.uint64))[:, None] & delta[None, :]
    n = c.shape[1]
    p0 = vacot_pads(q ^ dm, index0, n, bits)
    p1 = vacot_pads(q ^ dm ^ delta[None, :], index0, n, bits)
    mk = ring_mask(bits)
    return (p1 - p0 - c) & mk, (np.uint64(0) - p0) & mk


def vacot_receiver(t: np.ndarray, index0: int, b: np.ndarray, u: np.ndarray, bits: int) -> np.ndarray:
    """Vector-ACOT receiver: ``P(t) - b*u`` (mod 2^bits), (m, n)."""
    p = vacot_pads(t, index0, u.shape[1], bits)
    return (p - np.asarray(b, dtype=np.uint64)[:, None] * u) & ring_mask(bits)


def split_blocks(v: np.ndarray, nbits: int, m: int) -> np.ndarray:
    """(n,) values -> (n, q) m-bit blocks, least significant first (top block zero-padded)."""
    q = nblocks(nbits, m)
    v = np.asarray(v, dtype=np.uint64).reshape(-1)
    if nbits < 64:
        v = v & ring_mask(nbits)
    sh = (np.arange(q, dtype=np.uint64) * np.uint64(m))
    return (v[:, None] >> sh[None, :]) & np.uint64((1 << m) - 1)


def bits_lsb_first(v: np.ndarray, nbits: int) -> np.ndarray:
    """(n,) values -> (n, nbits) uint8 bits, least significant first."""
    v = np.asarray(v, dtype=np.uint64).reshape(-1)
    sh = np.arange(nbits, dtype=np.uint64)
    return ((v[:, None] >> sh[None, :]) & np.uint64(1)).astype(np.uint8)


# ===================================================================== building blocks
def _u8(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.uint8).reshape(-1)


def _check_bits(x, name="b") -> np.ndarray:
    a = np.asarray(x)
    if a.dtype != np.uint8 or (a.size and a.max() > 1):
        raise ShapeError(f"{name} must be a uint8 array of 0/1 boolean shares")
    return a


def _ring(x, bits: int, name="x") -> np.ndarray:
    if not 2 <= int(bits) <= 64:
        raise ParameterError(f"ring size must be in [2, 64], got {bits}")
    a = np.asarray(x)
    if a.dtype != np.uint64:
        raise ShapeError(f"{name} must be a uint64 array of ring elements, got dtype {a.dtype}")
    if bits < 64 and a.size and int(a.max()) >> bits:
        raise ShapeError(f"{name} has elements outside Z_2^{bits}")
    return a


def _triples(ctx: Ctx, ot, n: int):
    """n bit triples (a, b, c = a & b) from one random COT per direction; no messages.
    [Cheetah, §4: silent-OT triples]"""
    K = ctx.impl.nonlinear
    (delta, q, i0), (r, t, j0) = yield from take_pair(ctx, ot, n, n)
    h0, h1 = K.hash_pair_words(q, delta, np.zeros(n, np.uint8), i0, DOM_NL_TRIPLE)  # 1. s0, s1
    s0 = (h0 & np.uint64(1)).astype(np.uint8)
    s1 = (h1 & np.uint64(1)).astype(np.uint8)
    v = (K.hash_one_words(t, j0, DOM_NL_TRIPLE) & np.uint64(1)).astype(np.uint8)  # 2. receiver
    a, b = s0 ^ s1, r.astype(np.uint8)  # 3. peer's s_r ^ my s0 ... = r_peer * (s0 ^ s1)
    c = (a & b) ^ s0 ^ v
    return a, b, c


def and_bits(ctx: Ctx, ot, x: np.ndarray, y: np.ndarray) -> Proto[np.ndarray]:
    """Boolean shares of x & y (Beaver AND with silent triples); 1 round, 2n bits each way."""
    x, y = _u8(x), _u8(y)
    n = x.size
    if n == 0:
        return np.zeros(0, dtype=np.uint8)
    a, b, c = yield from _triples(ctx, ot, n)  # 1. triples
    e, f = x ^ a, y ^ b
    yield ctx.send(AndOpen(data=pack_choice(np.concatenate([e, f]))))  # 2. open x^a, y^b
    msg = yield ctx.recv(AndOpen)
    peer = unpack_choice(msg.data, 2 * n)
    E, F = e ^ peer[:n], f ^ peer[n:]
    z = c ^ (E & b) ^ (F & a)  # 3. z = c ^ E b ^ F a (^ E F on the client)
    if ctx.is_client:
        z ^= E & F
    return z


def acot(ctx: Ctx, ot, send=(), recv=()):
    """Batched arithmetic COTs, both directions at once (2 rounds).

    ``send``: [(c, bits)] groups where this party is the ACOT sender (correlations c);
    ``recv``: [(b, bits)] groups where it is the receiver (choice bits b). Returns
    ``(sender outputs, receiver outputs)``, one array per group: sender ``-x0``, receiver
    ``x0 + b*c`` (mod 2^bits). [ALSZ13, §5.3; CrypTFlow2, §3]
    """
    K = ctx.impl.nonlinear
    send = [(np.ascontiguousarray(c, dtype=np.uint64).reshape(-1), int(w)) for c, w in send]
    recv = [(_u8(b), int(w)) for b, w in recv]
    ns, nr = sum(c.size for c, _ in send), sum(b.size for b, _ in recv)
    snd, rcv = yield from take_pair(ctx, ot, ns, nr)
    if nr:  # 1. receiver: choice corrections d = b ^ r
        r, t, j0 = rcv
        ball = np.concatenate([b for b, _ in recv])
        yield ctx.send(AcotChoices(data=pack_choice(ball ^ r)))
    outs_s = []
    if ns:  # 2. sender: u = H(q ^ (1-d) D) - H(q ^ d D) - c, output -H(q ^ d D)
        delta, q, i0 = snd
        msg = yield ctx.recv(AcotChoices)
        d = unpack_choice(msg.data, ns)
        parts, pos = [], 0
        for c, w in send:
            sl = slice(pos, pos + c.size)
            u, out = K.acot_sender(q[sl], delta, d[sl], i0 + pos, c & ring_mask(w), w)
            parts.append(K.pack_words(u, w))
            outs_s.append(out)
            pos += c.size
        yield ctx.send(AcotCorrections(data=b"".join(parts)))
    outs_r = []
    if nr:  # 3. receiver: y = H(t) - b*u
        msg = yield ctx.recv(AcotCorrections)
        data, off, pos = msg.data, 0, 0
        need = sum(-(-b.size * w // 8) for b, w in recv)
        if len(data) != need:
            raise ProtocolError(f"ACOT corrections of {len(data)} bytes, expected {need}")
        for b, w in recv:
            nb = -(-b.size * w // 8)
            u = K.unpack_words(data[off:off + nb], b.size, w)
            outs_r.append(K.acot_receiver(t[pos:pos + b.size], j0 + pos, b, u, w))
            off += nb
            pos += b.size
    return outs_s, outs_r


def _leaves(ctx: Ctx, ot, blocks: np.ndarray, m: int):
    """Leaf OTs: client (receiver, blocks = its m-bit values a) and server (sender, blocks b).
    Returns boolean shares (gt, eq) of ([a > b], [a == b]) per leaf; 2 rounds."""
    K = ctx.impl.nonlinear
    L = blocks.shape[0]
    if ctx.is_client:
        r, t, j0 = yield from take_recv(ctx, ot, L * m)  # 1. m random COTs per leaf
        choice = K.bits_lsb_first(blocks, m).reshape(-1)
        yield ctx.send(LeafChoices(data=pack_choice(choice ^ r)))  # 2. corrections
        msg = yield ctx.recv(LeafTables)  # 3. the 2^m masked pairs of each leaf
        if len(msg.data) != (L << (m + 1)) // 8 + ((L << (m + 1)) % 8 > 0):
            raise ProtocolError("leaf tables of the wrong length")
        nw = 1 if m <= 5 else 2  # 2^(m+1) pad bits: the low word suffices for m <= 5
        kt = (K.hash_one_words(t, j0, DOM_NL_LEAF) if nw == 1 else K.hash_one(t, j0, DOM_NL_LEAF)).reshape(L, m, nw)
        return K.leaf_decrypt(kt, blocks, msg.data, m)
    delta, q, i0 = yield from take_send(ctx, ot, L * m)
    msg = yield ctx.recv(LeafChoices)
    d = unpack_choice(msg.data, L * m)
    nw = 1 if m <= 5 else 2
    k0, k1 = (K.hash_pair_words if nw == 1 else K.hash_pair)(q, delta, d, i0, DOM_NL_LEAF)  # keys
    k0, k1 = k0.reshape(L, m, nw), k1.reshape(L, m, nw)
    gt_s, eq_s = ctx.bits("leaf-gt", L), ctx.bits("leaf-eq", L)  # my output shares
    yield ctx.send(LeafTables(data=K.leaf_encrypt(k0, k1, blocks, gt_s, eq_s, m)))
    return gt_s, eq_s


def millionaire(ctx: Ctx, ot, groups, m: int = RADIX):
    """Boolean shares of ``[a > b]`` per group ``[(values, nbits)]`` (client's a, server's b),
    all groups in lockstep: leaf OTs (2 rounds) then one AND round per tree level.
    [CrypTFlow2, §4.1 (radix m, tree combine)]"""
    K = ctx.impl.nonlinear
    if not 1 <= m <= 6:
        raise ParameterError("millionaire radix m must be in [1, 6]")
    blk = [K.split_blocks(v, nb, m) for v, nb in groups]  # 1. m-bit blocks, LSB first
    sizes = [b.size for b in blk]
    gt_all, eq_all = yield from _leaves(ctx, ot, np.concatenate([b.reshape(-1) for b in blk]) if blk else
                                        np.zeros(0, np.uint64), m)
    gts, eqs, pos = [], [], 0  # 2. per group (n, q) leaf shares
    for b in blk:
        gts.append(gt_all[pos:pos + b.size].reshape(b.shape))
        eqs.append(eq_all[pos:pos + b.size].reshape(b.shape))
        pos += b.size
    while any(g.shape[1] > 1 for g in gts):  # 3. one AND round per tree level
        xs, ys, plan = [], [], []
        for g, e in zip(gts, eqs):
            q = g.shape[1]
            p = q // 2 if q > 1 else 0
            if p:
                xs += [e[:, 1:2 * p:2].reshape(-1), e[:, 3:2 * p:2].reshape(-1)]
                ys += [g[:, 0:2 * p:2].reshape(-1), e[:, 2:2 * p:2].reshape(-1)]
            plan.append(p)
        z = yield from and_bits(ctx, ot, np.concatenate(xs), np.concatenate(ys))
        pos = 0
        for k, (g, e) in enumerate(zip(gts, eqs)):
            p, n = plan[k], g.shape[0]
            if not p:
                continue
            zg = z[pos:pos + n * p].reshape(n, p)
            pos += n * p
            ze = z[pos:pos + n * (p - 1)].reshape(n, p - 1)
            pos += n * (p - 1)
            ng = g[:, 1:2 * p:2] ^ zg  # gt = gt_hi ^ (eq_hi & gt_lo)
            ne = np.concatenate([e[:, 1:2:2] * 0, ze], axis=1)  # eq of pair 0 unused (zero)
            if g.shape[1] % 2:
                ng = np.concatenate([ng, g[:, -1:]], axis=1)
                ne = np.concatenate([ne, e[:, -1:]], axis=1)
            gts[k], eqs[k] = ng, ne
    return [g[:, 0].copy() for g in gts]


def drelu_group(ctx: Ctx, x: np.ndarray, bits: int):
    """DReLU's millionaire group (values, bits - 1): carry = [x_c' > 2^(l-1) - 1 - x_s'], so that
    callers can batch it with another protocol's millionaire (same rounds)."""
    x = np.ascontiguousarray(x, dtype=np.uint64).reshape(-1)
    low = ring_mask(bits - 1)
    return (x & low if ctx.is_client else low - (x & low)), bits - 1


def drelu_finish(ctx: Ctx, x: np.ndarray, bits: int, carry: np.ndarray) -> np.ndarray:
    """DReLU from the group's millionaire output: 1 ^ msb_c ^ msb_s ^ carry (local)."""
    x = np.ascontiguousarray(x, dtype=np.uint64).reshape(-1)
    msb = ((x >> np.uint64(bits - 1)) & np.uint64(1)).astype(np.uint8) ^ carry  # my MSB share
    return msb ^ np.uint8(1) if ctx.is_client else msb  # DReLU = 1 ^ MSB


def drelu(ctx: Ctx, ot, x: np.ndarray, bits: int, m: int = RADIX) -> Proto[np.ndarray]:
    """Boolean shares of [x >= 0] (signed x in Z_2^bits): msb = msb_c ^ msb_s ^ carry, carry a
    millionaire on the low bits - 1 bits. [CrypTFlow2, §4.2]"""
    (carry,) = yield from millionaire(ctx, ot, [drelu_group(ctx, x, bits)], m)  # 1. the carry
    return drelu_finish(ctx, x, bits, carry)  # 2. my share of 1 ^ MSB


def b2a(ctx: Ctx, ot, groups):
    """Arithmetic shares in Z_2^w of bits, per group ``(bits, w)`` or ``(bits, w, "or")``, all in
    one ACOT batch (server sender): boolean shares b = b_c ^ b_s = b_c + b_s - 2 b_c b_s
    (correlation -2 b_s), or with ``"or"`` the OR of the parties' own bits b_c + b_s - b_c b_s
    (correlation -b_s; the known-MSB wrap of a truncation). [CrypTFlow2, §4.3; Cheetah, §5]"""
    groups = [(_u8(g[0]), int(g[1]), 1 if g[2:] == ("or",) else 2) for g in groups]
    if ctx.is_client:
        _, ys = yield from acot(ctx, ot, recv=[(b, w) for b, w, _ in groups])
        return [(b.astype(np.uint64) + y) & ring_mask(w) for (b, w, _), y in zip(groups, ys)]
    corr = [((np.uint64(0) - np.uint64(k) * b.astype(np.uint64)) & ring_mask(w), w) for b, w, k in groups]
    outs, _ = yield from acot(ctx, ot, send=corr)
    return [(b.astype(np.uint64) + o) & ring_mask(w) for (b, w, _), o in zip(groups, outs)]


def mux(ctx: Ctx, ot, b: np.ndarray, x: np.ndarray, bits: int) -> Proto[np.ndarray]:
    """Shares of b * x: each party sends ``(1 - 2 b_me) x_me`` as an ACOT correlation selected by
    the peer's bit (both directions at once, 2 rounds). [CrypTFlow2, §4.3]"""
    b, x = _u8(b), np.ascontiguousarray(x, dtype=np.uint64).reshape(-1)
    mk = ring_mask(bits)
    bb = b.astype(np.uint64)
    corr = ((np.uint64(1) - np.uint64(2) * bb) * x) & mk  # 1. my correlation
    (o,), (y,) = yield from acot(ctx, ot, send=[(corr, bits)], recv=[(b, bits)])
    return (bb * x + o + y) & mk  # 2. b_me x_me + both ACOT outputs


def mul(ctx: Ctx, ot, x: np.ndarray, y: np.ndarray, bits: int) -> Proto[np.ndarray]:
    """Shares of x*y mod 2^bits: cross terms by bit-decomposed ACOTs, bit i of my y-share
    choosing the peer's x-share at width bits - i. [SIRNN, §3.1; Gilboa 1999]"""
    K = ctx.impl.nonlinear
    x = np.ascontiguousarray(x, dtype=np.uint64).reshape(-1)
    y = np.ascontiguousarray(y, dtype=np.uint64).reshape(-1)
    mk = ring_mask(bits)
    ybits = K.bits_lsb_first(y, bits)  # 1. my choice bits: bits of my y-share
    send = [(x, bits - i) for i in range(bits)]
    recv = [(ybits[:, i], bits - i) for i in range(bits)]
    outs, ins = yield from acot(ctx, ot, send=send, recv=recv)
    z = (x * y) & mk  # 2. x_me y_me + sum_i 2^i (sender_i + receiver_i)
    for i in range(bits):
        z = (z + ((outs[i] + ins[i]) << np.uint64(i))) & mk
    return z


def vacot(ctx: Ctx, ot, send=(), recv=()):
    """Batched vector ACOTs, both directions at once (2 rounds): one random COT per choice bit
    and n correlations per COT.

    ``send``: [(c (m, n), bits)] groups where this party is the sender (row i of c goes with
    the peer's i-th choice bit); ``recv``: [(b (m,), n, bits)] groups where it is the receiver.
    Returns ``(sender outputs, receiver outputs)``, (m, n) per group: sender ``-x0``, receiver
    ``x0 + b*c`` (mod 2^bits). [ALSZ13, §5]
    """
    K = ctx.impl.nonlinear
    send = [(np.ascontiguousarray(c, dtype=np.uint64), int(w)) for c, w in send]
    recv = [(_u8(b), int(n), int(w)) for b, n, w in recv]
    if any(c.ndim != 2 for c, _ in send):
        raise ShapeError("vector ACOT correlations must be (m, n) per group")
    ms, mr = sum(c.shape[0] for c, _ in send), sum(b.size for b, _, _ in recv)
    snd, rcv = yield from take_pair(ctx, ot, ms, mr)
    if mr:  # 1. receiver: choice corrections d = b ^ r, one per COT
        r, t, j0 = rcv
        ball = np.concatenate([b for b, _, _ in recv])
        yield ctx.send(AcotChoices(data=pack_choice(ball ^ r)))
    outs_s = []
    if ms:  # 2. sender: u = P(q ^ (1-d) D) - P(q ^ d D) - c, output -P(q ^ d D)
        delta, q, i0 = snd
        msg = yield ctx.recv(AcotChoices)
        d = unpack_choice(msg.data, ms)
        parts, pos = [], 0
        for c, w in send:
            m = c.shape[0]
            sl = slice(pos, pos + m)
            u, out = K.vacot_sender(q[sl], delta, d[sl], i0 + pos, c & ring_mask(w), w)
            parts.append(K.pack_words(u.reshape(-1), w))
            outs_s.append(out)
            pos += m
        yield ctx.send(AcotCorrections(data=b"".join(parts)))
    outs_r = []
    if mr:  # 3. receiver: y = P(t) - b*u
        msg = yield ctx.recv(AcotCorrections)
        data, off, pos = msg.data, 0, 0
        need = sum(-(-b.size * n * w // 8) for b, n, w in recv)
        if len(data) != need:
            raise ProtocolError(f"vector ACOT corrections of {len(data)} bytes, expected {need}")
        for b, n, w in recv:
            nb = -(-b.size * n * w // 8)
            u = K.unpack_words(data[off:off + nb], b.size * n, w).reshape(b.size, n)
            outs_r.append(K.vacot_receiver(t[pos:pos + b.size], j0 + pos, b, u, w))
            off += nb
            pos += b.size
    return outs_s, outs_r


def mul_rows(ctx: Ctx, ot, x: np.ndarray, y: np.ndarray, bits: int) -> Proto[np.ndarray]:
    """Shares of x * y broadcast along rows (x (rows, n), y (rows,)) mod 2^bits: bit i of my
    y-share chooses the peer's whole row of x at width bits - i through one vector ACOT, so a
    row costs bits COTs per direction instead of n * bits (the same correction bytes as
    :func:`mul`). [SIRNN, §3.1; ALSZ13, §5]"""
    K = ctx.impl.nonlinear
    x = np.ascontiguousarray(x, dtype=np.uint64)
    y = np.ascontiguousarray(y, dtype=np.uint64).reshape(-1)
    if x.ndim != 2 or x.shape[0] != y.size:
        raise ShapeError(f"mul_rows: x must be (rows, n) and y (rows,), got {x.shape} and {y.shape}")
    mk = ring_mask(bits)
    n = x.shape[1]
    if x.size == 0:  # nothing to multiply: no messages (as mul_rows_cost says)
        return x.copy()
    ybits = K.bits_lsb_first(y, bits)  # 1. my choice bits: bits of my y-share, one per row
    send = [(x, bits - i) for i in range(bits)]
    recv = [(ybits[:, i], n, bits - i) for i in range(bits)]
    outs, ins = yield from vacot(ctx, ot, send=send, recv=recv)
    z = (x * y[:, None]) & mk  # 2. x_me y_me + sum_i 2^i (sender_i + receiver_i)
    for i in range(bits):
        z = (z + ((outs[i] + ins[i]) << np.uint64(i))) & mk
    return z


def square(ctx: Ctx, ot, x: np.ndarray, bits: int) -> Proto[np.ndarray]:
    """Shares of x^2 = x_c^2 + x_s^2 + 2 x_c x_s: the one cross term, client sender, bit i of
    x_s at width bits - 1 - i. [SIRNN, §3.1]"""
    K = ctx.impl.nonlinear
    x = np.ascontiguousarray(x, dtype=np.uint64).reshape(-1)
    mk = ring_mask(bits)
    if ctx.is_client:
        outs, _ = yield from acot(ctx, ot, send=[(x, bits - 1 - i) for i in range(bits - 1)])
    else:
        xb = K.bits_lsb_first(x, bits)
        _, outs = yield from acot(ctx, ot, recv=[(xb[:, i], bits - 1 - i) for i in range(bits - 1)])
    z = (x * x) & mk
    for i in range(bits - 1):
        z = (z + (outs[i] << np.uint64(i + 1))) & mk
    return z


def _trunc_core(ctx: Ctx, ot, x: np.ndarray, bits: int, f: int, mode: str, out_bits: int,
                m: int, extra=None) -> Proto[np.ndarray]:
    """floor(lift(x) / 2^f) in Z_2^out_bits (out_bits >= bits - f):
    with u = x + 2^(l-1) (exact) or 2^(l-2) (msb modes), u = u_c + u_s - w 2^l and
    floor(u / 2^f) = (u_c >> f) + (u_s >> f) + c - w 2^(l-f) over the integers.
    ``extra``: millionaire groups of another protocol run in this truncation's millionaire batch
    (before its ACOTs when it has none); then the result is ``(z, their outputs)``.
    [SIRNN, §3.2-3.4; Cheetah, §5; NIMBUS24, §4.3]"""
    ext = list(extra or [])
    if mode not in TRUNC_MODES:
        raise ParameterError(f"truncation mode must be one of {TRUNC_MODES}, got {mode!r}")
    if not 0 <= f < bits - 1 or out_bits < bits - f or out_bits > 64 or out_bits - bits + f < 1:
        raise ParameterError(f"cannot truncate Z_2^{bits} by {f} into Z_2^{out_bits}")
    x = np.ascontiguousarray(x, dtype=np.uint64).reshape(-1)
    mk, omk = ring_mask(bits), ring_mask(out_bits)
    off = 1 << (bits - 1 if mode == "exact" else bits - 2)
    u = (x + np.uint64(off)) & mk if ctx.is_client else x  # 1. shift to a non-negative value
    lowf = ring_mask(f) if f else np.uint64(0)
    wbits = out_bits - bits + f  # w is needed mod 2^wbits only
    if mode == "exact":  # 2a. wrap and carry bits by one millionaire batch
        v = u if ctx.is_client else mk - u
        vl = u & lowf if ctx.is_client else lowf - (u & lowf)
        groups = [(v, bits)] + ([(vl, f)] if f else [])
        res = yield from millionaire(ctx, ot, groups + ext, m)
        res, ex = res[:len(groups)], res[len(groups):]
        b2 = [(res[0], wbits)] + ([(res[1], out_bits)] if f else [])
        ar = yield from b2a(ctx, ot, b2)
        w, c = ar[0], (ar[1] if f else np.zeros_like(u))
    else:  # 2b. known MSB (u < 2^(l-1)): w = msb_c OR msb_s = msb_c + msb_s - msb_c msb_s
        mb = ((u >> np.uint64(bits - 1)) & np.uint64(1)).astype(np.uint8)
        carry, ex = None, []
        if mode == "msb" and f:
            vl = u & lowf if ctx.is_client else lowf - (u & lowf)
            carry, *ex = yield from millionaire(ctx, ot, [(vl, f)] + ext, m)
        elif ext:
            ex = yield from millionaire(ctx, ot, ext, m)
        ar = yield from b2a(ctx, ot, [(mb, wbits, "or")] + ([(carry, out_bits)] if carry is not None else []))
        w = ar[0]
        c = ar[1] if carry is not None else np.zeros_like(u)
    z = ((u >> np.uint64(f)) + c - (w << np.uint64(bits - f))) & omk  # 3. the identity above
    if ctx.is_client:
        z = (z - np.uint64(off >> f)) & omk  # 4. remove the offset
    return z if extra is None else (z, list(ex))


def trunc(ctx: Ctx, ot, x, bits: int, f: int, mode: str = "exact", m: int = RADIX,
          extra=None) -> Proto[np.ndarray]:
    """Shares of floor(lift(x) / 2^f) in Z_2^bits (see :func:`_trunc_core`)."""
    return (yield from _trunc_core(ctx, ot, x, bits, f, mode, bits, m, extra))


def trunc_upcast(ctx: Ctx, ot, x, bits: int, f: int, out_bits: int, mode: str = "exact",
                 m: int = RADIX, extra=None) -> Proto[np.ndarray]:
    """Fused truncation + extension into Z_2^out_bits: the wrap bit of the truncation, B2A'd at
    out_bits - bits + f bits, is the extension. [NIMBUS24, §4.3]"""
    return (yield from _trunc_core(ctx, ot, x, bits, f, mode, out_bits, m, extra))


def downcast_trunc(ctx: Ctx, ot, x, bits: int, f: int, out_bits: int, mode: str = "exact",
                   m: int = RADIX) -> Proto[np.ndarray]:
    """floor(lift(x) / 2^f) mod 2^out_bits for bits - f >= out_bits: the wrap term
    w 2^(bits-f) vanishes mod 2^out_bits, so ``local`` is free (result floor - c, c in {0,1})
    and ``exact`` adds the carry c (millionaire on f bits + B2A). [NIMBUS24, §4.3]"""
    if bits - f < out_bits or f < 0:
        raise ParameterError("downcast_trunc needs bits - f >= out_bits")
    if mode not in ("local", "exact"):
        raise ParameterError(f"downcast mode must be 'exact' or 'local', got {mode!r}")
    x = np.ascontiguousarray(x, dtype=np.uint64).reshape(-1)
    off = np.uint64(1 << (bits - 1))
    u = (x + off) & ring_mask(bits) if ctx.is_client else x  # 1. non-negative shift
    z = u >> np.uint64(f)
    if mode != "local" and f:  # 2. the carry of the low f bits
        lowf = ring_mask(f)
        vl = u & lowf if ctx.is_client else lowf - (u & lowf)
        (carry,) = yield from millionaire(ctx, ot, [(vl, f)], m)
        (c,) = yield from b2a(ctx, ot, [(carry, out_bits)])
        z = z + c
    if ctx.is_client:
        z = z - (off >> np.uint64(f))
    return z & ring_mask(out_bits)


def _winner_bits(c: np.ndarray, g: int, client: bool) -> np.ndarray:
    """The g - 1 comparison bits of each indicator w_i (i < g - 1) of groups of g, from the pair
    bits c (..., C(g, 2)) in ``np.triu_indices(g, 1)`` order: c_ij for j > i, 1 ^ c_ji for j < i
    (the public 1 is the client's: only it flips its share). Returns (..., g - 1, g - 1)."""
    pos = np.full((g, g), -1, dtype=np.int64)
    iu, ju = np.triu_indices(g, 1)
    pos[iu, ju] = np.arange(iu.size)
    idx = np.array([[pos[i, j] if j > i else pos[j, i] for j in range(g) if j != i] for i in range(g - 1)])
    neg = np.array([[j < i for j in range(g) if j != i] for i in range(g - 1)], dtype=np.uint8)
    return c[..., idx] ^ neg if client else c[..., idx]


def maximum(ctx: Ctx, ot, x: np.ndarray, bits: int, m: int = RADIX) -> Proto[np.ndarray]:
    """Row maxima along the last axis (signed values in [-2^(bits-2), 2^(bits-2)), so that no
    difference wraps), by a tournament: each level of ``nimbus.spec.nonlinear.max_schedule``
    splits a row into consecutive groups of k (a last, smaller group: a smaller tournament, or one
    element passing through) and keeps each group's maximum. Per level, all groups at once:

    1. one DReLU batch of the differences of ALL pairs i < j of each group:
       c_ij = [x_i - x_j >= 0];
    2. winner indicators w_i = AND_{j > i} c_ij AND AND_{j < i} (1 ^ c_ji) for i < k - 1: the
       winner is the FIRST index holding the maximum, exactly one per group (the last element's
       indicator is implied); one batched AND per level of the balanced trees;
    3. max = x_last + sum_i w_i (x_i - x_last): one mux batch, then a local sum. For k = 2 this is
       the binary tree's max(a, b) = b + [a - b >= 0] (a - b).

    Flights per level: DReLU (5 in Z_2^32) + ceil(log2(k - 1)) ANDs + mux (2), overlapped
    (``max_cost``: 25 for rows of 128 instead of the binary tree's 43). Each party learns
    nothing: it sees OT choice corrections, OT-masked values and Beaver openings only.
    [CrypTFlow2, §5 (Maxpool, the binary tree)]; comparing all pairs of a group at once is the
    standard constant-round tournament, trading comparisons for rounds."""
    x = np.ascontiguousarray(x, dtype=np.uint64)
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ShapeError("maximum needs a non-empty last axis")
    mk = ring_mask(bits)
    cur = x.reshape(-1, x.shape[-1])
    R = cur.shape[0]
    for lvl, k in enumerate(max_schedule(x.shape[-1])):
        n = cur.shape[1]
        q, r = divmod(n, k)
        blocks = [cur[:, :q * k].reshape(R, q, k)] + ([cur[:, q * k:].reshape(R, 1, r)] if r > 1 else [])
        pairs = [np.triu_indices(b.shape[2], 1) for b in blocks]
        d = [(b[..., i] - b[..., j]) & mk for b, (i, j) in zip(blocks, pairs)]  # 1. all pairs' x_i - x_j
        c = yield from drelu(ctx.sub(f"cmp{lvl}"), ot, np.concatenate([v.reshape(-1) for v in d]), bits, m)
        w, pos = [], 0
        for b, v in zip(blocks, d):  # 2. per group (R, G, g - 1, g - 1) bits to AND
            g = b.shape[2]
            w.append(_winner_bits(c[pos:pos + v.size].reshape(v.shape), g, ctx.is_client))
            pos += v.size
        t = 0
        while any(u.shape[-1] > 1 for u in w):  # 2b. one AND batch per tree level
            xs = [u[..., 0:u.shape[-1] - 1:2].reshape(-1) for u in w if u.shape[-1] > 1]
            ys = [u[..., 1:u.shape[-1]:2].reshape(-1) for u in w if u.shape[-1] > 1]
            z = yield from and_bits(ctx.sub(f"and{lvl}_{t}"), ot, np.concatenate(xs), np.concatenate(ys))
            pos = 0
            for i, u in enumerate(w):
                h = u.shape[-1]
                if h < 2:
                    continue
                p = h // 2
                zi = z[pos:pos + u[..., :p].size].reshape(u.shape[:-1] + (p,))
                pos += zi.size
                w[i] = np.concatenate([zi, u[..., -1:]], axis=-1) if h % 2 else zi
            t += 1
        dl = [(b[..., :-1] - b[..., -1:]) & mk for b in blocks]  # 3. x_last + sum_i w_i (x_i - x_last)
        md = yield from mux(ctx.sub(f"mux{lvl}"), ot, np.concatenate([u.reshape(-1) for u in w]),
                            np.concatenate([v.reshape(-1) for v in dl]), bits)
        nxt, pos = [], 0  # 3b. local sums; a group of one passes through
        for b, v in zip(blocks, dl):
            nxt.append((b[..., -1] + md[pos:pos + v.size].reshape(v.shape).sum(axis=-1, dtype=np.uint64)) & mk)
            pos += v.size
        if r == 1:
            nxt.append(cur[:, -1:])
        cur = np.concatenate(nxt, axis=1)
    return cur[:, 0].reshape(x.shape[:-1])


# ===================================================================== party functions
def _shape_out(fn):
    """Wrap a party-symmetric flat protocol into a party function keeping x's shape."""
    def party(ctx: Ctx, ot, x, *args, **kw):
        shp = np.shape(x)
        out = yield from fn(ctx, ot, x, *args, **kw)
        return out.reshape(shp)
    party.__doc__ = fn.__doc__
    return party


def and_client(ctx: Ctx, ot, x: np.ndarray, y: np.ndarray) -> Proto[np.ndarray]:
    """AND of boolean sharings (client side). Runs on: client. Private: x_c, y_c. Returns z_c.
    Cost: ``and_cost``: 1 round. Reference: [Cheetah, §4]."""
    return (yield from and_bits(ctx, ot, _check_bits(x, "x"), _check_bits(y, "y"))).reshape(np.shape(x))


def and_server(ctx: Ctx, ot, x: np.ndarray, y: np.ndarray) -> Proto[np.ndarray]:
    """Server side of :func:`and_client`."""
    return (yield from and_bits(ctx, ot, _check_bits(x, "x"), _check_bits(y, "y"))).reshape(np.shape(x))


def millionaire_client(ctx: Ctx, ot, a: np.ndarray, bits: int, m: int = RADIX) -> Proto[np.ndarray]:
    """Millionaire (client holds a): boolean shares of [a > b] for unsigned bits-bit a, b.
    Runs on: client (leaf-OT receiver). Pre-conditions: a < 2^bits. Cost: ``millionaire_cost``.
    Reference: [CrypTFlow2, §4.1]."""
    a = _ring(a, bits, "a")
    (z,) = yield from millionaire(ctx, ot, [(a.reshape(-1), bits)], m)
    return z.reshape(a.shape)


def millionaire_server(ctx: Ctx, ot, b: np.ndarray, bits: int, m: int = RADIX) -> Proto[np.ndarray]:
    """Server side of :func:`millionaire_client` (server holds b; leaf-OT sender)."""
    b = _ring(b, bits, "b")
    (z,) = yield from millionaire(ctx, ot, [(b.reshape(-1), bits)], m)
    return z.reshape(b.shape)


def _drelu_party(ctx, ot, x, bits, m=RADIX):
    x = _ring(x, bits)
    return (yield from drelu(ctx, ot, x, bits, m)).reshape(x.shape)


def drelu_client(ctx: Ctx, ot, x: np.ndarray, bits: int, m: int = RADIX) -> Proto[np.ndarray]:
    """DReLU: boolean shares of [x >= 0] for signed x in Z_2^bits. Runs on: client.
    Cost: ``drelu_cost`` (millionaire on bits - 1 bits). Reference: [CrypTFlow2, §4.2]."""
    return (yield from _drelu_party(ctx, ot, x, bits, m))


def drelu_server(ctx: Ctx, ot, x: np.ndarray, bits: int, m: int = RADIX) -> Proto[np.ndarray]:
    """Server side of :func:`drelu_client`."""
    return (yield from _drelu_party(ctx, ot, x, bits, m))


def msb_client(ctx: Ctx, ot, x: np.ndarray, bits: int, m: int = RADIX) -> Proto[np.ndarray]:
    """MSB of x: boolean shares (client side; the client's DReLU share flipped)."""
    d = yield from _drelu_party(ctx, ot, x, bits, m)
    return d ^ np.uint8(1)


def msb_server(ctx: Ctx, ot, x: np.ndarray, bits: int, m: int = RADIX) -> Proto[np.ndarray]:
    """Server side of :func:`msb_client`."""
    return (yield from _drelu_party(ctx, ot, x, bits, m))


def _wrap_party(ctx, ot, x, bits, m):
    x = _ring(x, bits)
    v = x.reshape(-1) if ctx.is_client else ring_mask(bits) - x.reshape(-1)
    (w,) = yield from millionaire(ctx, ot, [(v, bits)], m)
    return w.reshape(x.shape)


def wrap_client(ctx: Ctx, ot, x: np.ndarray, bits: int, m: int = RADIX) -> Proto[np.ndarray]:
    """Wrap bit [x_c + x_s >= 2^bits]: millionaire of x_c against 2^bits - 1 - x_s.
    Runs on: client. Cost: ``wrap_cost``. Reference: [CrypTFlow2, §4.1]."""
    return (yield from _wrap_party(ctx, ot, x, bits, m))


def wrap_server(ctx: Ctx, ot, x: np.ndarray, bits: int, m: int = RADIX) -> Proto[np.ndarray]:
    """Server side of :func:`wrap_client`."""
    return (yield from _wrap_party(ctx, ot, x, bits, m))


def _b2a_party(ctx, ot, b, bits):
    b = _check_bits(b)
    (z,) = yield from b2a(ctx, ot, [(b.reshape(-1), bits)])
    return z.reshape(b.shape)


def b2a_client(ctx: Ctx, ot, b: np.ndarray, bits: int) -> Proto[np.ndarray]:
    """B2A: arithmetic shares in Z_2^bits of a boolean sharing. Runs on: client (ACOT receiver).
    Cost: ``b2a_cost``: 2 rounds. Reference: [CrypTFlow2, §4.3]."""
    return (yield from _b2a_party(ctx, ot, b, bits))


def b2a_server(ctx: Ctx, ot, b: np.ndarray, bits: int) -> Proto[np.ndarray]:
    """Server side of :func:`b2a_client` (ACOT sender)."""
    return (yield from _b2a_party(ctx, ot, b, bits))


def _mux_party(ctx, ot, b, x, bits):
    b, x = _check_bits(b), _ring(x, bits)
    if b.shape != x.shape:
        raise ShapeError(f"mux shapes {b.shape} and {x.shape} differ")
    return (yield from mux(ctx, ot, b, x, bits)).reshape(x.shape)


def mux_client(ctx: Ctx, ot, b: np.ndarray, x: np.ndarray, bits: int) -> Proto[np.ndarray]:
    """Multiplexer: shares of b * x (b boolean, x in Z_2^bits). Runs on: client.
    Cost: ``mux_cost``: 2 rounds. Reference: [CrypTFlow2, §4.3]."""
    return (yield from _mux_party(ctx, ot, b, x, bits))


def mux_server(ctx: Ctx, ot, b: np.ndarray, x: np.ndarray, bits: int) -> Proto[np.ndarray]:
    """Server side of :func:`mux_client`."""
    return (yield from _mux_party(ctx, ot, b, x, bits))


def _mul_party(ctx, ot, x, y, bits):
    x, y = _ring(x, bits), _ring(y, bits, "y")
    if x.shape != y.shape:
        raise ShapeError(f"mul shapes {x.shape} and {y.shape} differ")
    return (yield from mul(ctx, ot, x, y, bits)).reshape(x.shape)


def mul_client(ctx: Ctx, ot, x: np.ndarray, y: np.ndarray, bits: int) -> Proto[np.ndarray]:
    """Product of two sharings in Z_2^bits. Runs on: client. Cost: ``mul_cost``: 2 rounds.
    Reference: [SIRNN, §3.1]."""
    return (yield from _mul_party(ctx, ot, x, y, bits))


def mul_server(ctx: Ctx, ot, x: np.ndarray, y: np.ndarray, bits: int) -> Proto[np.ndarray]:
    """Server side of :func:`mul_client`."""
    return (yield from _mul_party(ctx, ot, x, y, bits))


def _mul_rows_party(ctx, ot, x, y, bits):
    x, y = _ring(x, bits), _ring(y, bits, "y")
    if x.ndim < 1 or y.shape != x.shape[:-1]:
        raise ShapeError(f"mul_rows: y must have x's shape without the last axis, got {x.shape} and {y.shape}")
    rows = int(np.prod(y.shape, dtype=np.int64))
    return (yield from mul_rows(ctx, ot, x.reshape(rows, -1), y.reshape(-1), bits)).reshape(x.shape)


def mul_rows_client(ctx: Ctx, ot, x: np.ndarray, y: np.ndarray, bits: int) -> Proto[np.ndarray]:
    """Product of a sharing x (..., n) with a per-row sharing y (...,) in Z_2^bits, y broadcast
    along the last axis. Runs on: client. Cost: ``mul_rows_cost``: 2 rounds, one vector ACOT
    per row and bit of y each way. Reference: [SIRNN, §3.1; ALSZ13, §5]."""
    return (yield from _mul_rows_party(ctx, ot, x, y, bits))


def mul_rows_server(ctx: Ctx, ot, x: np.ndarray, y: np.ndarray, bits: int) -> Proto[np.ndarray]:
    """Server side of :func:`mul_rows_client`."""
    return (yield from _mul_rows_party(ctx, ot, x, y, bits))


def _square_party(ctx, ot, x, bits):
    x = _ring(x, bits)
    return (yield from square(ctx, ot, x, bits)).reshape(x.shape)


def square_client(ctx: Ctx, ot, x: np.ndarray, bits: int) -> Proto[np.ndarray]:
    """Square of a sharing in Z_2^bits. Runs on: client (ACOT sender). Cost: ``square_cost``.
    Reference: [SIRNN, §3.1]."""
    return (yield from _square_party(ctx, ot, x, bits))


def square_server(ctx: Ctx, ot, x: np.ndarray, bits: int) -> Proto[np.ndarray]:
    """Server side of :func:`square_client`."""
    return (yield from _square_party(ctx, ot, x, bits))


def _trunc_party(ctx, ot, x, bits, f, mode, m):
    x = _ring(x, bits)
    return (yield from trunc(ctx, ot, x, bits, f, mode, m)).reshape(x.shape)


def trunc_client(ctx: Ctx, ot, x: np.ndarray, bits: int, f: int, mode: str = "exact",
                 m: int = RADIX) -> Proto[np.ndarray]:
    """Truncation by f bits (floor of the signed value). Runs on: client.
    Pre-conditions: modes msb/msb1 need |x| < 2^(bits-2). Returns shares of
    ``floor(x / 2^f)`` (msb1: possibly one less). Cost: ``trunc_cost``.
    Reference: [SIRNN, §3.4; Cheetah, §5]."""
    return (yield from _trunc_party(ctx, ot, x, bits, f, mode, m))


def trunc_server(ctx: Ctx, ot, x: np.ndarray, bits: int, f: int, mode: str = "exact",
                 m: int = RADIX) -> Proto[np.ndarray]:
    """Server side of :func:`trunc_client`."""
    return (yield from _trunc_party(ctx, ot, x, bits, f, mode, m))


def _tu_party(ctx, ot, x, bits, f, out_bits, mode, m):
    x = _ring(x, bits)
    return (yield from trunc_upcast(ctx, ot, x, bits, f, out_bits, mode, m)).reshape(x.shape)


def trunc_upcast_client(ctx: Ctx, ot, x: np.ndarray, bits: int, f: int, out_bits: int,
                        mode: str = "exact", m: int = RADIX) -> Proto[np.ndarray]:
    """Fused truncation by f and extension Z_2^bits -> Z_2^out_bits (f = 0: plain signed
    extension). Runs on: client. Cost: ``trunc_upcast_cost``. Reference: [NIMBUS24, §4.3]."""
    return (yield from _tu_party(ctx, ot, x, bits, f, out_bits, mode, m))


def trunc_upcast_server(ctx: Ctx, ot, x: np.ndarray, bits: int, f: int, out_bits: int,
                        mode: str = "exact", m: int = RADIX) -> Proto[np.ndarray]:
    """Server side of :func:`trunc_upcast_client`."""
    return (yield from _tu_party(ctx, ot, x, bits, f, out_bits, mode, m))


def _dc_party(ctx, ot, x, bits, f, out_bits, mode, m):
    x = _ring(x, bits)
    return (yield from downcast_trunc(ctx, ot, x, bits, f, out_bits, mode, m)).reshape(x.shape)


def downcast_trunc_client(ctx: Ctx, ot, x: np.ndarray, bits: int, f: int, out_bits: int,
                          mode: str = "exact", m: int = RADIX) -> Proto[np.ndarray]:
    """Truncation by f then down-cast to Z_2^out_bits (bits - f >= out_bits). ``local``: no
    messages, result floor - c with c in {0, 1}. Runs on: client. Cost: ``downcast_trunc_cost``.
    Reference: [NIMBUS24, §4.3]."""
    return (yield from _dc_party(ctx, ot, x, bits, f, out_bits, mode, m))


def downcast_trunc_server(ctx: Ctx, ot, x: np.ndarray, bits: int, f: int, out_bits: int,
                          mode: str = "exact", m: int = RADIX) -> Proto[np.ndarray]:
    """Server side of :func:`downcast_trunc_client`."""
    return (yield from _dc_party(ctx, ot, x, bits, f, out_bits, mode, m))


def max_client(ctx: Ctx, ot, x: np.ndarray, bits: int, m: int = RADIX) -> Proto[np.ndarray]:
    """Signed maximum along the last axis (values in [-2^(bits-2), 2^(bits-2))). Runs on: client.
    Rounds: per level of ``max_schedule(n)`` DReLU + winner ANDs + mux (25 flights for n = 128).
    Cost: ``max_cost``. Reference: [CrypTFlow2, §5]; tournament levels (all pairs per group)."""
    return (yield from maximum(ctx, ot, _ring(x, bits), bits, m))


def max_server(ctx: Ctx, ot, x: np.ndarray, bits: int, m: int = RADIX) -> Proto[np.ndarray]:
    """Server side of :func:`max_client`."""
    return (yield from maximum(ctx, ot, _ring(x, bits), bits, m))


# the functions, built on the primitives above (imported last: they import this module)
from ._nl_functions import (  # noqa: E402
    gelu_client, gelu_server, softmax_client, softmax_server, tanh_client, tanh_server,
    layernorm_client, layernorm_server, reciprocal_client, reciprocal_server, rsqrt_client,
    rsqrt_server,
)
