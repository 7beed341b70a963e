"""Non-linear protocols on additive shares: WHAT they compute and send.

Message tags 0x3000-0x30ff. The HOW lives in ``nimbus.reference.nonlinear`` (readable) and
``nimbus.optimized.nonlinear`` (numba kernels, same protocol text).

Conventions
-----------
* **Shares.** Arithmetic shares ``x = x_c + x_s mod 2^k`` (``numpy.uint64``); boolean shares
  ``b = b_c xor b_s`` (``numpy.uint8`` arrays of 0/1). Signed values are two's complement
  (``nimbus.spec.fixedpoint``). The non-linear ring is ``params.nonlinear`` (Z_2^32, 13 fraction
  bits for ``bert-base``); functions take and return shares in the *linear* ring
  (``params.linear``, Z_2^64) with explicit input scale ``in_frac`` and output scale
  ``params.linear.frac``.
* **OT session.** Every protocol takes the party's correlated-OT session ``ot`` as its second
  argument, explicitly (``Ctx`` carries role, params, PRG, label and implementation; the OT
  session is stateful and long-lived, so it is passed, not hidden). ``ot`` has ``.sender`` and
  ``.receiver``: this party's ends of the two random-COT instances (``nimbus.spec.ot``: s2c has
  the server as COT sender). The protocols here only consume **random COTs** from it
  (F_COT-hybrid model): ``yield from take_send(ctx, ot, n)`` returns ``(delta, q, index0)`` and
  ``yield from take_recv(ctx, ot, n)`` returns ``(r, t, index0)`` with ``t = q xor r*delta``.
  :class:`IdealCotSession` is the ideal functionality of those random COTs (both ends derived from
  one shared seed: **insecure, for tests and for benchmarks that exclude COT generation**); the
  real session of ``nimbus.{reference,optimized}.ot`` plugs in through :func:`take_send` /
  :func:`take_recv`.
* **Hash.** ``H(x, i, dom) = PI(sigma(x) xor w) xor sigma(x)``, ``w = (lo: i, hi: dom)``,
  ``sigma(lo, hi) = (hi, lo xor hi)``, ``PI`` = AES-128 under ``nimbus.spec.ot.PI_KEY`` (the OT
  layer's tweakable correlation-robust hash, :func:`crh`); ``i`` is the COT's index in its
  instance and ``dom`` one of the ``DOM_NL_*`` domains below, so no (COT, tweak) pair repeats.

Derived correlations (all from random COTs, [ALSZ13; CrypTFlow2, §3])
--------------------------------------------------------------------
* **Bit triples** (silent, no messages): one random COT per direction per triple; the COT
  sender's bits ``s0 = lsb H(q), s1 = lsb H(q xor delta)``, the receiver's ``r, lsb H(t)`` give
  shares of ``r * (s0 xor s1)``; two directions give a Beaver triple ``c = a and b``.
* **ACOT** in Z_2^k (sender correlation c, receiver bit b): receiver sends ``d = b xor r``
  (``AcotChoices``), sender sends ``u = H_k(q xor (1-d) delta) - H_k(q xor d delta) - c``
  (``AcotCorrections``, k bits); sender output ``-H_k(q xor d delta)``, receiver
  ``H_k(t) - b*u``; they add to ``b*c``. ``H_k`` is the low k bits of the hash's low word.
* **Vector ACOT** (one choice bit, n correlations ``c_0..c_(n-1)`` in Z_2^k): as the ACOT, with
  the pad of correlation j the j-th word of the key's stream ``H(key, i, DOM_NL_VACOT + 2^16 g)``,
  g = 0, 1, ... (32-bit little-endian words for k <= 32, 64-bit above): one random COT and one
  choice bit for n products with the same bit, n corrections of k bits. The receiver holds one
  key's stream per COT; the other key's stream stays pseudorandom (distinct tweaks per block).
  [ALSZ13, §5 (correlated OT with long messages); SIRNN, §3.1 (products with a shared operand)]
* **Leaf OT** (1-of-2^m, 2-bit messages, m <= 6): m random COTs; receiver sends its m choice
  corrections (``LeafChoices``); the pad of message v is ``xor_i H(K_i^{v_i})`` bits
  ``[2v, 2v+2)``; sender sends all 2^m masked 2-bit messages (``LeafTables``). Distinct v use
  disjoint bit positions, and every v != choice involves a key the receiver lacks.

References: [CrypTFlow2] Rathee et al., CCS 2020 (millionaire, DReLU, mux, B2A, truncation);
[SIRNN] Rathee et al., S&P 2021 (multiplication with bit-width, exact truncation, extension);
[Cheetah] Huang et al., USENIX Security 2022 (silent-OT triples, known-MSB truncation);
[BumbleBee] Lu et al., NDSS 2025 (baseline approximations); [NIMBUS24] Li et al., NeurIPS 2024
(low-degree GELU/exp, small ring, fused truncation + up-cast); [ALSZ13] Asharov et al., CCS 2013.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .cost import Cost
from .errors import ParameterError
from .messages import BytesField, Message, packed_size
from .ot import PI_KEY
from .prg import PRG
from .proto import CLIENT, SERVER
from .protocols import ProtocolSpec, register_protocol

__all__ = [
    "RADIX", "DOM_NL_TRIPLE", "DOM_NL_ACOT", "DOM_NL_LEAF", "TRUNC_MODES",
    "IdealCotSession", "IdealCotEnd", "take_send", "take_recv", "take_pair", "crh", "hash_bits", "hash_words",
    "LeafChoices", "LeafTables", "AndOpen", "AcotChoices", "AcotCorrections",
    "DOM_NL_VACOT", "vacot_lanes", "Flow", "bytes_msg", "tree_levels", "millionaire_levels", "nblocks",
    "max_schedule", "max_groups", "winner_levels",
    "and_cost", "acot_cost", "millionaire_cost", "drelu_cost", "wrap_cost", "b2a_cost", "mux_cost",
    "mul_cost", "mul_rows_cost", "square_cost", "trunc_cost", "trunc_upcast_cost", "downcast_trunc_cost",
    "max_cost",
    "ideal_and", "ideal_millionaire", "ideal_drelu", "ideal_msb", "ideal_wrap", "ideal_b2a",
    "ideal_mux", "ideal_mul", "ideal_mul_rows", "ideal_square", "ideal_trunc", "ideal_trunc_upcast",
    "ideal_downcast_trunc", "ideal_max", "lift", "ring_mask", "EXAMPLE_SHAPE", "example_shares",
]

RADIX = 4  #: default millionaire radix m (leaf OTs are 1-of-2^m) [CrypTFlow2, §4]
DOM_NL_TRIPLE, DOM_NL_ACOT, DOM_NL_LEAF = 0x3001, 0x3002, 0x3003  # tweak domains (hash high word)
DOM_NL_VACOT = 0x3004  #: vector ACOT pads: block g of a key's stream under DOM_NL_VACOT + (g << 16)
#: truncation modes: exact (wrap + carry), msb (known MSB: |x| < 2^(l-2), exact), msb1 (known
#: MSB, carry omitted: result floor(x/2^f) - c with c in {0, 1}), local (down-cast only)
TRUNC_MODES = ("exact", "msb", "msb1")


def ring_mask(bits: int) -> np.uint64:
    return np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(0xFFFF_FFFF_FFFF_FFFF)


def lift(u, bits: int) -> np.ndarray:
    """Ring elements -> signed Python-int-valued object array (exact for every width)."""
    a = np.asarray(u, dtype=np.uint64)
    half = 1 << (bits - 1)
    return np.array([((int(v) + half) % (1 << bits)) - half for v in a.reshape(-1)],
                    dtype=object).reshape(a.shape)


# -- the correlated randomness: random COTs ----------------------------------------------------
def crh(blocks: np.ndarray, index0: int, domain: int) -> np.ndarray:
    """The tweakable CR hash of ``blocks`` (n, 2) with tweaks ``(index0 + i, domain)``."""
    x = np.ascontiguousarray(blocks, dtype=np.uint64).reshape(-1, 2)
    n = x.shape[0]
    s = np.empty_like(x)
    s[:, 0] = x[:, 1]
    s[:, 1] = x[:, 0] ^ x[:, 1]
    w = s.copy()
    w[:, 0] ^= np.arange(index0, index0 + n, dtype=np.uint64)
    w[:, 1] ^= np.uint64(domain)
    out = np.empty(n * 16 + 16, dtype=np.uint8)
    enc = Cipher(algorithms.AES(PI_KEY), modes.ECB()).encryptor()
    k = enc.update_into(w.view(np.uint8).reshape(-1), out)
    return out[:k].view(np.uint64).reshape(n, 2) ^ s


def hash_words(blocks: np.ndarray, index0: int, domain: int) -> np.ndarray:
    """Low 64-bit word of :func:`crh` (the source of ACOT pads)."""
    return crh(blocks, index0, domain)[:, 0].copy()


def hash_bits(blocks: np.ndarray, index0: int, domain: int) -> np.ndarray:
    """Least significant bit of :func:`crh` as uint8 (the source of triple bits)."""
    return (crh(blocks, index0, domain)[:, 0] & np.uint64(1)).astype(np.uint8)


_ZEROS = np.zeros(1 << 20, dtype=np.uint8)


def _aes_ctr_blocks(key: bytes, start: int, n: int) -> np.ndarray:
    """Blocks start .. start+n-1 of AES-128-CTR(key) (counter = block index, big-endian)."""
    enc = Cipher(algorithms.AES(key), modes.CTR(int(start).to_bytes(16, "big"))).encryptor()
    out = np.empty(2 * n + 2, dtype=np.uint64)
    ob = out.view(np.uint8)
    step = _ZEROS.size - 16
    for s in range(0, n * 16, step):
        m = min(step, n * 16 - s)
        enc.update_into(_ZEROS[:m], ob[s:s + m + 15])
    return out[: 2 * n].reshape(n, 2)


class IdealCotEnd:
    """One party's end of one random-COT instance of :class:`IdealCotSession`."""

    def __init__(self, seed: bytes, direction: str, is_sender: bool):
        self.direction, self.is_sender, self.used = direction, is_sender, 0
        self.seconds = 0.0  # time spent generating (benchmarks report time without F_COT)
        base = hashlib.sha256(b"nimbus-ideal-cot-v1\x00" + seed + direction.encode()).digest()
        self._kq = hashlib.sha256(base + b"q").digest()[:16]
        self._kr = hashlib.sha256(base + b"r").digest()[:16]
        d = np.frombuffer(hashlib.sha256(base + b"delta").digest()[:16], dtype="<u8").astype(np.uint64)
        d[0] |= np.uint64(1)
        self._delta = d

    def take(self, n: int):
        t0 = time.perf_counter()
        try:
            return self._take(int(n))
        finally:
            self.seconds += time.perf_counter() - t0

    def _take(self, n: int):
        i0 = self.used
        self.used += int(n)
        q = _aes_ctr_blocks(self._kq, i0, n)
        q[:, 0] &= np.uint64(0xFFFF_FFFF_FFFF_FFFE)
        if self.is_sender:
            return self._delta.copy(), q, i0
        b0, b1 = i0 // 128, (i0 + n + 127) // 128  # r_i = bit i of the r-stream
        rb = np.unpackbits(_aes_ctr_blocks(self._kr, b0, b1 - b0).view(np.uint8), bitorder="little")
        r = rb[i0 - 128 * b0: i0 - 128 * b0 + n]
        t = q  # q is ours: t = q xor r delta in place
        np.bitwise_xor(t, self._delta[None, :], out=t, where=r.astype(bool)[:, None])
        return r, t, i0


