"""Keyring changes carried to the whole cluster over gossip (``plumctl keys``, like serf).

The operator reaches one node's admin API; that node sends a ``KeyRequest`` point to
point (a TCP frame, sealed with the cluster key like every frame) to every live member,
applies the change to itself too, and gathers the ``KeyResponse`` of each by request id
until all answered or the timeout ran out; a member that did not answer in time is
reported as missing. So one reachable admin API (each may listen on 127.0.0.1 only) is
enough to rotate the keys of a cluster spread over many hosts.

Who may ask: a KeyRequest is only ever accepted sealed with a key of the receiver's
keyring (with a keyring on, the transport drops anything else before decoding it), over
TCP, from a live member, answered at the address that member advertises. A node
without a keyring answers an error and changes nothing; no node sends a key over gossip
unless its own gossip is encrypted. Answers carry fingerprints, never keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from plumtree.core import limits
from plumtree.core.messages import KeyRequest, KeyResponse
from plumtree.runtime.crypto import KEY_SIZES, fingerprint
from plumtree.runtime.keys import KeyConflict, KeyManager
from plumtree.runtime.transport import os_reason

if TYPE_CHECKING:
    from plumtree.core.members import MemberRecord
    from plumtree.runtime.node import Node

log = logging.getLogger("plumtree.keys")

#: What a cluster query may do (list changes nothing).
QUERY_OPS = ("install", "use", "remove", "list")
#: Seconds a query waits for answers unless told otherwise, and at most.
DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 60.0
#: Queries this node waits on at once, and requests from others it applies at once:
#: beyond them a query is refused and a request dropped (counted).
MAX_PENDING = 8
MAX_SERVING = 32

ENCRYPTION_OFF = "gossip encryption is off"


class QueryRefused(Exception):
    """The query was not sent (encryption off, too many at once): nothing changed."""


@dataclass(slots=True)
class Answer:
    """One member's keyring after the query, as it reported it (fingerprints only)."""

    node: str
    state: str
    ok: bool
    error: str | None
    primary: str | None
    keys: list[str]
    changed: bool
    persisted: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "state": self.state,
            "ok": self.ok,
            "error": self.error,
            "primary": self.primary,
            "keys": self.keys,
            "changed": self.changed,
            "persisted": self.persisted,
        }


@dataclass(slots=True)
class ClusterAnswer:
    """Every live member's answer, those that gave none in time, and those not asked."""

    node: str
    op: str
    answers: list[Answer]
    missing: list[tuple[str, str]]  # (name, state)
    skipped: list[tuple[str, str]]  # dead or left: not asked

    def as_dict(self) -> dict[str, Any]:
        return {
            "nodes": [a.as_dict() for a in self.answers],
            "missing": [{"node": n, "state": s} for n, s in self.missing],
            "skipped": [{"node": n, "state": s} for n, s in self.skipped],
        }


