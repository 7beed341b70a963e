"""``run_tcp``: drive ONE party's protocol generator over a real TCP connection.

Who runs what: each party runs, in its own process (or thread), ``conn = connect(...)`` (the
dialling party, usually the client) or ``conn = listen(...).accept()`` (the listening party,
usually the server), then ``run_tcp(its_generator, conn)``. The transport never looks inside a
message; protocols never touch a socket.

Wire format (normative, little-endian)::

    frame  := u8 kind || u32 length || u32 depth || length bytes
    kind   := 1 HELLO | 2 DATA | 3 ERROR | 4 BYE
    HELLO  := "NIMBUS2P" || u16 protocol_version || u8 role (1 client, 2 server)
              || u32 max_frame || 32 bytes parameter-set id
              || u16 n || n bytes parameter-set name || u16 n || n bytes session id
              || u16 n || n bytes software version                               (utf-8 strings)
    DATA   := one encoded message (``nimbus.spec.messages``); depth = its flight number
    ERROR  := utf-8 reason; the sender aborts the session
    BYE    := empty; the sender's protocol has returned

``depth`` is the causal flight number used to count rounds, exactly as ``run_local`` computes it:
a sent message's depth is one more than the deepest message this party had received before
sending it. Both parties and ``run_local`` therefore record identical transcripts (each direction
in FIFO order), and identical :meth:`Transcript.digest`.

Session life cycle: (optional TLS handshake) -> both send HELLO, both check the peer's (magic,
protocol version, opposite roles, parameter-set id, session id; a mismatch is a
:class:`HandshakeError` on both sides, naming what differs) -> DATA frames -> both send BYE
after their generator returns and wait for the peer's. A connection may run several generators in
sequence (e.g. setup, then online), each ending with its BYE exchange. Any failure sends an ERROR
frame with the reason to the peer, which raises :class:`RemoteError`.

Threads per connection: the caller's thread runs the generator (compute, encode, decode); a
writer thread sends queued frames (so sending never stalls compute) and applies network shaping
(``nimbus.runtime.netem``); a reader thread receives frames into an inbox (so the peer's link
schedule is never held up by our compute) and enforces the maximum frame size before allocating.
With TLS the one ``ssl.SSLObject`` works on memory BIOs under a lock, raw socket I/O happens
outside it, and every drain of the outgoing BIO happens under the send lock, so TLS records leave
in order. Every blocking wait has a timeout.
"""

from __future__ import annotations

import queue
import socket
import ssl
import struct
import threading
import time
import dataclasses
from collections import deque
from dataclasses import dataclass
from typing import Any, NamedTuple

from nimbus._version import PROTOCOL_VERSION, __version__
from nimbus.spec.cost import Network
from nimbus.spec.errors import (
    FrameTooLarge, HandshakeError, NimbusError, ParameterError, PeerDisconnected, PeerTimeout,
    ProtocolError, RemoteError, TransportError,
)
from nimbus.spec.messages import MESSAGE_TYPES, Message, is_async
from nimbus.spec.params import ParamSet
from nimbus.spec.proto import CLIENT, SERVER, Recv, Send, peer_of

from .netem import LinkShaper, as_network, fine_timer_slack, sleep_until
from .transcript import C2S, S2C, Transcript

__all__ = [
    "run_tcp", "TcpResult", "connect", "listen", "Listener", "Connection", "TlsConfig", "Frame",
    "HELLO", "DATA", "ERROR", "BYE", "FRAME_HEADER", "MAGIC", "DEFAULT_MAX_FRAME", "DEFAULT_TIMEOUT",
]

FRAME_HEADER = struct.Struct("<BII")  # kind, payload length, depth
HELLO, DATA, ERROR, BYE = 1, 2, 3, 4
KIND_NAMES = {HELLO: "HELLO", DATA: "DATA", ERROR: "ERROR", BYE: "BYE"}
MAGIC = b"NIMBUS2P"
#: Largest frame a party accepts by default (each side announces its own limit in HELLO).
DEFAULT_MAX_FRAME = 256 << 20
#: Default seconds to wait for the peer (connect, handshake, each message, each send).
DEFAULT_TIMEOUT = 300.0
#: Largest HELLO accepted (checked before anything is known about the peer).
MAX_HELLO = 4096
#: Most bytes queued for sending before ``send_data`` waits for the writer (back-pressure).
MAX_QUEUED = 512 << 20
#: Received bytes buffered for the protocol before the reader stops reading (TCP back-pressure):
#: a peer cannot make us buffer more than this plus one frame.
MAX_INBOX = 512 << 20
_ROLE_CODE = {CLIENT: 1, SERVER: 2}
_CODE_ROLE = {v: k for k, v in _ROLE_CODE.items()}
_RECV_CHUNK = 1 << 18
_TLS_CHUNK = 1 << 20
_MAX_REASON = 2000


# -- TLS ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TlsConfig:
    """TLS settings. The server presents ``certfile``/``keyfile``; the client verifies the server
    certificate against ``cafile`` (the system store when None) and ``server_hostname`` (the host
    it dialled when None). Certificate verification is always on; TLS 1.2 at least."""

    certfile: str | None = None
    keyfile: str | None = None
    cafile: str | None = None
    server_hostname: str | None = None

    @classmethod
    def server(cls, certfile: str, keyfile: str | None = None) -> "TlsConfig":
        return cls(certfile=certfile, keyfile=keyfile)

    @classmethod
    def client(cls, cafile: str | None = None, server_hostname: str | None = None) -> "TlsConfig":
        return cls(cafile=cafile, server_hostname=server_hostname)

    def context(self, server_side: bool) -> ssl.SSLContext:
        try:
            if server_side:
                if not self.certfile:
                    raise ParameterError("a TLS server needs certfile (and keyfile)")
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(self.certfile, self.keyfile)
            else:
                ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cafile)
                ctx.check_hostname = True
                ctx.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as e:
            raise ParameterError(f"TLS configuration: {e}") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx


