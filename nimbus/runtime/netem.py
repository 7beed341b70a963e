"""Network emulation: shape a real TCP link to a named preset, and measure what a link achieves.

Who runs what:

* :class:`LinkShaper` runs inside the *sender's* writer thread of a
  :class:`~nimbus.runtime.tcp.Connection` opened with ``network="lan"`` (or ``"wan"``, ...). Each
  party shapes its own outgoing direction, so a link shaped on both ends behaves like two
  independent one-way pipes with the preset's bandwidth and one-way latency, which is the model
  of :meth:`nimbus.spec.cost.Cost.project`.
* :func:`probe` runs the measurement on an open connection, one call per party (``lead=True`` on
  one of them); :func:`net_check` sets up both parties (two threads, or two processes as
  ``nimbus net-check`` does) and compares the figures with the preset.

The link model (normative for this emulator): a frame of ``n`` bytes enqueued at time ``t`` starts
at ``start = max(t, link_free)``; its bytes leave at the preset bandwidth, so byte ``k`` has left
at ``start + (k + 1) / rate``, and every byte is delivered ``latency`` after it left;
``link_free = start + n / rate``. Bytes are handed to the kernel in chunks of about half a
millisecond of link time, each chunk at the delivery time of its last byte. Frames in flight
pipeline: a second frame starts as soon as the first has *left*, not when it has arrived. The
receiving side's own stack delay (:data:`STACK_S`, tens of microseconds: loopback and two thread
wake-ups) is part of the emulated latency, so a protocol sees ``latency`` one-way, not more.
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass

from nimbus.spec.cost import Network, get_network
from nimbus.spec.errors import ParameterError, ProtocolError

__all__ = [
    "LinkShaper",
    "sleep_until",
    "fine_timer_slack",
    "as_network",
    "probe",
    "net_check",
    "NetCheckResult",
    "BANDWIDTH_TOLERANCE",
    "LATENCY_TOLERANCE",
    "STACK_S",
]

#: Relative tolerances of ``nimbus net-check``: achieved bandwidth within 15% of the preset, a
#: ping-pong of ``k`` rounds within 20% of ``2 k latency``.
BANDWIDTH_TOLERANCE = 0.15
LATENCY_TOLERANCE = 0.20

#: time.sleep() is used up to this long before a deadline; the rest is a short yield loop.
SPIN_S = 0.0002
#: Link time per chunk handed to the kernel (bounded below and above in bytes).
CHUNK_S = 0.0005
MIN_CHUNK = 4096
MAX_CHUNK = 1 << 20
#: The receiving stack's own one-way delay on loopback (kernel hand-off, then the reader thread's
#: and the protocol thread's wake-ups): about 50-60 us measured unshaped on a 2-core dev box.
#: The shaper delivers that much early, so the one-way delay the *protocols* see matches the
#: preset's latency rather than latency + stack.
STACK_S = 60e-6


def sleep_until(target: float) -> None:
    """Sleep until ``time.perf_counter() >= target`` with ~10 us precision.

    ``time.sleep`` until ``SPIN_S`` before the target, then yield (``time.sleep(0)`` releases the
    GIL, so a spinning writer thread does not starve the protocol thread). Precise on a thread
    that called :func:`fine_timer_slack` (the writer threads do).
    """
    while True:
        rem = target - time.perf_counter()
        if rem <= 0:
            return
        if rem > SPIN_S:
            time.sleep(rem - SPIN_S)
        else:
            time.sleep(0)


_PR_SET_TIMERSLACK = 29


def fine_timer_slack() -> bool:
    """Ask Linux for 1 us timer slack on the *calling thread* (default 50 us), so that its
    ``time.sleep`` wakes on time. Best effort: False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, 1000, 0, 0, 0) == 0
    except Exception:
        return False


def as_network(network: Network | str | None) -> Network | None:
    """``None``, a preset name (``nimbus.spec.cost.NETWORKS``) or a :class:`Network`."""
    if network is None or isinstance(network, Network):
        return network.validate() if network is not None else None
    if isinstance(network, str):
        return get_network(network)
    raise ParameterError(f"network must be a preset name or a Network, not {type(network).__name__}")