@dataclass(slots=True)
class Gathering:
    """The answers to one request id, by member: only from members asked, once each.

    Shared by keyring queries and serf's queries (``runtime/query.py``).
    """

    expected: dict[str, str]  # name -> state when asked
    answers: dict[str, Any] = field(default_factory=dict)
    #: when each answer came (loop time)
    at: dict[str, float] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if not self.expected:
            self.done.set()

    def accept(self, sender: str, msg: Any) -> bool:
        """False: late, duplicate, or nobody asked that member (the caller counts it)."""
        if sender not in self.expected or sender in self.answers:
            return False
        self.answers[sender] = msg
        self.at[sender] = asyncio.get_running_loop().time()
        if len(self.answers) == len(self.expected):
            self.done.set()
        return True

    async def wait(self, timeout: float) -> None:
        """Until every member asked answered, or ``timeout`` (the rest: missing)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), timeout)

    @property
    def missing(self) -> list[tuple[str, str]]:
        return sorted((n, s) for n, s in self.expected.items() if n not in self.answers)


def split_members(
    node: Node, keep: Callable[[MemberRecord], bool] = lambda m: True
) -> tuple[list[MemberRecord], list[MemberRecord]]:
    """The other members ``keep`` selects: (alive or suspect: asked, dead or left: not)."""
    live: list[MemberRecord] = []
    skipped: list[MemberRecord] = []
    for m in node.swim.members():
        if m.name == node.name or not keep(m):
            continue
        (live if m.state in ("alive", "suspect") else skipped).append(m)
    return live, skipped


class KeyQueries:
    """This node's side of keyring queries: asking the cluster, and answering others."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._pending: dict[bytes, Gathering] = {}
        self._serving: set[asyncio.Task[None]] = set()
        #: requests from other members applied (and answered), and key messages refused
        #: (too many at once, an answer nobody waits for)
        self.answered = 0
        self.refused = 0

    # ------------------------------------------------------------------ asking

    async def ask(self, op: str, key: bytes, timeout: float = DEFAULT_TIMEOUT) -> ClusterAnswer:
        """``op`` on every live member and on this node; waits at most ``timeout``."""
        if op not in QUERY_OPS:
            raise ValueError(f"unknown keyring operation {op!r} (known: {', '.join(QUERY_OPS)})")
        node = self.node
        if node.keys is None and op != "list":
            # the key would cross the network in clear
            raise QueryRefused(ENCRYPTION_OFF)
        if len(self._pending) >= MAX_PENDING:
            raise QueryRefused(f"{MAX_PENDING} keyring queries already under way")
        timeout = min(max(timeout, 0.0), MAX_TIMEOUT)
        live, skipped = split_members(node)
        qid = os.urandom(limits.KEY_QUERY_ID_LEN)
        pending = self._pending[qid] = Gathering({m.name: m.state for m in live})
        try:
            request = KeyRequest(qid, op, key)  # type: ignore[arg-type]  # (op checked)
            for m in live:
                node.transport.send_reliable(m.addr, [request])
            own = await apply(node, op, key, qid, by=node.name)
            await pending.wait(timeout)  # (then: missing)
        finally:
            del self._pending[qid]
        answers = [_answer(node.name, "alive", own)]
        answers += [_answer(name, pending.expected[name], r) for name, r in pending.answers.items()]
        answers.sort(key=lambda a: a.node)
        missing = pending.missing
        log.info(
            "keyring %s%s asked of %d live member(s): %d answered%s",
            op,
            f" key {fingerprint(key)}" if key else "",
            len(live) + 1,
            len(answers),
            f", no answer from {', '.join(n for n, _ in missing)}" if missing else "",
            extra={"fields": {"op": op, "missing": [n for n, _ in missing]}},
        )
        return ClusterAnswer(
            node.name, op, answers, missing, sorted((m.name, m.state) for m in skipped)
        )

    # ------------------------------------------------------------------ receiving

    def receive(self, batch: list[tuple[str, str, Any]]) -> None:
        """Key messages the stack accepted: (live sender, its advertised address, message)."""
        for sender, addr, msg in batch:
            if type(msg) is KeyResponse:
                pending = self._pending.get(msg.id)
                if pending is None or not pending.accept(sender, msg):
                    self.refused += 1  # late, duplicate, or nobody asked that member
            elif len(self._serving) >= MAX_SERVING:
                self.refused += 1
            else:
                task = asyncio.get_running_loop().create_task(self._serve(sender, addr, msg))
                self._serving.add(task)
                task.add_done_callback(self._serving.discard)

    async def _serve(self, sender: str, addr: str, request: KeyRequest) -> None:
        # the keyring is on iff the transport opened this frame with it: a KeyRequest
        # that reached here on an encrypted node arrived sealed with a cluster key
        answer = await apply(self.node, request.op, request.key, request.id, by=sender)
        self.answered += 1
        self.node.transport.send_reliable(addr, [answer])

    def close(self) -> None:
        for task in list(self._serving):
            task.cancel()
        for pending in self._pending.values():
            pending.done.set()


async def apply(node: Node, op: str, key: bytes, qid: bytes, by: str) -> KeyResponse:
    """Apply one query to this node's keyring; the answer, never raising."""
    keys = node.keys
    if keys is None:
        return KeyResponse(qid, False, ENCRYPTION_OFF, "", [])
    error = ""
    changed = False
    if op != "list":
        if len(key) not in KEY_SIZES:
            error = f"bad key: {len(key)} bytes (AES keys are 16, 24 or 32 bytes)"
        else:
            try:
                changed = (await keys.change(op, key)).changed
            except KeyConflict as exc:
                error = f"{exc.error}: {exc.detail}"
            except OSError as exc:
                error = f"keyring file not saved: {os_reason(exc)}; nothing changed"
            except ValueError as exc:
                error = str(exc)
        if changed:
            publish_changed(node, keys, op, key, by)
    ring = keys.keyring.keys
    return KeyResponse(
        qid,
        not error,
        error[: limits.MAX_ERROR_LEN],
        fingerprint(ring[0]),
        [fingerprint(k) for k in ring[: limits.MAX_KEYRING_KEYS]],
        changed,
        keys.path is not None,
    )


def publish_changed(node: Node, keys: KeyManager, op: str, key: bytes, by: str) -> None:
    """The ``keyring_changed`` event (fingerprints only); ``by``: the member that asked
    over gossip, or ``admin`` for a change asked of this node's own admin API."""
    node.events.publish(
        {
            "kind": "keyring_changed",
            "at": time.time(),
            "node": node.name,
            "op": op,
            "key": fingerprint(key),
            "primary": fingerprint(keys.keyring.primary),
            "keys": len(keys.keyring.keys),
            "by": by,
        }
    )


def _answer(name: str, state: str, r: KeyResponse) -> Answer:
    return Answer(
        name,
        state,
        r.ok,
        r.error or None,
        r.primary or None,
        list(r.keys),
        r.changed,
        r.persisted,
    )