def _tls_context(tls, server_side: bool) -> ssl.SSLContext | None:
    if tls is None or tls is False:
        return None
    if isinstance(tls, ssl.SSLContext):
        return tls
    if isinstance(tls, TlsConfig):
        return tls.context(server_side)
    raise ParameterError(f"tls must be None, a TlsConfig or an ssl.SSLContext, not {type(tls).__name__}")


class _Tls:
    """One SSLObject on memory BIOs; ``lock`` guards it and both BIOs."""

    def __init__(self, ctx: ssl.SSLContext, server_side: bool, hostname: str | None):
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                server_hostname=None if server_side else hostname)
        self.lock = threading.Lock()
        self.buf = bytearray(1 << 17)  # decrypted plaintext lands here first (reader side only)
        self.rawbuf = bytearray(1 << 18)  # received ciphertext (reader side only)


# -- HELLO -------------------------------------------------------------------------------------
def _session_bytes(session_id) -> bytes:
    if session_id is None:
        return b""
    if isinstance(session_id, str):
        session_id = session_id.encode("utf-8")
    if not isinstance(session_id, (bytes, bytearray)) or len(session_id) > 1024:
        raise ParameterError("session_id must be a str or bytes of at most 1024 bytes")
    return bytes(session_id)


def _show_session(s: bytes) -> str:
    try:
        t = s.decode("utf-8")
        if t.isprintable():
            return repr(t)
    except UnicodeDecodeError:
        pass
    return "0x" + s.hex()


@dataclass(frozen=True)
class _Hello:
    version: int
    role: str | None = None
    max_frame: int = 0
    params_id: bytes = b""
    params_name: str = ""
    session_id: bytes = b""
    software: str = ""

    _HEAD = struct.Struct("<8sH")
    _FIXED = struct.Struct("<BI32s")

    def pack(self) -> bytes:
        out = [self._HEAD.pack(MAGIC, self.version),
               self._FIXED.pack(_ROLE_CODE[self.role], self.max_frame, self.params_id)]
        for s in (self.params_name.encode(), self.session_id, self.software.encode()):
            out.append(struct.pack("<H", len(s)) + s)
        return b"".join(out)

    @classmethod
    def unpack(cls, data: bytes, ours: int) -> "_Hello":
        """Parse a HELLO; a different protocol version is returned with only ``version`` set
        (the rest of its layout is not ours to read)."""
        if len(data) < cls._HEAD.size or data[:8] != MAGIC:
            raise HandshakeError("the peer is not a nimbus party (bad magic in its HELLO)")
        _, version = cls._HEAD.unpack_from(data)
        if version != ours:
            return cls(version)
        try:
            pos = cls._HEAD.size
            code, max_frame, pid = cls._FIXED.unpack_from(data, pos)
            pos += cls._FIXED.size
            strs = []
            for _ in range(3):
                (n,) = struct.unpack_from("<H", data, pos)
                pos += 2
                if pos + n > len(data):
                    raise struct.error("string runs past the end")
                strs.append(bytes(data[pos:pos + n]))
                pos += n
            if pos != len(data):
                raise struct.error(f"{len(data) - pos} trailing bytes")
            if code not in _CODE_ROLE:
                raise struct.error(f"unknown role code {code}")
            return cls(version, _CODE_ROLE[code], max_frame, pid, strs[0].decode("utf-8", "replace"), strs[1],
                       strs[2].decode("utf-8", "replace"))
        except struct.error as e:
            raise HandshakeError(f"malformed HELLO from the peer: {e}") from None


def _differences(ours: _Hello, theirs: _Hello) -> list[str]:
    """What differs between two HELLOs, in words (empty: they agree)."""
    if theirs.version != ours.version:
        return [f"protocol versions differ: this {ours.role} speaks version {ours.version}, "
                f"the peer speaks version {theirs.version} (nimbus {ours.software} here)"]
    diffs = []
    if theirs.role == ours.role:
        diffs.append(f"both parties claim the role {ours.role!r} (one must be client, the other server)")
    if theirs.params_id != ours.params_id:
        diffs.append(f"parameter sets differ: this {ours.role} uses {ours.params_name!r} (id "
                     f"{ours.params_id.hex()[:16]}), the peer uses {theirs.params_name!r} (id "
                     f"{theirs.params_id.hex()[:16]})")
    if ours.session_id and theirs.session_id and ours.session_id != theirs.session_id:
        diffs.append(f"session ids differ: this {ours.role} expects {_show_session(ours.session_id)}, "
                     f"the peer {_show_session(theirs.session_id)}")
    if theirs.max_frame < 1024:
        diffs.append(f"the peer announces an unusable maximum frame size of {theirs.max_frame} bytes")
    return diffs


# -- the connection ----------------------------------------------------------------------------
class Frame(NamedTuple):
    """A received frame: kind, payload (bytes or bytearray), depth, and ``time.perf_counter()``
    when its last byte had arrived (taken by the reader thread)."""

    kind: int
    payload: bytes
    depth: int
    arrived: float


class _Closing(Exception):
    """Internal: the socket was closed by us while a thread was using it."""


