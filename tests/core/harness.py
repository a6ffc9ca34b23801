"""A tiny in-memory network for driving core Plumtree nodes by hand in tests."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from plumtree.core import events as ev
from plumtree.core.config import PlumtreeConfig
from plumtree.core.ids import message_id, stream_key
from plumtree.core.messages import Gossip, PlumtreeMessage
from plumtree.core.plumtree import Plumtree

Drop = Callable[[str, str, PlumtreeMessage], bool]


def config(**changes: object) -> PlumtreeConfig:
    """The lan preset with anti-entropy and jitter off unless asked (deterministic tests)."""
    base = replace(PlumtreeConfig(), sync_interval=0.0, maintenance_jitter=0.0)
    return replace(base, **changes)  # type: ignore[arg-type]


class Net:
    """Nodes by name; messages are queued and delivered in FIFO order by ``pump``."""

    def __init__(self, names: list[str], cfg: PlumtreeConfig | None = None, seed: int = 0) -> None:
        self.cfg = cfg or config()
        self.nodes = {
            n: Plumtree(n, self.cfg, random.Random(seed + i)) for i, n in enumerate(names)
        }
        self.queue: deque[tuple[str, str, PlumtreeMessage]] = deque()
        self.events: dict[str, list[ev.Event]] = {n: [] for n in names}
        self.sent: list[tuple[str, str, PlumtreeMessage]] = []
        self.now = 0.0
        self.down: set[str] = set()

    def link(self, a: str, b: str) -> None:
        self.nodes[a].add_peer(b, self.now)
        self.nodes[b].add_peer(a, self.now)
        self.collect()

    def full_mesh(self) -> None:
        names = list(self.nodes)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                self.link(a, b)

    def collect(self) -> None:
        for name, node in self.nodes.items():
            for dest, msg in node.take_outgoing():
                self.sent.append((name, dest, msg))
                self.queue.append((name, dest, msg))
            self.events[name].extend(node.take_events())

    def pump(self, drop: Drop | None = None, limit: int = 100_000) -> int:
        """Deliver queued messages (and what they cause) until quiet; returns how many."""
        self.collect()
        n = 0
        while self.queue and n < limit:
            src, dst, msg = self.queue.popleft()
            n += 1
            if dst in self.down or src in self.down or (drop is not None and drop(src, dst, msg)):
                continue
            self.nodes[dst].receive(src, msg, self.now)
            self.collect()
        return n

    def advance(self, seconds: float, drop: Drop | None = None, step: float = 0.01) -> None:
        """Move the clock forward in steps, firing timers and pumping messages."""
        end = self.now + seconds
        while self.now < end - 1e-12:
            self.now = min(end, self.now + step)
            for name, node in self.nodes.items():
                if name not in self.down and node.next_deadline() <= self.now:
                    node.handle_timer(self.now)
            self.pump(drop)

    def delivered(self, name: str) -> list[ev.Delivered]:
        return [e for e in self.events[name] if isinstance(e, ev.Delivered)]

    def of(self, name: str, kind: type[ev.Event]) -> list[ev.Event]:
        return [e for e in self.events[name] if isinstance(e, kind)]


# --- consistent message ids for hand-built messages ----------------------------------

#: the origin whose stream the tests' ids belong to, unless they say otherwise
ORIGIN = "o"


def mid(seq: int, origin: str = ORIGIN, epoch: int = 0) -> bytes:
    """The id of message ``seq`` of ``(origin, epoch)``."""
    return message_id(stream_key(origin, epoch), seq)


_KNOWN = {stream_key(o, 0): o for o in (ORIGIN, *"abcdefghijklmnpqrstuvwxyz")}


def gossip(msg_id: bytes, round_: int, origin: str, payload: bytes, epoch: int = 0) -> Gossip:
    """A Gossip whose id and origin agree: the origin is the one the id was made for
    (when the test made it with ``mid``), else ``origin``."""
    return Gossip(msg_id, round_, _KNOWN.get(msg_id[:8], origin), epoch, payload)
