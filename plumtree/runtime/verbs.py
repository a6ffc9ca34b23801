"""serf's operator verbs on a running node: tags, join, force-leave, rtt.

Each is a function of the :class:`~plumtree.runtime.node.Node`, kept apart from the node
so that it stays the adapter it is: the protocol part of each verb lives in the core
(``Stack.set_meta``, ``Stack.force_leave``, ``Swim.join``); here is only what needs the
loop (waiting for a join's answer, resolving a seed's name) and the operator's errors.

Errors are :class:`VerbError` with an HTTP status, an error and a detail: the admin API
turns them into its JSON errors as they are.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from plumtree.core.members import ALIVE, STATE_NAMES
from plumtree.runtime.addresses import format_addr, parse_addr
from plumtree.runtime.gossippolicy import INSECURE_TAG

if TYPE_CHECKING:
    from plumtree.runtime.node import Node

#: Tags the node sets itself: its admin URL (how plumctl finds every member) and the
#: mark of unauthenticated gossip. Users can neither set nor remove them.
RESERVED_TAGS = ("admin", INSECURE_TAG)
#: How often a join looks for its seeds among the members while it waits.
JOIN_POLL = 0.01
#: The source ``rtt`` names: the last acknowledged SWIM probe of that member.
RTT_SOURCE = "swim-probe"


@dataclass
class VerbError(Exception):
    """A refused verb: the HTTP status, the error and its detail."""

    status: int
    error: str
    detail: str


def set_tags(node: Node, assign: dict[str, str], unset: list[str]) -> dict[str, str]:
    """Change this node's tags (``unset`` first, then ``assign``) and gossip them.

    The new tags go out in an Alive with a bumped incarnation (``Stack.set_meta``).
    Returns the user tags after the change (reserved ones left out).
    """
    node._check_running()
    for key in [*assign, *unset]:
        if not key:
            raise VerbError(400, "bad tag", "a tag key cannot be empty")
        if key in RESERVED_TAGS:
            raise VerbError(
                400,
                "reserved tag",
                f"{key!r} is set by the node itself (reserved: {', '.join(RESERVED_TAGS)})",
            )
    meta = dict(node.swim.local.meta)
    for key in unset:
        meta.pop(key, None)
    meta.update(assign)
    try:
        node.stack.set_meta(meta, node._now())
    except ValueError as exc:
        raise VerbError(400, "tags too large", str(exc)) from None
    node._pump()
    tags = {k: v for k, v in meta.items() if k not in RESERVED_TAGS}
    node.config.tags = dict(tags)
    return tags


async def join(node: Node, seeds: list[str], timeout: float) -> dict[str, Any]:
    """Push-pull with each seed once (serf's join) and wait, up to ``timeout``, until
    each one is a live member here. A seed counts as joined when a live member
    advertises the address given (or one its host name resolves to)."""
    node._check_running()
    if node.swim.left:
        raise VerbError(409, "node has left", "a node that left cannot join again; restart it")
    loop = asyncio.get_running_loop()
    wanted: dict[str, set[str]] = {}
    for seed in dict.fromkeys(seeds):
        try:
            host, port = parse_addr(seed, 7946)
        except ValueError as exc:
            raise VerbError(400, "bad address", f"{seed!r}: {exc}") from None
        wanted[seed] = {format_addr(host, port), *await _resolve(loop, host, port)}
    sent = node.swim.join(list(wanted), node._now())
    node._pump()
    deadline = loop.time() + timeout
    found: dict[str, str] = {}
    while True:
        live = {
            m.addr: m.name
            for m in node.swim.members()
            if m.state == STATE_NAMES[ALIVE] and m.name != node.name
        }
        for seed, addrs in wanted.items():
            name = next((live[a] for a in addrs if a in live), None)
            if name is not None:
                found[seed] = name
        if len(found) == len(wanted) or loop.time() >= deadline:
            break
        await asyncio.sleep(JOIN_POLL)
    own = node.gossip_addr
    return {
        "kind": "JoinResult",
        "node": node.name,
        "sent": sent,
        "joined": len(found),
        "seeds": [
            {
                "addr": seed,
                "joined": seed in found,
                "member": found.get(seed),
                "reason": None
                if seed in found
                else ("this node's own address" if own in addrs else f"no answer in {timeout:g}s"),
            }
            for seed, addrs in wanted.items()
        ],
    }


async def _resolve(loop: asyncio.AbstractEventLoop, host: str, port: int) -> set[str]:
    """The addresses ``host`` resolves to, formatted as members advertise them."""
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return set()
    return {format_addr(str(info[4][0]), port) for info in infos}


def force_leave(node: Node, name: str) -> dict[str, Any]:
    """serf's force-leave: a failed (dead or suspect) member becomes *left* everywhere."""
    node._check_running()
    member = node.swim.member(name)
    if member is None:
        raise VerbError(404, "no such member", f"{name!r} is not in this node's member table")
    if name == node.name:
        raise VerbError(400, "cannot force-leave self", "to take this node out, use leave")
    if member.state == STATE_NAMES[ALIVE]:
        raise VerbError(
            409,
            "member is alive",
            f"{name!r} is alive: only a failed (dead or suspect) member can be forced out",
        )
    before = node.stack.force_leave(name, node._now())
    node._pump()
    return {"kind": "ForceLeave", "node": node.name, "member": name, "was": before}


def rtt(node: Node, name: str) -> dict[str, Any]:
    """This node's last measured probe round trip to member ``name`` (seconds and ms)."""
    node._check_running()
    member = node.swim.member(name)
    if member is None:
        raise VerbError(404, "no such member", f"{name!r} is not in this node's member table")
    value = None if name == node.name else node.swim.rtts().get(name)
    return {
        "kind": "Rtt",
        "from": node.name,
        "to": name,
        "state": member.state,
        "rtt_s": value,
        "rtt_ms": None if value is None else round(value * 1000, 3),
        "source": RTT_SOURCE,
    }