class IdealCotSession:
    """F_COT: random COTs for both directions from one shared seed (INSECURE: tests, benchmarks
    that exclude COT generation). ``IdealCotSession.pair(seed)`` gives (client, server)."""

    def __init__(self, role: str, seed: bytes):
        if role not in (CLIENT, SERVER):
            raise ParameterError(f"bad role {role!r}")
        self.role = role
        mine, theirs = ("c2s", "s2c") if role == CLIENT else ("s2c", "c2s")
        self.sender = IdealCotEnd(seed, mine, True)
        self.receiver = IdealCotEnd(seed, theirs, False)

    @classmethod
    def pair(cls, seed: bytes = b"nimbus-ideal-cot-test-seed") -> tuple["IdealCotSession", "IdealCotSession"]:
        return cls(CLIENT, seed), cls(SERVER, seed)


def take_send(ctx, ot, n: int):
    """Generator: ``n`` random COTs from this party's sender end: ``(delta, q, index0)``."""
    end = ot.sender
    if isinstance(end, IdealCotEnd):
        return end.take(n)
    q, first = yield from end.take(n)  # the OT layer's CotEnd (refills may send messages)
    return end.delta, q, first


def take_recv(ctx, ot, n: int):
    """Generator: ``n`` random COTs from this party's receiver end: ``(r, t, index0)``."""
    end = ot.receiver
    if isinstance(end, IdealCotEnd):
        return end.take(n)
    t, first = yield from end.take(n)
    return (t[:, 0] & np.uint64(1)).astype(np.uint8), t, first