class LinkShaper:
    """One direction of an emulated link (see the module docstring for the model).

    Used by one writer thread only; not thread-safe.
    """

    def __init__(self, network: Network | str, *, chunk_s: float = CHUNK_S, stack_s: float = STACK_S):
        self.network = as_network(network)
        self.rate = self.network.bandwidth_bps / 8.0  # bytes per second
        self.latency = self.network.latency_s
        #: the delay added after a byte leaves: the preset's latency less the stack's own delay
        self.delay = max(0.0, self.latency - stack_s)
        self.chunk = int(max(MIN_CHUNK, min(MAX_CHUNK, self.rate * chunk_s)))
        self.link_free = 0.0

    def plan(self, nbytes: int, t_enqueued: float) -> list[tuple[int, int, float]]:
        """Chunks ``(offset, length, deliver_at)`` of a frame of ``nbytes`` enqueued at ``t_enqueued``.

        Reserves the link for the frame (call once per frame, in sending order).
        """
        start = max(t_enqueued, self.link_free)
        self.link_free = start + nbytes / self.rate
        out = []
        off = 0
        while off < nbytes:
            n = min(self.chunk, nbytes - off)
            out.append((off, n, start + (off + n) / self.rate + self.delay))
            off += n
        return out


# -- measurement ----------------------------------------------------------------------------------
_PING = b"nimbus-ping-0123"  # 16 bytes
_ACK = struct.Struct("<dQQ")  # receiver's elapsed seconds, bytes timed, bytes received


def _ping_pong(conn, rounds: int, lead: bool) -> tuple[float, list[float]] | None:
    """``rounds`` request/response exchanges; the lead returns the total seconds and each
    round trip's."""
    if lead:
        rtts = []
        t0 = t = time.perf_counter()
        for _ in range(rounds):
            conn.send_data(_PING, 0)
            conn.recv_data("a ping reply")
            now = time.perf_counter()
            rtts.append(now - t)
            t = now
        return now - t0 if rounds else 0.0, rtts
    for _ in range(rounds):
        f = conn.recv_data("a ping")
        conn.send_data(f.payload, 0)
    return None


def _bulk(conn, nbytes: int, lead: bool, frame_bytes: int) -> dict | None:
    """The lead sends ``nbytes`` in frames of ``frame_bytes``; the follower times the arrivals
    (first frame excluded, so latency does not count) and answers with its figures."""
    nframes = max(1, math.ceil(nbytes / frame_bytes))
    if lead:
        block = os.urandom(min(frame_bytes, nbytes) or 1)
        t0 = time.perf_counter()
        left = nbytes
        for _ in range(nframes):
            n = min(frame_bytes, left)
            conn.send_data(block if n == len(block) else block[:n], 0)
            left -= n
        f = conn.recv_data("the bulk-transfer acknowledgement")
        total = time.perf_counter() - t0
        elapsed, timed, received = _ACK.unpack(f.payload)
        if received != nbytes:
            raise ProtocolError(f"bulk transfer: peer received {received} of {nbytes} bytes")
        return {"total_s": total, "rx_elapsed_s": elapsed, "rx_bytes_timed": timed}
    received = timed = 0
    t_first = t_last = None
    for i in range(nframes):
        f = conn.recv_data("bulk-transfer data")
        received += len(f.payload)
        if i == 0:
            t_first = f.arrived
        else:
            timed += len(f.payload)
        t_last = f.arrived
    conn.send_data(_ACK.pack(t_last - t_first, timed, received), 0)
    return None


