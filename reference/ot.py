"""Reference OT: base OT, IKNP and Ferret COT extension, derived OTs (readable; small batches).

Protocol orchestration (party generators, the per-session COT source) is written once, here; it
calls its kernels through ``ctx.impl.ot`` (``prg_expand``, ``transpose_bits``, ``ccr_hash``,
``ggm_expand``, ``ggm_reconstruct``, ``lpn_encode``), so ``nimbus.optimized.ot`` re-exports the
orchestration and supplies fast kernels with the same results bit for bit. The reference kernels
below are independent of the optimized ones (numpy + the ``cryptography`` AES only).

Role convention (see ``nimbus.spec.ot``): a session has two COT instances, ``"s2c"`` (the server
is the COT sender) and ``"c2s"`` (the client is). Each party keeps an :class:`OtSession` whose
``.sender`` is its end of the instance where it sends and ``.receiver`` its end of the other one.
The COT sender holds ``Delta`` and gets ``q``; the receiver gets ``r`` and ``t = q xor r*Delta``.
In IKNP the COT sender is the base-OT *receiver* (its choices are the bits of Delta).

Randomness: only from the party's labelled PRG through its context (``ctx.uniform``,
``ctx.bits``, ``ctx.prg.stream(ctx.path(...))``), under the instance's label path; never
``random``, ``numpy.random`` or ``os.urandom``.

Cost accounting: extension refills (IKNP batches, Ferret iterations) are sent under the
instance's label (e.g. ``ot/s2c/ferret3``), not under the consuming protocol's label; the derived
protocols' declared costs (``nimbus.spec.ot.*_cost``) count only their own messages.
"""

from __future__ import annotations

import hashlib
import struct
from collections import deque

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from nimbus.spec import ot as S
from nimbus.spec.errors import ProtocolError, ShapeError
from nimbus.spec.proto import Ctx, Proto

from . import _ristretto as R

__all__ = [
    # per-session COT source
    "CotEnd", "OtSession", "ot_setup_client", "ot_setup_server", "cot_end_setup",
    # base OT
    "base_ot_sender", "base_ot_receiver",
    # derived OTs (sender, receiver)
    "rcot_sender", "rcot_receiver", "cot_sender", "cot_receiver", "rot_sender", "rot_receiver",
    "ot_sender", "ot_receiver", "ot_1ofn_sender", "ot_1ofn_receiver", "acot_sender", "acot_receiver",
    # kernels (twins in nimbus.optimized.ot)
    "prg_expand", "transpose_bits", "iknp_receiver_expand", "iknp_sender_expand", "ccr_hash", "ggm_expand", "ggm_reconstruct", "xor_sum", "lpn_encode",
]

_U64 = np.uint64


# =============================================================================================
# Kernels (reference)
# =============================================================================================
def _aes_ecb(key: bytes, data: np.ndarray) -> np.ndarray:
    """AES-128-ECB of the bytes of ``data`` (any C-contiguous array), same shape and dtype."""
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    raw = np.ascontiguousarray(data)
    out = np.frombuffer(enc.update(raw.tobytes()), dtype=raw.dtype)
    return out.reshape(raw.shape)