def _map_os_error(e: BaseException, peer: str, doing: str) -> TransportError:
    if isinstance(e, TransportError):
        return e
    if isinstance(e, (socket.timeout, TimeoutError)):
        return PeerTimeout(f"the {peer} did not respond within the timeout while {doing}")
    if isinstance(e, ssl.SSLError):
        return PeerDisconnected(f"TLS failure while {doing}: {e}")
    return PeerDisconnected(f"connection to the {peer} lost while {doing}: {e.__class__.__name__}: {e}")


def _check_options(role, params, timeout, max_frame) -> None:
    peer_of(role)
    if not isinstance(params, ParamSet):
        raise ParameterError("params must be a ParamSet (see nimbus.spec.params.get_preset)")
    if not (isinstance(max_frame, int) and 1024 <= max_frame < 1 << 32):
        raise ParameterError("max_frame must be an int in [1024, 2^32)")
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ParameterError("timeout must be a positive number of seconds (never hang)")


class Connection:
    """An established, checked session with the peer. Created by :func:`connect` or
    :meth:`Listener.accept`; used by :func:`run_tcp` (or by hand with :meth:`send_data`,
    :meth:`recv_data`, :meth:`finish`). Close it (or use ``with``) when done.

    Attributes: ``role``, ``peer`` (its role), ``params``, ``session_id`` (bytes),
    ``network`` (the preset shaping *our* sending direction, or None), ``timeout``,
    ``max_frame`` (our receive limit), ``peer_max_frame``, ``peer_software``, ``tls_version``,
    ``bytes_sent``/``bytes_received`` (wire bytes incl. frame headers, excl. TLS).
    """

    def __init__(self, sock: socket.socket, *, role: str, params: ParamSet, session_id,
                 timeout: float = DEFAULT_TIMEOUT, tls=None, server_side: bool = False,
                 server_hostname: str | None = None, network: Network | str | None = None,
                 max_frame: int = DEFAULT_MAX_FRAME, _protocol_version: int = PROTOCOL_VERSION):
        try:
            _check_options(role, params, timeout, max_frame)
        except BaseException:
            sock.close()
            raise
        self.role, self.peer = role, peer_of(role)
        self.params = params
        self.timeout = float(timeout)
        self.max_frame = max_frame
        self.network = as_network(network)
        self._sock = sock
        self._tls: _Tls | None = None
        self._send_lock = threading.Lock()
        self._rbuf = bytearray()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._icond = threading.Condition()
        self._inbox_bytes = 0
        self._ocond = threading.Condition()
        self._oq: deque = deque()
        self._queued = 0
        self._writing = False
        self._stop_writer = False
        self._closing = False
        self._closed = False
        self._failed: NimbusError | None = None  # sticky error of the reader/writer
        self._write_failed = False  # the writer is dead: nothing more can be sent
        self._shaper = LinkShaper(self.network) if self.network is not None else None
        self.bytes_sent = self.bytes_received = 0
        self.tls_version: str | None = None
        self.peer_address = None
        self._reader_t = self._writer_t = None
        try:
            sock.settimeout(self.timeout)
            self.peer_address = sock.getpeername()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            deadline = time.monotonic() + self.timeout
            ctx = _tls_context(tls, server_side)
            if ctx is not None:
                self._tls_handshake(ctx, server_side, server_hostname, deadline)
            self._hello(_Hello(_protocol_version, role, max_frame, params.id, params.name,
                               _session_bytes(session_id), __version__), deadline)
        except BaseException as e:
            self._hard_close()
            if isinstance(e, (OSError, ssl.SSLError)) and not isinstance(e, NimbusError):
                raise _map_os_error(e, self.peer, "handshaking") from None
            raise
        sock.settimeout(self.timeout)
        self._reader_t = threading.Thread(target=self._reader, name=f"nimbus-{role}-reader", daemon=True)
        self._writer_t = threading.Thread(target=self._writer, name=f"nimbus-{role}-writer", daemon=True)
        self._reader_t.start()
        self._writer_t.start()

    def __repr__(self):
        return (f"<Connection {self.role}<->{self.peer} {self.params.name} session "
                f"{_show_session(self.session_id)}{' tls' if self.tls_version else ''}"
                f"{' ' + self.network.name if self.network else ''}>")

    # -- handshake (synchronous, before the threads start) -----------------------------------
    def _tls_handshake(self, ctx, server_side, hostname, deadline):
        t = self._tls = _Tls(ctx, server_side, hostname)
        while True:
            try:
                t.obj.do_handshake()
                self._flush_tls_sync()
                break
            except ssl.SSLWantReadError:
                self._flush_tls_sync()
                data = self._raw_recv_sync(deadline, "the TLS handshake")
                if not data:
                    raise HandshakeError(f"the {self.peer} closed the connection during the TLS handshake")
                t.incoming.write(data)
            except ssl.SSLError as e:
                try:
                    self._flush_tls_sync()  # deliver our alert
                except OSError:
                    pass
                hint = ""
                if "WRONG_VERSION_NUMBER" in str(e) or "wrong version number" in str(e):
                    hint = " (is the peer using TLS?)"
                why = e.reason or str(e)
                if isinstance(e, ssl.SSLCertVerificationError):
                    why = f"certificate verify failed: {e.verify_message}"
                raise HandshakeError(f"TLS handshake with the {self.peer} failed: {why}{hint}") from None
        self.tls_version = t.obj.version()

    def _flush_tls_sync(self):
        data = self._tls.outgoing.read()
        if data:
            self._sock.sendall(data)

    def _raw_recv_sync(self, deadline, what) -> bytes:
        rem = deadline - time.monotonic()
        if rem <= 0:
            raise PeerTimeout(f"the {self.peer} did not complete {what} within {self.timeout:g} s")
        self._sock.settimeout(rem)
        try:
            return self._sock.recv(_RECV_CHUNK)
        except (socket.timeout, TimeoutError):
            raise PeerTimeout(f"the {self.peer} did not complete {what} within {self.timeout:g} s") from None
        except OSError as e:
            raise PeerDisconnected(f"connection to the {self.peer} lost during {what}: {e}") from None

    def _hello(self, ours: _Hello, deadline):
        payload = ours.pack()
        self._send_bytes(FRAME_HEADER.pack(HELLO, len(payload), 0) + payload)
        try:
            kind, data, _ = self._read_frame(deadline=deadline, limit=MAX_HELLO, what="the peer's HELLO",
                                             handshake=True)
        except PeerDisconnected as e:
            hint = "" if self._tls is not None else " (does it expect TLS?)"
            raise HandshakeError(f"the {self.peer} hung up during the handshake{hint}: {e}") from None
        if kind == ERROR:
            raise HandshakeError(f"the {self.peer} refused the session: {data.decode('utf-8', 'replace')}")
        if kind != HELLO:
            raise HandshakeError(f"the peer did not start with a nimbus HELLO (got frame kind {kind})")
        theirs = _Hello.unpack(data, ours.version)
        diffs = _differences(ours, theirs)
        if diffs:
            reason = "handshake failed: " + "; ".join(diffs)
            try:  # tell the peer too (it also checks by itself), then close gracefully
                err = reason.encode()[:_MAX_REASON]
                self._send_bytes(FRAME_HEADER.pack(ERROR, len(err), 0) + err)
            except OSError:
                pass
            self._graceful_close_sync(0.5)
            raise HandshakeError(reason)
        self.session_id = ours.session_id or theirs.session_id
        self.peer_max_frame = theirs.max_frame
        self.peer_software = theirs.software

    def _graceful_close_sync(self, linger: float):
        """Half-close, drain what the peer still sends (so our close sends no RST), close."""
        try:
            self._sock.shutdown(socket.SHUT_WR)
            end = time.monotonic() + linger
            while (rem := end - time.monotonic()) > 0:
                self._sock.settimeout(rem)
                if not self._sock.recv(_RECV_CHUNK):
                    break
        except (OSError, ValueError):
            pass

    # -- raw I/O -------------------------------------------------------------------------------
    def _send_bytes(self, data) -> None:
        """Send plaintext bytes (TLS-encrypted when on); records leave in order."""
        with self._send_lock:
            if self._tls is None:
                self._sock.sendall(data)
                self.bytes_sent += len(data)
                return
            mv = memoryview(data)
            for off in range(0, len(mv), _TLS_CHUNK):
                with self._tls.lock:
                    self._tls.obj.write(mv[off:off + _TLS_CHUNK])
                    out = self._tls.outgoing.read()
                self._sock.sendall(out)
            self.bytes_sent += len(mv)

    def _fill(self, deadline: float | None, what: str) -> bool:
        """Append received plaintext to the read buffer; False on a clean EOF."""
        if self._tls is not None:
            with self._tls.lock:  # plaintext may already sit in the TLS buffers (read with the handshake)
                got, _ = self._tls_drain()  # an EOF seen here is seen again below
            if got:
                return True
        while True:
            if deadline is not None:
                data = self._raw_recv_sync(deadline, what)
            else:
                try:
                    if self._tls is not None:  # into a reused buffer: the BIO copies it anyway
                        k = self._sock.recv_into(self._tls.rawbuf)
                        data = memoryview(self._tls.rawbuf)[:k]
                    else:
                        data = self._sock.recv(_RECV_CHUNK)
                except (socket.timeout, TimeoutError):
                    if self._closing:
                        raise _Closing() from None
                    continue  # the driver enforces its own timeouts; keep listening
                except OSError as e:
                    if self._closing:
                        raise _Closing() from None
                    raise PeerDisconnected(f"connection to the {self.peer} lost: {e}") from None
            if self._tls is None:
                if not data:
                    return False
                self._rbuf += data
                return True
            got = eof = False
            flush = False
            with self._tls.lock:
                if data:
                    self._tls.incoming.write(data)
                else:
                    self._tls.incoming.write_eof()
                got, eof = self._tls_drain()
                flush = self._tls.outgoing.pending > 0
            if flush and not self._closing:  # e.g. a TLS key update answer; drain under the send lock
                with self._send_lock:
                    with self._tls.lock:
                        out = self._tls.outgoing.read()
                    if out:
                        self._sock.sendall(out)
            if got:
                return True
            if eof or not data:
                return False

    def _tls_drain(self) -> tuple[bool, bool]:
        """Decrypt what the incoming BIO holds into the read buffer (caller holds the TLS lock).
        Returns (got plaintext, saw EOF). Reads into one preallocated buffer: ``SSLObject.read(n)``
        would allocate n bytes per 16 kB record."""
        got = eof = False
        buf = self._tls.buf
        while True:
            try:
                k = self._tls.obj.read(len(buf), buf)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                eof = True
                break
            except ssl.SSLError as e:
                raise PeerDisconnected(f"TLS failure on the link from the {self.peer}: {e}") from None
            if not k:
                eof = True
                break
            self._rbuf += memoryview(buf)[:k]
            got = True
        return got, eof

    def _read_exact(self, n: int, deadline, what: str, boundary: bool) -> bytes:
        """``n`` bytes; raises PeerDisconnected on EOF (``boundary``: EOF before any byte is a
        plain disconnect, otherwise a truncated frame)."""
        if len(self._rbuf) >= n:
            out = self._rbuf[:n]  # one copy (a bytearray decodes and hashes like bytes)
            del self._rbuf[:n]
            return out
        if self._tls is None and n > _RECV_CHUNK:  # large payload: read straight into place
            out = bytearray(n)
            mv = memoryview(out)
            got = len(self._rbuf)
            mv[:got] = self._rbuf
            self._rbuf.clear()
            while got < n:
                if deadline is not None:
                    rem = deadline - time.monotonic()
                    if rem <= 0:
                        raise PeerTimeout(f"the {self.peer} did not complete {what} within {self.timeout:g} s")
                    self._sock.settimeout(rem)
                try:
                    k = self._sock.recv_into(mv[got:], min(n - got, 1 << 22))
                except (socket.timeout, TimeoutError):
                    if self._closing:
                        raise _Closing() from None
                    if deadline is not None:
                        raise PeerTimeout(f"the {self.peer} did not complete {what} within {self.timeout:g} s") from None
                    continue
                except OSError as e:
                    if self._closing:
                        raise _Closing() from None
                    raise PeerDisconnected(f"connection to the {self.peer} lost in {what}: {e}") from None
                if k == 0:
                    raise PeerDisconnected(f"truncated frame: the {self.peer} disconnected after {got} of {n} "
                                           f"bytes of {what}")
                got += k
            return out  # a bytearray: decodes and hashes like bytes, without a copy
        while len(self._rbuf) < n:
            have = len(self._rbuf)
            if not self._fill(deadline, what):
                if boundary and have == 0:
                    raise PeerDisconnected(f"the {self.peer} closed the connection")
                raise PeerDisconnected(f"truncated frame: the {self.peer} disconnected after {have} of {n} "
                                       f"bytes of {what}")
        out = self._rbuf[:n]
        del self._rbuf[:n]
        return out

    def _read_frame(self, deadline=None, limit=None, what="a frame", handshake=False):
        head = self._read_exact(FRAME_HEADER.size, deadline, f"{what} (frame header)", boundary=True)
        kind, n, depth = FRAME_HEADER.unpack(head)
        if kind not in KIND_NAMES:
            if handshake:
                raise HandshakeError(f"the peer did not start with a nimbus HELLO (first byte {kind:#04x}"
                                     f"{'; is it using TLS?' if kind in (0x15, 0x16) else ''})")
            raise ProtocolError(f"the {self.peer} sent a frame of unknown kind {kind}")
        limit = self.max_frame if limit is None else limit
        if n > limit:  # before allocating anything
            if handshake:
                raise HandshakeError(f"the peer's first frame claims {n} bytes (> {limit}); not a nimbus HELLO")
            raise FrameTooLarge(f"the {self.peer} sent a {KIND_NAMES[kind]} frame of {n} bytes; this "
                                f"{self.role} accepts at most {limit} (max_frame)")
        payload = self._read_exact(n, deadline, f"a {n}-byte {KIND_NAMES[kind]} frame", boundary=False) if n else b""
        self.bytes_received += FRAME_HEADER.size + n
        return kind, payload, depth

    # -- threads ---------------------------------------------------------------------------------
    def _fail(self, err: NimbusError, writer: bool = False) -> None:
        self._write_failed = self._write_failed or writer
        if self._failed is None:
            self._failed = err
        self._inbox.put(("error", err))

    def _reader(self):
        try:
            while True:
                kind, payload, depth = self._read_frame()
                if kind == HELLO:
                    raise ProtocolError(f"the {self.peer} sent a second HELLO")
                if kind == DATA and not 0 <= depth < 1 << 31:
                    raise ProtocolError(f"the {self.peer} sent a frame with an impossible depth {depth}")
                with self._icond:  # back-pressure: stop reading while the protocol lags behind
                    while self._inbox_bytes > MAX_INBOX and not self._closing:
                        self._icond.wait(0.5)
                    self._inbox_bytes += len(payload)
                self._inbox.put(("frame", Frame(kind, payload, depth, time.perf_counter())))
        except _Closing:
            return
        except BaseException as e:
            if self._closing:
                return
            self._fail(e if isinstance(e, NimbusError) else _map_os_error(e, self.peer, "receiving"))

    def _writer(self):
        if self._shaper is not None:
            fine_timer_slack()
        try:
            while True:
                with self._ocond:
                    while not self._oq and not self._stop_writer:
                        self._ocond.wait()
                    if not self._oq:
                        return
                    kind, payload, depth, t_enq = self._oq[0]
                    self._writing = True
                self._write_frame(kind, payload, depth, t_enq)
                with self._ocond:
                    self._oq.popleft()
                    self._queued -= len(payload)
                    self._writing = False
                    self._ocond.notify_all()
        except BaseException as e:
            err = _map_os_error(e, self.peer, "sending") if not isinstance(e, NimbusError) else e
            with self._ocond:
                self._write_failed = True
                self._oq.clear()
                self._queued = 0
                self._writing = False
                self._ocond.notify_all()
            if not self._closing:
                self._fail(err, writer=True)

    def _write_frame(self, kind, payload, depth, t_enq):
        header = FRAME_HEADER.pack(kind, len(payload), depth)
        n = FRAME_HEADER.size + len(payload)
        if self._shaper is None:
            if len(payload) <= 1 << 16:
                self._send_bytes(header + payload)
            else:
                self._send_bytes(header)
                self._send_bytes(payload)
            return
        mv = memoryview(payload)
        hs = FRAME_HEADER.size
        for off, k, at in self._shaper.plan(n, t_enq):
            if off == 0:
                chunk = header + bytes(mv[: k - hs]) if k > hs else header[:k]
            else:
                chunk = mv[off - hs: off - hs + k]
            sleep_until(at)
            self._send_bytes(chunk)

    # -- API used by run_tcp -------------------------------------------------------------------
    def _check_open(self):
        if self._closed or self._closing:
            raise TransportError("the connection is closed")
        if self._failed is not None:
            raise self._failed

    def _enqueue(self, kind: int, payload, depth: int, *, urgent: bool = False) -> None:
        t = time.perf_counter()
        with self._ocond:
            if urgent:  # an abort: pending data no longer matters, the reason does
                if self._writing and self._oq:
                    first = self._oq.popleft()
                    self._oq.clear()
                    self._oq.append(first)
                else:
                    self._oq.clear()
                self._queued = sum(len(x[1]) for x in self._oq)
            else:
                end = time.monotonic() + self.timeout
                while self._queued > MAX_QUEUED and not self._write_failed:
                    if not self._ocond.wait(end - time.monotonic()) and time.monotonic() >= end:
                        raise PeerTimeout(f"the {self.peer} accepted no data for {self.timeout:g} s "
                                          f"(send queue full)")
                if self._write_failed:
                    raise self._failed
            self._oq.append((kind, payload, depth, t))
            self._queued += len(payload)
            self._ocond.notify_all()

    def send_data(self, payload: bytes, depth: int) -> None:
        """Queue one DATA frame (returns at once; the writer thread sends it). ``payload`` is
        not copied: do not modify it afterwards."""
        self._check_open()
        if len(payload) > self.peer_max_frame:
            raise FrameTooLarge(f"a {len(payload)}-byte message exceeds the {self.peer}'s maximum frame size "
                                f"of {self.peer_max_frame} bytes")
        self._enqueue(DATA, payload, depth)

    def recv_frame(self, what: str = "a message", timeout: float | None = None) -> Frame:
        """The next frame of any kind, waiting at most ``timeout`` (default: ``self.timeout``)."""
        if self._closed:
            raise TransportError("the connection is closed")
        t = self.timeout if timeout is None else timeout
        try:
            item = self._inbox.get(timeout=t)
        except queue.Empty:
            raise PeerTimeout(f"the {self.peer} sent nothing for {t:g} s while this {self.role} waits for "
                              f"{what}") from None
        if item[0] == "error":
            self._inbox.put(item)  # sticky: every later call fails the same way
            e = item[1]
            raise type(e)(*e.args)
        with self._icond:
            self._inbox_bytes -= len(item[1].payload)
            self._icond.notify()
        return item[1]

    def recv_data(self, what: str = "a message", timeout: float | None = None) -> Frame:
        """The next DATA frame; ERROR -> :class:`RemoteError`, BYE -> :class:`ProtocolError`."""
        f = self.recv_frame(what, timeout)
        if f.kind == DATA:
            return f
        if f.kind == ERROR:
            raise RemoteError(f"the {self.peer} aborted the session: {f.payload.decode('utf-8', 'replace')}")
        raise ProtocolError(f"the {self.peer} ended its protocol (BYE) while this {self.role} waits for {what}")

    def finish(self, timeout: float | None = None) -> None:
        """End one protocol run: send BYE, wait for the peer's BYE and for our frames to leave."""
        self._check_open()
        self._enqueue(BYE, b"", 0)
        f = self.recv_frame("the end of the protocol (BYE)", timeout)
        if f.kind == ERROR:
            raise RemoteError(f"the {self.peer} aborted the session: {f.payload.decode('utf-8', 'replace')}")
        if f.kind == DATA:
            raise ProtocolError(f"the {self.peer} sent a {len(f.payload)}-byte message after this {self.role}'s "
                                f"protocol had returned")
        self.flush(timeout)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued frame has been handed to the kernel."""
        t = self.timeout if timeout is None else timeout
        end = time.monotonic() + t
        with self._ocond:
            while self._oq and not self._write_failed:
                rem = end - time.monotonic()
                if rem <= 0:
                    raise PeerTimeout(f"the {self.peer} did not accept our data within {t:g} s")
                self._ocond.wait(rem)
        if self._write_failed:
            raise self._failed

    def abort(self, reason: str) -> None:
        """Tell the peer we give up (ERROR frame, ahead of pending data); best effort."""
        if self._closed or self._closing or self._write_failed:
            return
        try:
            self._enqueue(ERROR, reason.encode("utf-8", "replace")[:_MAX_REASON], 0, urgent=True)
        except NimbusError:
            pass

    def close(self, flush_timeout: float = 5.0, linger: float = 0.5) -> None:
        """Flush queued frames (at most ``flush_timeout`` s), half-close, give the peer ``linger``
        s to close its side (so no reset cuts what it still reads), close. Idempotent."""
        if self._closed:
            return
        try:
            if not self._write_failed:
                try:
                    self.flush(flush_timeout)
                except NimbusError:
                    pass
        finally:
            self._closing = True
            with self._ocond:
                self._stop_writer = True
                self._oq.clear()
                self._ocond.notify_all()
            if self._writer_t is not None:
                self._writer_t.join(1.0)
            if self._send_lock.acquire(timeout=linger):  # never cut a TLS record in half
                try:
                    self._sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                finally:
                    self._send_lock.release()
            if self._reader_t is not None:  # the peer closes in turn: its EOF ends our reader
                self._reader_t.join(linger)
            self._hard_close()
            if self._reader_t is not None:
                self._reader_t.join(1.0)

    def _hard_close(self):
        self._closing = True
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- establishing ------------------------------------------------------------------------------
def connect(host: str, port: int, *, role: str = CLIENT, params: ParamSet, session_id,
            timeout: float = DEFAULT_TIMEOUT, tls=None, network: Network | str | None = None,
            max_frame: int = DEFAULT_MAX_FRAME, retry_s: float = 0.0,
            _protocol_version: int = PROTOCOL_VERSION) -> Connection:
    """Dial the peer and run the handshake; returns a checked :class:`Connection`.

    Runs on: the dialling party (usually the client). ``session_id`` (str or bytes, non-empty)
    must match the listener's (or the listener accepts any). ``tls``: a :class:`TlsConfig` (the
    server certificate is verified against ``cafile`` and the hostname) or an ``ssl.SSLContext``.
    ``network``: a preset name of ``nimbus.spec.cost.NETWORKS`` to shape our sending direction.
    ``retry_s``: keep retrying a refused connection for this long (the peer may still be starting).
    Raises :class:`HandshakeError`, :class:`PeerTimeout` or :class:`PeerDisconnected`.
    """
    if not _session_bytes(session_id):
        raise ParameterError("connect needs a non-empty session_id (e.g. uuid.uuid4().hex)")
    _check_options(role, params, timeout, max_frame)
    ctx = _tls_context(tls, server_side=False)
    hostname = (tls.server_hostname if isinstance(tls, TlsConfig) else None) or host
    end = time.monotonic() + max(retry_s, 0.0)
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
            break
        except (socket.timeout, TimeoutError):
            raise PeerTimeout(f"no answer from {host}:{port} within {timeout:g} s") from None
        except ConnectionRefusedError:
            if time.monotonic() >= end:
                raise PeerDisconnected(f"connection to {host}:{port} refused (is the peer listening?)") from None
            time.sleep(0.05)
        except OSError as e:
            raise PeerDisconnected(f"cannot connect to {host}:{port}: {e}") from None
    return Connection(sock, role=role, params=params, session_id=session_id, timeout=timeout, tls=ctx,
                      server_side=False, server_hostname=hostname, network=network, max_frame=max_frame,
                      _protocol_version=_protocol_version)


class Listener:
    """A listening socket that hands out one :class:`Connection` per :meth:`accept`.

    Runs on: the listening party (usually the server), which may serve many sessions one after
    another (``for ...: with lst.accept() as conn: run_tcp(...)``). Close it (or use ``with``).
    """

    def __init__(self, host: str, port: int, *, role: str = SERVER, params: ParamSet,
                 timeout: float = DEFAULT_TIMEOUT, tls=None, network: Network | str | None = None,
                 max_frame: int = DEFAULT_MAX_FRAME, backlog: int = 16,
                 _protocol_version: int = PROTOCOL_VERSION):
        _check_options(role, params, timeout, max_frame)
        self.role, self.params, self.timeout = role, params, timeout
        self.network = as_network(network)
        self.max_frame = max_frame
        self._tls = _tls_context(tls, server_side=True)
        self._pv = _protocol_version
        try:
            self._sock = socket.create_server((host, port), backlog=backlog)
        except OSError as e:
            raise TransportError(f"cannot listen on {host}:{port}: {e}") from None

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` actually bound (port 0 picks a free port)."""
        return self._sock.getsockname()[:2]

    def accept(self, *, session_id=None, timeout: float | None = None, params: ParamSet | None = None) -> Connection:
        """Wait for one peer (at most ``timeout`` s; None waits indefinitely, as a server does)
        and run the handshake (bounded by the listener's ``timeout``).

        ``session_id=None`` accepts the session id the peer proposes (``conn.session_id``).
        A peer that fails the handshake raises :class:`HandshakeError` here; the listener stays
        usable for the next peer.
        """
        self._sock.settimeout(timeout)
        try:
            s, _ = self._sock.accept()
        except (socket.timeout, TimeoutError):
            raise PeerTimeout(f"no peer connected within {timeout:g} s") from None
        except OSError as e:
            raise TransportError(f"accept failed: {e}") from None
        return Connection(s, role=self.role, params=params or self.params, session_id=session_id,
                          timeout=self.timeout, tls=self._tls, server_side=True, network=self.network,
                          max_frame=self.max_frame, _protocol_version=self._pv)

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def listen(host: str, port: int, *, role: str = SERVER, params: ParamSet, timeout: float = DEFAULT_TIMEOUT,
           tls=None, network: Network | str | None = None, max_frame: int = DEFAULT_MAX_FRAME,
           backlog: int = 16) -> Listener:
    """Listen on ``host:port`` (``port=0``: any free port, see :attr:`Listener.address`).

    ``tls``: a :class:`TlsConfig` with the server's certificate and key (or an SSLContext).
    Other arguments as :func:`connect`; they apply to every accepted connection.
    """
    return Listener(host, port, role=role, params=params, timeout=timeout, tls=tls, network=network,
                    max_frame=max_frame, backlog=backlog)


