"""Oblivious transfer: parameters, encodings, messages, costs and ideal functionalities.

Message tags 0x2000-0x20ff. The HOW lives in ``nimbus.reference.ot`` / ``nimbus.optimized.ot``.

Layers (bottom-up)
------------------
1. **Base OT** (:data:`BASE_OTS` = 128 random 1-of-2 OTs) over ristretto255 from the system
   libsodium: Chou-Orlandi "simplest OT" [CO15], semi-honest. Keys are
   ``SHAKE-128(BASE_OT_DOMAIN || u32le(i) || A || B || P)[:16]``.
2. **COT extension**, one *instance* per direction. An instance has a COT **sender**, who holds a
   global ``Delta`` (128 bits, least significant bit 1) and receives blocks ``q_i``, and a COT
   **receiver**, who receives ``(r_i, t_i)`` with ``t_i = q_i xor r_i * Delta``. Normal form
   (normative): the sender's ``q_i`` has LSB 0 and the receiver's ``t_i`` has LSB ``r_i``, so the
   choice bit of a COT is ``t_i & 1`` (as in emp-ot). Two extension kinds:

   * ``iknp`` [IKNP03] (random choice bits, no consistency check: semi-honest);
   * ``ferret`` [YWL+20] (regular-noise primal LPN with the local linear code of d = 10 positions
     per row, GGM-tree single-point COTs, bootstrapping by reserving COTs of each iteration for
     the next; semi-honest variant). Bootstrapped from one IKNP batch.

   The two instances of a session are named by direction: ``"s2c"`` (the **server** is the COT
   sender, the client the receiver) and ``"c2s"`` (the client is the sender). Each party keeps a
   session object with ``.sender`` (its end of the instance where it sends) and ``.receiver``.
3. **Derived OTs** on one instance, consuming its random COTs in order: random COT (no messages),
   chosen-choice COT, random OT, chosen-message 1-of-2 OT, 1-of-N OT [NP99-style from log N
   random OTs] and arithmetic correlated OT in Z_2^bits.

Block representation (normative): a 128-bit block is a pair of ``uint64`` ``[lo, hi]``; arrays of
blocks have shape ``(n, 2)``, C-contiguous, so ``arr.view(uint8)`` is the 16-byte little-endian
encoding used as AES input. Bit ``j`` of a block is bit ``j % 64`` of word ``j // 64``. A packed
bit vector is ``numpy.packbits(bits, bitorder="little")`` (bit i is ``byte[i >> 3] >> (i & 7)``).

Hashes and PRGs (normative):

* ``PI`` = AES-128 under the public fixed key ``sha256(b"nimbus-ot-pi-v1")[:16]``.
* Correlation-robust hash ``H(x, w) = PI(sigma(x) xor w) xor sigma(x)`` with the orthomorphism
  ``sigma(lo, hi) = (hi, lo xor hi)`` and a 128-bit tweak ``w = (index, domain)`` that is never
  repeated for the same COT [GKWY20, §7]. Assumption: fixed-key AES is an ideal permutation, so
  ``H`` is a tweakable circular correlation-robust hash (the OT outputs ``H(q)``,
  ``H(q xor Delta)`` look independent and uniform to a party that does not know Delta).
* GGM length-doubling PRG: ``child_b(s) = PI_G(s xor b) xor s xor b`` (b = 0, 1 added to the low
  word), ``PI_G`` = AES-128 under ``sha256(b"nimbus-ot-ggm-v1")[:16]``.
* IKNP column PRG ``G(k)`` for batch number ``b``: block i is ``PI(k xor c_i) xor k xor c_i``
  with ``c_i = (i, DOM_IKNP << 32 | b)`` (fixed-key AES in counter mode with the seed as the
  whitening key: a PRG when PI is an ideal permutation, the same model as H; one AES call for all
  128 or 256 columns instead of one keyed cipher per column).
* Ferret LPN code: row i adds the entries ``idx = (w * k) >> 32`` of the secret for the first
  ``d`` little-endian u32 words ``w`` of ``AES_seed(u64le(i*ceil(d/4)+j) || 0^8)``,
  ``j < ceil(d/4)``; ``seed = sha256(b"nimbus-ferret-lpn-v1" || level name)[:16]`` is public.

References: [CO15] Chou, Orlandi, "The Simplest Protocol for Oblivious Transfer", LATINCRYPT 2015
(caveats: its UC proof is flawed [HL17: Hauck, Loss, ePrint 2017/1011; GIR18: Genç, Iovino, Rial,
ePrint 2017/370]; we only rely on semi-honest security, with point validation).
[IKNP03] Ishai, Kilian, Nissim, Petrank, CRYPTO 2003. [ALSZ13] Asharov et al., CCS 2013 (random
OT from COT). [YWL+20] Yang, Weng, Lan, Zhang, Wang, "Ferret", CCS 2020. [GKWY20] Guo, Katz,
Wang, Yu, S&P 2020. [NP99] Naor, Pinkas, STOC 1999 (1-of-N from 1-of-2 and a PRF).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .cost import Cost
from .errors import ParameterError, ProtocolError
from .messages import BytesField, FixedBytes, Message, pack_bits, packed_size, unpack_bits
from .proto import CLIENT, SERVER
from .protocols import Example, ProtocolSpec, register_protocol

__all__ = [
    # parameters
    "FerretLevel", "OtParams", "OT_128", "OT_TEST", "KINDS", "DIRECTIONS", "BASE_OTS",
    "sender_of", "receiver_of", "ot_params",
    # constants
    "PI_KEY", "GGM_KEY", "BASE_OT_DOMAIN", "LPN_DOMAIN", "lpn_seed",
    "DOM_ROT", "DOM_OT", "DOM_1OFN", "DOM_1OFN_PRF", "DOM_ACOT", "DOM_SPCOT", "DOM_IKNP", "LSB_CLEAR",
    # messages
    "BaseOtA", "BaseOtB", "IknpMatrix", "FerretSpcot", "FerretAhead", "ChoiceCorrection", "OtCiphertexts",
    "AcotCorrection",
    # encodings
    "pack_choice", "unpack_choice", "pack_ring", "unpack_ring", "log2_ceil",
    # costs
    "bytes_msg", "directed", "base_ot_cost", "iknp_refill_batches", "ferret_bootstrap_size", "iknp_refill_cost", "ferret_iteration_cost",
    "session_cost", "rcot_cost", "cot_cost", "rot_cost", "ot_cost", "ot_1ofn_cost", "acot_cost",
    # ideal functionalities
    "ideal_cot", "ideal_base_ot", "ideal_rot", "ideal_ot", "ideal_1ofn", "ideal_acot",
]

BASE_OTS = 128  #: kappa: base OTs per extension instance (computational security parameter)
KINDS = ("iknp", "ferret")
#: instance name -> (COT sender, COT receiver)
DIRECTIONS = {"s2c": (SERVER, CLIENT), "c2s": (CLIENT, SERVER)}

PI_KEY = hashlib.sha256(b"nimbus-ot-pi-v1").digest()[:16]  # derivation: public, nothing up the sleeve
GGM_KEY = hashlib.sha256(b"nimbus-ot-ggm-v1").digest()[:16]
BASE_OT_DOMAIN = b"nimbus-baseot-co15-v1\x00"
LPN_DOMAIN = b"nimbus-ferret-lpn-v1\x00"
#: AND-mask of a block that clears its least significant bit (broadcasts over (..., 2) arrays).
LSB_CLEAR = np.array([0xFFFF_FFFF_FFFF_FFFE, 0xFFFF_FFFF_FFFF_FFFF], dtype=np.uint64)
LSB_CLEAR.setflags(write=False)

# Tweak domains (high word of the tweak of H): one per use of a COT, so no (COT, tweak) repeats.
DOM_ROT, DOM_OT, DOM_1OFN, DOM_1OFN_PRF, DOM_ACOT, DOM_SPCOT, DOM_IKNP = 1, 2, 3, 4, 5, 6, 7


def sender_of(direction: str) -> str:
    return DIRECTIONS[_check_direction(direction)][0]


def receiver_of(direction: str) -> str:
    return DIRECTIONS[_check_direction(direction)][1]


def _check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ParameterError(f"OT instance must be one of {sorted(DIRECTIONS)}, got {direction!r}")
    return direction


def log2_ceil(n: int) -> int:
    return max(1, (int(n) - 1).bit_length())


# -- parameters ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FerretLevel:
    """One Ferret LPN level: ``n = t * 2^h`` outputs from ``k`` secret COTs and ``t`` GGM trees.

    An iteration consumes ``reserve = k + t*h`` COTs (k for the LPN secret, h per tree) and makes
    n COTs; the first ``reserve`` of the next level's demand are taken from its outputs.
    """

    name: str
    n: int
    k: int
    t: int
    h: int

    @property
    def leaves(self) -> int:
        return 1 << self.h

    @property
    def reserve(self) -> int:
        return self.k + self.t * self.h

    def validate(self) -> "FerretLevel":
        if min(self.n, self.k, self.t, self.h) < 1 or self.n != self.t << self.h:
            raise ParameterError(f"Ferret level {self.name!r}: need n = t * 2^h > 0, got {self}")
        if self.k >= 1 << 32:
            raise ParameterError("Ferret k must be < 2^32 (index derivation)")
        return self


@dataclass(frozen=True)
class OtParams:
    """OT-extension parameters (both parties must agree; part of the parameter set's id).

    ``kind``: the default extension of a session. ``iknp_batch``: COTs per IKNP refill (a multiple
    of 128; it changes the transcript, so it is a parameter, not a tuning knob). ``setup``/``main``:
    the Ferret levels (IKNP makes ``setup.reserve`` COTs; the setup level makes the main level's
    reserve; the main level runs repeatedly). ``d``: non-zeros per row of the LPN code.
    ``insecure``: test parameters (too small for any security), flagged in their name.
    """

    kind: str
    iknp_batch: int
    setup: FerretLevel
    main: FerretLevel
    d: int = 10
    insecure: bool = False

    def validate(self) -> "OtParams":
        if self.kind not in KINDS:
            raise ParameterError(f"OT kind must be one of {KINDS}, got {self.kind!r}")
        if self.iknp_batch < 128 or self.iknp_batch % 128:
            raise ParameterError("iknp_batch must be a positive multiple of 128")
        self.setup.validate()
        self.main.validate()
        if self.setup.n < self.main.reserve:
            raise ParameterError("Ferret setup level makes fewer COTs than the main level reserves")
        if self.main.n <= self.main.reserve:
            raise ParameterError("Ferret main level must make more COTs than it reserves")
        if not 1 <= self.d <= 12:
            raise ParameterError("LPN row weight d must be in [1, 12]")
        if not self.insecure and (self.main.k < 1 << 19 or self.main.t < 1000 or self.setup.t < 500):
            raise ParameterError("Ferret parameters below the 128-bit sets; mark test sets insecure=True")
        return self


#: 128-bit computational security, semi-honest, regular-noise primal LPN. Main level: emp-ot's
#: current ``N_REG/K_REG/T_REG/BIN_SZ_REG`` = 10,608,640 / 589,824 / 1,295 / 13 (the authors'
#: implementation of [YWL+20], re-parameterised after the algebraic attacks on regular LPN of
#: Briaud-Øygarden, EUROCRYPT 2023); setup (bootstrapping) level: emp-ot's pre-iteration set
#: ``PRE`` = 649,728 / 36,288 / 1,269 / 9, which makes the main level's reserve
#: (589,824 + 1,295 * 13 = 606,659 COTs) from 47,709 IKNP COTs. The CCS 2020 paper's Table lists n = 10,168,320, k = 588,160, t = 1,270 for its
#: main iteration (as quoted in the issue); its n is not t * 2^h, and we use the later set.
OT_128 = OtParams(
    kind="ferret",
    iknp_batch=1 << 20,
    setup=FerretLevel("setup-128", n=649_728, k=36_288, t=1_269, h=9),
    main=FerretLevel("main-128", n=10_608_640, k=589_824, t=1_295, h=13),
)

#: INSECURE test parameters (tiny LPN, tiny trees): for conformance tests only.
OT_TEST = OtParams(
    kind="ferret",
    iknp_batch=256,
    setup=FerretLevel("setup-INSECURE-test", n=128, k=16, t=4, h=5),
    main=FerretLevel("main-INSECURE-test", n=512, k=48, t=8, h=6),
    insecure=True,
)


def ot_params(params) -> OtParams:
    """The OT parameters of a parameter set (``params.ot``), or a clear error."""
    ot = getattr(params, "ot", None)
    if not isinstance(ot, OtParams):
        raise ParameterError(f"parameter set {getattr(params, 'name', params)!r} has no OT parameters (ot=)")
    return ot


def lpn_seed(level: FerretLevel) -> bytes:
    """The public AES key of a level's LPN code."""
    return hashlib.sha256(LPN_DOMAIN + level.name.encode()).digest()[:16]


# -- messages --------------------------------------------------------------------------------
class BaseOtA(Message):
    """Base OT, sender -> receiver: the sender's point ``A = a*G`` (32 bytes)."""

    TAG = 0x2001
    FIELDS = (("point", FixedBytes(32)),)


class BaseOtB(Message):
    """Base OT, receiver -> sender: ``B_i`` for each OT (32 bytes each, concatenated)."""

    TAG = 0x2002
    FIELDS = (("points", BytesField()),)


class IknpMatrix(Message):
    """IKNP, COT receiver -> COT sender: the 128 columns ``u_j`` (m/8 bytes each)."""

    TAG = 0x2003
    FIELDS = (("u", BytesField()),)


class FerretSpcot(Message):
    """Ferret, COT sender -> receiver: per tree, 2h masked level sums then ``Delta xor sum(leaves)``."""

    TAG = 0x2004
    FIELDS = (("data", BytesField()),)


class FerretAhead(Message):
    """Ferret look-ahead, COT sender -> receiver: a main-level :class:`FerretSpcot` sent as soon
    as the sender has the reserve for it (one iteration ahead of the receiver's need), so the
    receiver never waits for the sender's trees. ``ASYNC``: it may overtake other messages."""

    TAG = 0x2008
    ASYNC = True
    FIELDS = (("data", BytesField()),)


class ChoiceCorrection(Message):
    """Derandomisation, COT receiver -> sender: packed ``d = b xor r``."""

    TAG = 0x2005
    FIELDS = (("bits", BytesField()),)


class OtCiphertexts(Message):
    """Chosen-message OTs, sender -> receiver: masked messages packed at the message width."""

    TAG = 0x2006
    FIELDS = (("data", BytesField()),)


class AcotCorrection(Message):
    """Arithmetic COT, sender -> receiver: ``c + k0 - k1 mod 2^bits`` packed at ``bits``."""

    TAG = 0x2007
    FIELDS = (("data", BytesField()),)


# -- encodings -------------------------------------------------------------------------------
def pack_choice(bits: np.ndarray) -> bytes:
    """Packed little-endian bit vector (padding bits zero)."""
    return np.packbits(np.asarray(bits, dtype=np.uint8).reshape(-1), bitorder="little").tobytes()


def unpack_choice(data: bytes, n: int) -> np.ndarray:
    """Inverse of :func:`pack_choice`; rejects a wrong length or non-zero padding."""
    if len(data) != (n + 7) // 8:
        raise ProtocolError(f"bit vector of {len(data)} bytes, expected {(n + 7) // 8}")
    raw = np.frombuffer(data, dtype=np.uint8)
    if n % 8 and raw[-1] >> (n % 8):
        raise ProtocolError("non-zero padding bits in a bit vector")
    return np.unpackbits(raw, bitorder="little")[:n]


def pack_ring(values: np.ndarray, bits: int) -> bytes:
    """``values`` (uint64, < 2^bits) packed at ``bits`` bits each (the spec's canonical packer)."""
    return pack_bits(np.ascontiguousarray(values, dtype=np.uint64).reshape(-1), bits)


def unpack_ring(data: bytes, n: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_ring`; rejects a wrong length or non-zero padding."""
    if len(data) != packed_size(n, bits):
        raise ProtocolError(f"ring vector of {len(data)} bytes, expected {packed_size(n, bits)}")
    if (n * bits) % 8 and data[-1] >> ((n * bits) % 8):
        raise ProtocolError("non-zero padding bits in a ring vector")
    return unpack_bits(data, n, bits)


# -- costs -----------------------------------------------------------------------------------
def bytes_msg(payload: int) -> int:
    """Encoded size of a one-BytesField message: tag (2) + length (4) + payload."""
    return 2 + 4 + int(payload)


def directed(sender: str, from_sender: int, from_receiver: int, rounds: int) -> Cost:
    """A cost given per OT role, mapped onto client/server for the party ``sender``."""
    if sender == SERVER:
        return Cost(c2s=from_receiver, s2c=from_sender, rounds=rounds)
    if sender == CLIENT:
        return Cost(c2s=from_sender, s2c=from_receiver, rounds=rounds)
    raise ParameterError(f"sender must be 'client' or 'server', got {sender!r}")


def base_ot_cost(params=None, m: int = BASE_OTS, sender: str = SERVER) -> Cost:
    """``m`` base OTs: A (34 bytes) from the base-OT sender, then 32 bytes per OT back; 2 flights."""
    return directed(sender, 2 + 32, bytes_msg(32 * m), 2)


def iknp_refill_batches(ot: OtParams, need: int) -> int:
    """IKNP batches (of ``ot.iknp_batch`` COTs each) in one refill when ``need`` more COTs are
    wanted (normative): ``ceil(need / iknp_batch)``, all sent in one flight."""
    return max(1, -(-int(need) // ot.iknp_batch))


def ferret_bootstrap_size(ot: OtParams) -> int:
    """COTs of the one IKNP batch that bootstraps a Ferret instance: ``setup.reserve`` rounded up
    to a multiple of 128 (normative)."""
    return -(-ot.setup.reserve // 128) * 128


def iknp_refill_cost(params, m: int, sender: str = SERVER, batches: int = 1) -> Cost:
    """``batches`` IKNP batches of ``m`` COTs each (m a multiple of 128): 16 m bytes each,
    receiver -> sender, all in 1 flight."""
    return directed(sender, 0, batches * bytes_msg(16 * m), 1)


def ferret_iteration_cost(params, level: str = "main", sender: str = SERVER) -> Cost:
    """One Ferret iteration: ``t (2h + 1)`` blocks sender -> receiver, 1 flight."""
    lv = getattr(ot_params(params), level)
    return directed(sender, bytes_msg(16 * lv.t * (2 * lv.h + 1)), 0, 1)


def session_cost(params, kind: str | None = None) -> Cost:
    """Setting up both instances (``s2c`` then ``c2s``): base OTs (+ Ferret bootstrap).

    Per instance 2 flights (base OT) + 2 for Ferret (IKNP bootstrap batch, setup iteration); the
    second instance starts in the first one's last flight: ``2 * per_instance - 1`` rounds.
    """
    ot = ot_params(params)
    kind = kind or ot.kind
    total = Cost()
    per_instance = 2 + (2 if kind == "ferret" else 0)
    for d in ("s2c", "c2s"):
        snd = sender_of(d)
        # base-OT sender = COT receiver
        total = total + base_ot_cost(params, BASE_OTS, sender=receiver_of(d))
        if kind == "ferret":
            total = total + iknp_refill_cost(params, ferret_bootstrap_size(ot), snd)
            total = total + ferret_iteration_cost(params, "setup", snd)
    # The c2s instance's first flight leaves together with the s2c instance's last one.
    return Cost(total.c2s, total.s2c, 2 * per_instance - 1)


def rcot_cost(params, n: int, sender: str = SERVER) -> Cost:
    """Random COTs from the buffer: no messages (refills are charged to the session's label)."""
    return Cost()


def cot_cost(params, n: int, sender: str = SERVER) -> Cost:
    """Chosen-choice COT: the receiver's n correction bits, 1 flight."""
    return directed(sender, 0, bytes_msg((n + 7) // 8), 1)


def rot_cost(params, n: int, sender: str = SERVER) -> Cost:
    """Random OT: no messages."""
    return Cost()


def ot_cost(params, n: int, bits: int, sender: str = SERVER) -> Cost:
    """Chosen-message 1-of-2 OT: n bits up, 2n ``bits``-bit ciphertexts down; 2 flights."""
    return directed(sender, bytes_msg(packed_size(2 * n, bits)), bytes_msg((n + 7) // 8), 2)


def ot_1ofn_cost(params, n: int, N: int, bits: int, sender: str = SERVER) -> Cost:
    """1-of-N OT: ``n * ceil(log2 N)`` bits up, ``n*N`` ciphertexts down; 2 flights."""
    L = log2_ceil(N)
    return directed(sender, bytes_msg(packed_size(n * N, bits)), bytes_msg((n * L + 7) // 8), 2)


def acot_cost(params, n: int, bits: int, sender: str = SERVER) -> Cost:
    """Arithmetic COT in Z_2^bits: n bits up, n ``bits``-bit words down; 2 flights."""
    return directed(sender, bytes_msg(packed_size(n, bits)), bytes_msg((n + 7) // 8), 2)


# -- ideal functionalities --------------------------------------------------------------------
def ideal_cot(delta: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``t_i = q_i xor r_i * Delta`` (blocks (n, 2))."""
    r = np.asarray(r, dtype=np.uint64).reshape(-1, 1)
    return q ^ (np.uint64(0) - r) & np.asarray(delta, dtype=np.uint64).reshape(1, 2)


def ideal_base_ot(keys: np.ndarray, choices: np.ndarray) -> np.ndarray:
    """Random base OTs: the receiver's keys ``keys[i, c_i]`` (keys (m, 2, 16), uniform)."""
    return keys[np.arange(keys.shape[0]), np.asarray(choices, dtype=np.int64)]


def ideal_rot(k0: np.ndarray, k1: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Random OT: the receiver's key ``k_r`` (k0, k1 uniform (n, 2) blocks, r uniform bits)."""
    return np.where(np.asarray(r, dtype=bool)[:, None], k1, k0).astype(np.uint64)


def ideal_ot(m0: np.ndarray, m1: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The receiver's output ``m_b``."""
    return np.where(np.asarray(b, dtype=bool), m1, m0).astype(np.uint64)


def ideal_1ofn(messages: np.ndarray, choices: np.ndarray) -> np.ndarray:
    """The receiver's output ``messages[i, choices[i]]``."""
    c = np.asarray(choices, dtype=np.int64)
    return messages[np.arange(messages.shape[0]), c].astype(np.uint64)


def ideal_acot(c: np.ndarray, b: np.ndarray, x: np.ndarray, bits: int) -> np.ndarray:
    """Receiver output ``y = b*c - x mod 2^bits`` for the sender's output x."""
    m = np.uint64((1 << bits) - 1)
    return (np.asarray(b, dtype=np.uint64) * c - x) & m


# -- registry ---------------------------------------------------------------------------------
_EXAMPLE_N = 4096  # COTs in a docs/conformance example (IKNP extension: cheap to set up)


def _example(name: str):
    """Example run of ``ot.<name>`` (after an IKNP session setup under the label ``ot``)."""
    n, bits, N = _EXAMPLE_N, 32, 16

    def example(params):
        if name == "session":
            return Example(lambda c: c.impl.ot.ot_setup_client(c.sub("ot"), "iknp"),
                           lambda s: s.impl.ot.ot_setup_server(s.sub("ot"), "iknp"), "ot", ("iknp",))
        if name == "base":
            return Example(lambda c: c.impl.ot.base_ot_receiver(c.sub("base"), c.bits("choices", BASE_OTS)),
                           lambda s: s.impl.ot.base_ot_sender(s.sub("base")), "base", ())

        def sender_args(ctx):
            return {"rcot": (n,), "cot": (n,), "rot": (n,),
                    "ot": (ctx.uniform("m0", n, bits), ctx.uniform("m1", n, bits), bits),
                    "ot_1ofn": (ctx.uniform("m", (n, N), bits), bits),
                    "acot": (ctx.uniform("c", n, bits), bits)}[name]

        def receiver_args(ctx):
            b = ctx.bits("b", n)
            return {"rcot": (n,), "cot": (b,), "rot": (n,), "ot": (b, bits),
                    "ot_1ofn": (ctx.uniform_mod("c", n, N), N, bits), "acot": (b, bits)}[name]

        spec_name = f"ot.{name}"

        def client(ctx):
            from .protocols import get_protocol

            sess = yield from ctx.impl.ot.ot_setup_client(ctx.sub("ot"), "iknp")
            fn = getattr(ctx.impl.ot, get_protocol(spec_name).client)
            return (yield from fn(ctx.sub("p"), sess.receiver, *receiver_args(ctx)))

        def server(ctx):
            from .protocols import get_protocol

            sess = yield from ctx.impl.ot.ot_setup_server(ctx.sub("ot"), "iknp")
            fn = getattr(ctx.impl.ot, get_protocol(spec_name).server)
            return (yield from fn(ctx.sub("p"), sess.sender, *sender_args(ctx)))

        cost_args = {"rcot": (n,), "cot": (n,), "rot": (n,), "ot": (n, bits), "ot_1ofn": (n, N, bits),
                     "acot": (n, bits)}[name]
        return Example(client, server, "p", cost_args)

    return example


_REF = "[IKNP03; ALSZ13; YWL+20]"
for _name, _server, _client, _ideal, _cost, _learns, _ref in (
    ("session", "ot_setup_server", "ot_setup_client", ideal_cot, session_cost,
     "Each party learns only its own outputs: per instance, the sender Delta and the q_i, the "
     "receiver random choice bits r_i and t_i = q_i xor r_i Delta.", "[CO15; IKNP03; YWL+20]"),
    ("base", "base_ot_sender", "base_ot_receiver", ideal_base_ot, base_ot_cost,
     "Sender learns (k0_i, k1_i); receiver learns k_{c_i}; neither learns the other's choice or key.",
     "[CO15]"),
    ("rcot", "rcot_sender", "rcot_receiver", ideal_cot, rcot_cost,
     "Sender: Delta and q; receiver: uniform r and t = q xor r Delta. No messages.", _REF),
    ("cot", "cot_sender", "cot_receiver", ideal_cot, cot_cost,
     "Sender: Delta and uniform q; receiver (chooses b): t = q xor b Delta. The sender sees b xor r "
     "for a uniform r (nothing).", _REF),
    ("rot", "rot_sender", "rot_receiver", ideal_rot, rot_cost,
     "Sender: two uniform keys; receiver: uniform r and key k_r.", "[ALSZ13, §5]"),
    ("ot", "ot_sender", "ot_receiver", ideal_ot, ot_cost,
     "Receiver learns m_b only; sender learns nothing about b.", "[ALSZ13, §5]"),
    ("ot_1ofn", "ot_1ofn_sender", "ot_1ofn_receiver", ideal_1ofn, ot_1ofn_cost,
     "Receiver learns messages[choice] only; sender learns nothing about the choice.", "[NP99]"),
    ("acot", "acot_sender", "acot_receiver", ideal_acot, acot_cost,
     "Sender (correlation c) gets uniform x; receiver (bit b) gets b*c - x mod 2^bits; nothing else.",
     "[ALSZ13, §5.3; CrypTFlow2]"),
):
    register_protocol(ProtocolSpec(
        name=f"ot.{_name}", component="ot", client=_client, server=_server,
        ideal=_ideal, cost=_cost,
        learns=_learns + " Roles: the registry lists the server as OT sender (instance 's2c'); the "
        "'c2s' instance swaps them.", reference=_ref, example=_example(_name),
    ))
