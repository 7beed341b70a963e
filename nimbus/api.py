"""The Python API: :class:`Server` (owns a model) and :class:`Client` (owns text).

Two machines::

    # server machine
    from nimbus.api import Server
    Server.from_pretrained("path/to/checkpoint").serve("0.0.0.0", 7788)

    # client machine
    from nimbus.api import Client
    client = Client("~/.cache/nimbus/my-model")
    client.setup("server.example", 7788)           # once: encrypted weights -> the cache
    run = client.infer(["a gripping film"], "server.example", 7788)
    print(run.predictions[0].label, run.predictions[0].probabilities)

One process (tests, demos, the accuracy harness): ``client.setup_local(server)`` and
``client.infer_local(server, texts)`` run both parties in this thread (``run_local``); the results
and transcripts are those of the TCP path (tests/test_secure_bert.py checks it).

The server learns nothing about the text but its public length (the padded length with
``pad_to``); the client learns the output and the public architecture. Semi-honest model.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from nimbus.spec import model as M
from nimbus.spec.errors import CacheError, ParameterError, ShapeError
from nimbus.spec.params import ParamSet, get_preset
from nimbus.spec.prg import PRG
from nimbus.spec.proto import Ctx

from .models import secure as SG

__all__ = ["Server", "Client", "Query", "Prediction", "InferenceRun", "SetupReport", "DEFAULT_PARAMS", "DEFAULT_PORT",
           "load_secret"]

DEFAULT_PARAMS = "bert-base"
DEFAULT_PORT = 7788
CACHE_FILE, META_FILE, TOKENIZER_FILE = "weights.nlc", "model.json", "tokenizer.json"


def _params(params) -> ParamSet:
    p = get_preset(params) if isinstance(params, str) else params
    return p.require_secure()


def _impl(impl):
    import nimbus

    return nimbus.implementation(impl) if isinstance(impl, str) else impl


def load_secret(path) -> bytes:
    """The server's long-term 32-byte secret from ``path`` (created, mode 0600, when missing)."""
    path = Path(path).expanduser()
    if path.exists():
        data = path.read_bytes()
        if len(data) != 32:
            raise ParameterError(f"{path}: a server key file holds 32 bytes, found {len(data)}")
        return data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))
    return path.read_bytes()


# -- server ---------------------------------------------------------------------------------------------
class Server:
    """The model owner. ``model``: a checkpoint directory or ``nimbus.models.hf.BertWeights``.

    ``secret``: the long-term 32-byte secret its keys derive from (``key_file`` reads or creates
    one; default: fresh, so caches made against this object only). ``config``: the graph's
    public choices (``nimbus.spec.model.SecureConfig``)."""

    def __init__(self, model, *, params=DEFAULT_PARAMS, impl="optimized", secret: bytes | None = None,
                 key_file=None, config: M.SecureConfig | None = None, name: str = ""):
        from .models import fixed, hf

        self.params, self.impl = _params(params), _impl(impl)
        tokenizer = b""
        if isinstance(model, (str, os.PathLike)):
            path = Path(model).expanduser()
            weights = hf.load_model(path)
            name = name or path.name
            if (path / TOKENIZER_FILE).exists():
                tokenizer = (path / TOKENIZER_FILE).read_bytes()
        else:
            weights = model
        self.weights = weights
        if secret is None:
            secret = load_secret(key_file) if key_file else os.urandom(32)
        self.state = SG.ServerState(fixed.to_fixed(weights, self.params, name), secret, self.params, self.impl,
                                    config or M.SecureConfig(), tokenizer=tokenizer)

    @classmethod
    def from_pretrained(cls, path, **kw) -> "Server":
        return cls(path, **kw)

    @property
    def arch(self) -> M.ModelArch:
        return self.state.model.arch

    @property
    def fixed(self) -> M.FixedModel:
        return self.state.model

    def connection(self, on_query=None):
        """The server's generator for one connection (fresh online randomness)."""
        ctx = Ctx("server", self.params, PRG.from_os(), self.impl)
        return SG.server_connection(ctx, self.state, on_query)

    def serve(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, tls=None, network=None,
              max_connections: int | None = None, timeout: float = 300.0, log: Callable = print,
              ready: Callable | None = None, tune: bool = True) -> int:
        """Serve connections one after another (setup or sessions) until ``max_connections``.

        A failing connection (bad peer, stale cache, timeout) is logged and the server goes on.
        ``tune``: apply the party-process settings first (``nimbus.runtime.tune_party_process``:
        process-wide allocator and collector policy; pass False when embedding the server in an
        application that must keep its own). Returns the number of connections handled."""
        from nimbus.runtime import listen, run_tcp, tune_party_process
        from nimbus.spec.errors import NimbusError

        if tune:
            tune_party_process()  # keep freed memory, freeze the loaded heap
        handled = 0
        with listen(host, port, params=self.params, tls=tls, network=network, timeout=timeout) as lst:
            addr = lst.address
            log(f"nimbus server: model {self.arch.name or '?'} ({self.arch.layers} layers, hidden {self.arch.hidden}), "
                f"fingerprint {self.fixed.fingerprint.hex()[:16]}..., listening on {addr[0]}:{addr[1]}"
                + (" (TLS)" if tls else ""))
            if ready:
                ready(addr)
            while max_connections is None or handled < max_connections:
                try:
                    conn = lst.accept(timeout=None)
                except NimbusError as e:
                    log(f"handshake failed: {e}")
                    continue
                handled += 1
                t0 = time.perf_counter()
                with conn:
                    try:
                        res = run_tcp(self.connection(lambda k, n: log(f"  query {k}: {n} tokens")), conn)
                        c = res.transcript.cost()
                        log(f"{res.output}: {time.perf_counter() - t0:.1f} s, {c.c2s / 1e6:.1f} MB in, "
                            f"{c.s2c / 1e6:.1f} MB out, {res.transcript.rounds} flights")
                    except (NimbusError, OSError) as e:
                        log(f"connection failed: {type(e).__name__}: {e}")
        return handled


