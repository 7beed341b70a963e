"""The client's cache of encrypted weights (the COP setup output), on disk.

File format (little-endian; version 1)::

    magic "NIMBUSLC" | u32 format | u64 index_offset | section_0 | ... | section_k
    | u64 index_len | index (canonical JSON) | SHA-256(index)

* A section is the verbatim wire encoding of the setup messages of one item, each prefixed by
  its u32 length: the public key (``pk``: one ``PublicKeyMsg``) and every weight matrix (its
  ``SeededCiphertexts`` messages: c0 bit-packed at bitlen(p_i) bits plus a 32-byte seed per
  64 rows). The *seeded* form is stored: half the information-theoretic size of the expanded
  ciphertexts; the uniform halves are re-expanded on load (docs/linear.md has the trade-off).
* The index names the protocol version, the parameter-set id, the HE set, the model fingerprint
  (``nimbus.spec.linear.model_fingerprint``), and per section: name, shape, byte range and SHA-256.
* ``index_offset`` is written last (0 while a setup is in progress), and the file is written
  under a temporary name and renamed, so an interrupted setup never leaves a valid cache.

:class:`CacheReader` refuses (with :class:`CacheError`) a missing, truncated, tampered or stale
file (other protocol version, parameters or model) before anything is used, and loads one matrix
at a time (layer-by-layer streaming: peak memory is one expanded matrix).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np

from nimbus.spec import linear as S
from nimbus.spec.errors import CacheError, DecodeError
from nimbus.spec.he import A_LABEL, PublicKeyMsg, SeededCiphertexts, expand_a
from nimbus.spec.messages import Message, pack_bits, unpack_bits
from nimbus.spec.prg import PRG

__all__ = ["CacheWriter", "CacheReader", "CacheError", "MAGIC", "FORMAT", "expand_row"]

MAGIC = b"NIMBUSLC"
FORMAT = 1
_HEAD = struct.Struct("<8sIQ")


def expand_row(he, seed: bytes, t: int) -> np.ndarray:
    """The uniform half a_t (L, N) of row t of a seeded batch, alone: the normative draw of
    ``nimbus.spec.he.expand_a`` for one index (every (t, i) is its own PRG label)."""
    g = PRG(bytes(seed))
    return np.stack([g.uniform_mod(A_LABEL.format(t=t, i=i), he.n, p) for i, p in enumerate(he.primes)])


_SEEDED_HEAD = 2 + 32 + 1 + 12  # tag, seed, ndim, dims (rows, L, N) of a SeededCiphertexts message


def _row_slices(he, rows: int, t: int) -> list[tuple[int, int]]:
    """(offset, length) in a SeededCiphertexts message of row t's packed c0 residues, per prime
    (limb i holds every row's coefficients mod p_i, packed at bitlen(p_i) bits; N b_i / 8 bytes a row)."""
    out, base = [], _SEEDED_HEAD
    for p in he.primes:
        row = he.n * p.bit_length() // 8
        out.append((base + t * row, row))
        base += rows * row
    return out


def _row_digest(he, blob, rows: int, t: int) -> str:
    h = hashlib.sha256(bytes(blob[2:34]))
    for off, n in _row_slices(he, rows, t):
        h.update(blob[off:off + n])
    return h.hexdigest()


def _row_digests(he, blob: bytes, rows: int) -> list[str]:
    """Per-row digests SHA-256(seed || row's limb slices): the embedding lookup reads and verifies
    only its tokens' rows."""
    if (he.n * min(p.bit_length() for p in he.primes)) % 8:
        raise CacheError("row index needs byte-aligned rows (N a multiple of 8)")
    return [_row_digest(he, blob, rows, t) for t in range(rows)]


class CacheWriter:
    """A ``sink`` for :func:`client_setup`: streams every setup message to ``path`` as it arrives.

    Use: ``w = CacheWriter(path, params, shapes); run client_setup(ctx, shapes, sink=w); w.close()``.
    """

    def __init__(self, path, params, shapes, packer=pack_bits, row_index=("embed",)):
        self.path = Path(path)
        self.row_index = frozenset(row_index)
        self.tmp = self.path.with_name(self.path.name + ".part")
        self.params, self.shapes, self.packer = params, tuple(shapes), packer
        self.f = open(self.tmp, "wb")
        self.f.write(_HEAD.pack(MAGIC, FORMAT, 0))
        self.sections: list[dict] = []
        self.cur = None
        self.header = None

    def _open(self, name: str, kind: str, **extra):
        self._finish()
        self.cur = {"name": name, "kind": kind, "offset": self.f.tell(), "h": hashlib.sha256(), **extra}

    def _finish(self):
        if self.cur is not None:
            c = self.cur
            c["length"] = self.f.tell() - c["offset"]
            c["sha256"] = c.pop("h").hexdigest()
            self.sections.append(c)
            self.cur = None

    def _write(self, msg: Message):
        blob = msg.encode(self.params.he, packer=self.packer)
        rec = struct.pack("<I", len(blob)) + blob
        self.cur["h"].update(rec)
        self.cur.setdefault("records", []).append([self.f.tell(), len(rec), hashlib.sha256(rec).hexdigest()])
        if self.cur["name"] in self.row_index and isinstance(msg, SeededCiphertexts):
            self.cur.setdefault("rows", []).extend(_row_digests(self.params.he, blob, msg.c0.shape[0]))
        self.f.write(rec)

    def __call__(self, kind, name, chunk, row0, msg):
        if kind == "header":
            self.header = msg
        elif kind == "pk":
            self._open("pk", "pk")
            self._write(msg)
        elif kind == "rows":
            if self.cur is None or self.cur["name"] != name:
                s = next(s for s in self.shapes if s.name == name)
                self._open(name, "weights", d_in=s.d_in, d_out=s.d_out)
            self._write(msg)
        else:
            raise CacheError(f"unknown setup item {kind!r}")

    def close(self) -> Path:
        """Write the index, patch the header, rename into place. Returns the path."""
        self._finish()
        if self.header is None:
            raise CacheError("setup ended without a header")
        index = {
            "format": FORMAT, "protocol_version": S.PROTOCOL_VERSION, "param_id": self.params.id.hex(),
            "params": self.params.name, "he": self.params.he.name, "fingerprint": self.header.fingerprint.hex(),
            "sections": self.sections,
        }
        blob = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
        off = self.f.tell()
        self.f.write(struct.pack("<Q", len(blob)) + blob + hashlib.sha256(blob).digest())
        self.f.seek(0)
        self.f.write(_HEAD.pack(MAGIC, FORMAT, off))
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self):
        self.f.close()
        self.tmp.unlink(missing_ok=True)


