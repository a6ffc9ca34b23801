"""Exact anti-entropy by version vectors: the repair path under the Plumtree tree.

The eager/lazy tree is the fast path; this is what makes delivery exact when the tree
cannot (a node frozen, partitioned, declared dead, restarted):

* Every ``sync_interval`` a node sends its version vector (``Sync``) to a random peer.
  The receiver sends back, as ``Repair`` messages, what the sender lacks and it holds
  (oldest first per stream, streams in turn, at most ``repair_batch``), and answers with
  its own vector when it lacks something the sender holds, so the exchange goes both
  ways in one round trip. Messages younger than ``repair_delay`` (or the lateness of
  eager copies, if longer) are left to the tree.
* A stream whose lowest missing seq stays missing for ``repair_delay`` is *blocked*:
  repair rounds (every ``repair_interval``, or as soon as an answer arrives) ask a peer
  known to hold it, else a peer not heard from yet, with ``want`` set (answer me with
  your vector). A node away for a minute pulls its backlog in batches, from at most
  ``REPAIR_PARALLEL`` peers at a time: paced by the answers, no storm.
* A missing seq that no live peer holds (every one has sent its vector since, and none
  holds it) is declared lost: at once when they all have settled it themselves, after
  ``loss_timeout`` when some still lack it too (they may yet find it elsewhere). The
  gap is counted, announced (``MessagesLost``) and shown in health: never silent.
* A node that starts without history (``fresh``) takes the first established peer's
  vector as its starting point: it is not owed what was broadcast before it joined,
  and a restart without a store does not deliver everything again.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

from plumtree.core.ids import StreamKey, message_id
from plumtree.core.limits import MAX_DIGEST_RANGES, MAX_DIGEST_STREAMS
from plumtree.core.messages import Repair, StreamDigest, Sync
from plumtree.core.streams import (
    Range,
    Stream,
    digest_has,
    digest_held,
    settled_ranges,
    subtract,
)

if TYPE_CHECKING:
    from plumtree.core.plumtree import Plumtree

#: Peers asked at once while something is missing.
REPAIR_PARALLEL = 2
#: An ask with no answer after this many repair intervals (at least a second) is
#: given up and may go to another peer.
ASK_TIMEOUT_INTERVALS = 20
#: Payload bytes sent back for one digest at most (the frame limit is 8 MiB).
REPAIR_BYTES = 2 * 1024 * 1024


class PeerView:
    """What one peer's latest vector said of a blocked seq: whether it holds it, has
    settled it (delivered or given up), the next seq above it it holds, and the highest
    seq it has settled at all (evidence that seqs up to there existed)."""

    __slots__ = ("holds", "next_held", "settled", "top")

    def __init__(self, holds: bool, settled: bool, next_held: float, top: int = 0) -> None:
        self.holds = holds
        self.settled = settled
        self.next_held = next_held
        self.top = top


class Block:
    """A stream whose lowest missing seq (``seq``) stays missing: what peers said of it
    since ``since`` (when it became the lowest)."""

    __slots__ = ("seq", "since", "views")

    def __init__(self, seq: int, since: float) -> None:
        self.seq = seq
        self.since = since
        self.views: dict[str, PeerView] = {}


class Repairer:
    """The anti-entropy side of one Plumtree node (it shares the node's state)."""

    def __init__(self, tree: Plumtree, now: float, fresh: bool) -> None:
        self.tree = tree
        cfg = tree.config
        #: no history yet: take a peer's vector as the starting point
        self.adopting = fresh
        self._adopt_deadline: float | None = None
        #: stream key -> (wm when first seen missing, since)
        self._watch: dict[StreamKey, tuple[int, float]] = {}
        self.blocks: dict[StreamKey, Block] = {}
        #: peer -> when we asked it (want) and have no answer yet
        self._asked: dict[str, float] = {}
        #: peers whose repairs delivered something since we asked them
        self._helped: set[str] = set()
        self._holder_turn = 0
        self.next_sync = now + cfg.sync_interval if cfg.sync_interval > 0 else math.inf
        self.next_round = math.inf

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float:
        deadline = self.next_sync if self.next_sync < self.next_round else self.next_round
        adopt = self._adopt_deadline
        if adopt is not None and adopt < deadline:
            deadline = adopt
        return deadline

    def handle_timer(self, now: float) -> None:
        adopt = self._adopt_deadline
        if adopt is not None and now >= adopt:
            self._adopt_deadline = None
            self.adopting = False
        if now >= self.next_sync:
            self._periodic(now)
        if now >= self.next_round:
            self._round(now)

    def gap_seen(self, now: float) -> None:
        """Something is missing (a hole, or a head beyond what we hold): look at it."""
        due = now + self.tree.config.repair_delay
        if due < self.next_round:
            self.next_round = due
            self.tree.lower_deadline(due)

    def repaired_by(self, peer: str) -> None:
        """A Repair from ``peer`` delivered a message."""
        if peer in self._asked:
            self._helped.add(peer)

    def peer_added(self, now: float) -> None:
        """A node without history asks at once: a restart should not wait a sync period
        to learn where it is."""
        if self.adopting and self.next_sync > now:
            self.next_sync = now
            self.tree.lower_deadline(now)

    # ------------------------------------------------------------------ sending

    def _digest(self, want: bool, reply: bool = False) -> Sync:
        return Sync(self.tree.streams.digest(), reply=reply, want=want, fresh=self.adopting)

    def _periodic(self, now: float) -> None:
        tree = self.tree
        cfg = tree.config
        interval = cfg.sync_interval
        self.next_sync = now + interval * tree.rng.uniform(0.75, 1.25) if interval > 0 else math.inf
        if self.adopting:
            # keep asking until an established peer answers
            self.next_sync = min(self.next_sync, now + cfg.repair_interval * 5)
        names = tree.peers.names()
        if not names:
            return
        peer = names[tree.rng.randrange(len(names))]
        tree.send(peer, self._digest(want=False))
        tree.counters.sync_sent += 1

    def _scan(self, now: float) -> None:
        """Watch streams with something missing; block the ones stuck for repair_delay."""
        tree = self.tree
        delay = tree.config.repair_delay
        watch = self._watch
        blocks = self.blocks
        soonest = math.inf
        live: set[StreamKey] = set()
        for stream in tree.streams:
            if stream.own or stream.missing() == 0:
                continue
            key = stream.key
            live.add(key)
            block = blocks.get(key)
            if block is not None:
                if block.seq != stream.wm + 1:
                    blocks[key] = Block(stream.wm + 1, now)  # progress: ask about the next
                continue
            seen = watch.get(key)
            if seen is None or seen[0] != stream.wm:
                watch[key] = (stream.wm, now)
                soonest = min(soonest, now + delay)
            elif seen[1] + delay <= now:  # (the very sum the timer was set for)
                blocks[key] = Block(stream.wm + 1, now)
                del watch[key]
            else:
                soonest = min(soonest, seen[1] + delay)
        for key in [k for k in watch if k not in live]:
            del watch[key]
        for key in [k for k in blocks if k not in live]:
            del blocks[key]
        if blocks:
            soonest = min(soonest, now + tree.config.repair_interval)
        self.next_round = soonest
        if soonest < math.inf:
            tree.lower_deadline(soonest)

    def _round(self, now: float) -> None:
        """One repair round: settle what nobody has, then ask for the rest."""
        tree = self.tree
        cfg = tree.config
        self._scan(now)
        if not self.blocks:
            return
        self._declare_losses(now)
        if not self.blocks:
            return
        peers = tree.peers
        timeout = max(1.0, ASK_TIMEOUT_INTERVALS * cfg.repair_interval)
        asked = self._asked
        for peer in [p for p, at in asked.items() if now - at > timeout or p not in peers]:
            del asked[peer]
        for peer in self._targets(REPAIR_PARALLEL - len(asked)):
            asked[peer] = now
            tree.send(peer, self._digest(want=True))
            tree.counters.sync_sent += 1
            tree.counters.repair_requests += 1

    def _targets(self, count: int) -> list[str]:
        """Peers to ask: first those known to hold a blocked seq (in turn), then peers
        not heard from about the oldest block (to learn who holds it, or that nobody
        does)."""
        if count <= 0:
            return []
        tree = self.tree
        peers = tree.peers
        asked = self._asked
        chosen: list[str] = []
        blocks = sorted(self.blocks.values(), key=lambda b: b.since)
        holders = list(
            dict.fromkeys(
                p
                for b in blocks
                for p, view in b.views.items()
                if view.holds and p in peers and p not in asked
            )
        )
        if holders:
            self._holder_turn += 1
            start = self._holder_turn % len(holders)
            chosen.extend((holders[start:] + holders[:start])[:count])
        if len(chosen) < count:
            oldest = blocks[0]
            unheard = [
                p
                for p in peers.names()
                if p not in oldest.views and p not in asked and p not in chosen
            ]
            tree.rng.shuffle(unheard)
            chosen.extend(unheard[: count - len(chosen)])
        return chosen

    def _declare_losses(self, now: float) -> None:
        tree = self.tree
        peers = tree.peers
        if not len(peers):
            return  # nobody to ask is not the same as nobody holding it
        patience = tree.config.loss_timeout
        for key, block in list(self.blocks.items()):
            views = block.views
            if any(p not in views for p in peers.info):
                continue
            live = [views[p] for p in peers.info]
            if any(v.holds for v in live):
                continue
            if not all(v.settled for v in live) and now - block.since < patience:
                continue
            stream = tree.streams.get(key)
            if stream is None:
                del self.blocks[key]
                continue
            last = int(min([v.next_held for v in live] + [stream.head + 1])) - 1
            if stream.above:
                last = min(last, stream.above[0][0] - 1)
            # only what some peer settled is known to have existed: a head learned from
            # an announcement or a digest alone (forged, or about seqs the other side of
            # a partition holds) is never given up; it stays missing, and visible
            evidence = max(v.top for v in live)
            if evidence < block.seq:
                continue
            tree.give_up(stream, min(last, evidence), "unavailable")
            del self.blocks[key]

    # ------------------------------------------------------------------ receiving

    def on_sync(self, sender: str, msg: Sync, now: float) -> None:
        tree = self.tree
        if self.adopting:
            if not msg.fresh:
                self._adopt(msg.streams, now)
            elif self._adopt_deadline is None:
                # only peers without history answer: a brand-new cluster. Its clock
                # starts now, not when the first peer appeared (a restarted node whose
                # peers still hold it dead hears nothing for a while, and must not
                # time out and be sent everything it had delivered before)
                self._adopt_deadline = now + tree.config.adopt_timeout
                tree.lower_deadline(self._adopt_deadline)
        streams = tree.streams
        by_origin = streams.by_origin
        own = tree.own_stream
        blocks = self.blocks
        giving = not msg.fresh
        lacks_for_me = False
        news = False
        give: list[tuple[Stream, list[Range]]] = []
        named = 0
        for d in msg.streams:
            epochs = by_origin.get(d.origin)
            stream = epochs.get(d.epoch) if epochs is not None else None
            if stream is None:
                stream = streams.ensure(d.origin, d.epoch)
                if stream is None:
                    continue  # a retired epoch: long settled
            named += 1
            if stream.wire == d and not blocks:
                continue  # the common case: the very same state (compared in C)
            if stream is own:
                if d.wm > own.wm:
                    # a peer has more of our own epoch than our store kept (a machine
                    # crash took the last commits): never number those seqs again
                    tree.skip_own(d.wm, now)
                if giving and d.wm < own.wm:
                    lack = list(subtract(own.held_ranges(), settled_ranges(d)))
                    if lack:
                        give.append((own, lack))
                continue
            if d.head > stream.head:
                stream.learn_head(d.head)
                news = True
            if blocks:
                block = blocks.get(stream.key)
                if block is not None:
                    view = _view(d, block.seq)
                    if view is None:
                        block.views.pop(sender, None)  # its digest cannot tell: ask again
                    else:
                        block.views[sender] = view
            if d.wm == stream.wm and not d.above and not stream.above:
                continue  # the same contiguous prefix: nothing to trade
            if not lacks_for_me and any(
                True for _ in subtract(digest_held(d), _settled_here(stream))
            ):
                lacks_for_me = True
            if giving:
                lack = list(subtract(stream.held_ranges(), settled_ranges(d)))
                if lack:
                    give.append((stream, lack))
        if len(msg.streams) < MAX_DIGEST_STREAMS and named < len(streams):
            # a complete vector: what it does not name, its sender has none of
            mentioned = {(d.origin, d.epoch) for d in msg.streams}
            for stream in streams:
                if (stream.origin, stream.epoch) in mentioned:
                    continue
                block = blocks.get(stream.key)
                if block is not None:
                    block.views[sender] = PeerView(False, False, math.inf)
                if giving:
                    lack = list(stream.held_ranges())
                    if lack:
                        give.append((stream, lack))
        if give:
            self._send_repairs(sender, give, now)
        if not msg.reply and (msg.want or msg.fresh or lacks_for_me):
            tree.send(sender, self._digest(want=False, reply=True))
            tree.counters.sync_sent += 1
        if news:
            self.gap_seen(now)
        if msg.reply and self._asked.pop(sender, None) is not None:
            if sender in self._helped and blocks:
                # its answer filled gaps: ask again at once while some remain (an answer
                # that brought nothing waits for the next round, or we would spin)
                self.next_round = now
                tree.lower_deadline(now)
            self._helped.discard(sender)

    def _adopt(self, vector: list[StreamDigest], now: float) -> None:
        tree = self.tree
        own = tree.own_stream
        for d in vector:
            stream = tree.streams.ensure(d.origin, d.epoch)
            if stream is None or stream is own or stream.wm > 0:
                continue
            start = d.wm if not stream.above else min(d.wm, stream.above[0][0] - 1)
            stream.adopt(start, d.head)
        self.adopting = False
        self._adopt_deadline = None
        if tree.streams.missing():
            self.gap_seen(now)  # what is owed past the start point

    def _send_repairs(self, peer: str, give: list[tuple[Stream, list[Range]]], now: float) -> None:
        """What ``peer`` lacks and we hold, oldest first per stream, streams in turn,
        within the batch bounds; the freshest are left to the tree."""
        tree = self.tree
        budget = tree.config.repair_batch
        room = REPAIR_BYTES
        # younger than this may still be on its way down the tree: pushed now, it raced
        # the eager copy, and under load (queues of 100 ms and more) the loser was a
        # duplicate for the tree (bench/loopback.py at 1,600/s: RMR 0.93, was 0)
        settled_before = now - max(tree.config.repair_delay, tree.lateness.timeout)
        store = tree.store.view
        c = tree.counters
        queues = [(stream, _seqs(ranges)) for stream, ranges in give]
        misses = 4 * budget  # seqs walked past without a payload, at most (CPU bound)
        while queues and budget > 0 and room > 0 and misses > 0:
            still: list[tuple[Stream, Iterator[int]]] = []
            for stream, seqs in queues:
                seq = next(seqs, None)
                if seq is None:
                    continue
                msg_id = message_id(stream.key, seq)
                stored = store.get(msg_id)
                if stored is None:
                    misses -= 1
                    still.append((stream, seqs))
                    continue
                if stored.at > settled_before:
                    continue  # this stream's rest is fresher still
                tree.send(
                    peer, Repair(msg_id, stored.hops, stream.origin, stream.epoch, stored.payload)
                )
                c.repair_sent += 1
                budget -= 1
                room -= len(stored.payload)
                if budget <= 0 or room <= 0:
                    break
                still.append((stream, seqs))
            queues = still


def _seqs(ranges: list[Range]) -> Iterator[int]:
    for lo, hi in ranges:
        yield from range(lo, hi + 1)


def _settled_here(stream: Stream) -> Iterator[Range]:
    if stream.wm >= 1:
        yield 1, stream.wm
    yield from ((lo, hi) for lo, hi in stream.above)


def _view(d: StreamDigest, seq: int) -> PeerView | None:
    """What ``d`` says of ``seq`` (None: it cannot tell, its ranges were cut short)."""
    above = d.above
    if len(above) >= MAX_DIGEST_RANGES and seq > above[-1][1]:
        return None
    holds = False
    next_held: float = math.inf
    for lo, hi in digest_held(d):
        if hi < seq:
            continue
        if lo <= seq:
            holds = True
            break
        next_held = lo
        break
    top = max([d.wm, *(hi for _, hi in above)])
    return PeerView(holds, digest_has(d, seq), next_held, top)


__all__ = ["Block", "PeerView", "Repairer"]
