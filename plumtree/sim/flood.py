"""The eager-flood baseline: forward every new message to every neighbour, never prune."""

from __future__ import annotations

import random

from plumtree.core import events as ev
from plumtree.core.ids import MessageId, new_message_id
from plumtree.core.messages import Gossip


class FloodNode:
    """Same sans-IO surface as the Plumtree core, for a like-for-like comparison."""

    def __init__(self, name: str, rng: random.Random) -> None:
        self.name = name
        self.rng = rng
        self.peers: dict[str, None] = {}
        self.seen: set[MessageId] = set()
        self._out: list[tuple[str, Gossip]] = []
        self._events: list[ev.Event] = []
        self.duplicates = 0

    def add_peer(self, peer: str, now: float) -> bool:
        if peer == self.name or peer in self.peers:
            return False
        self.peers[peer] = None
        return True

    def remove_peer(self, peer: str, now: float) -> bool:
        return self.peers.pop(peer, 0) is None

    def broadcast(self, payload: bytes, now: float) -> MessageId:
        msg_id = new_message_id(self.rng)
        self.seen.add(msg_id)
        self._events.append(ev.Delivered(msg_id, payload, self.name, self.name, 0, now))
        msg = Gossip(msg_id, 0, self.name, 0, payload)
        self._out.extend((p, msg) for p in self.peers)
        return msg_id

    def receive(self, sender: str, message: Gossip, now: float) -> None:
        if message.id in self.seen:
            self.duplicates += 1
            return
        self.seen.add(message.id)
        hops = message.round + 1
        self._events.append(
            ev.Delivered(message.id, message.payload, message.origin, sender, hops, now)
        )
        fwd = Gossip(message.id, hops, message.origin, message.epoch, message.payload)
        self._out.extend((p, fwd) for p in self.peers if p != sender)

    def handle_timer(self, now: float) -> None:
        return None

    def next_deadline(self) -> float | None:
        return None

    def take_outgoing(self) -> list[tuple[str, Gossip]]:
        out, self._out = self._out, []
        return out

    def take_events(self) -> list[ev.Event]:
        out, self._events = self._events, []
        return out

    def take_all(self) -> tuple[list[tuple[str, Gossip]], list[ev.Event], None]:
        """``take_outgoing()``, ``take_events()``, ``next_deadline()`` in one call."""
        out, self._out = self._out, []
        events, self._events = self._events, []
        return out, events, None
