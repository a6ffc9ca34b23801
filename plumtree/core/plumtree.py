"""The Plumtree broadcast state machine (Leitão, Pereira, Rodrigues), sans-IO.

One instance per node. The caller feeds it messages, membership changes and timer ticks,
always with ``now``; it queues messages to send (``take_outgoing``), events
(``take_events``) and tells when it next needs a tick (``next_deadline``).

Protocol, as in the paper, with the operational extensions of memberlist-plumtree:

* Gossip goes eagerly to eager peers; ids are announced lazily (IHave, batched) to a
  random sample of up to ``lazy_fanout`` lazy peers, leaving out the ids a peer has
  announced to us meanwhile (it holds them), unless our path is a shortcut for it.
  That saves about a third of all IHaves.
* The first copy of a message is delivered and its sender made eager; a duplicate from an
  eager peer gets it pruned (after ``prune_threshold`` duplicates), so the eager links
  converge to a spanning tree.
* An IHave for a missing id starts a timer; when it fires a Graft goes to one announcer,
  then retries back off exponentially across the other announcers, bounded, and finally
  the gap is counted as a Graft failure. Only one Graft per id is ever in flight.
* The paper's optimisation: a lazy peer whose IHave shows a path shorter by at least
  ``optimization_threshold`` hops replaces the eager parent, once it has done so for
  ``optimization_streak`` messages in a row (a single announcement made the tree flap),
  in our delivery order: a message it announced no shortcut for, or none at all, ends
  the streak.
* Anti-entropy: every ``sync_interval``, and under load every ``sync_max_ids / 2``
  deliveries, a digest of our newest settled ids goes to a random peer; it grafts what
  it lacks and answers with what we lack in the stretch the digest covers. This is the
  repair for a gap no IHave announced (the lazy sample can miss a node).
* Graft handling is rate limited per peer; caches and the seen set have TTLs and hard
  capacities, so memory is bounded whatever the load.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

from plumtree.core import events as ev
from plumtree.core.cache import CachedMessage, SeenEntry, TimedStore
from plumtree.core.config import PlumtreeConfig
from plumtree.core.health import CounterWindow, HealthInputs, HealthReport, evaluate
from plumtree.core.ids import MessageId, new_message_id
from plumtree.core.lateness import LatenessEstimator
from plumtree.core.limits import MAX_IHAVE_IDS, MAX_ROUND
from plumtree.core.messages import Gossip, Graft, IHave, PlumtreeMessage, Prune, Sync
from plumtree.core.peers import PeerInfo, PeerSets
from plumtree.core.ratelimit import RateLimiter
from plumtree.core.stats import PlumtreeCounters, PlumtreeGauges, PlumtreeHistograms

#: how far back (in multiples of ``sync_max_ids``) an answer to a full digest looks
SYNC_WALK = 4
#: how many digests' worth of entries too fresh to compare are skipped at most
SYNC_FRESH_MAX = 8
#: the shortest wait before a follow-up digest (seconds)
SYNC_FOLLOW_MIN = 0.01
#: Seconds of history behind the health model's rates (the seed's PromQL uses [5m]).
HEALTH_WINDOW = 300.0

_PRUNE = Prune()


class MessageTooLarge(ValueError):
    """The payload exceeds ``max_message_size``; nothing was sent."""


class PendingGraft:
    """A message we heard of (IHave) but have not received."""

    __slots__ = ("announced_at", "announcers", "attempts", "deadline", "first_graft_at")

    def __init__(self, announcer: str, announced_at: float, deadline: float) -> None:
        self.announcers = [announcer]
        self.announced_at = announced_at
        self.attempts = 0
        self.deadline = deadline
        self.first_graft_at: float | None = None

    def asked_peers(self) -> list[str]:
        """The peers we sent a Graft for this id, once each, in the order asked (not a
        set's order: the simulator replays a seed exactly)."""
        announcers = self.announcers
        return list(dict.fromkeys(announcers[i % len(announcers)] for i in range(self.attempts)))

    def asked(self, peer: str) -> bool:
        """Did we send a Graft for this id to ``peer``?"""
        return peer in self.asked_peers()


class Plumtree:
    """Broadcast tree state machine of one node."""

    def __init__(
        self,
        name: str,
        config: PlumtreeConfig | None = None,
        rng: random.Random | None = None,
        now: float = 0.0,
    ) -> None:
        self.name = name
        self.config = cfg = config or PlumtreeConfig()
        self.rng = rng or random.Random(0)
        self.peers = PeerSets()
        self.counters = PlumtreeCounters()
        self.histograms = PlumtreeHistograms()
        self.seen: TimedStore[SeenEntry] = TimedStore(cfg.seen_ttl, cfg.seen_max_size)
        self.cache: TimedStore[CachedMessage] = TimedStore(
            cfg.message_cache_ttl, cfg.message_cache_max_size
        )
        # read-only views for the per-message paths (lookups without a Python call)
        self._seen = self.seen.view
        self._cached = self.cache.view
        self._graft_limiter = RateLimiter(
            cfg.graft_rate_limit_per_second, cfg.graft_rate_limit_burst
        )
        self._pending: dict[MessageId, PendingGraft] = {}
        #: the IHave timer adapts to how late eager copies really are
        self.lateness = LatenessEstimator(cfg.ihave_timeout, cfg.ihave_timeout_ceiling)
        self._graft_timers: list[tuple[float, MessageId]] = []
        self._ihave_queue: list[tuple[MessageId, int]] = []
        #: per queued id: the lazy peers that announced it to us meanwhile, with their
        #: hop level (None: nobody yet). They hold it, so our IHave would tell them
        #: nothing, unless our path is a shortcut for them.
        self._holders: dict[MessageId, dict[str, int] | None] = {}
        self._delivered_seq = 0
        #: payloads evicted early since the last CacheEvicted event (one per tick)
        self._evicted_unreported = 0
        self._ihave_due: float | None = None
        self._next_maintenance = now + cfg.maintenance_interval
        self._next_optimization = now
        self._next_sync = now + cfg.sync_interval if cfg.sync_interval > 0 else float("inf")
        #: the delivery (``seq``) at which the next digest is due whatever the timer says
        self._sync_due_seq = max(1, cfg.sync_max_ids // 2) if cfg.sync_interval > 0 else 1 << 62
        self._outbox: list[tuple[str, PlumtreeMessage]] = []
        self._events: list[ev.Event] = []
        self._health_window = CounterWindow(HEALTH_WINDOW)
        self._health_window.record(now, self._health_counters())
        #: next_deadline(), kept up to date as timers are set (lowered on the spot) and
        #: recomputed whenever one fires or is cleared, for take_all()
        self._deadline = self.next_deadline()

    # ------------------------------------------------------------------ public API

    def broadcast(self, payload: bytes, now: float) -> MessageId:
        """Originate a broadcast; it is also delivered locally (hops 0)."""
        if len(payload) > self.config.max_message_size:
            self.counters.messages_too_large += 1
            raise MessageTooLarge(
                f"payload of {len(payload)} bytes exceeds max_message_size "
                f"({self.config.max_message_size})"
            )
        msg_id = new_message_id(self.rng)
        while msg_id in self.seen:  # pragma: no cover - 128 random bits
            msg_id = new_message_id(self.rng)
        self.counters.messages_broadcast += 1
        self._accept(msg_id, payload, self.name, self.name, 0, now)
        self._eager_push(Gossip(msg_id, 0, self.name, payload), exclude=None)
        self._queue_ihave(msg_id, 0, now)
        return msg_id

    def receive(self, sender: str, message: PlumtreeMessage, now: float) -> None:
        """Handle one message from ``sender`` (a cluster member, per the runtime)."""
        if sender == self.name:
            return
        kind = type(message)
        if kind is Gossip:
            self._on_gossip(sender, message, now)  # type: ignore[arg-type]
        elif kind is IHave:
            self._on_ihave(sender, message, now)  # type: ignore[arg-type]
        elif kind is Graft:
            self._on_graft(sender, message, now)  # type: ignore[arg-type]
        elif kind is Prune:
            self._on_prune(sender, now)
        elif kind is Sync:
            self._on_sync(sender, message, now)  # type: ignore[arg-type]

    def handle_timer(self, now: float) -> None:
        """Run everything that is due at ``now`` (safe to call early or often)."""
        if self._ihave_due is not None and now >= self._ihave_due:
            self._flush_ihave()
        if self._graft_timers and self._graft_timers[0][0] <= now:
            self._run_graft_timers(now)
        if now >= self._next_maintenance:
            self._maintenance(now)
        if now >= self._next_sync:
            self._send_sync(now)
        self._deadline = self.next_deadline()

    def next_deadline(self) -> float:
        """Earliest time ``handle_timer`` has work to do."""
        # called after every message the node handles: plain comparisons, no min()
        deadline = self._next_maintenance
        if self._next_sync < deadline:
            deadline = self._next_sync
        due = self._ihave_due
        if due is not None and due < deadline:
            deadline = due
        timers = self._graft_timers
        if timers and timers[0][0] < deadline:
            deadline = timers[0][0]
        return deadline

    def take_outgoing(self) -> list[tuple[str, PlumtreeMessage]]:
        """Messages to send, as ``(peer, message)``, in order; the queue is emptied."""
        out, self._outbox = self._outbox, []
        return out

    def take_events(self) -> list[ev.Event]:
        out, self._events = self._events, []
        return out

    def take_all(
        self,
    ) -> tuple[Sequence[tuple[str, PlumtreeMessage]], Sequence[ev.Event], float]:
        """``take_outgoing()``, ``take_events()`` and ``next_deadline()`` in one call.

        For drivers that collect all three after every input (the simulator does, millions
        of times a run). Empty results are shared empty tuples, not new lists.
        """
        out: Sequence[tuple[str, PlumtreeMessage]] = self._outbox
        if out:
            self._outbox = []
        else:
            out = ()
        events: Sequence[ev.Event] = self._events
        if events:
            self._events = []
        else:
            events = ()
        return out, events, self._deadline

    # ------------------------------------------------------------------ membership

    def add_peer(self, peer: str, now: float) -> bool:
        """A member joined: eager while below ``eager_fanout``, lazy otherwise."""
        if peer == self.name or peer in self.peers:
            return False
        return self._insert_peer(peer, len(self.peers.eager) < self.config.eager_fanout, now)

    def remove_peer(self, peer: str, now: float) -> bool:
        """A member failed or left: forget it, and never leave this node isolated."""
        was_eager = peer in self.peers.eager
        if not self.peers.remove(peer):
            return False
        self.counters.peer_removed += 1
        self._graft_limiter.forget(peer)
        for pending in self._pending.values():
            if peer in pending.announcers:
                pending.announcers.remove(peer)
        self._events.append(ev.PeerRemoved(peer))
        if was_eager and not self.peers.eager:
            self._repair_isolation(now)
        return True

    def reconcile(self, members: Iterable[str], now: float) -> tuple[int, int]:
        """Make the peer sets match a full membership snapshot; returns (added, removed).

        Repairs any drift from lost or reordered membership events (no ghost peers).
        """
        wanted = [m for m in dict.fromkeys(members) if m != self.name]
        wanted_set = set(wanted)
        removed = sum(self.remove_peer(p, now) for p in self.peers.names() if p not in wanted_set)
        added = 0
        for member in wanted:
            if member not in self.peers:
                limit = self.config.max_peers
                if limit is not None and len(self.peers) >= limit:
                    break
                added += self.add_peer(member, now)
        return added, removed

    # ------------------------------------------------------------------ views

    def gauges(self) -> PlumtreeGauges:
        return PlumtreeGauges(
            eager_peers=len(self.peers.eager),
            lazy_peers=len(self.peers.lazy),
            total_peers=len(self.peers),
            cache_size=len(self.cache),
            cache_capacity=self.cache.capacity,
            ihave_queue_size=len(self._ihave_queue),
            ihave_queue_capacity=self.config.ihave_queue_max,
            pending_grafts=len(self._pending),
            seen_size=len(self.seen),
            ihave_timeout_seconds=self.lateness.timeout,
        )

    def peer_infos(self) -> list[PeerInfo]:
        return list(self.peers.info.values())

    def lookup(self, msg_id: MessageId) -> SeenEntry | None:
        """What this node knows of a delivered message (None: never, or forgotten)."""
        return self.seen.get(msg_id)

    def is_pending(self, msg_id: MessageId) -> bool:
        return msg_id in self._pending

    def health(self, now: float) -> HealthReport:
        seconds, (sent, failed, delivered, dups, drops) = self._health_window.deltas(
            now, self._health_counters()
        )
        g = self.gauges()
        return evaluate(
            HealthInputs(
                eager_peers=g.eager_peers,
                lazy_peers=g.lazy_peers,
                cache_size=g.cache_size,
                cache_capacity=g.cache_capacity,
                pending_grafts=g.pending_grafts,
                ihave_queue_size=g.ihave_queue_size,
                ihave_queue_capacity=g.ihave_queue_capacity,
                graft_sent_in_window=sent,
                graft_failed_in_window=failed,
                delivered_in_window=delivered,
                duplicates_in_window=dups,
                drops_in_window=drops,
                window_seconds=seconds,
            )
        )

    # ------------------------------------------------------------------ handlers

    def _on_gossip(self, sender: str, msg: Gossip, now: float) -> None:
        c = self.counters
        c.gossip_received += 1
        # ``info`` is the sender's PeerInfo (None: not a peer); ``info.eager`` says which
        # of the two sets it is in (PeerSets keeps them in step)
        info = self.peers.info.get(sender)
        if info is not None:
            info.gossip_received += 1
        msg_id = msg.id
        entry = self._seen.get(msg_id)
        if entry is not None:
            c.messages_duplicate += 1
            entry.duplicates += 1
            graft = entry.graft
            if graft is not None:
                if graft.asked(sender):
                    # a second reply to our Graft retries: not evidence of a cycle, but
                    # the retry made this peer eager on both sides, and the first reply
                    # already joined us to the tree: cut the extra link
                    if info is not None and sender != entry.parent:
                        self._cut_graft_link(sender, now)
                    return
                if graft.first_graft_at is not None:
                    # the eager copy we grafted for was only late: stretch the IHave timer
                    c.graft_premature += 1
                    self.lateness.observe(now - graft.announced_at)
                    graft.first_graft_at = None  # one sample per message
            if entry.duplicates > self.config.prune_threshold and info is not None:
                if info.eager:
                    # a streak that lasts: a cycle its own node is not cutting. A Graft
                    # under load makes a cycle for as long as the late copy takes (then
                    # the grafting node may undo it); at hundreds of messages a second
                    # the nodes around it saw three duplicates within milliseconds, all
                    # cut at once, and the split tree was grafted back, and again
                    streak = info.duplicate_streak = info.duplicate_streak + 1
                    if streak == 1:
                        info.duplicate_since = now
                    if (
                        streak < self.config.prune_streak
                        or now - info.duplicate_since < self.lateness.timeout
                    ):
                        return
                    info.duplicate_streak = 0
                    self._demote(sender, now, "duplicate")
                elif now - info.pruned_at < self.lateness.ceiling:
                    return  # our Prune is on its way: what it sent meanwhile is in flight
                # Prune whoever pushes redundantly, even a peer we already hold as lazy:
                # it still holds *us* as eager (an asymmetric link) and would otherwise
                # keep sending every message twice.
                self._send_prune(sender, "duplicate", now)
            return
        if msg_id in self._cached:
            c.messages_duplicate += 1  # seen entry evicted early, payload still cached
            return
        hops = min(msg.round + 1, MAX_ROUND)
        pending = self._pending.pop(msg_id, None)
        graft = None
        if pending is not None:
            if pending.first_graft_at is None:
                self.lateness.observe(now - pending.announced_at)  # in time, no Graft
            else:
                c.graft_success += 1  # the gap is filled, whichever copy filled it
                self.histograms.graft_latency_seconds.observe(now - pending.first_graft_at)
                if pending.asked(sender):
                    graft = pending  # an eager copy may still come: keep what we asked
                else:
                    c.graft_premature += 1  # the eager copy, late: the Graft was early
                    self.lateness.observe(now - pending.announced_at)
                    if info is not None and info.eager:
                        self._undo_graft(pending, now)
        if info is None:
            self._insert_peer(sender, True, now)
        else:
            info.duplicate_streak = 0  # first with a message: on someone's best path
            if not info.eager and now - info.pruned_at >= self.lateness.ceiling:
                # (a peer we just pruned pushes until our Prune lands: were one of
                # those copies first, promoting it would undo the Prune, and the two
                # would prune and promote each other for as long as the load lasts)
                self._promote(sender, now, "gossip")
        self._accept(msg_id, msg.payload, msg.origin, sender, hops, now, graft)
        self._eager_push(Gossip(msg_id, hops, msg.origin, msg.payload), exclude=sender)
        # whoever announced it before we had it holds it (on a path no longer than ours)
        held = dict.fromkeys(pending.announcers, -1) if pending is not None else None
        self._queue_ihave(msg_id, hops, now, held)

    def _on_ihave(self, sender: str, msg: IHave, now: float) -> None:
        self.counters.ihave_received += 1
        info = self.peers.info.get(sender)
        if info is None:
            if not self._insert_peer(sender, False, now):
                return
            info = self.peers.info[sender]
        info.ihave_received += 1
        seen = self._seen
        holders = self._holders
        threshold = self.config.optimization_threshold
        for msg_id, round_ in msg.entries:
            entry = seen.get(msg_id)
            if entry is None:
                self._announced(sender, msg_id, now)
                continue
            if msg_id in holders:
                held = holders[msg_id]
                if held is None:
                    holders[msg_id] = {sender: round_}
                else:
                    held[sender] = round_
            if threshold and not info.eager:
                if entry.hops - (round_ + 1) >= threshold:
                    self._maybe_optimize(sender, info, entry, round_, now)
                else:
                    info.shortcut_streak = 0  # not shorter this time: no swap yet

    def _on_sync(self, sender: str, msg: Sync, now: float) -> None:
        """Anti-entropy digest: graft what we miss, and announce back what the sender
        misses. Never reshapes the tree by itself.

        The answer makes repair a pull: every node learns of its own gaps each time it
        sends a digest, however few peers it has. Digests only came to a node from
        peers that picked it, so one with two or three peers, whose gossip and IHaves
        were all lost, could wait many rounds.
        """
        self.counters.sync_received += 1
        if sender not in self.peers and not self._insert_peer(sender, False, now):
            return
        seen = self._seen
        theirs: set[MessageId] = set()
        for msg_id, _round in msg.entries:
            theirs.add(msg_id)
            if msg_id not in seen:
                self._announced(sender, msg_id, now)
        cfg = self.config
        if len(msg.entries) >= cfg.sync_max_ids:
            gaps = self._gaps_after(theirs, now)
        else:
            gaps = [entry for entry in self._settled(now) if entry[0] not in theirs]
        if gaps:
            self._send(sender, IHave(gaps))
            self.counters.ihave_sent += 1
            self.counters.sync_gaps_announced += len(gaps)

    def _gaps_after(self, theirs: set[MessageId], now: float) -> list[tuple[MessageId, int]]:
        """What a full digest's sender lacks among what we delivered after the oldest id
        it lists (in our delivery order), oldest first, at most ``sync_max_ids``.

        A full digest holds only its sender's newest ids: anything older that we hold
        is no evidence of a gap, and used to get no answer at all. But under load every
        digest is full, so a gap that no IHave covered (a node cut off while the tree
        changed, when no announcer picked it) was never repaired and never counted: the
        loopback bench lost 25 messages on one node at 1,100/s (lazy_fanout 3). Placing
        the digest in our own order answers for the stretch it covers; oldest first, so
        a long gap is filled forward, one digest after the other.
        """
        seen = self._seen
        placed = sorted(entry.seq for entry in map(seen.get, theirs) if entry is not None)
        if not placed:
            return []  # nothing in common: we cannot place the digest
        # the stretch it covers, in our order, from its 10th to its 90th percentile:
        # messages reach nodes in different orders (and a peer with a longer lateness
        # leaves out more fresh ones), and from its oldest to our newest the answers
        # named 5 ids per message at 1,000/s that their senders had. Consecutive
        # digests overlap by half, so what one leaves out the next compares.
        cutoff = placed[len(placed) // 10]
        newest = placed[len(placed) * 9 // 10]
        behind: list[tuple[MessageId, int]] = []
        for msg_id, hops in self._settled(now, SYNC_WALK):
            entry = seen.get(msg_id)
            if entry is None or entry.seq >= newest:
                continue
            if entry.seq <= cutoff:
                break
            if msg_id not in theirs:
                behind.append((msg_id, hops))
        return behind[-self.config.sync_max_ids :]

    def _settled(
        self, now: float, walk: int = 1, fresh: int | None = None
    ) -> Iterator[tuple[MessageId, int]]:
        """``(id, hops)`` of our cached messages, newest first, leaving out the ones too
        fresh to compare: those may still be on their way to the peer (per the lateness
        of eager copies), and announcing them made premature Grafts at saturation.
        At most ``walk * sync_max_ids`` entries, within ``sync_window``; the walk past
        fresh ones is bounded too (``SYNC_FRESH_MAX`` digests' worth). The cache is in
        time order, so the fresh ones are its newest: ``fresh`` is their count (from
        ``_fresh`` with this walk's bound) when the caller has it already.
        """
        cfg = self.config
        window = (walk + SYNC_FRESH_MAX) * cfg.sync_max_ids
        if fresh is None:
            fresh = self._fresh(now, window)
        since = now - cfg.sync_window
        end = min(window, fresh + walk * cfg.sync_max_ids)
        for msg_id, cached in islice(self.cache.newest_entries(), fresh, end):
            if cached.at < since:
                return
            yield msg_id, cached.hops

    def _announced(self, sender: str, msg_id: MessageId, now: float) -> None:
        """``sender`` has a message we lack: wait for it, then Graft (once in flight)."""
        if msg_id in self._cached:
            return
        pending = self._pending.get(msg_id)
        if pending is not None:
            if sender not in pending.announcers:
                pending.announcers.append(sender)
            return
        if len(self._pending) >= self.config.max_pending_grafts:
            self.counters.pending_grafts_dropped += 1
            return
        deadline = now + self.lateness.timeout
        self._pending[msg_id] = PendingGraft(sender, now, deadline)
        heapq.heappush(self._graft_timers, (deadline, msg_id))
        if deadline < self._deadline:
            self._deadline = deadline

    def _on_graft(self, sender: str, msg: Graft, now: float) -> None:
        c = self.counters
        c.graft_received += 1
        if not self._graft_limiter.allow(sender, now):
            c.graft_rate_limited += 1
            return
        if sender in self.peers:
            if sender in self.peers.lazy:
                self._promote(sender, now, "graft")
        elif not self._insert_peer(sender, True, now):
            return
        info = self.peers.info[sender]
        info.grafts_received += 1
        for msg_id in msg.ids:
            cached = self.cache.get_fresh(msg_id, now)
            if cached is None:
                c.graft_unknown += 1
                continue
            self._send(sender, Gossip(msg_id, cached.hops, cached.origin, cached.payload))
            c.gossip_sent += 1
            info.gossip_sent += 1

    def _on_prune(self, sender: str, now: float) -> None:
        self.counters.prune_received += 1
        info = self.peers.info.get(sender)
        if info is None:
            return
        info.prunes_received += 1
        self._demote(sender, now, "prune")

    # ------------------------------------------------------------------ internals

    def _accept(
        self,
        msg_id: MessageId,
        payload: bytes,
        origin: str,
        parent: str,
        hops: int,
        now: float,
        graft: PendingGraft | None = None,
    ) -> None:
        """Record, cache and deliver a message seen for the first time."""
        c = self.counters
        self._delivered_seq = seq = self._delivered_seq + 1
        c.seen_evictions += self.seen.put(msg_id, SeenEntry(now, hops, parent, origin, graft, seq))
        evicted = self.cache.put(msg_id, CachedMessage(now, hops, origin, payload))
        if evicted:
            c.cache_evictions += evicted
            self._evicted_unreported += evicted
        c.messages_delivered += 1
        if seq >= self._sync_due_seq:
            self._send_sync(now)
        h = self.histograms
        h.message_size_bytes.observe(len(payload))
        if hops:
            h.message_hops.observe(hops)
        self._events.append(ev.Delivered(msg_id, payload, origin, parent, hops, now))

    def _eager_push(self, gossip: Gossip, exclude: str | None) -> None:
        info = self.peers.info
        out = self._outbox
        sent = 0
        for peer in self.peers.eager:
            if peer != exclude:
                out.append((peer, gossip))
                info[peer].gossip_sent += 1
                sent += 1
        self.counters.gossip_sent += sent

    def _queue_ihave(
        self, msg_id: MessageId, hops: int, now: float, held: dict[str, int] | None = None
    ) -> None:
        queue = self._ihave_queue
        if len(queue) >= self.config.ihave_queue_max:
            self.counters.ihave_dropped += 1
            return
        queue.append((msg_id, hops))
        self._holders[msg_id] = held
        if len(queue) >= self.config.ihave_batch_size:
            self._flush_ihave()
        elif self._ihave_due is None:
            self._ihave_due = due = now + self.config.ihave_interval
            if due < self._deadline:
                self._deadline = due

    def _flush_ihave(self) -> None:
        queue, self._ihave_queue = self._ihave_queue, []
        holders, self._holders = self._holders, {}
        self._ihave_due = None
        self._deadline = self.next_deadline()
        lazy = self.peers.lazy
        if not queue or not lazy:
            return
        cfg = self.config
        batch = cfg.ihave_batch_size
        fanout = cfg.lazy_fanout
        threshold = cfg.optimization_threshold
        info = self.peers.info
        out = self._outbox
        c = self.counters
        # one IHave per ``batch`` ids; the queue is ours now, so one batch is the queue
        batches = (
            [queue]
            if len(queue) <= batch
            else [queue[start : start + batch] for start in range(0, len(queue), batch)]
        )
        for entries in batches:
            message = IHave(entries)
            targets = lazy.sample(self.rng, fanout)
            # per peer: the ids of this batch it announced to us, where our path is no
            # shortcut for it (a shortcut may move it into our subtree: still announce)
            skip: dict[str, set[MessageId]] = {}
            for msg_id, hops in entries:
                held = holders.get(msg_id)
                if held:
                    for peer, round_ in held.items():
                        if not threshold or round_ - (hops + 1) < threshold:
                            skip.setdefault(peer, set()).add(msg_id)
            for peer in targets:
                send = message
                known = skip.get(peer)
                if known:
                    mine = [e for e in entries if e[0] not in known]
                    c.ihave_skipped += len(entries) - len(mine)
                    if not mine:
                        continue
                    send = IHave(mine)
                out.append((peer, send))
                info[peer].ihave_sent += 1
                c.ihave_sent += 1
            self.histograms.ihave_batch_size.observe(len(entries))

    def _run_graft_timers(self, now: float) -> None:
        cfg = self.config
        timers = self._graft_timers
        batches: dict[str, list[MessageId]] = {}
        while timers and timers[0][0] <= now:
            deadline, msg_id = heapq.heappop(timers)
            pending = self._pending.get(msg_id)
            if pending is None or pending.deadline != deadline:
                continue  # delivered meanwhile, or rescheduled
            if pending.attempts > cfg.graft_max_retries:
                del self._pending[msg_id]
                self.counters.graft_failed += 1
                self._events.append(ev.GraftFailed(msg_id, pending.attempts))
                continue
            if pending.announcers:
                target = pending.announcers[pending.attempts % len(pending.announcers)]
                batches.setdefault(target, []).append(msg_id)
                if pending.first_graft_at is None:
                    pending.first_graft_at = now
                else:
                    self.counters.graft_retries += 1
            pending.attempts += 1
            backoff = min(2.0 ** (pending.attempts - 1), cfg.graft_backoff_cap)
            # a retry goes to another peer and makes one more link: under load, wait
            # at least as long as eager copies run late (the adaptive IHave timer)
            base = max(cfg.graft_timeout, self.lateness.timeout)
            pending.deadline = now + base * backoff
            heapq.heappush(timers, (pending.deadline, msg_id))
        for target, ids in batches.items():
            if target in self.peers.lazy:
                self._promote(target, now, "graft")
            attempt = max(self._pending[i].attempts for i in ids)
            self._send_graft(target, ids, attempt)

    def _send_graft(self, peer: str, ids: list[MessageId], attempt: int) -> None:
        for start in range(0, max(len(ids), 1), MAX_IHAVE_IDS):
            chunk = ids[start : start + MAX_IHAVE_IDS]
            self._send(peer, Graft(chunk))
            self.counters.graft_sent += 1
            info = self.peers.info.get(peer)
            if info is not None:
                info.grafts_sent += 1
            self._events.append(ev.GraftSent(peer, chunk, attempt))

    def _undo_graft(self, graft: PendingGraft, now: float) -> None:
        """The eager copy beat the reply to our Graft: the tree was whole, only slow.
        Cut the links the Graft made (eager on both sides), so the tree stays the one
        that was whole. The Prune follows the Graft on the same ordered link.

        Left alone, each such link closed a cycle; under load every node around it
        saw duplicates within milliseconds and cut its own link at once, the split
        tree was grafted back, and the churn fed itself (bench/loopback.py at 450/s:
        RMR 1.5). Only this case is undone: an eager copy that comes *after* our
        reply may come through another node's repair of the same hole, and two nodes
        that each undid theirs on that evidence reopened it (the 10k simulation
        grafted 1.8x as often and its trees grew 22% deeper).
        """
        info = self.peers.info
        for peer in graft.asked_peers():
            if peer in info:
                self._cut_graft_link(peer, now)

    def _cut_graft_link(self, peer: str, now: float) -> None:
        """Take back the eager link a Graft of ours made with ``peer`` (both sides)."""
        self._demote(peer, now, "premature graft")
        self._send_prune(peer, "premature graft", now)
        self.counters.graft_undone += 1

    def _send_prune(self, peer: str, reason: str, now: float) -> None:
        self._send(peer, _PRUNE)
        self.counters.prune_sent += 1
        info = self.peers.info[peer]
        info.prunes_sent += 1
        info.pruned_at = now
        self._events.append(ev.PruneSent(peer, reason))

    def _maybe_optimize(
        self, sender: str, info: PeerInfo, entry: SeenEntry, round_: int, now: float
    ) -> None:
        """The paper's optimisation: swap a lazy link in for a much longer eager path.

        With many origins the tree cannot be shortest for all of them, and a swap made
        for one origin lengthens paths for others; swapping on a single announcement
        makes the tree flap (Graft/Prune churn and transient holes). So a lazy peer must
        offer the shorter path for ``optimization_streak`` announcements in a row (of
        different messages) before it replaces the eager parent.

        The caller (``_on_ihave``) has checked the rest: the optimisation is on, the
        sender is lazy and its path is shorter by at least the threshold.
        """
        parent = entry.parent
        if parent == sender or parent not in self.peers.eager:
            return
        if entry.shortcut_from == sender:
            return  # the same message announced twice by the same peer counts once
        entry.shortcut_from = sender
        # "in a row" means messages we delivered in a row: a peer that stays silent
        # about a message (it skips ids we announced to it first) breaks the streak just
        # as an announcement of a longer path does
        if info.shortcut_streak and entry.seq == info.shortcut_seq + 1:
            info.shortcut_streak += 1
            if info.shortcut_batch != info.ihave_received:
                info.shortcut_batches += 1
        else:
            info.shortcut_streak = 1
            info.shortcut_batches = 1
        info.shortcut_batch = info.ihave_received
        info.shortcut_seq = entry.seq
        # ...and in as many of its IHave messages: at a high rate one batch holds dozens
        # of ids, and a streak inside a single batch is one moment's view. Every child
        # of a busy node saw the same moment and swapped at once (16 swaps in 70 ms at
        # 600 broadcasts/s on loopback), and the tree, reshaped everywhere on stale
        # views, split, was grafted back and churned for as long as the load lasted.
        # At low rates a batch holds one id, and this is the streak it always was.
        need = self.config.optimization_streak
        if info.shortcut_streak < need or info.shortcut_batches < need:
            return
        if now < self._next_optimization:
            return  # one swap per optimization_interval: each costs in-flight duplicates
        self._next_optimization = now + self.config.optimization_interval
        info.shortcut_streak = 0
        self.counters.optimizations += 1
        self._promote(sender, now, "optimization")
        self._send_graft(sender, [], 0)
        self._demote(parent, now, "optimization")
        self._send_prune(parent, "optimization", now)
        entry.parent = sender
        entry.hops = round_ + 1

    def _insert_peer(self, peer: str, eager: bool, now: float) -> bool:
        limit = self.config.max_peers
        if limit is not None and len(self.peers) >= limit:
            if not self.peers.lazy:
                return False
            self.remove_peer(self.peers.lazy.choice(self.rng), now)
        self.peers.add(peer, eager, now)
        self.counters.peer_added += 1
        self._events.append(ev.PeerAdded(peer, eager))
        return True

    def _promote(self, peer: str, now: float, reason: str) -> None:
        if self.peers.promote(peer, now):
            self.counters.peer_promotions += 1
            self._events.append(ev.PeerPromoted(peer, reason))

    def _demote(self, peer: str, now: float, reason: str) -> None:
        if self.peers.demote(peer, now):
            self.counters.peer_demotions += 1
            self._events.append(ev.PeerDemoted(peer, reason))

    def _repair_isolation(self, now: float) -> None:
        """No eager peer left: make a random lazy peer eager on both sides (link Graft)."""
        if self.peers.eager or not self.peers.lazy:
            return
        peer = self.peers.lazy.choice(self.rng)
        self._promote(peer, now, "repair")
        self._send_graft(peer, [], 0)

    def _send_sync(self, now: float) -> None:
        """Announce the most recent ids of the window to one random peer."""
        cfg = self.config
        self._next_sync = now + cfg.sync_interval * self.rng.uniform(0.75, 1.25)
        # under load, a digest every sync_max_ids / 2 deliveries as well: consecutive
        # digests then overlap, and every stretch of the stream is compared with a peer
        # (set before the check below: a node with no peer came back on every delivery)
        self._sync_due_seq = self._delivered_seq + max(1, cfg.sync_max_ids // 2)
        if not self.peers:
            return
        # even an empty digest: the answer names what we missed
        fresh = self._fresh(now, (1 + SYNC_FRESH_MAX) * cfg.sync_max_ids)
        entries = list(self._settled(now, fresh=fresh))
        names = self.peers.names()
        peer = names[self.rng.randrange(len(names))]
        self._send(peer, Sync(entries))
        self.counters.sync_sent += 1
        if fresh:
            # what is still too fresh to compare is compared by follow-ups, one each time
            # half a digest's worth of it settles: after a burst no delivery paces the
            # digests, and its last stretch was left to the IHaves alone
            counted = min(fresh, SYNC_FRESH_MAX * cfg.sync_max_ids)
            follow = self.lateness.timeout * (cfg.sync_max_ids / 2) / counted
            due = now + max(follow, SYNC_FOLLOW_MIN)
            if due < self._next_sync:
                self._next_sync = due
                if due < self._deadline:
                    self._deadline = due

    def _fresh(self, now: float, limit: int) -> int:
        """How many of our newest messages (``limit`` at most) are too fresh to compare."""
        settled = now - self.lateness.timeout
        count = 0
        for _msg_id, cached in islice(self.cache.newest_entries(), limit):
            if cached.at <= settled:
                break
            count += 1
        return count

    def _maintenance(self, now: float) -> None:
        cfg = self.config
        if self._evicted_unreported:
            # one event per maintenance tick, not one per message: with a full cache
            # every delivery evicts, and an event each cost more than the delivery
            # (and flooded /v1/events at warn level)
            self._events.append(ev.CacheEvicted(self._evicted_unreported))
            self._evicted_unreported = 0
        self.seen.expire(now)
        self.cache.expire(now)
        self._graft_limiter.gc(now)
        self._repair_isolation(now)
        self._health_window.record(now, self._health_counters())
        jitter = self.rng.uniform(0.0, cfg.maintenance_jitter) if cfg.maintenance_jitter else 0.0
        self._next_maintenance = now + cfg.maintenance_interval + jitter

    def _health_counters(self) -> tuple[int, int, int, int, int]:
        c = self.counters
        return (
            c.graft_sent,
            c.graft_failed,
            c.messages_delivered,
            c.messages_duplicate,
            c.ihave_dropped + c.pending_grafts_dropped,
        )

    def _send(self, peer: str, message: PlumtreeMessage) -> None:
        self._outbox.append((peer, message))