def prg_expand(keys: np.ndarray, nbytes: int, nonce: int) -> np.ndarray:
    """IKNP column PRG: ``G(k_j)`` of batch ``nonce``, ``nbytes`` each (see ``nimbus.spec.ot``).

    Block i of column j is ``PI(k_j xor c_i) xor k_j xor c_i``, ``c_i = (i, DOM_IKNP << 32 | nonce)``.
    Pre-conditions: keys (m, 16) uint8; nbytes >= 0; 0 <= nonce < 2^32. Returns (m, nbytes) uint8.
    Assumption: PI (fixed-key AES) is an ideal permutation. Reference: [IKNP03, §3]; twin:
    :func:`nimbus.optimized.ot.prg_expand`.
    """
    keys = np.ascontiguousarray(keys, dtype=np.uint8)
    if keys.ndim != 2 or keys.shape[1] != 16 or not 0 <= int(nonce) < 1 << 32:
        raise ShapeError("keys must be (m, 16) uint8 and 0 <= nonce < 2^32")
    k = keys.view("<u8").astype(_U64)  # (m, 2)
    nblk = -(-nbytes // 16)
    c = np.zeros((nblk, 2), dtype=_U64)
    c[:, 0] = np.arange(nblk, dtype=_U64)  # 1. counter blocks
    c[:, 1] = _U64((S.DOM_IKNP << 32) | nonce)
    x = k[:, None, :] ^ c[None, :, :]  # 2. whiten with the seed
    g = _aes_ecb(S.PI_KEY, x) ^ x  # 3. MMO
    return np.ascontiguousarray(g.astype("<u8").view(np.uint8).reshape(k.shape[0], -1)[:, :nbytes])


def transpose_bits(cols: np.ndarray) -> np.ndarray:
    """Transpose 128 columns of m bits into m blocks: bit j of block i = bit i of column j.

    Pre-conditions: cols (128, m/8) uint8 (little-endian bit order), m a multiple of 8.
    Returns (m, 2) uint64. Twin: :func:`nimbus.optimized.ot.transpose_bits`.
    """
    bits = np.unpackbits(np.asarray(cols, dtype=np.uint8), axis=1, bitorder="little")  # (128, m)
    rows = np.packbits(np.ascontiguousarray(bits.T), axis=1, bitorder="little")  # (m, 16)
    return rows.view("<u8").astype(_U64).reshape(-1, 2)


def _sigma(x: np.ndarray) -> np.ndarray:
    """The orthomorphism sigma(lo, hi) = (hi, lo xor hi) of [GKWY20]."""
    return np.stack([x[:, 1], x[:, 0] ^ x[:, 1]], axis=1)


def ccr_hash(x: np.ndarray, tweaks: np.ndarray) -> np.ndarray:
    """``H(x, w) = PI(sigma(x) xor w) xor sigma(x)`` row by row (see ``nimbus.spec.ot``).

    Pre-conditions: x, tweaks (n, 2) uint64. Returns (n, 2) uint64.
    Assumption: fixed-key AES is an ideal permutation [GKWY20, §7].
    """
    s = _sigma(np.asarray(x, dtype=_U64).reshape(-1, 2))
    return _aes_ecb(S.PI_KEY, s ^ np.asarray(tweaks, dtype=_U64).reshape(-1, 2)) ^ s


def _ggm_children(nodes: np.ndarray) -> np.ndarray:
    """(t, w, 2) -> (t, 2w, 2): child 2j+b = PI_G(s xor b) xor s xor b of node j."""
    kids = np.repeat(nodes, 2, axis=1)
    kids[:, 1::2, 0] ^= _U64(1)
    return _aes_ecb(S.GGM_KEY, kids) ^ kids


def ggm_expand(seeds: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray]:
    """GGM trees of depth h from t seeds; the level sums the receiver obtains by OT.

    Returns ``(leaves, sums)``: leaves (t, 2^h, 2); ``sums[:, i, b]`` = XOR of the nodes of depth
    i+1 whose index is b mod 2. Reference: [YWL+20, Fig. 5 (SPCOT)]; twin in optimized.
    """
    nodes = np.asarray(seeds, dtype=_U64).reshape(-1, 1, 2)
    sums = np.zeros((nodes.shape[0], h, 2, 2), dtype=_U64)
    for i in range(h):  # 1. expand level by level
        nodes = _ggm_children(nodes)
        sums[:, i, 0] = np.bitwise_xor.reduce(nodes[:, 0::2], axis=1)  # 2. left sums
        sums[:, i, 1] = np.bitwise_xor.reduce(nodes[:, 1::2], axis=1)  # 3. right sums
    return nodes, sums


def ggm_reconstruct(known: np.ndarray, alpha: np.ndarray, h: int) -> np.ndarray:
    """Receiver's GGM trees: every leaf but leaf ``alpha`` (returned as 0).

    Pre-conditions: known (t, h, 2) = the level sums on the side off the path to alpha
    (``sums[:, i, 1 - bit_i(alpha)]``, bits MSB first); alpha (t,) in [0, 2^h).
    Returns (t, 2^h, 2). Twin in optimized.
    """
    t = known.shape[0]
    ar = np.arange(t)
    alpha = np.asarray(alpha, dtype=np.int64)
    nodes = np.zeros((t, 1, 2), dtype=_U64)  # the root is unknown (0)
    for i in range(h):
        nodes = _ggm_children(nodes)
        on = alpha >> (h - 1 - i)  # 1. on-path node at depth i+1
        sib = on ^ 1
        nodes[ar, on] = 0  # 2. the children of the unknown node are unknown
        nodes[ar, sib] = 0
        side = (sib & 1).astype(bool)  # 3. sibling = known sum xor the other nodes of its side
        even = np.bitwise_xor.reduce(nodes[:, 0::2], axis=1)
        odd = np.bitwise_xor.reduce(nodes[:, 1::2], axis=1)
        nodes[ar, sib] = known[:, i] ^ np.where(side[:, None], odd, even)
    return nodes


def xor_sum(blocks: np.ndarray) -> np.ndarray:
    """XOR of the blocks along axis 1: (t, L, 2) -> (t, 2). Twin in optimized."""
    return np.bitwise_xor.reduce(np.asarray(blocks, dtype=_U64), axis=1)


def lpn_encode(x: np.ndarray, noise: np.ndarray, seed: bytes, d: int) -> np.ndarray:
    """``noise xor A x`` for the local linear code A (row i: d indices, see ``nimbus.spec.ot``).

    Pre-conditions: x (k, 2), noise (n, 2) uint64; seed 16 bytes; 1 <= d <= 12.
    Returns (n, 2) uint64. Reference: [YWL+20, §5 (primal LPN, local linear code)].
    """
    k, n, w = x.shape[0], noise.shape[0], -(-d // 4)
    ctr = np.zeros((n * w, 2), dtype=_U64)
    ctr[:, 0] = np.arange(n * w, dtype=_U64)  # 1. counter blocks u64le(i*w + j) || 0^8
    words = _aes_ecb(seed, ctr).view("<u4").reshape(n, 4 * w)[:, :d].astype(_U64)
    idx = ((words * _U64(k)) >> _U64(32)).astype(np.int64)  # 2. multiply-shift into [0, k)
    out = np.array(noise, dtype=_U64, copy=True)
    for j in range(d):  # 3. add the d selected secret entries
        out ^= x[idx[:, j]]
    return out


# =============================================================================================
# Base OT: Chou-Orlandi over ristretto255 (libsodium)
# =============================================================================================
def _kdf(i: int, A: bytes, B: bytes, P: bytes) -> bytes:
    return hashlib.shake_128(S.BASE_OT_DOMAIN + struct.pack("<I", i) + A + B + P).digest(16)


def _scalars(ctx: Ctx, name: str, m: int) -> list[bytes]:
    wide = ctx.prg.stream(ctx.path(name)).read(64 * m)
    return [R.scalar_reduce(wide[64 * i : 64 * i + 64]) for i in range(m)]


def base_ot_sender(ctx: Ctx, m: int = S.BASE_OTS) -> Proto[np.ndarray]:
    """m random OTs, sender side [CO15]: keys ``k_{i,0}, k_{i,1}``.

    Runs on: the base-OT sender (the COT receiver of the instance). Private inputs: none.
    Public inputs: m. Returns (m, 2, 16) uint8 keys. Cost: :func:`nimbus.spec.ot.base_ot_cost`.
    Security: semi-honest; the sender learns nothing about the choices (B_i is uniform).
    Reference: [CO15, Fig. 1], batched with one A as in the paper.
    """
    (a,) = _scalars(ctx, "a", 1)  # 1. secret a, A = aG
    A = R.base_mul(a)
    yield ctx.send(S.BaseOtA(point=A))
    msg = yield ctx.recv(S.BaseOtB)  # 2. the receiver's B_i
    if len(msg.points) != 32 * m:
        raise ProtocolError(f"base OT: {len(msg.points)} bytes of points, expected {32 * m}")
    keys = np.empty((m, 2, 16), dtype=np.uint8)
    for i in range(m):  # 3. k0 = H(aB), k1 = H(a(B - A))
        B = msg.points[32 * i : 32 * i + 32]
        keys[i, 0] = np.frombuffer(_kdf(i, A, B, R.mul(a, B)), dtype=np.uint8)
        keys[i, 1] = np.frombuffer(_kdf(i, A, B, R.mul(a, R.sub(B, A))), dtype=np.uint8)
    return keys


def base_ot_receiver(ctx: Ctx, choices: np.ndarray) -> Proto[np.ndarray]:
    """Receiver side of :func:`base_ot_sender`: ``k_{i, c_i}``.

    Runs on: the base-OT receiver (the COT sender). Private inputs: choices (m,) bits.
    Returns (m, 16) uint8. Pre-conditions: the sender's A is a valid, non-identity point.
    """
    c = np.asarray(choices, dtype=np.uint8).reshape(-1)
    msg = yield ctx.recv(S.BaseOtA)
    A = msg.point
    if not R.is_valid_point(A):
        raise ProtocolError("base OT: the sender's point A is not a valid ristretto255 element")
    bs = _scalars(ctx, "b", c.size)
    Bs, keys = [], np.empty((c.size, 16), dtype=np.uint8)
    for i, b in enumerate(bs):  # 1. B = bG, or A + bG to choose 1; key H(bA)
        B = R.base_mul(b)
        if c[i]:
            B = R.add(A, B)
        Bs.append(B)
        keys[i] = np.frombuffer(_kdf(i, A, B, R.mul(b, A)), dtype=np.uint8)
    yield ctx.send(S.BaseOtB(points=b"".join(Bs)))
    return keys


# =============================================================================================
# The per-session COT source
# =============================================================================================
class CotEnd:
    """One party's end of one COT-extension instance: setup state and a buffer of random COTs.

    ``is_sender``: this party holds ``delta`` ((2,) uint64, LSB 1) and its buffer holds ``q``
    blocks; otherwise the buffer holds ``t`` blocks with the choice bit in the LSB. COTs are handed
    out in order by :meth:`take`; :attr:`consumed` is the index of the next one (both ends agree,
    so it doubles as the hash tweak). Refills run lazily inside :meth:`take` (both parties ask for
    the same amounts in the same order, so they refill together).
    Security: the buffer holds secrets (q is as sensitive as Delta's correlations); never log it.
    """

    def __init__(self, ctx: Ctx, direction: str, is_sender: bool, kind: str, ahead: bool = False):
        self.ctx, self.direction, self.is_sender, self.kind = ctx, direction, is_sender, kind
        #: Ferret look-ahead: the sender runs (and sends) each main iteration one refill early;
        #: ``pending`` holds its outputs until the refill, ``in_flight`` (receiver) counts the
        #: iterations sent but not yet taken (0 or 1). Same COTs either way.
        self.ahead = bool(ahead) and kind == "ferret"
        self.pending: np.ndarray | None = None
        self.in_flight = 0
        self.ot = S.ot_params(ctx.params)
        self.delta: np.ndarray | None = None
        self.keys: np.ndarray | None = None  # IKNP base-OT keys
        self.reserve: np.ndarray | None = None  # Ferret: COTs for the next iteration
        self.batches = 0  # IKNP batches run (the column-PRG nonce)
        self.iterations = 0  # Ferret iterations run
        self.consumed = 0
        self.generated = 0
        self._chunks: deque = deque()
        self._off = 0

    def __repr__(self):
        role = "sender" if self.is_sender else "receiver"
        return f"CotEnd({self.direction}, {role}, {self.kind}, available={self.available})"

    @property
    def available(self) -> int:
        return sum(len(c) for c in self._chunks) - self._off

    def _push(self, blocks: np.ndarray) -> None:
        if len(blocks):
            self._chunks.append(blocks)
            self.generated += len(blocks)

    def ensure(self, n: int) -> Proto[None]:
        """Refill until at least n COTs are buffered (both parties call it with the same n)."""
        while self.available < n:
            if self.kind == "iknp":
                for _ in range(S.iknp_refill_batches(self.ot, n - self.available)):
                    self._push((yield from _iknp_batch(self, self.ot.iknp_batch)))
            elif not self.ahead:
                yield from _ferret_iteration(self, self.ot.main)
            elif self.is_sender:  # look-ahead: release the iteration sent at the last refill
                if self.pending is None:
                    yield from _ferret_iteration(self, self.ot.main, early=True)
                self._push(self.pending)
                self.pending = None
                yield from _ferret_iteration(self, self.ot.main, early=True)  # and send the next
            else:
                yield from _ferret_iteration(self, self.ot.main, early=True)
                self.in_flight = 1

    def finish(self) -> Proto[None]:
        """End of the session's use (both parties, once): the receiver takes the look-ahead
        iteration still on its way (already sent: no waiting) and drops it."""
        if self.ahead and not self.is_sender and self.in_flight:
            self.in_flight = 0
            yield from _ferret_iteration(self, self.ot.main, early=True, drop=True)

    def take(self, n: int) -> Proto[tuple[np.ndarray, int]]:
        """The next n COT blocks ((n, 2) uint64) and the index of the first."""
        n = int(n)
        if n < 0:
            raise ShapeError("cannot take a negative number of COTs")
        yield from self.ensure(n)
        parts, need = [], n
        while need:
            c = self._chunks[0]
            part = c[self._off : self._off + need]
            parts.append(part)
            need -= len(part)
            self._off += len(part)
            if self._off == len(c):
                self._chunks.popleft()
                self._off = 0
        first = self.consumed
        self.consumed += n
        out = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty((0, 2), _U64)
        return out, first


class OtSession:
    """A party's two COT ends: ``sender`` (it is the COT sender) and ``receiver``."""

    def __init__(self, sender: CotEnd, receiver: CotEnd):
        self.sender, self.receiver = sender, receiver

    def end(self, direction: str) -> CotEnd:
        return self.sender if self.sender.direction == direction else self.receiver

    def finish(self) -> Proto[None]:
        """The session's end (both parties, after their last protocol on it): a look-ahead
        receiver takes the iteration still on its way. No-op without look-ahead."""
        yield from self.receiver.finish()

    def __repr__(self):
        return f"OtSession(sender={self.sender!r}, receiver={self.receiver!r})"


def cot_end_setup(ctx: Ctx, direction: str, kind: str | None = None, ahead: bool = False) -> Proto[CotEnd]:
    """Set up this party's end of the COT instance ``direction`` (base OTs, Ferret bootstrap).

    Runs on: both parties (same direction and kind). The context becomes the instance's label
    (refills are sent under it). Returns the :class:`CotEnd`.
    Cost: ``base_ot_cost`` (+ for Ferret one IKNP batch of ``ferret_bootstrap_size`` and one
    setup-level iteration). Reference: [IKNP03; YWL+20, Fig. 7 (bootstrapping)].
    ``ahead`` (Ferret): main iterations run one refill ahead (:class:`~nimbus.spec.ot.FerretAhead`;
    the session must end with :meth:`OtSession.finish`). Both parties must agree.
    """
    ot = S.ot_params(ctx.params)
    kind = kind or ot.kind
    if kind not in S.KINDS:
        raise ShapeError(f"OT extension kind must be one of {S.KINDS}, got {kind!r}")
    end = CotEnd(ctx, direction, S.sender_of(direction) == ctx.role, kind, ahead)
    if end.is_sender:  # 1. COT sender: Delta (LSB 1) = its base-OT choices
        d = ctx.uniform("delta", 2, 64)
        d[0] |= _U64(1)
        end.delta = d
        choices = np.unpackbits(d.astype("<u8").view(np.uint8), bitorder="little")
        end.keys = yield from base_ot_receiver(ctx.sub("base"), choices)
    else:
        end.keys = yield from base_ot_sender(ctx.sub("base"), S.BASE_OTS)
    if kind == "ferret":  # 2. bootstrap: IKNP for the setup level's reserve, then the setup level
        boot = yield from _iknp_batch(end, S.ferret_bootstrap_size(ot))
        end.reserve = boot[: ot.setup.reserve]
        end._push(boot[ot.setup.reserve :])
        yield from _ferret_iteration(end, ot.setup)
    return end


def _setup(ctx: Ctx, kind: str | None, ahead: bool = False) -> Proto[OtSession]:
    ends = {}
    for d in ("s2c", "c2s"):  # sequentially: the s2c instance first
        ends[d] = yield from cot_end_setup(ctx.sub(d), d, kind, ahead)
    snd = "s2c" if S.sender_of("s2c") == ctx.role else "c2s"
    return OtSession(sender=ends[snd], receiver=ends["c2s" if snd == "s2c" else "s2c"])


def ot_setup_client(ctx: Ctx, kind: str | None = None, ahead: bool = False) -> Proto[OtSession]:
    """Client's OT session: both COT instances set up (``kind`` defaults to ``params.ot.kind``;
    ``ahead``: Ferret look-ahead, see :func:`cot_end_setup`).

    Runs on: client. Returns :class:`OtSession` (``.sender`` = c2s end, ``.receiver`` = s2c end).
    Cost: :func:`nimbus.spec.ot.session_cost`.
    """
    return (yield from _setup(ctx, kind, ahead))


def ot_setup_server(ctx: Ctx, kind: str | None = None, ahead: bool = False) -> Proto[OtSession]:
    """Server side of :func:`ot_setup_client` (``.sender`` = s2c end, ``.receiver`` = c2s end)."""
    return (yield from _setup(ctx, kind, ahead))


# -- IKNP ------------------------------------------------------------------------------------
def _iknp_batch(end: CotEnd, m: int) -> Proto[np.ndarray]:
    """One IKNP batch of m random COTs (semi-honest, no consistency check) [IKNP03, §3].

    Receiver: random r, ``t_j = G(k_j0)``, sends ``u_j = t_j xor G(k_j1) xor r``. Sender (base
    choices Delta_j): ``q_j = G(k_{j,Delta_j}) xor Delta_j u_j = t_j xor Delta_j r``. Rows of the
    transposed matrices satisfy ``t_i = q_i xor r_i Delta``; then the LSB normal form.
    """
    ctx = end.ctx.sub(f"iknp{end.batches}")
    kern = ctx.impl.ot
    nonce, nb = end.batches, m // 8
    end.batches += 1
    if end.is_sender:
        msg = yield ctx.recv(S.IknpMatrix)
        if len(msg.u) != 128 * nb:
            raise ProtocolError(f"IKNP: {len(msg.u)} bytes, expected {128 * nb}")
        u = np.frombuffer(msg.u, dtype=np.uint8).reshape(128, nb)
        return kern.iknp_sender_expand(end.keys, end.delta, u, nonce)
    # r = ctx.bits("r", m), drawn packed (the PRG's bit order is the packed order)
    rp = ctx.prg.stream(ctx.path("r")).read_into(np.empty(m // 8, dtype=np.uint8))
    u, t = kern.iknp_receiver_expand(end.keys, rp, nonce)
    yield ctx.send(S.IknpMatrix(u=u.tobytes()))
    return t


def iknp_receiver_expand(keys: np.ndarray, r_packed: np.ndarray, nonce: int) -> tuple[np.ndarray, np.ndarray]:
    """IKNP receiver's batch: ``u_j = G(k_j0) xor G(k_j1) xor r`` and the rows t (normal form).

    Pre-conditions: keys (128, 2, 16) uint8; r_packed (m/8,) uint8, the m random choice bits
    packed little-endian. Returns ``(u (128, m/8) uint8, t (m, 2) uint64)``; t's LSB is r
    (column 0 replaced by r). Reference: [IKNP03, §3]; twin in optimized.
    """
    rp = np.asarray(r_packed, dtype=np.uint8).reshape(-1)
    t_cols = prg_expand(keys[:, 0], rp.size, nonce)  # 1. t_j = G(k_j0)
    u = t_cols ^ prg_expand(keys[:, 1], rp.size, nonce) ^ rp[None, :]  # 2. u_j
    t_cols[0] = rp  # 3. normal form: bit 0 of t_i is r_i
    return u, transpose_bits(t_cols)


def iknp_sender_expand(keys: np.ndarray, delta: np.ndarray, u: np.ndarray, nonce: int) -> np.ndarray:
    """IKNP sender's batch: ``q_j = G(k_{j,Delta_j}) xor Delta_j u_j``, transposed, LSB 0.

    Pre-conditions: keys (128, 16) uint8 (base-OT outputs for choices Delta); delta (2,) uint64;
    u (128, m/8) uint8. Returns q (m, 2) uint64 with ``t_i = q_i xor r_i Delta``.
    """
    dbits = np.unpackbits(np.asarray(delta, dtype="<u8").view(np.uint8), bitorder="little")
    cols = prg_expand(keys, u.shape[1], nonce)
    cols[dbits == 1] ^= u[dbits == 1]  # 1. q_j = G(k_j) xor Delta_j u_j
    cols[0] = 0  # 2. normal form: bit 0 of q_i is 0
    return transpose_bits(cols)


# -- Ferret -------------------------------------------------------------------------------------
def _ferret_iteration(end: CotEnd, lv: S.FerretLevel, early: bool = False, drop: bool = False) -> Proto[None]:
    """One Ferret iteration at level ``lv``: t SPCOTs (GGM) + LPN encoding [YWL+20, Fig. 7].

    Consumes ``end.reserve`` (k LPN-secret COTs, then h COTs per tree); the receiver's noise
    position in tree j is ``alpha_j`` with MSB-first bits ``1 - r`` of the tree's COT choice bits
    (uniform, so regular noise; no extra message). Sender sends per tree the level sums masked
    with ``H(q)``/``H(q xor Delta)`` and ``Delta xor sum(leaves)``. Outputs ``noise xor A x``; the
    first ``main.reserve`` become the new reserve, the rest go to the buffer.
    Assumptions: regular-noise primal LPN with (n, k, t) of ``lv``; H tweakable CCR.
    ``early`` (look-ahead, ``CotEnd.ahead``): the message is a :class:`FerretAhead` (it may
    overtake others) and the sender keeps its outputs in ``end.pending`` instead of the buffer;
    ``drop``: the receiver takes the message and discards it (the session's end). The message and
    the COTs are the same as without look-ahead.
    """
    ctx = end.ctx.sub(f"ferret{end.iterations}")
    kern, ot = ctx.impl.ot, end.ot
    it = end.iterations
    end.iterations += 1
    res = end.reserve
    if res is None or len(res) < lv.reserve:
        raise ProtocolError("Ferret: not enough reserved COTs for the iteration")
    x, c = res[: lv.k], res[lv.k : lv.reserve].reshape(lv.t, lv.h, 2)
    tw = np.zeros((lv.t * lv.h, 2), dtype=_U64)
    tw[:, 0] = np.arange(lv.k, lv.reserve, dtype=_U64)
    tw[:, 1] = _U64((S.DOM_SPCOT << 32) | it)
    if end.is_sender:
        seeds = ctx.uniform("seeds", (lv.t, 2), 64)  # 1. t random GGM roots
        leaves, sums = kern.ggm_expand(seeds, lv.h)
        cf = c.reshape(-1, 2)
        pads = np.stack([kern.ccr_hash(cf, tw), kern.ccr_hash(cf ^ end.delta, tw)], axis=1)
        masked = sums.reshape(-1, 2, 2) ^ pads  # 2. level sums under H(q), H(q xor Delta)
        last = kern.xor_sum(leaves) ^ end.delta
        yield ctx.send((S.FerretAhead if early else S.FerretSpcot)(data=masked.tobytes() + last.tobytes()))
        leaves[:, :, 0] &= S.LSB_CLEAR[0]  # normal form (in place: the leaves are ours)
        noise = leaves.reshape(-1, 2)
    else:
        msg = yield ctx.recv(S.FerretAhead if early else S.FerretSpcot)
        nm = 16 * 2 * lv.t * lv.h
        if len(msg.data) != nm + 16 * lv.t:
            raise ProtocolError(f"Ferret: SPCOT message of {len(msg.data)} bytes, expected {nm + 16 * lv.t}")
        if drop:
            return None
        masked = np.frombuffer(msg.data[:nm], dtype="<u8").astype(_U64).reshape(lv.t * lv.h, 2, 2)
        last = np.frombuffer(msg.data[nm:], dtype="<u8").astype(_U64).reshape(lv.t, 2)
        r = (c[:, :, 0] & _U64(1)).astype(np.int64)  # 1. choice bits; alpha bits are 1 - r
        alpha = ((1 - r) << np.arange(lv.h - 1, -1, -1)).sum(axis=1)
        known = masked[np.arange(lv.t * lv.h), r.reshape(-1)] ^ kern.ccr_hash(c.reshape(-1, 2), tw)
        leaves = kern.ggm_reconstruct(known.reshape(lv.t, lv.h, 2), alpha, lv.h)
        ar = np.arange(lv.t)  # 2. the punctured leaf: w_alpha = last xor the others
        leaves[ar, alpha] = last ^ kern.xor_sum(leaves)
        leaves[:, :, 0] &= S.LSB_CLEAR[0]  # normal form: LSB = e (1 at alpha only)
        leaves[ar, alpha, 0] |= _U64(1)
        noise = leaves.reshape(-1, 2)
    out = kern.lpn_encode(x, noise, S.lpn_seed(lv), ot.d)  # 3. LPN: noise xor A x
    end.reserve = out[: ot.main.reserve]  # 4. bootstrapping: keep the next reserve
    if early and end.is_sender:
        end.pending = out[ot.main.reserve :]
    else:
        end._push(out[ot.main.reserve :])
    return None


# =============================================================================================
# Derived OTs
# =============================================================================================
def _mask_of(bits: np.ndarray) -> np.ndarray:
    """Bits (n,) -> all-ones/all-zeros uint64 column (n, 1)."""
    return (_U64(0) - np.asarray(bits, dtype=_U64)).reshape(-1, 1)


def _tweaks(first: int, n: int, dom: int, j=0) -> np.ndarray:
    tw = np.empty((n, 2), dtype=_U64)
    tw[:, 0] = np.arange(first, first + n, dtype=_U64)
    tw[:, 1] = (_U64(dom) << _U64(32)) | np.asarray(j, dtype=_U64)
    return tw


def _check_bits(b, name="choice") -> np.ndarray:
    b = np.asarray(b)
    if b.ndim != 1 or (b.size and (b.min() < 0 or b.max() > 1)):
        raise ShapeError(f"{name} must be a 1-D array of bits")
    return b.astype(np.uint8)


def _check_ring(v, bits: int, name: str) -> np.ndarray:
    if not isinstance(bits, (int, np.integer)) or not 1 <= int(bits) <= 64:
        raise ShapeError(f"bits must be an int in [1, 64], got {bits!r}")
    v = np.asarray(v)
    if v.dtype != np.uint64 or v.ndim != 1:
        raise ShapeError(f"{name} must be a 1-D uint64 array")
    if bits < 64 and v.size and int(v.max()) >> bits:
        raise ShapeError(f"{name} has an element >= 2^{bits}")
    return v


def _lo(h: np.ndarray, bits: int) -> np.ndarray:
    return h[:, 0] & _U64((1 << bits) - 1)


def _need_sender(src: CotEnd, want: bool = True) -> None:
    if src.is_sender != want:
        raise ShapeError(f"this protocol needs the party's COT {'sender' if want else 'receiver'} end")


def rcot_sender(ctx: Ctx, src: CotEnd, n: int) -> Proto[tuple[np.ndarray, np.ndarray]]:
    """n random COTs, sender side: ``(q, Delta)``. No messages.

    Runs on: the instance's COT sender. Public inputs: n. Returns q (n, 2) uint64 (LSB 0),
    Delta (2,) uint64. Cost: zero (buffer refills under the instance label).
    """
    _need_sender(src)
    q, _ = yield from src.take(n)
    return q, src.delta


def rcot_receiver(ctx: Ctx, src: CotEnd, n: int) -> Proto[tuple[np.ndarray, np.ndarray]]:
    """n random COTs, receiver side: ``(r, t)`` with ``t = q xor r Delta``, r uniform bits."""
    _need_sender(src, False)
    t, _ = yield from src.take(n)
    return (t[:, 0] & _U64(1)).astype(np.uint8), t


def cot_sender(ctx: Ctx, src: CotEnd, n: int) -> Proto[tuple[np.ndarray, np.ndarray]]:
    """n chosen-choice COTs, sender side: ``(q', Delta)`` with ``t = q' xor b Delta``.

    Runs on: COT sender. Receives the correction ``d = b xor r`` (uniform: reveals nothing).
    Returns q' (n, 2), Delta. Cost: :func:`nimbus.spec.ot.cot_cost`. Reference: [Bea95; ALSZ13].
    """
    _need_sender(src)
    q, _ = yield from src.take(n)
    msg = yield ctx.recv(S.ChoiceCorrection)
    d = S.unpack_choice(msg.bits, n)
    return q ^ (_mask_of(d) & src.delta), src.delta


def cot_receiver(ctx: Ctx, src: CotEnd, choice: np.ndarray) -> Proto[np.ndarray]:
    """Receiver side of :func:`cot_sender`. Private inputs: choice (n,) bits. Returns t (n, 2)."""
    _need_sender(src, False)
    b = _check_bits(choice)
    t, _ = yield from src.take(b.size)
    yield ctx.send(S.ChoiceCorrection(bits=S.pack_choice(b ^ (t[:, 0] & _U64(1)).astype(np.uint8))))
    return t


def rot_sender(ctx: Ctx, src: CotEnd, n: int) -> Proto[tuple[np.ndarray, np.ndarray]]:
    """n random OTs, sender side: ``(k0, k1) = (H(q), H(q xor Delta))`` (n, 2) blocks each.

    No messages. Security: H tweakable CCR (tweak = COT index, DOM_ROT). Reference: [ALSZ13, §5].
    """
    _need_sender(src)
    q, first = yield from src.take(n)
    tw = _tweaks(first, n, S.DOM_ROT)
    return ctx.impl.ot.ccr_hash(q, tw), ctx.impl.ot.ccr_hash(q ^ src.delta, tw)


def rot_receiver(ctx: Ctx, src: CotEnd, n: int) -> Proto[tuple[np.ndarray, np.ndarray]]:
    """Receiver side of :func:`rot_sender`: ``(r, k_r)``."""
    _need_sender(src, False)
    t, first = yield from src.take(n)
    return (t[:, 0] & _U64(1)).astype(np.uint8), ctx.impl.ot.ccr_hash(t, _tweaks(first, n, S.DOM_ROT))


def _pads(ctx, src, q, d, first, dom):
    """Sender's pads: ``p_j = H(q xor (j xor d) Delta)``, j = 0, 1."""
    tw = _tweaks(first, q.shape[0], dom)
    qd = q ^ (_mask_of(d) & src.delta)
    return ctx.impl.ot.ccr_hash(qd, tw), ctx.impl.ot.ccr_hash(qd ^ src.delta, tw)


def ot_sender(ctx: Ctx, src: CotEnd, m0: np.ndarray, m1: np.ndarray, bits: int) -> Proto[None]:
    """Chosen-message 1-of-2 OT of ``bits``-bit messages, sender side.

    Runs on: COT sender. Private inputs: m0, m1 (n,) uint64 < 2^bits. Returns None.
    The sender learns nothing (it sees b xor r). Cost: :func:`nimbus.spec.ot.ot_cost`.
    Reference: [ALSZ13, §5] (derandomised random OT).
    """
    _need_sender(src)
    m0, m1 = _check_ring(m0, bits, "m0"), _check_ring(m1, bits, "m1")
    if m0.shape != m1.shape:
        raise ShapeError("m0 and m1 must have the same shape")
    n = m0.size
    q, first = yield from src.take(n)
    msg = yield ctx.recv(S.ChoiceCorrection)  # 1. d = b xor r
    p0, p1 = _pads(ctx, src, q, S.unpack_choice(msg.bits, n), first, S.DOM_OT)
    y = np.concatenate([m0 ^ _lo(p0, bits), m1 ^ _lo(p1, bits)])  # 2. y_j = m_j xor p_j
    yield ctx.send(S.OtCiphertexts(data=S.pack_ring(y, bits)))
    return None


def ot_receiver(ctx: Ctx, src: CotEnd, choice: np.ndarray, bits: int) -> Proto[np.ndarray]:
    """Receiver side of :func:`ot_sender`. Private inputs: choice (n,) bits. Returns m_b (n,).

    The receiver learns m_b only (m_{1-b} is masked by H(t xor Delta), unknown without Delta).
    """
    _need_sender(src, False)
    b = _check_bits(choice)
    _check_ring(np.zeros(0, _U64), bits, "m")
    n = b.size
    t, first = yield from src.take(n)
    yield ctx.send(S.ChoiceCorrection(bits=S.pack_choice(b ^ (t[:, 0] & _U64(1)).astype(np.uint8))))
    msg = yield ctx.recv(S.OtCiphertexts)
    y = S.unpack_ring(msg.data, 2 * n, bits).reshape(2, n)
    pad = _lo(ctx.impl.ot.ccr_hash(t, _tweaks(first, n, S.DOM_OT)), bits)
    return np.where(b == 1, y[1], y[0]) ^ pad


def ot_1ofn_sender(ctx: Ctx, src: CotEnd, messages: np.ndarray, bits: int) -> Proto[None]:
    """1-of-N OT of ``bits``-bit messages from ``L = ceil(log2 N)`` random OTs per transfer.

    Runs on: COT sender. Private inputs: messages (n, N) uint64 < 2^bits. Pad of message j:
    ``XOR_l H(K_{l, j_l}, (index_l, DOM_1OFN_PRF | j))`` (a PRF keyed by the l-th OT key, as in
    [NP99]); the receiver knows exactly one key per l. Cost: :func:`nimbus.spec.ot.ot_1ofn_cost`.
    """
    _need_sender(src)
    msgs = np.asarray(messages)
    if msgs.ndim != 2 or msgs.shape[1] < 2:
        raise ShapeError("messages must be (n, N) with N >= 2")
    _check_ring(msgs.reshape(-1), bits, "messages")
    n, N = msgs.shape
    L = S.log2_ceil(N)
    q, first = yield from src.take(n * L)
    msg = yield ctx.recv(S.ChoiceCorrection)  # 1. corrections for the n*L bits of the choices
    k0, k1 = _pads(ctx, src, q, S.unpack_choice(msg.bits, n * L), first, S.DOM_1OFN)
    keys = np.stack([k0, k1], axis=1).reshape(n, L, 2, 2)
    idx = np.arange(first, first + n * L, dtype=_U64)
    y = np.empty((n, N), dtype=_U64)
    for j in range(N):  # 2. pad_j from the keys selected by the bits of j
        sel = keys[:, np.arange(L), (j >> np.arange(L)) & 1].reshape(-1, 2)
        tw = np.stack([idx, np.full(n * L, (S.DOM_1OFN_PRF << 32) | j, _U64)], axis=1)
        pad = np.bitwise_xor.reduce(_lo(ctx.impl.ot.ccr_hash(sel, tw), bits).reshape(n, L), axis=1)
        y[:, j] = msgs[:, j] ^ pad
    yield ctx.send(S.OtCiphertexts(data=S.pack_ring(y, bits)))
    return None


def ot_1ofn_receiver(ctx: Ctx, src: CotEnd, choices: np.ndarray, N: int, bits: int) -> Proto[np.ndarray]:
    """Receiver side of :func:`ot_1ofn_sender`. Private inputs: choices (n,) in [0, N).

    Returns messages[i, choices[i]] (n,). Learns nothing else (the other pads each involve a key
    it did not choose).
    """
    _need_sender(src, False)
    c = np.asarray(choices)
    if c.ndim != 1 or not isinstance(N, (int, np.integer)) or N < 2 or (c.size and (c.min() < 0 or c.max() >= N)):
        raise ShapeError("choices must be a 1-D array of ints in [0, N), N >= 2")
    _check_ring(np.zeros(0, _U64), bits, "m")
    c = c.astype(np.int64)
    n, L = c.size, S.log2_ceil(N)
    t, first = yield from src.take(n * L)
    cb = ((c[:, None] >> np.arange(L)) & 1).astype(np.uint8).reshape(-1)
    yield ctx.send(S.ChoiceCorrection(bits=S.pack_choice(cb ^ (t[:, 0] & _U64(1)).astype(np.uint8))))
    msg = yield ctx.recv(S.OtCiphertexts)
    y = S.unpack_ring(msg.data, n * N, bits).reshape(n, N)
    keys = ctx.impl.ot.ccr_hash(t, _tweaks(first, n * L, S.DOM_1OFN))
    idx = np.arange(first, first + n * L, dtype=_U64)
    hi = (_U64(S.DOM_1OFN_PRF) << _U64(32)) | np.repeat(c, L).astype(_U64)
    pad = _lo(ctx.impl.ot.ccr_hash(keys, np.stack([idx, hi], axis=1)), bits).reshape(n, L)
    return y[np.arange(n), c] ^ np.bitwise_xor.reduce(pad, axis=1)


def acot_sender(ctx: Ctx, src: CotEnd, correlation: np.ndarray, bits: int) -> Proto[np.ndarray]:
    """Arithmetic correlated OT in Z_2^bits, sender side: returns x with ``x + y = b*c``.

    Runs on: COT sender. Private inputs: correlation c (n,) uint64 < 2^bits.
    Steps: pads k0, k1 (as in :func:`ot_sender`), output ``x = -k0``, send ``c + k0 - k1``.
    Returns x (n,), uniform. Cost: :func:`nimbus.spec.ot.acot_cost`. Reference: [ALSZ13, §5.3].
    """
    _need_sender(src)
    c = _check_ring(correlation, bits, "correlation")
    n, mask = c.size, _U64((1 << bits) - 1)
    q, first = yield from src.take(n)
    msg = yield ctx.recv(S.ChoiceCorrection)
    p0, p1 = _pads(ctx, src, q, S.unpack_choice(msg.bits, n), first, S.DOM_ACOT)
    k0, k1 = _lo(p0, bits), _lo(p1, bits)
    yield ctx.send(S.AcotCorrection(data=S.pack_ring((c + k0 - k1) & mask, bits)))
    return (_U64(0) - k0) & mask


def acot_receiver(ctx: Ctx, src: CotEnd, choice: np.ndarray, bits: int) -> Proto[np.ndarray]:
    """Receiver side of :func:`acot_sender`: returns ``y = b*c - x mod 2^bits``.

    Private inputs: choice b (n,) bits. Learns k_b and ``c + k0 - k1`` only (uniform given b).
    """
    _need_sender(src, False)
    b = _check_bits(choice)
    _check_ring(np.zeros(0, _U64), bits, "c")
    n, mask = b.size, _U64((1 << bits) - 1)
    t, first = yield from src.take(n)
    yield ctx.send(S.ChoiceCorrection(bits=S.pack_choice(b ^ (t[:, 0] & _U64(1)).astype(np.uint8))))
    msg = yield ctx.recv(S.AcotCorrection)
    y = S.unpack_ring(msg.data, n, bits)
    k = _lo(ctx.impl.ot.ccr_hash(t, _tweaks(first, n, S.DOM_ACOT)), bits)
    return (k + b.astype(_U64) * y) & mask
