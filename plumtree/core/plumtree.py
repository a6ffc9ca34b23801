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
* Identity: every broadcast is ``(origin, epoch, seq)``, its id derived from that
  (``core/ids.py``). Dedup is the per-origin watermark of ``core/streams.py``, never a
  TTL: nothing is delivered twice for the life of the cluster, and the gaps are exact.
* Anti-entropy by version vectors (``core/repair.py``) is the repair path under the
  tree: a node back from a freeze, a partition or a restart pulls what it missed, and
  what nobody holds any more is declared lost, counted and announced.
* A broadcast leaves at once; a runtime with a store acknowledges it once durable and,
  after a crash, restarts in a new epoch, so a seq that left is never reused.
* Graft handling is rate limited per peer, in Grafts and in payload bytes sent back
  (at most ``graft_answer_burst_bytes + graft_answer_bytes_per_second * t`` plus one
  message over any ``t``: forged Grafts cannot amplify); the payload store is bounded in bytes and
  age, the tree's per-message bookkeeping by a TTL and a count, so memory is bounded
  whatever the load.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Sequence

from plumtree.core import events as ev
from plumtree.core.cache import SeenEntry, TimedStore
from plumtree.core.config import PlumtreeConfig
from plumtree.core.health import CounterWindow, HealthInputs, HealthReport, evaluate
from plumtree.core.ids import MAX_SEQ as MAX_STREAM_SEQ
from plumtree.core.ids import STREAM_KEY_LEN, MessageId, message_id
from plumtree.core.lateness import LatenessEstimator
from plumtree.core.limits import MAX_IHAVE_IDS, MAX_ROUND
from plumtree.core.messages import Gossip, Graft, IHave, PlumtreeMessage, Prune, Repair, Sync
from plumtree.core.payloads import PayloadStore, StoredMessage
from plumtree.core.peers import PeerInfo, PeerSets
from plumtree.core.ratelimit import RateLimiter
from plumtree.core.repair import Repairer
from plumtree.core.state import KeptMessage, NodeState, StreamState
from plumtree.core.stats import PlumtreeCounters, PlumtreeGauges, PlumtreeHistograms
from plumtree.core.streams import MAX_RANGES, Stream, StreamTable