# -- client ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    """One query's result: ``label``/``probabilities``/``logits`` (a classifier) or ``embedding``."""

    text: str | None
    tokens: int
    logits: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    label: str | None = None
    embedding: np.ndarray | None = None
    output: np.ndarray | None = None  # the raw fixed-point result

    def to_json(self) -> dict:
        d = {"text": self.text, "tokens": self.tokens}
        if self.logits is not None:
            d.update(label=self.label, logits=self.logits.tolist(), probabilities=self.probabilities.tolist())
        else:
            d["embedding"] = self.embedding.tolist()
        return d


@dataclass
class InferenceRun:
    predictions: list
    transcript: object
    wall_s: float
    setup_s: float = 0.0

    def report(self) -> dict:
        from .report import category_table

        return category_table(self.transcript)


@dataclass(frozen=True)
class SetupReport:
    bytes_s2c: int
    bytes_c2s: int
    seconds: float
    cache_bytes: int
    path: Path


class Query(NamedTuple):
    """One query: token ids, the client's validity mask, and whether it is padded to a public
    length (then the server is told so even when nothing needed padding)."""

    tokens: np.ndarray
    valid: np.ndarray
    padded: bool


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _shared_matrices(reader, folder: Path, names, impl) -> dict:
    """Expanded matrices as read-only memory maps of ``folder/<name>.npy``, each written once (under
    a file lock, so concurrent clients wait rather than expand twice) from the verified cache, with a
    BLAKE2b digest beside it that is checked whenever a map is opened (a damaged file is rebuilt)."""
    import fcntl
    import hashlib

    def digest(path):
        h = hashlib.blake2b()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
        return h.hexdigest()

    st = os.stat(reader.path)  # the copies belong to this cache file: a new setup rebuilds them
    ident = json.dumps({"cache": str(reader.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    with open(folder / ".lock", "a") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        try:
            man = folder / "source.json"
            if not man.exists() or man.read_text() != ident:
                for f in folder.glob("*.npy*"):
                    f.unlink()
                man.write_text(ident)
            for name in names:
                path, dg = folder / f"{name}.npy", folder / f"{name}.npy.b2"
                ok = path.exists() and dg.exists() and dg.read_text().strip() == digest(path)
                if not ok:
                    tmp = folder / f"{name}.npy.tmp"
                    tmp.unlink(missing_ok=True)
                    shape = reader.load_shape(name)
                    buf = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint64, shape=shape)
                    reader.load(name, impl, buf)
                    buf.flush()
                    del buf
                    dg.write_text(digest(tmp))
                    tmp.replace(path)
                m = np.load(path, mmap_mode="r")
                if m.shape != reader.load_shape(name) or m.dtype != np.uint64:
                    raise CacheError(f"{path}: wrong shape or type; delete {folder} to rebuild it")
                out[name] = m
        finally:
            fcntl.flock(lk, fcntl.LOCK_UN)
    return out


class Client:
    """The text owner, with its cache directory (made by :meth:`setup`)."""

    def __init__(self, cache_dir, *, params=DEFAULT_PARAMS, impl="optimized", preload: bool | str | None = None):
        self.dir = Path(cache_dir).expanduser()
        self.params, self.impl = _params(params), _impl(impl)
        if preload not in (None, True, False, "shared"):
            raise ValueError(f"preload must be None, True, False or 'shared', not {preload!r}")
        #: ``True``: every expanded matrix in this process's memory; ``"shared"``: expanded once into
        #: files beside the cache and memory-mapped, so client processes on one machine share one
        #: copy (the page cache); ``False``: streamed per query; ``None``: True if it fits.
        self.preload = preload
        #: Seconds spent loading (reading, verifying, expanding) matrices from the cache during
        #: queries: zero with ``preload``; otherwise part of the Linear categories' client compute
        #: (a streaming client loads the next matrix in a background thread while it computes and
        #: waits, so this counts only the loading that was not hidden).
        self.stream_seconds = 0.0
        self._state = None
        self._reader = None
        self._pool = None  # the prefetch thread of a streaming client
        self._tok = None

    # -- setup ----------------------------------------------------------------------------
    def _sink_factory(self, progress):
        from nimbus.cache import CacheWriter
        from nimbus.spec.linear import check_linear_params, setup_messages

        holder = {}

        def factory(arch, fingerprint, tokenizer):
            self.dir.mkdir(parents=True, exist_ok=True)
            w = CacheWriter(self.dir / CACHE_FILE, self.params, arch.shapes())
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=setup_messages(check_linear_params(self.params), arch.shapes()), unit="msg",
                           desc="setup: encrypted weights", disable=None)
            holder.update(writer=w, arch=arch, fingerprint=fingerprint, tokenizer=tokenizer, bar=bar)

            def sink(kind, name, chunk, row0, msg):
                w(kind, name, chunk, row0, msg)
                if bar is not None and kind == "rows":
                    bar.update(1)
            return sink

        return holder, factory

    def _finish_setup(self, holder, ok: bool):
        w, bar = holder.get("writer"), holder.get("bar")
        if bar is not None:
            bar.close()
        if w is None:
            return
        if not ok:
            w.abort()
            return
        path = w.close()
        if holder["tokenizer"]:
            (self.dir / TOKENIZER_FILE).write_bytes(holder["tokenizer"])
        meta = {"arch": json.loads(holder["arch"].to_json()), "fingerprint": holder["fingerprint"].hex(),
                "linear_fingerprint": w.header.fingerprint.hex(), "params": self.params.name,
                "param_id": self.params.id.hex(), "model_setup": M.MODEL_SETUP_VERSION, "cache": path.name}
        tmp = self.dir / (META_FILE + ".part")
        tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
        os.replace(tmp, self.dir / META_FILE)
        self._state = None

    def setup(self, host: str, port: int = DEFAULT_PORT, *, tls=None, network=None, progress: bool = True,
              timeout: float = 300.0, retry_s: float = 0.0) -> SetupReport:
        """Fetch the server's encrypted weights into the cache directory (restartable: an
        interrupted setup leaves no cache; run it again)."""
        from nimbus.runtime import connect, run_tcp

        holder, factory = self._sink_factory(progress)
        ctx = Ctx("client", self.params, PRG.from_os(), self.impl)
        t0 = time.perf_counter()
        ok = False
        try:
            with connect(host, port, params=self.params, session_id=os.urandom(16), tls=tls, network=network,
                         timeout=timeout, retry_s=retry_s) as conn:
                res = run_tcp(SG.client_run_setup(ctx, factory), conn)
            ok = True
        finally:
            self._finish_setup(holder, ok)
        return self._setup_report(res.transcript, time.perf_counter() - t0)

    def setup_local(self, server: Server, progress: bool = False) -> SetupReport:
        """Setup with the server in this process."""
        from nimbus.runtime import run_local

        holder, factory = self._sink_factory(progress)
        ctx = Ctx("client", self.params, PRG.from_os(), self.impl)
        t0 = time.perf_counter()
        ok = False
        try:
            res = run_local(SG.client_run_setup(ctx, factory), server.connection())
            ok = True
        finally:
            self._finish_setup(holder, ok)
        return self._setup_report(res.transcript, time.perf_counter() - t0)

    def _setup_report(self, tr, seconds) -> SetupReport:
        c = tr.cost()
        path = self.dir / CACHE_FILE
        return SetupReport(c.s2c, c.c2s, seconds, path.stat().st_size, path)

    # -- the cache ------------------------------------------------------------------------
    def _meta(self) -> dict:
        p = self.dir / META_FILE
        if not p.exists():
            raise CacheError(f"no cache in {self.dir}: run setup first (nimbus setup --server HOST:PORT --cache {self.dir})")
        try:
            meta = json.loads(p.read_text())
            meta["arch_obj"] = M.ModelArch.from_json(json.dumps(meta["arch"]).encode())
            bytes.fromhex(meta["fingerprint"])
        except (ValueError, KeyError, TypeError, ShapeError) as e:
            raise CacheError(f"{p}: corrupted cache description ({e}): run setup again") from None
        if meta.get("param_id") != self.params.id.hex():
            raise CacheError(f"{self.dir}: cache made for parameter set {meta.get('params')!r}, not {self.params.name!r}")
        made = meta.get("model_setup", meta.get("model_protocol"))  # caches before the split: protocol 3 = setup 3
        if made != M.MODEL_SETUP_VERSION:
            raise CacheError(f"{self.dir}: stale cache (model setup version {made}, not "
                             f"{M.MODEL_SETUP_VERSION}): run setup again")
        return meta

    @property
    def arch(self) -> M.ModelArch:
        return self._meta()["arch_obj"]

    def _preload(self, arch: M.ModelArch) -> bool:
        """Keep every expanded matrix in memory (one load for many queries) when asked, or by
        default when they take at most half of the available memory; otherwise each query
        streams them from the cache layer by layer (peak: one expanded matrix)."""
        if self.preload is not None:
            return bool(self.preload)
        from nimbus.spec.linear import cache_it_bytes, check_linear_params

        he = check_linear_params(self.params)
        need = sum(cache_it_bytes(he, s) for s in arch.shapes()[1:])
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            with open("/proc/meminfo") as f:  # MemAvailable counts reclaimable page cache
                for line in f:
                    if line.startswith("MemAvailable:"):
                        avail = int(line.split()[1]) * 1024
        except (OSError, ValueError):
            return False
        return need <= avail // 2

    def state(self) -> SG.ClientState:
        """The verified cache as a ``ClientState`` (opened once; matrices loaded per use, or all at
        once with ``preload``)."""
        if self._state is not None:
            return self._state
        from nimbus.cache import CacheReader

        meta = self._meta()
        arch = meta["arch_obj"]
        reader = CacheReader(self.dir / meta.get("cache", CACHE_FILE), self.params,
                             expected_fingerprint=bytes.fromhex(meta["linear_fingerprint"]), shapes=arch.shapes(),
                             unpacker=self.impl.rlwe.unpack_bits)
        self._reader = reader
        pk = reader.pk()
        store = {}
        if self.preload == "shared":
            store = _shared_matrices(reader, self.dir / f"expanded-{meta['linear_fingerprint'][:16]}",
                                     [s.name for s in arch.shapes()[1:]], self.impl)
        elif self._preload(arch):
            for s in arch.shapes()[1:]:
                store[s.name] = reader.load(s.name, self.impl)

        order = [s.name for s in arch.shapes()[1:]]  # the order in which a query uses them
        pending = {}

        def matrix(name):
            if name in store:
                return store[name]
            t = time.perf_counter()
            try:
                fut = pending.pop(name, None)
                m = fut.result() if fut is not None else reader.load(name, self.impl)
            finally:
                self.stream_seconds += time.perf_counter() - t
            if name in order:  # streaming: load the next matrix in the background meanwhile (one ahead)
                nxt = order[(order.index(name) + 1) % len(order)]
                if nxt not in pending and nxt != name:
                    if self._pool is None:
                        from concurrent.futures import ThreadPoolExecutor

                        self._pool = ThreadPoolExecutor(1, thread_name_prefix="nimbus-prefetch")
                    pending.clear()  # at most one matrix ahead
                    pending[nxt] = self._pool.submit(reader.load, nxt, self.impl)
            return m

        def embed_rows(tokens):
            return reader.load_rows("embed", tokens, self.impl)

        self._state = SG.ClientState(arch, bytes.fromhex(meta["fingerprint"]), pk, matrix, embed_rows)
        return self._state

    def close(self):
        if self._pool is not None:  # a pending prefetch finishes (it reads the open cache) before the close
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._reader is not None:
            self._reader.close()
        self._reader = self._state = None

    # -- queries --------------------------------------------------------------------------
    def tokenizer(self):
        if self._tok is None:
            from .models.hf import Tokenizer

            if not (self.dir / TOKENIZER_FILE).exists():
                raise CacheError(f"{self.dir}: the server sent no tokenizer; pass token ids instead of text")
            self._tok = Tokenizer(self.dir, max_len=1 << 20)
        return self._tok

    def encode(self, texts: Sequence, pad_to: int | None = None, truncate: bool = False) -> list:
        """Texts (or token-id arrays) -> :class:`Query` ``(tokens, valid, padded)``; too long is an error unless
        ``truncate``; ``pad_to`` pads every query to that public length (client-private mask)."""
        arch = self.arch
        limit = M.max_tokens(self.params, arch)
        if pad_to is not None and not 1 <= pad_to <= limit:
            raise ShapeError(f"pad_to {pad_to}: must be in [1, {limit}]")
        out = []
        for t in texts:
            ids = self.tokenizer().encode(t) if isinstance(t, str) else np.asarray(t, dtype=np.int64).reshape(-1)
            cap = pad_to or limit
            if ids.size > cap:
                if not truncate:
                    what = f"{t[:40]!r}..." if isinstance(t, str) else "a query"
                    raise ShapeError(f"{what} is {ids.size} tokens; the limit is {cap} (shorten it, or truncate)")
                ids = np.concatenate([ids[:cap - 1], ids[-1:]])
            valid = np.ones(ids.size, dtype=bool)
            if pad_to is not None and ids.size < pad_to:
                valid = np.concatenate([valid, np.zeros(pad_to - ids.size, bool)])
                ids = np.concatenate([ids, np.full(pad_to - ids.size, arch.pad_token_id, np.int64)])
            out.append(Query(ids, valid, pad_to is not None))
        return out

    def _predictions(self, texts, results) -> list:
        arch = self.arch
        preds = []
        for t, r in zip(texts, results):
            text = t if isinstance(t, str) else None
            if arch.labels:
                p = _softmax(r.values)
                preds.append(Prediction(text, r.tokens, r.values, p, arch.labels[int(np.argmax(r.values))],
                                        output=r.output))
            else:
                preds.append(Prediction(text, r.tokens, embedding=r.values, output=r.output))
        return preds

    def session(self, queries, on_result=None):
        """The client's generator for one session over ``queries`` (from :meth:`encode`)."""
        ctx = Ctx("client", self.params, PRG.from_os(), self.impl)
        return SG.client_session(ctx, self.state(), queries, on_result)

    def infer(self, texts: Sequence, host: str, port: int = DEFAULT_PORT, *, tls=None, network=None,
              pad_to: int | None = None, truncate: bool = False, timeout: float = 300.0, retry_s: float = 0.0,
              on_result=None, tune: bool = True) -> InferenceRun:
        """Secure inference of ``texts`` (strings or token-id arrays) against a served model.
        ``tune``: as :meth:`Server.serve` (process-wide settings; False keeps the process's own)."""
        from nimbus.runtime import connect, run_tcp, tune_party_process

        queries = self.encode(texts, pad_to, truncate)
        if tune:
            tune_party_process()  # keep freed memory, freeze the loaded heap
        t0 = time.perf_counter()
        with connect(host, port, params=self.params, session_id=os.urandom(16), tls=tls, network=network,
                     timeout=timeout, retry_s=retry_s) as conn:
            res = run_tcp(self.session(queries, on_result), conn)
        return InferenceRun(self._predictions(texts, res.output), res.transcript, time.perf_counter() - t0)

    def infer_local(self, server: Server, texts: Sequence, pad_to: int | None = None, truncate: bool = False,
                    on_result=None) -> InferenceRun:
        """Secure inference with the server in this process (both parties in this thread)."""
        from nimbus.runtime import run_local

        queries = self.encode(texts, pad_to, truncate)
        t0 = time.perf_counter()
        res = run_local(self.session(queries, on_result), server.connection())
        return InferenceRun(self._predictions(texts, res.client), res.transcript, time.perf_counter() - t0)