# -- the driver --------------------------------------------------------------------------------
@dataclass
class TcpResult:
    """One party's output and its view of the transcript (same digest as the peer's and as
    ``run_local``'s; ``compute`` and ``waiting`` are filled for this party only)."""

    output: Any
    transcript: Transcript
    role: str = ""
    wall_s: float = 0.0


def _describe(req: Recv) -> str:
    return f"{req.msg_type.__name__} at label {req.ctx.label or '/'!r}"


def _next_frame(conn: Connection, req: Recv, aside: dict, tr: Transcript, d_in: str):
    """The frame ``req`` waits for: an ASYNC one set aside earlier, or the next one on the wire
    after setting aside the ASYNC frames ahead of it (``nimbus.spec.messages``). A frame set
    aside is recorded when it arrives (so both parties' transcripts list each direction in wire
    order) and gets its label when taken: returns ``(frame, index of its entry or None)``."""
    want = req.msg_type
    q = aside.get(want.TAG)
    if want.ASYNC and q:
        return q.popleft()
    while True:
        f = conn.recv_data(_describe(req))
        tag = is_async(f.payload)
        if tag and tag != want.TAG:
            tr.record(d_in, "", MESSAGE_TYPES[tag].__name__, tag, f.payload, f.depth)
            tr.framing_bytes += FRAME_HEADER.size
            aside.setdefault(tag, deque()).append((f, len(tr.entries) - 1))
            continue
        return f, None


