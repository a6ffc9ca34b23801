"""serf's query: ask every targeted member to run its ``query`` handlers, gather answers.

The node asked by ``plumctl query`` (``POST /v1/query``) picks the targets from its
member table (``node_filter``: a regex the whole name matches; ``tags``: key -> regex
the whole value matches; live members are asked, dead and left ones skipped), sends
each a ``QueryRequest`` point to point over gossip TCP (the same path and checks as a
keyring query: ``runtime/keyquery.py``, whose ``Gathering`` this reuses), and answers
it itself if it is a target. Each member acks at once (``QueryAck``) and, if one of its
handlers wants the query (``query`` or ``query:NAME``), sends that handler's stdout
(at most 1 KiB) in a ``QueryResponse``. The asker gathers acks and responses by id
until every target responded or the timeout ran out; targets that never acked are
missing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from plumtree.core import limits
from plumtree.core.messages import QueryAck, QueryRequest, QueryResponse
from plumtree.runtime.handlers import QUERY_NAME
from plumtree.runtime.keyquery import MAX_PENDING, MAX_SERVING, Gathering, split_members

if TYPE_CHECKING:
    from plumtree.core.members import MemberRecord
    from plumtree.runtime.node import Node

log = logging.getLogger("plumtree.query")

DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 60.0


class QueryRefused(Exception):
    """Not sent: too many queries under way on this node."""


@dataclass(frozen=True, slots=True)
class Targets:
    """Which members a query is for (both filters must match; none: every member)."""

    node_filter: re.Pattern[str] | None = None
    tags: tuple[tuple[str, re.Pattern[str]], ...] = ()

    def match(self, name: str, tags: dict[str, str]) -> bool:
        if self.node_filter is not None and not self.node_filter.fullmatch(name):
            return False
        return all(k in tags and rx.fullmatch(tags[k]) for k, rx in self.tags)


@dataclass(slots=True)
class _Pending:
    acks: Gathering
    responses: Gathering


class Queries:
    """This node's side of queries: asking members, and answering them."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._pending: dict[bytes, _Pending] = {}
        self._serving: set[asyncio.Task[None]] = set()
        #: queries from others answered, and query messages refused (unasked, too many)
        self.answered = 0
        self.refused = 0

    async def ask(
        self, name: str, payload: bytes, targets: Targets, timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """Run the query on every target; the table of who acked and answered."""
        if not QUERY_NAME.fullmatch(name):
            raise ValueError(f"bad query name {name!r}: 1-64 of A-Z a-z 0-9 _ . -")
        if len(payload) > limits.MAX_QUERY_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes: at most {limits.MAX_QUERY_PAYLOAD}")
        if len(self._pending) >= MAX_PENDING:
            raise QueryRefused(f"{MAX_PENDING} queries already under way")
        node = self.node
        timeout = min(max(timeout, 0.0), MAX_TIMEOUT)

        def keep(m: MemberRecord) -> bool:
            return targets.match(m.name, _user_tags(m.meta))

        live, skipped = split_members(node, keep)
        me = targets.match(node.name, node.config.tags)
        expected = {m.name: m.state for m in live}
        if me:
            expected[node.name] = "alive"
        qid = os.urandom(limits.KEY_QUERY_ID_LEN)
        pending = self._pending[qid] = _Pending(
            Gathering(dict(expected)), Gathering(dict(expected))
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            request = QueryRequest(qid, name, payload, timeout)
            for m in live:
                node.transport.send_reliable(m.addr, [request])
            if me:  # this node is a target too (as serf's agent answers its own query)
                self._receive(node.name, "", request)
            await pending.responses.wait(timeout)
        finally:
            del self._pending[qid]
        rows = []
        for member, state in sorted(expected.items()):
            ack_at = pending.acks.at.get(member)
            response = pending.responses.answers.get(member)
            rows.append(
                {
                    "node": member,
                    "state": state,
                    "acked": ack_at is not None,
                    "ack_ms": None if ack_at is None else round((ack_at - started) * 1000, 3),
                    "responded": response is not None,
                    "ok": None if response is None else response.ok,
                    "response": None
                    if response is None
                    else response.payload.decode("utf-8", "replace"),
                    "error": (response.error or None) if response is not None else None,
                }
            )
        missing = [n for n, _ in pending.acks.missing]
        log.info(
            "query %s asked of %d member(s): %d acked, %d responded%s",
            name,
            len(expected),
            len(pending.acks.answers),
            len(pending.responses.answers),
            f", no ack from {', '.join(missing)}" if missing else "",
            extra={"fields": {"query": name, "missing": missing}},
        )
        return {
            "kind": "Query",
            "node": node.name,
            "name": name,
            "id": qid.hex(),
            "timeout": timeout,
            "nodes": rows,
            "acks": len(pending.acks.answers),
            "responses": len(pending.responses.answers),
            "missing": missing,
            "skipped": [{"node": m.name, "state": m.state} for m in skipped],
        }

    # ------------------------------------------------------------------ receiving

    def receive(self, batch: list[tuple[str, str, Any]]) -> None:
        """Query messages the stack accepted: (live sender, its advertised address, msg)."""
        for sender, addr, msg in batch:
            self._receive(sender, addr, msg)

    def _receive(self, sender: str, addr: str, msg: Any) -> None:
        match msg:
            case QueryAck(id=qid):
                pending = self._pending.get(qid)
                if pending is None or not pending.acks.accept(sender, msg):
                    self.refused += 1
            case QueryResponse(id=qid):
                pending = self._pending.get(qid)
                if pending is None or sender not in pending.acks.answers:
                    self.refused += 1  # (a response before its ack: the ack was lost)
                elif not pending.responses.accept(sender, msg):
                    self.refused += 1
            case QueryRequest():
                if len(self._serving) >= MAX_SERVING:
                    self.refused += 1
                    return
                task = asyncio.get_running_loop().create_task(self._serve(sender, addr, msg))
                self._serving.add(task)
                task.add_done_callback(self._serving.discard)
            case _:
                self.refused += 1

    def _send(self, addr: str, msg: Any) -> None:
        if addr:
            self.node.transport.send_reliable(addr, [msg])
        else:  # our own query
            self._receive(self.node.name, "", msg)

    async def _serve(self, sender: str, addr: str, request: QueryRequest) -> None:
        node = self.node
        loop = asyncio.get_running_loop()
        # the asker gathers for ``request.timeout``: an answer later than that is not sent
        deadline = loop.time() + request.timeout if request.timeout else None
        self._send(addr, QueryAck(request.id))
        env = {
            **node.handler_env(),
            "PLUMTREE_QUERY_NAME": request.name,
            "PLUMTREE_QUERY_ID": request.id.hex(),
            "PLUMTREE_QUERY_ORIGIN": sender,
        }
        reply = node.handlers.offer("query", env, request.payload, query=request.name)
        if reply is None:
            return  # no handler wants it: an ack only (as serf)
        outcome = await reply
        if deadline is not None and loop.time() > deadline:
            log.debug("query %s from %s answered after its timeout: not sent", request.name, sender)
            return
        self.answered += 1
        payload = outcome.output[: limits.MAX_QUERY_RESPONSE]
        self._send(addr, QueryResponse(request.id, outcome.ok, payload, outcome.error[:200]))

    def close(self) -> None:
        for task in list(self._serving):
            task.cancel()
        for pending in self._pending.values():
            pending.responses.done.set()


def _user_tags(meta: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in meta.items() if k != "admin"}