def take_pair(ctx, ot, n_send: int, n_recv: int):
    """Generator: both ends at once, always the s2c instance first (so refills that exchange
    messages can never wait on each other): ``((delta, q, i0) | None, (r, t, j0) | None)``."""
    snd = rcv = None
    order = ("send", "recv") if ctx.role == SERVER else ("recv", "send")
    for which in order:
        if which == "send" and n_send:
            snd = yield from take_send(ctx, ot, n_send)
        if which == "recv" and n_recv:
            rcv = yield from take_recv(ctx, ot, n_recv)
    return snd, rcv


# -- messages -----------------------------------------------------------------------------------
class LeafChoices(Message):
    """Millionaire, client -> server: packed choice corrections of the leaf OTs (m bits per leaf)."""

    TAG = 0x3001
    FIELDS = (("data", BytesField()),)


class LeafTables(Message):
    """Millionaire, server -> client: per leaf, 2^m masked (gt, eq) bit pairs, packed."""

    TAG = 0x3002
    FIELDS = (("data", BytesField()),)


class AndOpen(Message):
    """AND gates, both ways: packed (x xor a) bits then (y xor b) bits."""

    TAG = 0x3003
    FIELDS = (("data", BytesField()),)


class AcotChoices(Message):
    """ACOT, receiver -> sender: packed choice corrections d = b xor r."""

    TAG = 0x3004
    FIELDS = (("data", BytesField()),)