def probe(conn, *, lead: bool, nbytes: int = 50_000_000, rounds: int = 100, warmup: int = 3,
          frame_bytes: int | None = None) -> dict | None:
    """Measure one-way latency (ping-pong) and bandwidth (lead -> follower) on ``conn``.

    Runs on: both parties of an open connection, ``lead=True`` on exactly one. The lead returns
    ``{"rounds", "pingpong_s", "latency_s", "median_latency_s", "p90_latency_s", "bytes",
    "bandwidth_Bps", "transfer_s"}`` (latencies: one-way, from the ping-pong: total / 2K, and
    half the median and 90th-percentile round trip); the follower returns None. Ends with the
    BYE exchange (:meth:`Connection.finish`).
    """
    if frame_bytes is None:  # at least ~32 frames, so that the first one (not timed) matters little
        frame_bytes = int(min(1 << 20, max(4096, nbytes // 32)))
    _ping_pong(conn, warmup, lead)
    pp = _ping_pong(conn, rounds, lead)
    if nbytes > 0:
        bulk = _bulk(conn, nbytes, lead, frame_bytes)
    conn.finish()
    if not lead:
        return None
    total, rtts = pp
    rtts = sorted(rtts) or [float("nan")]
    out = {"rounds": rounds, "pingpong_s": total, "latency_s": total / (2 * rounds) if rounds else float("nan"),
           "median_latency_s": rtts[len(rtts) // 2] / 2, "p90_latency_s": rtts[int(0.9 * (len(rtts) - 1))] / 2,
           "bytes": nbytes}
    if nbytes > 0:
        timed, el = bulk["rx_bytes_timed"], bulk["rx_elapsed_s"]
        out["bandwidth_Bps"] = timed / el if el > 0 and timed else float("nan")
        out["transfer_s"] = bulk["total_s"]
    return out


@dataclass
class NetCheckResult:
    """What ``nimbus net-check`` reports (JSON-able with :meth:`as_dict`)."""

    network: str
    processes: int
    bytes: int
    rounds: int
    preset_MBps: float
    measured_MBps: float
    bandwidth_error: float  # relative
    bandwidth_ok: bool
    preset_latency_ms: float
    measured_latency_ms: float  # total ping-pong time / (2 rounds)
    median_latency_ms: float  # half the median round trip (insensitive to scheduling outliers)
    p90_latency_ms: float
    pingpong_s: float
    expected_pingpong_s: float
    latency_error: float  # relative, of the whole ping-pong
    latency_ok: bool
    transfer_s: float
    wall_s: float

    @property
    def ok(self) -> bool:
        return self.bandwidth_ok and self.latency_ok

    def as_dict(self) -> dict:
        """JSON-able: figures that could not be measured (e.g. too few bytes) are None."""
        d = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}
        d["pass"] = self.ok
        return d

    def report(self) -> str:
        mark = lambda ok: "ok" if ok else "FAIL"  # noqa: E731
        return "\n".join([
            f"net-check {self.network} ({self.processes} process{'es' if self.processes > 1 else ''}, loopback)",
            f"  bandwidth: {self.measured_MBps:9.2f} MB/s  vs preset {self.preset_MBps:9.2f} MB/s  "
            f"({self.bandwidth_error:+.1%}, tolerance {BANDWIDTH_TOLERANCE:.0%})  {mark(self.bandwidth_ok)}"
            if self.bytes else "  bandwidth: not measured (--bytes 0)",
            f"  latency:   {self.measured_latency_ms:9.3f} ms    vs preset {self.preset_latency_ms:9.3f} ms    "
            f"({self.latency_error:+.1%} over {self.rounds} round trips, tolerance {LATENCY_TOLERANCE:.0%})  "
            f"{mark(self.latency_ok)}",
            f"             per round trip: median {self.median_latency_ms:.3f} ms, 90th percentile "
            f"{self.p90_latency_ms:.3f} ms one-way",
            f"  {'PASS' if self.ok else 'FAIL'}  ({self.bytes / 1e6:g} MB in {self.transfer_s:.3f} s, "
            f"{self.rounds}-round ping-pong in {self.pingpong_s:.3f} s, wall {self.wall_s:.1f} s)",
        ])


def _result(net: Network, processes: int, nbytes: int, rounds: int, m: dict, wall: float) -> NetCheckResult:
    preset_Bps = net.bandwidth_bps / 8
    bw = m.get("bandwidth_Bps", float("nan"))
    bw_err = (bw - preset_Bps) / preset_Bps if nbytes else 0.0
    expected = 2 * rounds * net.latency_s
    lat_err = (m["pingpong_s"] - expected) / expected if expected > 0 else 0.0
    return NetCheckResult(
        network=net.name, processes=processes, bytes=nbytes, rounds=rounds,
        preset_MBps=preset_Bps / 1e6, measured_MBps=bw / 1e6, bandwidth_error=bw_err,
        bandwidth_ok=(not nbytes) or abs(bw_err) <= BANDWIDTH_TOLERANCE,
        preset_latency_ms=net.latency_s * 1e3, measured_latency_ms=m["latency_s"] * 1e3,
        median_latency_ms=m["median_latency_s"] * 1e3, p90_latency_ms=m["p90_latency_s"] * 1e3,
        pingpong_s=m["pingpong_s"], expected_pingpong_s=expected, latency_error=lat_err,
        latency_ok=abs(lat_err) <= LATENCY_TOLERANCE, transfer_s=m.get("transfer_s", 0.0), wall_s=wall,
    )


def _net_params():
    from nimbus.spec.params import get_preset
    import nimbus.spec  # noqa: F401  (registers the presets)

    return get_preset("tiny")


def net_check(network: Network | str, *, nbytes: int = 50_000_000, rounds: int = 100,
              processes: int = 2, timeout: float = 60.0) -> NetCheckResult:
    """Shape loopback to ``network`` and measure it.

    Runs on: the caller, as the lead (listening) party; the other party is a child process
    (``processes=2``, the default, what ``nimbus net-check`` does) or a thread of this process
    (``processes=1``). Both ends shape their sending direction. Raises a
    :class:`~nimbus.spec.errors.TransportError` if the peer fails; never hangs past ``timeout``.
    """
    from .tcp import connect, listen

    net = as_network(network)
    if net is None:
        raise ParameterError("net_check needs a network preset")
    if processes not in (1, 2):
        raise ParameterError("processes must be 1 or 2")
    params = _net_params()
    session = "net-check-" + uuid.uuid4().hex[:12]
    t_wall = time.perf_counter()
    with listen("127.0.0.1", 0, params=params, network=net, timeout=timeout) as lst:
        port = lst.address[1]
        if processes == 2:
            env = dict(os.environ, NUMBA_NUM_THREADS="1")
            cmd = [sys.executable, "-c",
                   "import sys; from nimbus.runtime.netem import peer_main; sys.exit(peer_main(sys.argv[1:]))",
                   "127.0.0.1", str(port), net.name if _presets().get(net.name) == net else f"{net.bandwidth_bps!r}:{net.latency_s!r}",
                   session, str(nbytes), str(rounds), str(timeout)]
            child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                with _accept_from(lst, child, session, timeout) as conn:
                    m = probe(conn, lead=True, nbytes=nbytes, rounds=rounds)
                try:
                    child.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
            except BaseException as e:
                if child.poll() is None:
                    child.kill()
                try:
                    _, err = child.communicate(timeout=5)
                except Exception:
                    err = b""
                if err:
                    e.add_note("peer process stderr:\n" + err.decode(errors="replace")[-2000:])
                raise
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait(5)
                for s in (child.stdout, child.stderr):
                    if s:
                        s.close()
        else:
            errors: list[BaseException] = []

            def follower():
                try:
                    with connect("127.0.0.1", port, params=params, session_id=session, network=net,
                                 timeout=timeout) as c:
                        probe(c, lead=False, nbytes=nbytes, rounds=rounds)
                except BaseException as e:  # reported by the lead below
                    errors.append(e)

            th = threading.Thread(target=follower, name="net-check-follower", daemon=True)
            th.start()
            try:
                with lst.accept(session_id=session, timeout=timeout) as conn:
                    m = probe(conn, lead=True, nbytes=nbytes, rounds=rounds)
            finally:
                th.join(timeout)
            if errors:
                raise errors[0]
    return _result(net, processes, nbytes, rounds, m, time.perf_counter() - t_wall)


def _accept_from(lst, child: subprocess.Popen, session: str, timeout: float):
    """Accept the child's connection, giving up at once if the child dies first."""
    from nimbus.spec.errors import PeerTimeout, TransportError

    end = time.monotonic() + timeout
    while True:
        try:
            return lst.accept(session_id=session, timeout=min(0.25, max(end - time.monotonic(), 0.01)))
        except PeerTimeout:
            if child.poll() is not None:
                raise TransportError(f"the net-check peer process exited with status {child.returncode} "
                                     f"before connecting") from None
            if time.monotonic() >= end:
                raise PeerTimeout(f"the net-check peer process did not connect within {timeout:g} s") from None


def _presets():
    from nimbus.spec.cost import NETWORKS

    return NETWORKS


def peer_main(argv: list[str]) -> int:
    """Entry point of the follower process of :func:`net_check` (not a user command).

    ``argv = [host, port, network, session, nbytes, rounds, timeout]``; ``network`` is a preset
    name or ``"<bits per second>:<latency seconds>"``.
    """
    from .tcp import connect

    host, port, netname, session, nbytes, rounds, timeout = argv
    if ":" in netname:
        bw, lat = netname.split(":")
        net = Network("custom", float(bw), float(lat)).validate()
    else:
        net = get_network(netname)
    with connect(host, int(port), params=_net_params(), session_id=session, network=net,
                 timeout=float(timeout), retry_s=float(timeout)) as conn:
        probe(conn, lead=False, nbytes=int(nbytes), rounds=int(rounds))
    return 0