#: Seconds between walks over the streams for finished ones to retire.
RETIRE_INTERVAL = 60.0
#: Seconds of history behind the health model's rates (the monitoring guide's PromQL uses [5m]).
HEALTH_WINDOW = 300.0
#: Seconds behind the Graft rates of the Cluster Health Score the node reports on
#: /v1/health (``plumctl health`` reads them instead of scraping twice): recent, like
#: ``top``'s, and long enough to hold many maintenance ticks.
SCORE_WINDOW = 60.0

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
        epoch: int = 0,
        restored: NodeState | None = None,
        fresh: bool = False,
    ) -> None:
        """``epoch``: this start's own epoch (a new one whenever the node starts without
        its store). ``restored``: the durable state to resume from (its epoch wins).
        ``fresh``: the node has no history and joins an existing cluster: it takes a
        peer's vector as its starting point (see core/repair.py)."""
        self.name = name
        self.config = cfg = config or PlumtreeConfig()
        self.rng = rng or random.Random(0)
        self.peers = PeerSets()
        self.counters = PlumtreeCounters()
        self.histograms = PlumtreeHistograms()
        #: the tree's per-message bookkeeping (parent, hops, duplicates): dedup does
        #: not depend on it, so it may be forgotten
        self.seen: TimedStore[SeenEntry] = TimedStore(cfg.seen_ttl, cfg.seen_max_size)
        self.streams = StreamTable()
        self.store = PayloadStore(cfg.retention_bytes, cfg.retention_age, cfg.retention_messages)
        # read-only views for the per-message paths (lookups without a Python call)
        self._seen = self.seen.view
        self._stored = self.store.view
        self._by_key = self.streams.by_key
        self._graft_limiter = RateLimiter(
            cfg.graft_rate_limit_per_second, cfg.graft_rate_limit_burst
        )
        #: payload bytes answering each peer's Grafts: forged Grafts (a few KB asking
        #: for hundreds of stored ids, again and again) make at most burst + rate * t
        self._graft_bytes = RateLimiter(
            cfg.graft_answer_bytes_per_second, cfg.graft_answer_burst_bytes
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
        #: our deliveries so far: the cursor of the last one
        self._delivered_seq = 0
        #: False while the runtime cannot keep what is delivered (its store is failing
        #: with a full backlog): new messages are left missing, to be repaired later
        self.accepting = True
        #: payloads evicted early since the last CacheEvicted event (one per tick)
        self._evicted_unreported = 0
        #: the last loss, in words, for health
        self.last_loss = ""
        self._ihave_due: float | None = None
        self._next_maintenance = now + cfg.maintenance_interval
        self._next_optimization = now
        self._outbox: list[tuple[str, PlumtreeMessage]] = []
        self._events: list[ev.Event] = []
        self._deadline = now
        self._next_retire = now + RETIRE_INTERVAL
        if restored is not None:
            epoch = restored.epoch
            self._restore(restored, now)
        self.epoch = epoch
        own = self.streams.ensure(name, epoch)
        assert own is not None
        own.own = True
        #: this node's own stream (current epoch)
        self.own_stream = own
        self.repair = Repairer(self, now, fresh=fresh and restored is None)
        if restored is not None and self.streams.missing():
            self.repair.gap_seen(now)  # gaps saved before the restart: nothing else wakes
        self._health_window = CounterWindow(HEALTH_WINDOW)
        self._health_window.record(now, self._health_counters())
        self._score_window = CounterWindow(SCORE_WINDOW)
        self._score_window.record(now, self._score_counters())
        #: next_deadline(), kept up to date as timers are set (lowered on the spot) and
        #: recomputed whenever one fires or is cleared, for take_all()
        self._deadline = self.next_deadline()

    def _restore(self, state: NodeState, now: float) -> None:
        """Resume from the durable store: streams exactly as saved, then the payloads
        (oldest first, so the store's order is time order again)."""
        table = self.streams
        for saved in state.streams:
            stream = table.ensure(saved.origin, saved.epoch)
            if stream is None:
                continue
            stream.wm = saved.wm
            stream.head = max(saved.head, saved.wm)
            stream.floor = saved.floor
            stream.above = [[lo, hi] for lo, hi in saved.above if lo > saved.wm + 1]
            stream.held_above = sum(hi - lo + 1 for lo, hi in stream.above)
            stream.lost_total = saved.lost_total
            stream.lost = list(saved.lost)
            if saved.lost_total > sum(hi - lo + 1 for lo, hi in saved.lost):
                # older losses were forgotten: below the kept ones, cannot be told apart
                stream.lost_horizon = saved.lost[0][0] - 1 if saved.lost else saved.wm
            stream.last_activity = now
            stream.dirty = False
        for origin, epoch, seq in state.replay:
            stream = table.ensure(origin, epoch)
            if stream is not None and 0 < seq <= MAX_STREAM_SEQ:
                stream.add(seq)
                stream.last_activity = now
        for kept in state.messages:
            stream = table.find(kept.origin, kept.epoch)
            # a saved row proves the delivery (old losses may be beyond telling apart)
            if stream is None or not stream.has(kept.seq) or stream.is_lost(kept.seq):
                continue
            if kept.seq < stream.floor:
                continue
            msg_id = message_id(stream.key, kept.seq)
            self.store.put(
                msg_id, StoredMessage(now - kept.age, kept.hops, kept.seq, stream, kept.payload)
            )
        self._delivered_seq = state.cursor

    # ------------------------------------------------------------------ public API

    def broadcast(self, payload: bytes, now: float) -> MessageId:
        """Originate a broadcast; it is also delivered locally (hops 0) and goes out at
        once. (A runtime with a store acknowledges it once durable; a seq sent and not
        yet durable is never numbered again: a restart after a crash takes a new epoch.)
        """
        if len(payload) > self.config.max_message_size:
            self.counters.messages_too_large += 1
            raise MessageTooLarge(
                f"payload of {len(payload)} bytes exceeds max_message_size "
                f"({self.config.max_message_size})"
            )
        own = self.own_stream
        seq = own.wm + 1
        msg_id = message_id(own.key, seq)
        self.counters.messages_broadcast += 1
        gossip = Gossip(msg_id, 0, self.name, self.epoch, payload)
        self._accept(msg_id, payload, self.name, self.name, 0, now, None, own, seq)
        self._eager_push(gossip, exclude=None)
        self._queue_ihave(msg_id, 0, now)
        return msg_id

    def skip_own(self, seq: int, now: float) -> None:
        """Peers hold our own epoch up to ``seq``, beyond what our store has: the data
        dir is an older copy of itself (a restore from a backup; a crash alone makes the
        node take a new epoch). Number our next broadcasts after it, never again one a
        peer has; the event says so."""
        own = self.own_stream
        if seq <= own.wm or seq > MAX_STREAM_SEQ:
            return
        skipped = seq - own.wm
        self.counters.own_seqs_skipped += skipped
        own.wm = own.head = seq
        own.floor = max(own.floor, seq + 1)
        own.dirty = True
        own.wire = None
        self._events.append(ev.OwnSeqsSkipped(self.epoch, seq - skipped + 1, seq))

    def receive(self, sender: str, message: PlumtreeMessage, now: float) -> None:
        """Handle one message from ``sender`` (a cluster member, per the runtime)."""
        if sender == self.name:
            return
        kind = type(message)
        if kind is Gossip:
            self._on_gossip(sender, message, now)  # type: ignore[arg-type]
        elif kind is IHave:
            self._on_ihave(sender, message, now)  # type: ignore[arg-type]
        elif kind is Repair:
            self._on_repair(sender, message, now)  # type: ignore[arg-type]
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
        repair = self.repair
        if now >= repair.next_deadline():
            repair.handle_timer(now)
        self._deadline = self.next_deadline()

    def next_deadline(self) -> float:
        """Earliest time ``handle_timer`` has work to do."""
        # called after every message the node handles: plain comparisons, no min()
        deadline = self._next_maintenance
        repair = self.repair.next_deadline()
        if repair < deadline:
            deadline = repair
        due = self._ihave_due
        if due is not None and due < deadline:
            deadline = due
        timers = self._graft_timers
        if timers and timers[0][0] < deadline:
            deadline = timers[0][0]
        return deadline

    def lower_deadline(self, at: float) -> None:
        """A timer was set for ``at``: ``take_all`` must report it."""
        if at < self._deadline:
            self._deadline = at

    def send(self, peer: str, message: PlumtreeMessage) -> None:
        self._outbox.append((peer, message))

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
        self._graft_bytes.forget(peer)
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
        store = self.store
        oldest = store.oldest_at()
        newest = self._newest_stored_at()
        return PlumtreeGauges(
            eager_peers=len(self.peers.eager),
            lazy_peers=len(self.peers.lazy),
            total_peers=len(self.peers),
            cache_size=len(store),
            cache_capacity=store.effective_capacity(),
            ihave_queue_size=len(self._ihave_queue),
            ihave_queue_capacity=self.config.ihave_queue_max,
            pending_grafts=len(self._pending),
            seen_size=len(self.seen),
            ihave_timeout_seconds=self.lateness.timeout,
            messages_missing=self.streams.missing(),
            streams=len(self.streams),
            store_bytes=store.bytes,
            store_bytes_capacity=store.max_bytes,
            retention_seconds=0.0 if oldest is None or newest is None else newest - oldest,
        )

    def _newest_stored_at(self) -> float | None:
        for _key, stored in self.store.newest():
            return stored.at
        return None

    def peer_infos(self) -> list[PeerInfo]:
        return list(self.peers.info.values())

    def lookup(self, msg_id: MessageId) -> SeenEntry | None:
        """The tree's record of a delivered message (None: never, or forgotten)."""
        return self.seen.get(msg_id)

    def locate(self, msg_id: MessageId) -> tuple[Stream | None, int]:
        """The stream an id belongs to (None: unknown here) and its seq."""
        return self._by_key.get(msg_id[:STREAM_KEY_LEN]), int.from_bytes(
            msg_id[STREAM_KEY_LEN:], "big"
        )

    def stored(self, msg_id: MessageId) -> StoredMessage | None:
        return self.store.get(msg_id)

    def is_pending(self, msg_id: MessageId) -> bool:
        return msg_id in self._pending

    def take_dirty_streams(self, every: bool = False) -> list[StreamState]:
        """Streams changed since the last call (``every``: all of them), as the durable
        store saves them."""
        out = []
        for stream in self.streams:
            if stream.dirty or every:
                stream.dirty = False
                out.append(StreamState.of(stream))
        return out

    def snapshot(self, now: float) -> NodeState:
        """Everything a restart would resume from (what the durable store holds, in
        one piece: the simulator and tests restart nodes from it)."""
        messages = [
            KeptMessage(
                stored.stream.origin,
                stored.stream.epoch,
                stored.seq,
                stored.hops,
                now - stored.at,
                stored.payload,
            )
            for stored in self.store.view.values()
        ]
        streams = [StreamState.of(s) for s in self.streams]
        return NodeState(self.epoch, self._delivered_seq, streams, messages)

    def missing_for(self, now: float) -> float:
        """How long the oldest unrepaired gap has lasted (0: nothing stuck)."""
        blocks = self.repair.blocks
        return max((now - b.since for b in blocks.values()), default=0.0)

    def health(self, now: float, store_error: str | None = None) -> HealthReport:
        """The health model on this node's numbers (``store_error``: the runtime's
        durable store cannot commit, and why)."""
        seconds, (sent, failed, delivered, dups, drops, lost) = self._health_window.deltas(
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
                lost_in_window=lost,
                lost_detail=self.last_loss,
                messages_missing=g.messages_missing,
                missing_for=self.missing_for(now),
                store_failing=store_error is not None,
                store_error=store_error or "",
            )
        )

    def score_rates(self, now: float) -> dict[str, float | None]:
        """The Cluster Health Score's inputs over the last ``SCORE_WINDOW`` seconds:
        eager peers now, Graft sent/failed per second (``None`` before any time passed)."""
        seconds, (sent, failed) = self._score_window.deltas(now, self._score_counters())
        known = seconds > 0
        return {
            "window_s": seconds if known else None,
            "eager_peers": float(len(self.peers.eager)),
            "graft_sent_per_s": sent / seconds if known else None,
            "graft_failed_per_s": failed / seconds if known else None,
        }

    def _score_counters(self) -> tuple[int, int]:
        c = self.counters
        return (c.graft_sent, c.graft_failed)

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
            if entry.repaired:
                entry.repaired = False  # the tree's copy of a repaired message
                return
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
        stream = self._by_key.get(msg_id[:STREAM_KEY_LEN])
        if stream is None or stream.origin != msg.origin or stream.epoch != msg.epoch:
            stream = self.streams.ensure(msg.origin, msg.epoch, msg_id[:STREAM_KEY_LEN])
            if stream is None:
                c.messages_rejected += 1  # an id that is not its stream's, or a retired epoch
                return
        seq = int.from_bytes(msg_id[STREAM_KEY_LEN:], "big")
        if seq > MAX_STREAM_SEQ:
            c.messages_rejected += 1  # no stream gets that far: a forged id
            return
        if stream.has(seq):
            c.messages_duplicate += 1  # settled long ago (its tree record forgotten)
            return
        if stream is self.own_stream:
            c.messages_rejected += 1  # nobody else numbers our messages
            return
        if not self.accepting:
            c.messages_deferred += 1  # it stays missing; repaired once we take it
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
        self._accept(msg_id, msg.payload, msg.origin, sender, hops, now, graft, stream, seq)
        self._eager_push(Gossip(msg_id, hops, msg.origin, msg.epoch, msg.payload), exclude=sender)
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
        by_key = self._by_key
        own = self.own_stream
        threshold = self.config.optimization_threshold
        for msg_id, round_ in msg.entries:
            entry = seen.get(msg_id)
            if entry is None:
                stream = by_key.get(msg_id[:STREAM_KEY_LEN])
                if stream is not None:
                    seq = int.from_bytes(msg_id[STREAM_KEY_LEN:], "big")
                    if stream.has(seq) or stream is own or seq > MAX_STREAM_SEQ:
                        continue  # settled here (its tree record forgotten), ours, forged
                    if stream.learn_head(seq):
                        self.repair.gap_seen(now)  # should the Grafts fail
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
        """A version vector: repair both ways (core/repair.py). Never reshapes the tree."""
        self.counters.sync_received += 1
        if sender not in self.peers and not self._insert_peer(sender, False, now):
            return
        self.repair.on_sync(sender, msg, now)

    def _on_repair(self, sender: str, msg: Repair, now: float) -> None:
        """A copy sent by anti-entropy: delivered if new, and nothing else."""
        c = self.counters
        msg_id = msg.id
        stream = self._by_key.get(msg_id[:STREAM_KEY_LEN])
        if stream is None or stream.origin != msg.origin or stream.epoch != msg.epoch:
            stream = self.streams.ensure(msg.origin, msg.epoch, msg_id[:STREAM_KEY_LEN])
            if stream is None:
                c.messages_rejected += 1
                return
        seq = int.from_bytes(msg_id[STREAM_KEY_LEN:], "big")
        if seq > MAX_STREAM_SEQ:
            c.messages_rejected += 1
            return
        if stream.has(seq):
            c.repair_duplicate += 1
            return
        if stream is self.own_stream:
            c.messages_rejected += 1
            return
        if not self.accepting:
            c.messages_deferred += 1
            return
        self._pending.pop(msg_id, None)  # (its graft timer finds it gone)
        c.messages_repaired += 1
        self.repair.repaired_by(sender)
        hops = min(msg.round + 1, MAX_ROUND)
        self._accept(msg_id, msg.payload, msg.origin, sender, hops, now, None, stream, seq, True)
        # announced, not pushed: when a whole region missed it (a partition, a crash
        # that split the overlay) the lazy peers that lack it graft it and it spreads
        # down their trees at once; a node that alone was away costs its peers only
        # the ids. Only while the queue has room: anti-entropy reaches everyone anyway.
        if len(self._ihave_queue) < self.config.ihave_queue_max // 2:
            self._queue_ihave(msg_id, hops, now)

    def _announced(self, sender: str, msg_id: MessageId, now: float) -> None:
        """``sender`` has a message we lack: wait for it, then Graft (once in flight)."""
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
        stored_view = self._stored
        budget = self._graft_bytes
        for i, msg_id in enumerate(msg.ids):
            stored = stored_view.get(msg_id)
            if stored is None:
                c.graft_unknown += 1
                continue
            if not budget.spend(sender, now, len(stored.payload)):
                # out of this peer's byte budget: what is left it can ask again (or
                # anti-entropy brings it); counted, never queued
                c.graft_answers_limited += len(msg.ids) - i
                break
            stream = stored.stream
            self._send(
                sender, Gossip(msg_id, stored.hops, stream.origin, stream.epoch, stored.payload)
            )
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
        graft: PendingGraft | None,
        stream: Stream,
        seq: int,
        repaired: bool = False,
    ) -> None:
        """Record, keep and deliver a message not settled before."""
        c = self.counters
        stream.add(seq)
        stream.last_activity = now
        self._delivered_seq = cursor = self._delivered_seq + 1
        c.seen_evictions += self.seen.put(
            msg_id, SeenEntry(now, hops, parent, origin, graft, cursor, repaired=repaired)
        )
        evicted = self.store.put(msg_id, StoredMessage(now, hops, seq, stream, payload))
        if evicted:
            c.cache_evictions += evicted
            self._evicted_unreported += evicted
        c.messages_delivered += 1
        h = self.histograms
        h.message_size_bytes.observe(len(payload))
        if hops:
            h.message_hops.observe(hops)
        self._events.append(
            ev.Delivered(
                msg_id, payload, origin, parent, hops, now, stream.epoch, seq, cursor, repaired
            )
        )
        if stream.wm < seq:
            # a hole below (or the ranges' bound): anti-entropy looks if it lasts
            if len(stream.above) > MAX_RANGES:
                self.give_up(stream, stream.above[0][0] - 1, "limit")
            self.repair.gap_seen(now)

    def give_up(self, stream: Stream, last: int, reason: str) -> None:
        """Settle what ``stream`` misses up to ``last`` as lost: counted, announced."""
        gone = stream.give_up(last)
        c = self.counters
        for first, end in gone:
            count = end - first + 1
            if reason == "limit":
                c.lost_limit += count
            else:
                c.lost_unavailable += count
            self._events.append(
                ev.MessagesLost(stream.origin, stream.epoch, first, end, count, reason)
            )
            self.last_loss = (
                f"lost {count} message(s) of {stream.origin} (epoch {stream.epoch}, seq "
                f"{first}-{end}): {_LOSS_REASONS.get(reason, reason)}"
            )

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
        self.repair.peer_added(now)
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

    def _maintenance(self, now: float) -> None:
        cfg = self.config
        if self._evicted_unreported:
            # one event per maintenance tick, not one per message: with a full store
            # every delivery evicts, and an event each cost more than the delivery
            # (and flooded /v1/events at warn level)
            self._events.append(ev.CacheEvicted(self._evicted_unreported))
            self._evicted_unreported = 0
        self.seen.expire(now)
        self.store.expire(now)
        self._retire_streams(now)
        self._graft_limiter.gc(now)
        self._graft_bytes.gc(now)
        self._repair_isolation(now)
        self._health_window.record(now, self._health_counters())
        self._score_window.record(now, self._score_counters())
        jitter = self.rng.uniform(0.0, cfg.maintenance_jitter) if cfg.maintenance_jitter else 0.0
        self._next_maintenance = now + cfg.maintenance_interval + jitter

    def _retire_streams(self, now: float) -> None:
        """Forget finished streams: an epoch superseded by a newer one of its origin
        that delivered something here (a digest naming an epoch is not enough: forged,
        it would retire a live stream), once nothing is missing and it has been quiet
        for the retention age. Their epochs stay refused (a replay is not news). A walk
        over every stream: once a minute is often enough for something an hour old."""
        if now < self._next_retire:
            return
        self._next_retire = now + RETIRE_INTERVAL
        horizon = now - self.config.retention_age
        own = self.own_stream
        table = self.streams
        for stream in list(table):
            if stream is own or stream.last_activity > horizon or stream.missing():
                continue
            epochs = table.by_origin.get(stream.origin, {})
            if any(e > stream.epoch and other.top() > 0 for e, other in epochs.items()):
                table.retire(stream)
                self.counters.streams_retired += 1

    def _health_counters(self) -> tuple[int, int, int, int, int, int]:
        c = self.counters
        return (
            c.graft_sent,
            c.graft_failed,
            c.messages_delivered,
            c.messages_duplicate,
            c.ihave_dropped + c.pending_grafts_dropped,
            c.lost_unavailable + c.lost_limit,
        )

    def _send(self, peer: str, message: PlumtreeMessage) -> None:
        self._outbox.append((peer, message))


_LOSS_REASONS = {
    "unavailable": "no reachable member holds them any more",
    "limit": "too many gaps open at once",
}