class AcotCorrections(Message):
    """ACOT, sender -> receiver: per group, the corrections u packed at the group's width."""

    TAG = 0x3005
    FIELDS = (("data", BytesField()),)


def bytes_msg(payload: int) -> int:
    """Encoded size of a one-BytesField message: tag (2) + length (4) + payload."""
    return 6 + int(payload)


# -- schedules (normative: they fix message sizes and rounds) -----------------------------------
def nblocks(nbits: int, m: int = RADIX) -> int:
    """Leaves of a millionaire on ``nbits`` bits (every block m bits; the top one zero-padded)."""
    return max(1, -(-int(nbits) // m))


def tree_levels(q: int) -> list[int]:
    """AND gates per level of the comparison tree over ``q`` leaves: pair k = (2k, 2k+1) gives
    ``gt = gt_hi ^ (eq_hi & gt_lo)`` and (k >= 1 only: the lowest group's eq is never used)
    ``eq = eq_hi & eq_lo``; an odd top leaf passes up."""
    out = []
    while q > 1:
        p = q // 2
        out.append(2 * p - 1)
        q = p + q % 2
    return out


def millionaire_levels(groups, m: int = RADIX) -> list[int]:
    """AND gates per level for a batch of groups ``[(n, nbits), ...]`` run in lockstep."""
    per = [[n * a for a in tree_levels(nblocks(b, m))] for n, b in groups]
    depth = max((len(p) for p in per), default=0)
    return [sum(p[i] for p in per if i < len(p)) for i in range(depth)]


def max_schedule(n: int) -> tuple[int, ...]:
    """Group sizes k, one per level, of the tournament maximum over rows of ``n`` elements.

    A level splits the ``m`` remaining elements of a row into consecutive groups of k (a last,
    smaller group of ``m % k``: two or more elements play a smaller tournament, one passes
    through) and keeps each group's maximum, leaving ``ceil(m / k)``. Rule, level by level:

    * the **last level** takes all m remaining elements (k = m) once its ``C(m, 2)`` comparisons
      are at most n (at most one per element of the row);
    * otherwise the **first level** is pairs (k = 2: half a comparison per element, where the
      elements are most numerous) and later levels k = 5.

    Why 5: a level is one DReLU (5 flights in Z_2^32 at radix 4), ``ceil(log2(k - 1))`` AND flights
    for the winner indicators and one mux (2 flights); when that count of "both send" steps is
    odd the next level's first flight overlaps it (:class:`Flow`), so k = 3, 4 and 5 all cost 8
    flights, and 5 reduces most. For n = 128 this gives (2, 5, 13): 25 flights for 1.95x the
    bytes of the binary tree (43 flights); for every n <= 4096 it takes fewer flights than the
    tree (as many for n = 2 and 4, where it is the tree) for at most 2.3x its bytes. The protocol
    (``nimbus.reference.nonlinear.maximum``) and :func:`max_cost` both follow this function."""
    n = int(n)
    out, m = [], n
    while m > 1:
        if m * (m - 1) // 2 <= n:
            k = m
        elif not out:
            k = 2
        else:
            k = min(5, m)
        out.append(k)
        m = -(-m // k)
    return tuple(out)


def max_groups(m: int, k: int) -> list[int]:
    """Sizes of the groups of a tournament level of group size k over m elements (the last one
    smaller when k does not divide m; a group of one passes through)."""
    return [k] * (m // k) + ([m % k] if m % k else [])


def winner_levels(g: int) -> list[int]:
    """AND gates per level for the winner indicators of a group of g: the g - 1 indicators
    ``w_i`` (i < g - 1; the last element's is implied) are each the AND of g - 1 comparison bits,
    a balanced tree: pairs (2t, 2t+1) per level, an odd last bit passes up."""
    out, c = [], g - 1
    while c > 1:
        out.append((g - 1) * (c // 2))
        c -= c // 2
    return out


def _size(shape) -> int:
    n = 1
    for s in (shape if isinstance(shape, (tuple, list)) else (shape,)):
        n *= int(s)
    return n


# -- costs ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Flow:
    """Bytes each way and the flight pattern of a protocol: a tuple of steps ``"c"`` (the client
    sends), ``"s"`` (the server sends), ``"b"`` (both send, each before receiving the other's).
    Rounds follow ``nimbus.spec.cost``: a message's depth is one more than the deepest message its
    sender had received, so sequential composition may overlap flights (``"c"`` after ``"b"``
    may share a flight with the end of the previous one)."""

    c2s: int = 0
    s2c: int = 0
    steps: tuple = ()

    def __add__(self, other: "Flow") -> "Flow":
        return Flow(self.c2s + other.c2s, self.s2c + other.s2c, self.steps + other.steps)

    def rounds(self) -> int:
        dc = ds = top = 0  # deepest depth received by the client / the server
        for st in self.steps:
            mc, ms = dc + 1, ds + 1
            if st in ("c", "b"):
                ds, top = max(ds, mc), max(top, mc)
            if st in ("s", "b"):
                dc, top = max(dc, ms), max(top, ms)
        return top

    def cost(self) -> Cost:
        return Cost(self.c2s, self.s2c, self.rounds())


def _f_and(n: int) -> Flow:
    b = bytes_msg(packed_size(2 * n, 1)) if n else 0
    return Flow(b, b, ("b",) if n else ())


def _f_acot(send_groups=(), recv_groups=(), send_cots=None, recv_cots=None) -> Flow:
    """ACOTs: groups ``(n, bits)``, one COT (choice bit) per correlation unless ``*_cots`` give
    the COTs of each group (vector ACOTs)."""
    c2s = s2c = 0
    ns, nr = sum(n for n, _ in send_groups), sum(n for n, _ in recv_groups)
    cs = ns if send_cots is None else sum(send_cots)
    cr = nr if recv_cots is None else sum(recv_cots)
    if ns:
        s2c += bytes_msg(packed_size(cs, 1))
        c2s += bytes_msg(sum(packed_size(n, b) for n, b in send_groups))
    if nr:
        c2s += bytes_msg(packed_size(cr, 1))
        s2c += bytes_msg(sum(packed_size(n, b) for n, b in recv_groups))
    steps = ("b", "b") if (ns and nr) else ("s", "c") if ns else ("c", "s") if nr else ()
    return Flow(c2s, s2c, steps)


def _f_millionaire(groups, m: int = RADIX) -> Flow:
    leaves = sum(n * nblocks(b, m) for n, b in groups)
    f = Flow(bytes_msg(packed_size(leaves * m, 1)), bytes_msg(packed_size(leaves << (m + 1), 1)), ("c", "s"))
    for k in millionaire_levels(groups, m):
        f = f + _f_and(k)
    return f


def vacot_lanes(bits: int) -> int:
    """Pads per 128-bit hash block of a vector ACOT in Z_2^bits: 4 (32-bit words) or 2."""
    return 4 if bits <= 32 else 2


def _f_vacot(send_groups=(), recv_groups=()) -> Flow:
    """Vector ACOTs: groups ``(m, n, bits)`` of m COTs with n correlations each. Choice bits
    (m per group) one way, corrections (m * n * bits) back; 2 flights (both directions: 2)."""
    return _f_acot([(m * n, b) for m, n, b in send_groups], [(m * n, b) for m, n, b in recv_groups],
                   [m for m, _, _ in send_groups], [m for m, _, _ in recv_groups])


def _f_mux(n: int, bits: int) -> Flow:
    return _f_acot([(n, bits)], [(n, bits)])


def _f_drelu(n: int, bits: int, m: int = RADIX) -> Flow:
    return _f_millionaire([(n, bits - 1)], m)


def _f_trunc(n: int, bits: int, f: int, mode: str, wbits: int, cbits: int, m: int, extra=()) -> Flow:
    """A truncation's flow; ``extra``: another protocol's millionaire groups ``(n, bits)`` in its
    batch (before its ACOTs when it has no millionaire of its own)."""
    if mode not in TRUNC_MODES:
        raise ParameterError(f"truncation mode must be one of {TRUNC_MODES}, got {mode!r}")
    extra = list(extra)
    if mode == "exact":
        groups = [(n, bits)] + ([(n, f)] if f else [])
        b2a = [(n, wbits)] + ([(n, cbits)] if f else [])
        return _f_millionaire(groups + extra, m) + _f_acot([], b2a)
    if mode == "msb" and f:
        return _f_millionaire([(n, f)] + extra, m) + _f_acot([], [(n, wbits), (n, cbits)])
    return (_f_millionaire(extra, m) if extra else Flow()) + _f_acot([], [(n, wbits)])


def _f_downcast(n: int, f: int, out_bits: int, mode: str, m: int) -> Flow:
    if mode == "local" or f == 0:
        return Flow()
    return _f_millionaire([(n, f)], m) + _f_acot([], [(n, out_bits)])


def _f_max(rows: int, n: int, bits: int, m: int = RADIX) -> Flow:
    total = Flow()
    for k in max_schedule(n):
        gs = [g for g in max_groups(n, k) if g > 1]  # groups of one pass through
        total = total + _f_drelu(rows * sum(g * (g - 1) // 2 for g in gs), bits, m)  # all pairs
        lv = [winner_levels(g) for g in gs]  # winner ANDs, the groups in lockstep
        for t in range(max((len(v) for v in lv), default=0)):
            total = total + _f_and(rows * sum(v[t] for v in lv if t < len(v)))
        total = total + _f_mux(rows * sum(g - 1 for g in gs), bits)
        n = -(-n // k)
    return total


def and_cost(params, n: int) -> Cost:
    """n AND gates: each party sends 2n bits, at once: 1 flight."""
    return _f_and(n).cost()


def acot_cost(params, send_groups=(), recv_groups=()) -> Cost:
    """ACOTs where the client is sender for ``send_groups`` [(n, bits)] and receiver for
    ``recv_groups``: choices (n bits) one way, corrections (n*bits) back; 2 flights."""
    return _f_acot(send_groups, recv_groups).cost()


def millionaire_cost(params, groups, m: int = RADIX) -> Cost:
    """Leaf OTs (m choice bits up, 2^(m+1) bits down per leaf; 2 flights) then one AND batch
    per tree level."""
    return _f_millionaire(groups, m).cost()


def drelu_cost(params, shape, bits: int, m: int = RADIX) -> Cost:
    """DReLU / MSB of an l-bit sharing: one millionaire on l-1 bits."""
    return _f_drelu(_size(shape), bits, m).cost()


def wrap_cost(params, shape, bits: int, m: int = RADIX) -> Cost:
    """Wrap bit of an l-bit sharing: one millionaire on l bits."""
    return _f_millionaire([(_size(shape), bits)], m).cost()


def b2a_cost(params, shape, bits: int) -> Cost:
    """B2A into Z_2^bits: one ACOT per bit (server sender)."""
    return _f_acot([], [(_size(shape), bits)]).cost()


def mux_cost(params, shape, bits: int) -> Cost:
    """Multiplexer: one ACOT per element in each direction, at once."""
    return _f_mux(_size(shape), bits).cost()


def _gilboa(n: int, bits: int, shift: int) -> list:
    return [(n, bits - i - shift) for i in range(bits - shift)]


def mul_cost(params, shape, bits: int) -> Cost:
    """Product of two sharings: bit i of each party's share of y selects its peer's share of x
    at width bits - i (both directions at once) [SIRNN, §3]."""
    g = _gilboa(_size(shape), bits, 0)
    return _f_acot(g, g).cost()


def _f_mul_rows(rows: int, n: int, bits: int) -> Flow:
    g = [(rows, n, bits - i) for i in range(bits)]
    return _f_vacot(g, g)


def mul_rows_cost(params, shape, bits: int) -> Cost:
    """Product of a sharing x (rows, n) with a per-row sharing y (rows,): bit i of each party's
    y-share selects its peer's row of x at width bits - i through ONE vector ACOT per row and
    bit (both directions at once): rows * bits COTs instead of rows * n * bits, the same
    correction bytes as :func:`mul_cost`, n times fewer choice bits."""
    shape = tuple(shape)
    return _f_mul_rows(_size(shape[:-1]), shape[-1] if shape else 1, bits).cost()


def square_cost(params, shape, bits: int) -> Cost:
    """Square: the one cross term 2 x_c x_s, client sender, width bits - 1 - i for bit i."""
    return _f_acot(_gilboa(_size(shape), bits, 1), []).cost()


def trunc_cost(params, shape, bits: int, f: int, mode: str = "exact", m: int = RADIX) -> Cost:
    """Truncation by f bits in Z_2^bits (wrap B2A'd at f bits, carry at bits)."""
    return _f_trunc(_size(shape), bits, f, mode, f, bits, m).cost()


def trunc_upcast_cost(params, shape, bits: int, f: int, out_bits: int, mode: str = "exact",
                      m: int = RADIX) -> Cost:
    """Fused truncation by f + extension Z_2^bits -> Z_2^out_bits: the wrap is B2A'd at
    out_bits - (bits - f) bits, the carry at out_bits."""
    return _f_trunc(_size(shape), bits, f, mode, out_bits - bits + f, out_bits, m).cost()


def downcast_trunc_cost(params, shape, bits: int, f: int, out_bits: int, mode: str = "exact",
                        m: int = RADIX) -> Cost:
    """Truncation by f then down-cast (bits - f >= out_bits): the wrap vanishes; exact needs the
    carry (millionaire on f bits + B2A at out_bits); ``local`` costs nothing (error <= 1 ulp)."""
    return _f_downcast(_size(shape), f, out_bits, mode, m).cost()


def max_cost(params, shape, bits: int, m: int = RADIX) -> Cost:
    """Tournament maximum along the last axis, levels of :func:`max_schedule`: per level one
    DReLU batch of all pairs' differences within each group, one AND batch per level of the
    winner-indicator trees (:func:`winner_levels`), then one mux of the k - 1 indicators of each
    group with the differences to its last element. Rows of 128 (Z_2^32): 25 flights."""
    shape = tuple(shape)
    return _f_max(_size(shape[:-1]), shape[-1], bits, m).cost()


# -- ideal functionalities (exact; numpy) -----------------------------------------------------------
def _u(x) -> np.ndarray:
    return np.asarray(x, dtype=np.uint64)


def ideal_and(x, y) -> np.ndarray:
    return (np.asarray(x, dtype=np.uint8) & np.asarray(y, dtype=np.uint8)).astype(np.uint8)


def ideal_millionaire(a, b) -> np.ndarray:
    """``[a > b]`` for the client's a and the server's b (unsigned)."""
    return (_u(a) > _u(b)).astype(np.uint8)


def ideal_msb(x, bits: int) -> np.ndarray:
    return ((_u(x) >> np.uint64(bits - 1)) & np.uint64(1)).astype(np.uint8)


def ideal_drelu(x, bits: int) -> np.ndarray:
    """``[x >= 0]`` for the signed x."""
    return (1 - ideal_msb(x, bits)).astype(np.uint8)


def ideal_wrap(x_c, x_s, bits: int) -> np.ndarray:
    """``[x_c + x_s >= 2^bits]`` (a function of the sharing, by definition)."""
    return (_u(x_c) > (ring_mask(bits) - _u(x_s))).astype(np.uint8)


def ideal_b2a(b, bits: int) -> np.ndarray:
    return np.asarray(b, dtype=np.uint64) & ring_mask(bits)


def ideal_mux(b, x, bits: int) -> np.ndarray:
    return np.where(np.asarray(b, dtype=bool), _u(x), np.uint64(0)).astype(np.uint64)


def ideal_mul(x, y, bits: int) -> np.ndarray:
    return (_u(x) * _u(y)) & ring_mask(bits)


def ideal_mul_rows(x, y, bits: int) -> np.ndarray:
    """x (..., n) times the per-row y (...,), broadcast along the last axis."""
    return (_u(x) * _u(y)[..., None]) & ring_mask(bits)


def ideal_square(x, bits: int) -> np.ndarray:
    return (_u(x) * _u(x)) & ring_mask(bits)


def _floor_shift(x, bits: int, f: int) -> np.ndarray:
    """floor(lift(x) / 2^f) as int64 (bits <= 64)."""
    s = _u(x).view(np.int64) if bits == 64 else _u(x).astype(np.int64)
    if bits < 64:
        s = np.where(s >= (1 << (bits - 1)), s - (1 << bits), s)
    return s >> np.int64(f)


def ideal_trunc(x, bits: int, f: int) -> np.ndarray:
    """Exact truncation: ``floor(lift(x) / 2^f) mod 2^bits`` (modes exact and msb; msb1 may be
    one less, see :data:`TRUNC_MODES`)."""
    return _floor_shift(x, bits, f).view(np.uint64) & ring_mask(bits)


def ideal_trunc_upcast(x, bits: int, f: int, out_bits: int) -> np.ndarray:
    """``floor(lift_bits(x) / 2^f) mod 2^out_bits`` (the signed value, extended)."""
    return _floor_shift(x, bits, f).view(np.uint64) & ring_mask(out_bits)


def ideal_downcast_trunc(x, bits: int, f: int, out_bits: int) -> np.ndarray:
    """``floor(lift_bits(x) / 2^f) mod 2^out_bits`` (mode local may be one less)."""
    return _floor_shift(x, bits, f).view(np.uint64) & ring_mask(out_bits)


def ideal_max(x, bits: int) -> np.ndarray:
    """Signed maximum along the last axis, as ring elements."""
    s = _floor_shift(x, bits, 0)
    return s.max(axis=-1).view(np.uint64) & ring_mask(bits)


# -- registry -----------------------------------------------------------------------------------------
_PRIMS = (
    ("and", ideal_and, and_cost, "Each party learns a fresh boolean share of x & y (Beaver "
     "triples from silent random COTs; the opened x^a, y^b are uniform).", "[Cheetah, §4; CrypTFlow2]"),
    ("millionaire", ideal_millionaire, millionaire_cost, "Boolean shares of [a > b]; the server "
     "learns nothing (it sees OT choice corrections), the client sees OT outputs masked by "
     "server randomness.", "[CrypTFlow2, §4.1]"),
    ("drelu", ideal_drelu, drelu_cost, "Boolean shares of [x >= 0]; nothing else.", "[CrypTFlow2, §4.2]"),
    ("msb", ideal_msb, drelu_cost, "Boolean shares of the MSB of x; nothing else.", "[CrypTFlow2, §4.2]"),
    ("wrap", ideal_wrap, wrap_cost, "Boolean shares of the wrap bit of the sharing.", "[CrypTFlow2, §4.1]"),
    ("b2a", ideal_b2a, b2a_cost, "Arithmetic shares of the bit; nothing else.", "[CrypTFlow2, §4.3]"),
    ("mux", ideal_mux, mux_cost, "Arithmetic shares of b*x; nothing else.", "[CrypTFlow2, §4.3]"),
    ("mul", ideal_mul, mul_cost, "Arithmetic shares of x*y; nothing else.", "[SIRNN, §3.1]"),
    ("mul_rows", ideal_mul_rows, mul_rows_cost, "Arithmetic shares of x * y broadcast along rows; "
     "nothing else (one choice bit per row and bit of y).", "[SIRNN, §3.1; ALSZ13, §5]"),
    ("square", ideal_square, square_cost, "Arithmetic shares of x^2; nothing else.", "[SIRNN, §3.1]"),
    ("trunc", ideal_trunc, trunc_cost, "Arithmetic shares of floor(x / 2^f); nothing else.",
     "[SIRNN, §3.4; Cheetah, §5 (known MSB)]"),
    ("trunc_upcast", ideal_trunc_upcast, trunc_upcast_cost, "Shares of floor(x / 2^f) in the larger "
     "ring; nothing else.", "[NIMBUS24, §4.3 (fused ring conversion); SIRNN, §3.2]"),
    ("downcast_trunc", ideal_downcast_trunc, downcast_trunc_cost, "Shares of floor(x / 2^f) in the "
     "smaller ring; nothing else.", "[NIMBUS24, §4.3]"),
    ("max", ideal_max, max_cost, "Arithmetic shares of the row maxima; nothing else (OT choice "
     "corrections, OT-masked values and Beaver openings only).", "[CrypTFlow2, §5; tournament levels]"),
)

EXAMPLE_SHAPE = (16, 16)  #: docs/conformance examples (small: every docs build runs them)


def example_shares(shape, bits: int, seed: int = 0, bound_bits: int | None = None):
    """Deterministic example secret and shares (test PRG: docs and vectors only)."""
    prg = PRG.for_tests(f"nonlinear-example/{seed}")
    top = bits if bound_bits is None else bound_bits
    x = prg.uniform("x", shape, min(top, 63))
    if bound_bits is not None:  # signed values with |x| < 2^(bound_bits - 1)
        x = (x - np.uint64(1 << (bound_bits - 1))) & ring_mask(bits)
    xc = prg.uniform("x_c", shape, bits)
    return x & ring_mask(bits), xc, (x - xc) & ring_mask(bits)


def _prim_example(name: str):
    """Example run of ``nonlinear.<name>`` on the F_COT session at EXAMPLE_SHAPE."""
    def example(params):
        l, L = params.nonlinear.bits, params.linear.bits
        shp, n = EXAMPLE_SHAPE, EXAMPLE_SHAPE[0] * EXAMPLE_SHAPE[1]
        oc, osv = IdealCotSession.pair(b"example/" + name.encode())
        x, xc, xs = example_shares(shp, l, 1, l - 2)
        y, yc, ys = example_shares(shp, l, 2)
        bc = (xc & np.uint64(1)).astype(np.uint8)
        bs = (ys & np.uint64(1)).astype(np.uint8)
        f = params.nonlinear.frac
        k = params.linear.frac - params.nonlinear.frac
        X, Xc, Xs = example_shares(shp, L, 3)
        table = {
            "and": ((oc, bc, bs), (osv, bs, bc), {}, (n,)),
            "millionaire": ((oc, xc, l), (osv, ys, l), {}, ([(n, l)],)),
            "drelu": ((oc, xc, l), (osv, xs, l), {}, (shp, l)),
            "msb": ((oc, xc, l), (osv, xs, l), {}, (shp, l)),
            "wrap": ((oc, xc, l), (osv, xs, l), {}, (shp, l)),
            "b2a": ((oc, bc, l), (osv, bs, l), {}, (shp, l)),
            "mux": ((oc, bc, xc, l), (osv, bs, xs, l), {}, (shp, l)),
            "mul": ((oc, xc, yc, l), (osv, xs, ys, l), {}, (shp, l)),
            "mul_rows": ((oc, xc, yc[:, 0].copy(), l), (osv, xs, ys[:, 0].copy(), l), {}, (shp, l)),
            "square": ((oc, xc, l), (osv, xs, l), {}, (shp, l)),
            "trunc": ((oc, xc, l, f, "exact"), (osv, xs, l, f, "exact"), {}, (shp, l, f, "exact")),
            "trunc_upcast": ((oc, xc, l, f, L, "msb"), (osv, xs, l, f, L, "msb"), {}, (shp, l, f, L, "msb")),
            "downcast_trunc": ((oc, Xc, L, k, l, "exact"), (osv, Xs, L, k, l, "exact"), {}, (shp, L, k, l, "exact")),
            "max": ((oc, xc, l), (osv, xs, l), {}, (shp, l)),
        }
        return table[name]
    return example


for _name, _ideal, _cost, _learns, _ref in _PRIMS:
    register_protocol(ProtocolSpec(
        name=f"nonlinear.{_name}", component="nonlinear", client=f"{_name}_client",
        server=f"{_name}_server", ideal=_ideal, cost=_cost, learns=_learns, reference=_ref,
        example=_prim_example(_name),
    ))

# The functions (GELU, Softmax, tanh) build on these costs; importing them here registers them
# with the primitives (one import line in ``nimbus.spec``).
from . import nonlinear_fn  # noqa: E402,F401