class CacheReader:
    """Open and verify a cache file; :meth:`load` one matrix at a time.

    ``expected_fingerprint``: the model fingerprint the server announces (refuse another model);
    ``shapes``: the architecture (refuse a cache of other shapes). Every check failure is a
    :class:`CacheError` that says what is wrong. Opening checks the structure (magic, format,
    size, index digest, versions, parameters, fingerprint, shapes); every load verifies the
    digests of what it reads (the section, or the records of :meth:`load_rows`);
    ``verify_all=True`` also hashes every section at open.
    """

    def __init__(self, path, params, expected_fingerprint: bytes | None = None, shapes=None,
                 unpacker=unpack_bits, verify_all: bool = False):
        self.path, self.params, self.unpacker = Path(path), params, unpacker
        try:
            self.f = open(self.path, "rb")
        except OSError as e:
            raise CacheError(f"cannot open cache {self.path}: {e}") from None
        size = os.fstat(self.f.fileno()).st_size
        head = self.f.read(_HEAD.size)
        if len(head) != _HEAD.size:
            raise CacheError(f"{self.path}: truncated (no header)")
        magic, fmt, off = _HEAD.unpack(head)
        if magic != MAGIC:
            raise CacheError(f"{self.path}: not a nimbus linear-layer cache")
        if fmt != FORMAT:
            raise CacheError(f"{self.path}: cache format {fmt}, expected {FORMAT} (stale: run setup again)")
        if off == 0 or off + 8 > size:
            raise CacheError(f"{self.path}: truncated or unfinished (index offset {off}, size {size})")
        self.f.seek(off)
        (n,) = struct.unpack("<Q", self.f.read(8))
        if off + 8 + n + 32 != size:
            raise CacheError(f"{self.path}: truncated or extended (index end {off + 8 + n + 32} != size {size})")
        blob = self.f.read(n)
        if hashlib.sha256(blob).digest() != self.f.read(32):
            raise CacheError(f"{self.path}: index digest mismatch (tampered)")
        idx = json.loads(blob)
        if idx.get("protocol_version") != S.PROTOCOL_VERSION:
            raise CacheError(f"{self.path}: stale: protocol version {idx.get('protocol_version')} != {S.PROTOCOL_VERSION}")
        if idx.get("param_id") != params.id.hex():
            raise CacheError(f"{self.path}: stale: made for parameter set {idx.get('params')!r} ({idx.get('param_id', '')[:16]}...), "
                             f"not {params.name!r}")
        self.fingerprint = bytes.fromhex(idx["fingerprint"])
        if expected_fingerprint is not None and self.fingerprint != expected_fingerprint:
            raise CacheError(f"{self.path}: stale: cache is for model {self.fingerprint.hex()[:16]}..., "
                             f"the server has {expected_fingerprint.hex()[:16]}...")
        self.sections = {s["name"]: s for s in idx["sections"]}
        for s in self.sections.values():
            if s["offset"] < _HEAD.size or s["offset"] + s["length"] > off:
                raise CacheError(f"{self.path}: section {s['name']!r} out of range")
            recs = s.get("records", [])
            if sum(r[1] for r in recs) != s["length"] or (recs and recs[0][0] != s["offset"]):
                raise CacheError(f"{self.path}: section {s['name']!r} records inconsistent")
        if shapes is not None:
            for sh in shapes:
                s = self.sections.get(sh.name)
                if s is None or (s["d_in"], s["d_out"]) != (sh.d_in, sh.d_out):
                    raise CacheError(f"{self.path}: no matrix {sh.name!r} of shape {sh.d_in}x{sh.d_out}")
        if "pk" not in self.sections:
            raise CacheError(f"{self.path}: no public key")
        if verify_all:
            for name in self.sections:
                self._read(name)

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def names(self) -> list[str]:
        return [n for n in self.sections if n != "pk"]

    def _read(self, name: str) -> bytes:
        s = self.sections.get(name)
        if s is None:
            raise CacheError(f"{self.path}: no section {name!r}")
        data = os.pread(self.f.fileno(), s["length"], s["offset"])  # no shared file position: thread-safe
        if len(data) != s["length"] or hashlib.sha256(data).hexdigest() != s["sha256"]:
            raise CacheError(f"{self.path}: section {name!r} digest mismatch (tampered or corrupted)")
        return data

    def _messages(self, data: bytes, expect):
        mv, pos = memoryview(data), 0
        while pos < len(mv):
            (n,) = struct.unpack_from("<I", mv, pos)
            try:
                yield Message.decode(mv[pos + 4:pos + 4 + n], self.params.he, expect=expect, unpacker=self.unpacker)
            except DecodeError as e:
                raise CacheError(f"{self.path}: undecodable record: {e}") from None
            pos += 4 + n

    def load_rows(self, name: str, rows, impl) -> np.ndarray:
        """Expanded ciphertexts ``(1, len(rows), 2, L, N)`` of the given rows of a one-chunk matrix
        written with a row index (the embedding table): only those rows' bytes are read, each is
        checked against its own digest, and only their uniform halves are expanded."""
        he = self.params.he
        s = self.sections.get(name)
        if s is None or s["kind"] != "weights" or s["d_out"] > he.n or "rows" not in s:
            raise CacheError(f"{self.path}: no row-indexed one-chunk matrix {name!r}")
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= s["d_in"]):
            raise CacheError(f"{self.path}: row out of range for {name!r}")
        if len(s["rows"]) != s["d_in"]:
            raise CacheError(f"{self.path}: row index of {name!r} inconsistent")
        out = np.empty((1, rows.size, 2, he.levels, he.n), np.uint64)
        fd = self.f.fileno()
        for k, r in enumerate(rows.tolist()):
            rec, t = divmod(r, S.SETUP_CHUNK_ROWS)
            off = s["records"][rec][0] + 4  # the message inside the record
            nrows = min(S.SETUP_CHUNK_ROWS, s["d_in"] - rec * S.SETUP_CHUNK_ROWS)
            seed = os.pread(fd, 32, off + 2)
            h = hashlib.sha256(seed)
            limbs = []
            for (o, n), p in zip(_row_slices(he, nrows, t), he.primes):
                b = os.pread(fd, n, off + o)
                h.update(b)
                limbs.append((b, p))
            if len(seed) != 32 or h.hexdigest() != s["rows"][r]:
                raise CacheError(f"{self.path}: row {r} of {name!r} digest mismatch (tampered or corrupted)")
            for i, (b, p) in enumerate(limbs):
                v = self.unpacker(b, he.n, p.bit_length())
                if int(v.max()) >= p:
                    raise CacheError(f"{self.path}: row {r} of {name!r}: residue out of range")
                out[0, k, 0, i] = v
            out[0, k, 1] = expand_row(he, seed, t)
        return out

    def pk(self) -> np.ndarray:
        (m,) = list(self._messages(self._read("pk"), PublicKeyMsg))
        return m.pk

    def load_shape(self, name: str) -> tuple:
        """The shape of :meth:`load`'s result for matrix ``name``."""
        he = self.params.he
        s = self.sections.get(name)
        if s is None or s["kind"] != "weights":
            raise CacheError(f"{self.path}: no matrix {name!r}")
        return (len(S.column_chunks(he.n, s["d_out"])), s["d_in"], 2, he.levels, he.n)

    def load(self, name: str, impl, out: np.ndarray | None = None) -> np.ndarray:
        """The expanded ciphertexts ``(chunks, d_in, 2, L, N)`` of matrix ``name`` (verified).

        ``out``: a buffer of at least that size to fill (reused layer after layer, it bounds the
        memory and saves first-touch page faults); a view of it is returned."""
        he = self.params.he
        s = self.sections.get(name)
        if s is None or s["kind"] != "weights":
            raise CacheError(f"{self.path}: no matrix {name!r}")
        chunks = S.column_chunks(he.n, s["d_out"])
        shape = (len(chunks), s["d_in"], 2, he.levels, he.n)
        need = int(np.prod(shape))
        if out is None:
            out = np.empty(shape, np.uint64)
        elif out.dtype != np.uint64 or out.size < need or not out.flags.c_contiguous:
            raise CacheError(f"buffer for {name!r} must be a C-contiguous uint64 array of >= {need} elements")
        else:
            out = out.reshape(-1)[:need].reshape(shape)
        msgs = self._messages(self._read(name), SeededCiphertexts)
        for c in range(len(chunks)):
            for r0 in range(0, s["d_in"], S.SETUP_CHUNK_ROWS):
                m = next(msgs, None)
                rows = min(S.SETUP_CHUNK_ROWS, s["d_in"] - r0)
                if m is None or m.c0.shape != (rows, he.levels, he.n):
                    raise CacheError(f"{self.path}: matrix {name!r} is incomplete")
                dst = out[c, r0:r0 + rows]
                dst[:, 0] = m.c0  # = impl.rlwe.expand_seeded(he, seed, c0), written in place
                dst[:, 1] = expand_a(he, m.seed, rows)
        if next(msgs, None) is not None:
            raise CacheError(f"{self.path}: matrix {name!r} has extra records")
        return out
