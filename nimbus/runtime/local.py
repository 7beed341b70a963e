"""``run_local``: both parties' generators in one thread, deterministically.

Schedule: run the client until it blocks on a receive (or returns), then the server, and repeat.
Every message is encoded, recorded, and decoded again on the other side exactly as over TCP, so
byte counts, digests and decoding errors are the real ones. Used by tests, vectors and cost checks.
``ASYNC`` messages (``nimbus.spec.messages``) that arrive while their receiver waits for another
type are set aside until it asks for theirs; their depth counts when they are taken.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from nimbus.spec.errors import ProtocolError
from nimbus.spec.messages import Message, is_async
from nimbus.spec.proto import CLIENT, SERVER, Recv, Send, peer_of

from .transcript import C2S, S2C, Transcript

__all__ = ["run_local", "LocalResult"]


@dataclass
class LocalResult:
    client: Any
    server: Any
    transcript: Transcript

    @property
    def outputs(self):
        return self.client, self.server


class _Party:
    def __init__(self, role, gen):
        if not hasattr(gen, "send"):
            raise ProtocolError(f"{role}: expected a protocol generator, got {type(gen).__name__}")
        self.role, self.gen = role, gen
        self.waiting: Recv | None = None
        self.done = False
        self.out = None
        self.depth = 0  # deepest message received so far
        self.label = ""
        self.aside: dict[int, deque] = {}  # ASYNC messages that arrived ahead of their turn


def _next(p: _Party, inbox: deque):
    """The message ``p`` waits for: an ASYNC one set aside earlier, or the inbox's next after
    setting aside the ASYNC messages ahead of it; None if it has not arrived."""
    want = p.waiting.msg_type
    q = p.aside.get(want.TAG)
    if want.ASYNC and q:
        return q.popleft()
    while inbox:
        item = inbox.popleft()
        tag = is_async(item[0])
        if tag and tag != want.TAG:
            p.aside.setdefault(tag, deque()).append(item)
            continue
        return item
    return None


def _advance(p: _Party, value, tr: Transcript):
    t0 = time.perf_counter()
    try:
        req = p.gen.send(value)
    except StopIteration as stop:
        tr.add_compute(p.role, p.label, time.perf_counter() - t0)
        p.done, p.out = True, stop.value
        return None, t0
    except Exception as e:
        e.add_note(f"(raised by the {p.role} at protocol label {p.label or '/'!r})")
        raise
    if not isinstance(req, (Send, Recv)):
        raise ProtocolError(f"{p.role} yielded {type(req).__name__}; protocols yield ctx.send/ctx.recv")
    p.label = req.ctx.label
    return req, t0


def run_local(client_gen, server_gen) -> LocalResult:
    """Run both parties to completion; returns their outputs and the transcript."""
    tr = Transcript()
    parties = {CLIENT: _Party(CLIENT, client_gen), SERVER: _Party(SERVER, server_gen)}
    inbox: dict[str, deque] = {CLIENT: deque(), SERVER: deque()}
    while not all(p.done for p in parties.values()):
        progressed = False
        for role in (CLIENT, SERVER):
            p = parties[role]
            while not p.done:
                value = None
                if p.waiting is not None:
                    item = _next(p, inbox[role])
                    if item is None:
                        break  # blocked: let the peer run
                    t0 = time.perf_counter()
                    payload, depth, params = item
                    value = Message.decode(payload, params, expect=p.waiting.msg_type)
                    p.depth = max(p.depth, depth)
                    tr.add_compute(role, p.waiting.ctx.label, time.perf_counter() - t0)
                    p.waiting = None
                req, t0 = _advance(p, value, tr)
                progressed = True
                if req is None:
                    break
                if isinstance(req, Send):
                    payload = req.msg.encode(req.ctx.params)
                    depth = p.depth + 1
                    tr.record(C2S if role == CLIENT else S2C, req.ctx.label, type(req.msg).__name__,
                              req.msg.TAG, payload, depth)
                    inbox[peer_of(role)].append((payload, depth, req.ctx.params))
                else:
                    p.waiting = req
                tr.add_compute(role, req.ctx.label, time.perf_counter() - t0)
        if not progressed:
            waits = {r: (p.waiting.ctx.label, p.waiting.msg_type.__name__) for r, p in parties.items() if p.waiting}
            raise ProtocolError(f"deadlock: both parties wait for a message: {waits}")
    leftovers = {r: len(q) + sum(len(a) for a in parties[r].aside.values()) for r, q in inbox.items()}
    leftovers = {r: n for r, n in leftovers.items() if n}
    if leftovers:
        raise ProtocolError(f"protocol ended with undelivered messages: {leftovers}")
    return LocalResult(parties[CLIENT].out, parties[SERVER].out, tr)