class _Clock:
    """Wall and process-CPU seconds of one party's compute segments (between its I/O requests).

    The CPU figure is the whole process's (all threads: numba, BLAS, and this driver's I/O
    threads); with both parties on one machine, wall vs CPU shows how many cores a party kept
    busy while the other computed or waited."""

    def __init__(self, tr: Transcript, role: str):
        self.tr, self.role, self.cpu0 = tr, role, 0.0

    def start(self) -> float:
        self.cpu0 = time.process_time()
        return time.perf_counter()

    def stop(self, label: str, t0: float) -> None:
        self.tr.add_compute(self.role, label, time.perf_counter() - t0)
        self.tr.add_cpu(self.role, label, time.process_time() - self.cpu0)


def run_tcp(gen, conn: Connection) -> TcpResult:
    """Run one party's protocol generator to completion over ``conn``.

    Runs on: each party, with its own generator and its end of the connection. Sends are queued
    (the generator keeps computing while the writer thread sends); receives block at most
    ``conn.timeout``. Records the transcript as ``run_local`` does; compute time per label (time
    in the generator plus encoding/decoding), its process CPU time (``Transcript.cpu``) and
    waiting time per label (blocked on the peer). Ends with the BYE exchange; the connection can then run another generator.

    On failure the peer is told why (ERROR frame), the connection is closed and the error
    re-raised: ``RemoteError`` (the peer aborted), ``PeerDisconnected``, ``PeerTimeout``,
    ``FrameTooLarge``, ``ProtocolError``, ``DecodeError``, or whatever the generator raised.
    """
    if not hasattr(gen, "send"):
        raise ProtocolError(f"{conn.role}: expected a protocol generator, got {type(gen).__name__}")
    role = conn.role
    d_out, d_in = (C2S, S2C) if role == CLIENT else (S2C, C2S)
    tr = Transcript()
    hs = FRAME_HEADER.size
    aside: dict[int, deque] = {}  # ASYNC frames that arrived ahead of their turn
    depth = 0
    label = ""
    value = None
    t_start = time.perf_counter()
    clock = _Clock(tr, role)
    try:
        while True:
            t0 = clock.start()
            try:
                req = gen.send(value)
            except StopIteration as stop:
                clock.stop(label, t0)
                output = stop.value
                break
            except Exception as e:
                e.add_note(f"(raised by the {role} at protocol label {label or '/'!r})")
                raise
            if not isinstance(req, (Send, Recv)):
                raise ProtocolError(f"{role} yielded {type(req).__name__}; protocols yield ctx.send/ctx.recv")
            label = req.ctx.label
            value = None
            if isinstance(req, Send):
                payload = req.msg.encode(req.ctx.params)
                tr.record(d_out, label, type(req.msg).__name__, req.msg.TAG, payload, depth + 1)
                tr.framing_bytes += hs
                clock.stop(label, t0)
                conn.send_data(payload, depth + 1)
            else:
                clock.stop(label, t0)
                tw = time.perf_counter()
                f, at = _next_frame(conn, req, aside, tr, d_in)
                tr.add_waiting(role, label, time.perf_counter() - tw)
                t1 = clock.start()
                value = Message.decode(f.payload, req.ctx.params, expect=req.msg_type)
                depth = max(depth, f.depth)
                if at is None:
                    tr.record(d_in, label, req.msg_type.__name__, req.msg_type.TAG, f.payload, f.depth)
                    tr.framing_bytes += hs
                else:  # recorded on arrival; now we know whose it is
                    tr.entries[at] = dataclasses.replace(tr.entries[at], label=label)
                clock.stop(label, t1)
        if any(aside.values()):
            raise ProtocolError(f"the {role}'s protocol ended with {sum(map(len, aside.values()))} "
                                "look-ahead message(s) of the peer not taken")
        tw = time.perf_counter()
        conn.finish()
        tr.add_waiting(role, label, time.perf_counter() - tw)
    except BaseException as e:
        if not isinstance(e, (RemoteError, PeerDisconnected)):
            what = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
            conn.abort(f"the {role} failed at label {label or '/'!r}: {what}")
        conn.close(flush_timeout=2.0, linger=0.1)  # the reason is on its way; report promptly
        raise
    return TcpResult(output, tr, role, time.perf_counter() - t_start)
