"""The SWIM membership state machine with Lifeguard, sans-IO (after hashicorp/memberlist).

One instance per node. The caller passes every datagram (``receive_packet``), every
push-pull stream (``receive_stream``) and timer tick (``handle_timer``) in, always with
``now``; the machine queues what to send (``take_outgoing``), what happened
(``take_events``) and says when it next needs a tick (``next_deadline``). No clock, no
sockets, randomness only from the injected ``random.Random``.

Protocol, as memberlist does it:

* **Probe cycle.** Every ``probe_interval`` the next member of a shuffled list (reshuffled
  each round; newcomers inserted at a random offset) gets a Ping. No Ack within
  ``probe_timeout``: ``indirect_checks`` random alive members get a PingReq and probe it
  for us. No Ack by the end of the probe interval: the member is suspected.
* **Lifeguard.** Relays answer a PingReq they could not complete with a Nack, which tells
  the prober that *its* network is fine. Local Health Awareness (:mod:`awareness`) counts
  failed probes with missing Nacks, and being suspected, and stretches this node's probe
  interval and timeout while it is unhealthy. Suspicion timers (:mod:`suspicion`) start
  at SuspicionMaxTimeoutMult x the minimum and shrink toward SuspicionMult *
  max(1, log10 N) * ProbeInterval as independent confirmations arrive. A Ping to a
  suspect carries the Suspect (buddy system), so the accused hears it first.
* **Incarnations.** Higher incarnation wins (also over a dead or left record: a later
  life may end differently); at equal incarnation left > dead > suspect > alive (left
  over dead is ours: a member's own leave beats a failure verdict).
  Our own row is authoritative: an accusation is refuted with a higher incarnation.
* **Dissemination.** Alive/Suspect/Dead updates ride on every datagram (and on gossip
  rounds to ``gossip_nodes`` random members, the recently dead included), each sent
  RetransmitMult * ceil(log10(N+1)) times, least-sent and newest first
  (:mod:`dissemination`), within ``udp_buffer_size`` bytes per datagram.
* **Anti-entropy.** Full-state push-pull over a stream every ``push_pull_interval``
  (scaled above 32 members as memberlist does), on join, and every
  ``reconnect_interval`` with a failed member (Serf's reconnect: heals partitions).
* **Leave and reaping.** ``leave`` announces Dead(origin == self), shown as *left*, not
  failed. Dead and left rows are forgotten after ``dead_reap_time``.

Deviations from memberlist, on purpose: the relay's Nack fires early enough to reach the
prober before its deadline (memberlist's LAN timings make it arrive just too late); LHA
scales the direct probe timeout too (as the Lifeguard paper does); a failed member that
comes back from a different address is accepted (memberlist needs DeadNodeReclaimTime);
members first learned from a push-pull reply are not re-gossiped (see ``_merge``).
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from typing import Any

import msgspec

from plumtree.core import conflicts, limits
from plumtree.core import events as ev
from plumtree.core.awareness import Awareness
from plumtree.core.config import SwimConfig
from plumtree.core.dissemination import TransmitQueue, retransmit_limit
from plumtree.core.members import (
    ALIVE,
    DEAD,
    LEFT,
    SUSPECT,
    Member,
    MemberRecord,
    MemberTable,
    is_live,
)
from plumtree.core.messages import (
    Ack,
    Alive,
    Dead,
    MemberState,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Suspect,
)
from plumtree.core.stats import PROBE_RTT_BUCKETS, Histogram
from plumtree.core.suspicion import Suspicion, suspicion_timeout
from plumtree.core.swim_stats import SwimCounters, SwimGauges
from plumtree.core.wire import encoded_size

__all__ = ["Outgoing", "Swim", "pushpull_scale"]

_MAX_SEQ = limits.MAX_SEQ
_MAX_INC = limits.MAX_INCARNATION
#: Bytes an envelope adds around its messages besides label and sender: magic+version (3),
#: outer array (1), two string headers (<= 3 each) and the message-list header (3).
_ENVELOPE_FIXED = 13
_meta_encoder = msgspec.msgpack.Encoder()


def pushpull_scale(interval: float, n: int) -> float:
    """memberlist's pushPullScale: x (ceil(log2 n - log2 32) + 1) above 32 members."""
    if n <= 32:
        return interval
    return interval * (math.ceil(math.log2(n) - math.log2(32)) + 1)


def _str_size(s: str) -> int:
    return (len(s) if s.isascii() else len(s.encode())) + 3


class Outgoing:
    """What to send: ``messages`` to ``addr``, as a stream (``reliable``) or a datagram."""

    __slots__ = ("addr", "messages", "reliable")

    def __init__(self, addr: str, messages: list[Any], reliable: bool) -> None:
        self.addr = addr
        self.messages = messages
        self.reliable = reliable

    def __repr__(self) -> str:
        kind = "stream" if self.reliable else "datagram"
        return f"Outgoing({self.addr!r}, {kind}, {self.messages!r})"


class _Probe:
    """The probe in flight (at most one at a time)."""

    __slots__ = (
        "addr",
        "deadline",
        "expected_nacks",
        "incarnation",
        "indirect_at",
        "indirect_sent",
        "nacks",
        "seq",
        "start",
        "target",
    )

    def __init__(
        self, seq: int, target: Member, start: float, indirect_at: float, deadline: float
    ) -> None:
        self.seq = seq
        self.target = target.name
        self.addr = target.addr
        self.incarnation = target.incarnation
        self.start = start
        self.indirect_at = indirect_at
        self.deadline = deadline
        self.indirect_sent = False
        self.expected_nacks = 0
        self.nacks = 0


class _Relay:
    """A PingReq we are serving: forward the target's Ack, or Nack at ``nack_at``."""

    __slots__ = ("nacked", "requester", "seq")

    def __init__(self, requester: str, seq: int) -> None:
        self.requester = requester
        self.seq = seq
        self.nacked = False


class Swim:
    """SWIM + Lifeguard membership state machine of one node."""

    def __init__(
        self,
        name: str,
        addr: str,
        config: SwimConfig | None = None,
        rng: random.Random | None = None,
        now: float = 0.0,
        meta: dict[str, str] | None = None,
        *,
        label: str = "",
    ) -> None:
        self.name = name
        self.addr = addr
        self.config = cfg = config or SwimConfig()
        self.rng = rng or random.Random(0)
        meta = dict(meta or {})
        self._check_meta(meta)
        self.local = Member(name, addr, 1, meta, now)
        self.table = MemberTable(self.local)
        self.awareness = Awareness(cfg.awareness_max_multiplier)
        self.counters = SwimCounters()
        self.probe_rtt = Histogram(PROBE_RTT_BUCKETS)
        self.queue = TransmitQueue(cfg.max_members + 1)
        self.left = False
        self.conflicts = conflicts.ConflictLog()
        #: set when a seed's join reply shows our name held by a live member elsewhere:
        #: the holder's address (we stop joining; the runtime stops the node)
        self.name_taken: str | None = None
        #: bumped on every membership change (cheap "did anything change?" for callers)
        self.version = 0
        self._budget = (
            cfg.udp_buffer_size - _ENVELOPE_FIXED - len(label.encode()) - len(name.encode())
        )
        self._outbox: list[Outgoing] = []
        self._events: list[ev.Event] = []
        #: last probe round-trip time per member (indirect acks included), for the API
        self._rtts: dict[str, float] = {}
        self._seq = self.rng.randrange(_MAX_SEQ)
        # probing
        self._probe: _Probe | None = None
        self._probe_list: list[str] = []
        self._probe_index = 0
        self._next_probe = now + self.rng.uniform(0.0, cfg.probe_interval)
        # relays (PingReq served for others)
        self._relays: dict[int, _Relay] = {}
        self._relay_timers: list[tuple[float, int]] = []
        window = min(cfg.probe_timeout, cfg.probe_interval - cfg.probe_timeout)
        if window <= 0:
            window = cfg.probe_timeout
        self._nack_timeout = 0.8 * window
        # suspicion, reaping, partition detection
        self._suspicions: dict[str, Suspicion] = {}
        self._suspicion_timers: list[tuple[float, str]] = []
        self._reap_timers: list[tuple[float, str, float]] = []
        self._recent_dead: deque[tuple[float, str]] = deque()
        self._failures: deque[float] = deque()
        self._partition_quiet_until = -math.inf
        # periodic work
        self._next_gossip = now + self.rng.uniform(0.0, cfg.gossip_interval)
        self._next_pushpull = (
            now + self.rng.uniform(0.0, cfg.push_pull_interval) if cfg.push_pull_interval else None
        )
        self._catchup: tuple[float, str] | None = None
        self._state_cache: tuple[int, list[MemberState]] | None = None
        self._next_reconnect = (
            now + self.rng.uniform(0.0, cfg.reconnect_interval) if cfg.reconnect_interval else None
        )
        # our own Alive goes out with the first packets (memberlist's bootstrap broadcast)
        self._queue_update(name, self._local_alive())

    # ------------------------------------------------------------------ public API

    def join(self, seeds: list[str], now: float) -> int:
        """Start a push-pull (join) with each seed address; returns how many were sent.

        ``joined`` becomes True once an exchange taught us another live member; retrying
        until then is the runtime's job. A node that left does not join (0): leaving is
        for good, and a join would push our *left* row to seeds that may never have
        known us.
        """
        if self.left or self.name_taken is not None:
            return 0
        sent = 0
        state = self._local_state()
        for addr in dict.fromkeys(seeds):
            if not addr or addr == self.addr:
                continue
            self._stream(addr, PushPull(True, False, state))
            sent += 1
        return sent

    def leave(self, now: float) -> None:
        """Graceful leave: announce Dead(origin == us), which others record as *left*."""
        if self.left:
            return
        self.left = True
        local = self.local
        self._clear_suspicion(self.name)
        self.table.set_state(local, LEFT, now)
        self._queue_update(self.name, Dead(self.name, local.incarnation, self.name))
        self._probe = None
        self._changed()
        self._events.append(ev.MemberLeft(self.name, local.incarnation))

    def set_meta(self, meta: dict[str, str], now: float) -> None:
        """Replace our metadata: bump our incarnation and gossip the new Alive."""
        meta = dict(meta)
        self._check_meta(meta)
        if self.left:
            return
        local = self.local
        local.meta = meta
        local.incarnation = min(local.incarnation + 1, _MAX_INC)
        local.touch()
        self._queue_update(self.name, self._local_alive())
        self._changed()
        self._events.append(ev.MemberUpdated(self.name, self.addr, local.incarnation, meta))

    def receive_packet(self, from_addr: str, sender: str, messages: list[Any], now: float) -> None:
        """Handle one datagram's messages (a probe message plus piggybacked updates)."""
        by_name = self.table.by_name
        local = self.local
        for msg in messages:
            kind = type(msg)
            if kind is Alive:
                self.counters.updates_received += 1
                m = by_name.get(msg.name)
                if (
                    m is not None
                    and msg.incarnation <= m.incarnation
                    and m is not local
                    and msg.addr == m.addr
                ):
                    continue  # old news (the common case): nothing to do
                self._on_alive(msg, now)
            elif kind is Suspect:
                self.counters.updates_received += 1
                self._on_suspect(msg, now)
            elif kind is Dead:
                self.counters.updates_received += 1
                self._on_dead(msg, now)
            elif kind is Ping:
                self._on_ping(from_addr, msg)
            elif kind is Ack:
                self._on_ack(msg.seq, now)
            elif kind is PingReq:
                self._on_pingreq(from_addr, msg, now)
            elif kind is Nack:
                self._on_nack(msg.seq)
            else:
                self.counters.ignored_messages += 1

    def receive_stream(self, from_addr: str, sender: str, message: Any, now: float) -> None:
        """Handle a push-pull received over a stream; a request is answered in kind."""
        if type(message) is not PushPull:
            self.counters.ignored_messages += 1
            return
        if not message.reply:
            # memberlist answers with its state as it was, then merges the remote one
            self._stream(from_addr, PushPull(message.join, True, self._local_state()))
        self.counters.pushpull_exchanges += 1
        was_joined = self.joined
        if (
            message.reply
            and message.join
            and not was_joined
            and self._name_taken(message, from_addr)
        ):
            return  # not one of them: learn nothing from the reply
        self._merge(message.members, now, regossip_new=not message.reply)
        if message.reply and message.join and not was_joined:
            # catch-up: members that joined concurrently with us reach us by gossip only,
            # which a join storm can miss; the seed that answered knows every one of them,
            # so one more exchange with it a little later closes the gap ("join twice")
            self._catchup = (
                now + self.config.probe_interval * (1.0 + self.rng.random()),
                from_addr,
            )

    def handle_timer(self, now: float) -> None:
        """Run everything that is due at ``now`` (safe to call early or often)."""
        p = self._probe
        if p is not None:
            if not p.indirect_sent and now >= p.indirect_at:
                self._send_indirect(p)
            if now >= p.deadline:
                self._probe_failed(p, now)
        if self._probe is None and not self.left and now >= self._next_probe:
            self._start_probe(now)
        if self._relay_timers and self._relay_timers[0][0] <= now:
            self._run_relay_timers(now)
        if self._suspicion_timers and self._suspicion_timers[0][0] <= now:
            self._run_suspicion_timers(now)
        if now >= self._next_gossip:
            self._gossip(now)
        if self._next_pushpull is not None and now >= self._next_pushpull:
            interval = self.config.push_pull_interval
            self._next_pushpull = (
                now + pushpull_scale(interval, self.table.cluster_size()) if interval else None
            )
            if not self.left:
                self._push_pull(self.table.alive)
        if self._catchup is not None and now >= self._catchup[0]:
            addr = self._catchup[1]
            self._catchup = None
            if not self.left:
                self._stream(addr, PushPull(False, False, self._local_state()))
        if self._next_reconnect is not None and now >= self._next_reconnect:
            self._next_reconnect = now + self.config.reconnect_interval
            if not self.left:
                self._push_pull(self.table.dead)
        if self._reap_timers and self._reap_timers[0][0] <= now:
            self._run_reaper(now)

    def next_deadline(self) -> float:
        """Earliest time ``handle_timer`` has work to do."""
        deadline = self._next_gossip
        p = self._probe
        if p is not None:
            t = p.deadline if p.indirect_sent else p.indirect_at
            if t < deadline:
                deadline = t
        elif not self.left and self._next_probe < deadline:
            deadline = self._next_probe
        if self._next_pushpull is not None and self._next_pushpull < deadline:
            deadline = self._next_pushpull
        if self._next_reconnect is not None and self._next_reconnect < deadline:
            deadline = self._next_reconnect
        if self._catchup is not None and self._catchup[0] < deadline:
            deadline = self._catchup[0]
        if self._relay_timers and self._relay_timers[0][0] < deadline:
            deadline = self._relay_timers[0][0]
        if self._suspicion_timers and self._suspicion_timers[0][0] < deadline:
            deadline = self._suspicion_timers[0][0]
        if self._reap_timers and self._reap_timers[0][0] < deadline:
            deadline = self._reap_timers[0][0]
        return deadline

    def take_outgoing(self) -> list[Outgoing]:
        """Datagrams and streams to send, in order; the queue is emptied."""
        out, self._outbox = self._outbox, []
        return out

    def take_events(self) -> list[ev.Event]:
        out, self._events = self._events, []
        return out

    # ------------------------------------------------------------------ views

    def members(self) -> list[MemberRecord]:
        """Every known member (ourselves included), in table order."""
        return [m.record() for m in self.table.by_name.values()]

    def alive_members(self) -> list[MemberRecord]:
        return [m.record() for m in self.table.by_name.values() if m.state == ALIVE]

    def member(self, name: str) -> MemberRecord | None:
        m = self.table.get(name)
        return None if m is None else m.record()

    def live_names(self) -> list[str]:
        """Other members alive or suspect (the peer set Plumtree should have)."""
        return list(self.table.live)

    def rtts(self) -> dict[str, float]:
        """Last measured probe round-trip time (seconds) of each member we probed."""
        table = self.table
        return {name: rtt for name, rtt in self._rtts.items() if name in table}

    @property
    def joined(self) -> bool:
        """Whether we know a live member besides us: what join retries wait for.

        Derived, not latched on the first reply: a reply can teach us nobody (its
        sender had just left, the rest it listed as suspect, which a stranger ignores
        as memberlist does), and every member we knew can die or leave later. Either
        way a restarted node would stay alone for good while the others hold it as
        left, unless its driver joins through its seeds again while this is False.
        """
        counts = self.table.counts
        return counts[ALIVE] + counts[SUSPECT] > 1

    @property
    def alive_count(self) -> int:
        """Members alive, ourselves included (while we have not left)."""
        return self.table.counts[ALIVE]

    @property
    def incarnation(self) -> int:
        return self.local.incarnation

    def local_health(self) -> int:
        """Lifeguard awareness score: 0 healthy .. awareness_max_multiplier - 1."""
        return self.awareness.score

    def suspicion_timeout(self) -> float:
        """The minimum suspicion timeout for the current cluster size."""
        cfg = self.config
        return suspicion_timeout(cfg.suspicion_mult, self.table.cluster_size(), cfg.probe_interval)

    def gauges(self) -> SwimGauges:
        c = self.table.counts
        return SwimGauges(
            alive=c[ALIVE],
            suspect=c[SUSPECT],
            dead=c[DEAD],
            left=c[LEFT],
            members=len(self.table),
            health_score=self.awareness.score,
            pending_updates=len(self.queue),
            pending_relays=len(self._relays),
            incarnation=self.local.incarnation,
        )

    # ------------------------------------------------------------------ probing

    def _next_seq(self) -> int:
        self._seq = 0 if self._seq >= _MAX_SEQ else self._seq + 1
        return self._seq

    def _select_probe_target(self) -> Member | None:
        """Next alive or suspect member of the shuffled round (reshuffled when exhausted)."""
        by_name = self.table.by_name
        local = self.local
        reshuffled = False
        while True:
            lst = self._probe_list
            if self._probe_index >= len(lst):
                if reshuffled:
                    return None  # a whole fresh round has nobody to probe
                reshuffled = True
                lst = self._probe_list = [n for n in by_name if n != local.name]
                self.rng.shuffle(lst)
                self._probe_index = 0
                continue
            name = lst[self._probe_index]
            self._probe_index += 1
            m = by_name.get(name)
            if is_live(m) and m is not local:
                return m

    def _start_probe(self, now: float) -> None:
        cfg = self.config
        interval = self.awareness.scale(cfg.probe_interval)
        self._next_probe = now + interval
        target = self._select_probe_target()
        if target is None:
            return
        seq = self._next_seq()
        p = _Probe(seq, target, now, now + self.awareness.scale(cfg.probe_timeout), now + interval)
        self._probe = p
        self.counters.probes_sent += 1
        msgs: list[Any] = [Ping(seq, target.name)]
        size = 10 + _str_size(target.name)
        if target.state == SUSPECT:
            # buddy system: tell the accused directly, so it can refute at once
            buddy = Suspect(target.name, target.incarnation, self.name)
            msgs.append(buddy)
            size += encoded_size(buddy)
        self._packet(target.addr, msgs, size)

    def _send_indirect(self, p: _Probe) -> None:
        p.indirect_sent = True
        k = self.config.indirect_checks
        if k <= 0:
            return
        candidates = self.table.alive.sample(self.rng, k + 1)
        relays = [n for n in candidates if n != p.target][:k]
        by_name = self.table.by_name
        msg = PingReq(p.seq, p.target, p.addr)
        size = 14 + _str_size(p.target) + _str_size(p.addr)
        for name in relays:
            self._packet(by_name[name].addr, [msg], size)
        p.expected_nacks = len(relays)
        self.counters.indirect_probes += len(relays)

    def _probe_failed(self, p: _Probe, now: float) -> None:
        self._probe = None
        self.counters.probe_failures += 1
        # Lifeguard: missing Nacks mean *we* may be the problem; no relays: blame ourselves
        if p.expected_nacks:
            self.awareness.apply_delta(p.expected_nacks - min(p.nacks, p.expected_nacks))
        else:
            self.awareness.apply_delta(1)
        m = self.table.get(p.target)
        if is_live(m):
            self._on_suspect(Suspect(p.target, p.incarnation, self.name), now)

    def _on_ping(self, from_addr: str, ping: Ping) -> None:
        self.counters.pings_received += 1
        if ping.target and ping.target != self.name:
            self.counters.misdirected_pings += 1
            return
        self._packet(from_addr, [Ack(ping.seq)], 7)

    def _on_ack(self, seq: int, now: float) -> None:
        self.counters.acks_received += 1
        p = self._probe
        if p is not None and p.seq == seq:
            self._probe = None
            rtt = now - p.start
            self.probe_rtt.observe(rtt)
            self._rtts[p.target] = rtt
            self.awareness.apply_delta(-1)
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            self._packet(relay.requester, [Ack(relay.seq)], 7)
            return
        self.counters.unknown_acks += 1

    def _on_nack(self, seq: int) -> None:
        self.counters.nacks_received += 1
        p = self._probe
        if p is not None and p.seq == seq:
            p.nacks += 1
        else:
            self.counters.unknown_nacks += 1

    def _on_pingreq(self, from_addr: str, req: PingReq, now: float) -> None:
        self.counters.pingreqs_received += 1
        if req.target == self.name:
            self._packet(from_addr, [Ack(req.seq)], 7)
            return
        if not req.target_addr or len(self._relays) >= self.config.handoff_queue_depth:
            self.counters.relays_dropped += 1
            return
        seq = self._next_seq()
        self._relays[seq] = _Relay(from_addr, req.seq)
        heapq.heappush(self._relay_timers, (now + self._nack_timeout, seq))
        self._packet(req.target_addr, [Ping(seq, req.target)], 10 + _str_size(req.target))

    def _run_relay_timers(self, now: float) -> None:
        timers = self._relay_timers
        relays = self._relays
        while timers and timers[0][0] <= now:
            _, seq = heapq.heappop(timers)
            relay = relays.get(seq)
            if relay is None:
                continue  # acked and forwarded
            if not relay.nacked:
                relay.nacked = True
                self.counters.nacks_sent += 1
                self._packet(relay.requester, [Nack(relay.seq)], 7)
                # keep forwarding a late Ack a little longer: the prober may still use it
                heapq.heappush(timers, (now + self.config.probe_timeout, seq))
            else:
                del relays[seq]

    # ------------------------------------------------------------------ updates

    def _on_alive(self, a: Alive, now: float, regossip_new: bool = True) -> None:
        name = a.name
        table = self.table
        m = table.by_name.get(name)
        if conflicts.refused(m, a.addr):  # a live member holds the name elsewhere
            self._name_conflict(m, a.addr)
            return
        if name == self.name:
            self._alive_about_us(a)
            return
        if m is None:
            if len(table) >= self.config.max_members:
                self.counters.members_dropped += 1
                return
            m = Member(name, a.addr, a.incarnation, a.meta, now)
            table.add(m)
            self._probe_list_insert(name)
            if regossip_new:
                self._queue_update(name, a)
            self._changed()
            self._events.append(ev.MemberJoined(name, a.addr, a.incarnation, a.meta))
            return
        if a.incarnation <= m.incarnation:
            return
        old_state = m.state
        self._clear_suspicion(name)
        changed = a.addr != m.addr or a.meta != m.meta
        m.incarnation = a.incarnation
        m.addr = a.addr
        m.meta = a.meta
        m.touch()
        self._queue_update(name, a)
        if old_state != ALIVE:
            table.set_state(m, ALIVE, now)
            self._changed()
            if old_state == SUSPECT:
                self._events.append(ev.MemberAlive(name, a.incarnation))
            else:
                self._events.append(ev.MemberJoined(name, a.addr, a.incarnation, a.meta))
        elif changed:
            self._changed()
            self._events.append(ev.MemberUpdated(name, a.addr, a.incarnation, a.meta))
        else:
            self._changed()  # a new incarnation only

    def _name_conflict(self, holder: Member, claimed_addr: str) -> None:
        self.counters.addr_conflicts += 1
        event = self.conflicts.refuse(holder, claimed_addr)
        if event is not None:
            self._events.append(event)

    def _name_taken(self, reply: PushPull, seed: str) -> bool:
        """Whether a seed's join reply holds our name alive at another address."""
        holder = conflicts.name_taken(self.name, self.addr, reply.members)
        if holder is None:
            return False
        if self.name_taken is None:
            self.name_taken = holder.addr
            self._events.append(ev.NameTaken(self.name, holder.addr, seed))
        return True

    def _alive_about_us(self, a: Alive) -> None:
        if self.left:
            return  # a stale Alive must not undo our leave
        local = self.local
        if a.incarnation < local.incarnation:
            return
        if a.incarnation == local.incarnation and a.meta == local.meta and a.addr == local.addr:
            return
        self._refute(a.incarnation, a.name)

    def _on_suspect(self, s: Suspect, now: float) -> None:
        name = s.name
        if name == self.name:
            if not self.left and s.incarnation >= self.local.incarnation:
                self._refute(s.incarnation, s.origin)
            return
        m = self.table.by_name.get(name)
        if m is None or s.incarnation < m.incarnation:
            return
        susp = self._suspicions.get(name)
        if susp is not None:
            if susp.confirm(s.origin, now):
                heapq.heappush(self._suspicion_timers, (susp.deadline, name))
                self._queue_update(name, s)
            return
        if m.state != ALIVE:
            return
        m.incarnation = s.incarnation
        self.table.set_state(m, SUSPECT, now)
        self._queue_update(name, s)
        self.counters.suspicions += 1
        cfg = self.config
        n = self.table.cluster_size()
        k = cfg.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        lo = suspicion_timeout(cfg.suspicion_mult, n, cfg.probe_interval)
        hi = cfg.suspicion_max_timeout_mult * lo
        susp = self._suspicions[name] = Suspicion(s.origin, k, lo, hi, now)
        heapq.heappush(self._suspicion_timers, (susp.deadline, name))
        self._changed()
        self._events.append(ev.MemberSuspected(name, s.incarnation, s.origin))

    def _on_dead(self, d: Dead, now: float) -> None:
        name = d.name
        if name == self.name:
            if not self.left and d.incarnation >= self.local.incarnation:
                self._refute(d.incarnation, d.origin)
            return
        m = self.table.by_name.get(name)
        if m is None or d.incarnation < m.incarnation:
            return
        self._clear_suspicion(name)
        graceful = d.origin == name
        gone = m.state == LEFT or m.state == DEAD
        if gone and d.incarnation == m.incarnation and (m.state == LEFT or not graceful):
            return
        # (a member we declared failed may still tell us it left: its word wins, so both
        # sides of a partition end up agreeing that it left; and a higher incarnation is
        # a later life of the member, which may have ended differently than the one we
        # recorded: it left, restarted and crashed before we heard it was back)
        if gone and (LEFT if graceful else DEAD) == m.state:
            m.incarnation = d.incarnation  # same ending, later life: just the number
            m.touch()  # or push-pull keeps sending the old number, which the member
            self._changed()  # itself cannot refute: it stays "left" for everyone
            self._queue_update(name, d)
            return
        m.incarnation = d.incarnation
        self.table.set_state(m, LEFT if graceful else DEAD, now)
        self._queue_update(name, d)
        self._changed()
        heapq.heappush(self._reap_timers, (now + self.config.dead_reap_time, name, now))
        if graceful:
            self.counters.members_left += 1
            self._events.append(ev.MemberLeft(name, d.incarnation))
        else:
            self.counters.members_failed += 1
            self._recent_dead.append((now, name))
            self._events.append(ev.MemberFailed(name, d.incarnation, d.origin))
            self._note_failure(now)

    def _refute(self, accused: int, by: str) -> None:
        local = self.local
        inc = max(local.incarnation, accused) + 1
        if inc > _MAX_INC:
            inc = _MAX_INC
            self.counters.incarnation_overflows += 1
        local.incarnation = inc
        local.touch()
        self._changed()
        self.awareness.apply_delta(1)  # being accused is a hint that we are the slow one
        self.counters.refutations += 1
        self._queue_update(self.name, self._local_alive())
        self._events.append(ev.Refuted(inc, by))

    def _clear_suspicion(self, name: str) -> None:
        self._suspicions.pop(name, None)  # its heap entries go stale and are skipped

    def _run_suspicion_timers(self, now: float) -> None:
        timers = self._suspicion_timers
        while timers and timers[0][0] <= now:
            deadline, name = heapq.heappop(timers)
            susp = self._suspicions.get(name)
            if susp is None or susp.deadline != deadline:
                continue
            m = self.table.by_name.get(name)
            if m is None or m.state != SUSPECT:
                del self._suspicions[name]
                continue
            self._on_dead(Dead(name, m.incarnation, self.name), now)

    def _note_failure(self, now: float) -> None:
        """Raise PartitionSuspected when > max(3, 20%) of members fail in one window."""
        window = self.suspicion_timeout()
        failures = self._failures
        failures.append(now)
        while failures and failures[0] < now - window:
            failures.popleft()
        threshold = max(3, 0.2 * (self.table.cluster_size() - 1))
        if len(failures) > threshold and now >= self._partition_quiet_until:
            self._partition_quiet_until = now + window
            self.counters.partitions_suspected += 1
            c = self.table.counts
            self._events.append(ev.PartitionSuspected(len(failures), c[ALIVE] + c[SUSPECT]))

    def _run_reaper(self, now: float) -> None:
        timers = self._reap_timers
        table = self.table
        while timers and timers[0][0] <= now:
            _, name, since = heapq.heappop(timers)
            m = table.by_name.get(name)
            if m is None or m.state < DEAD or m.state_change != since or m is self.local:
                continue
            table.remove(name)
            self._rtts.pop(name, None)
            self._changed()
            self.counters.members_reaped += 1
            self._events.append(ev.MemberReaped(name))

    # ------------------------------------------------------------------ dissemination

    def _queue_update(self, name: str, message: Alive | Suspect | Dead) -> None:
        before = self.queue.dropped
        self.queue.enqueue(name, message, encoded_size(message))
        if self.queue.dropped != before:
            self.counters.updates_dropped += self.queue.dropped - before

    def _packet(self, addr: str, msgs: list[Any], size: int) -> None:
        """Queue a datagram: ``msgs`` (``size`` bytes) plus as many updates as fit."""
        queue = self.queue
        if queue:
            limit = retransmit_limit(self.config.retransmit_mult, self.table.cluster_size())
            before = len(msgs)
            queue.take(self._budget - size, limit, msgs, limits.MAX_MESSAGES_PER_ENVELOPE - before)
            self.counters.updates_sent += len(msgs) - before
        self.counters.packets_sent += 1
        self._outbox.append(Outgoing(addr, msgs, False))

    def _gossip(self, now: float) -> None:
        cfg = self.config
        self._next_gossip = now + cfg.gossip_interval
        self._expire_recent_dead(now)
        if not self.queue:
            return
        table = self.table
        live = table.live
        recent = self._recent_dead
        total = len(live) + len(recent)
        if total == 0:
            return
        picks = self.rng.sample(range(total), min(cfg.gossip_nodes, total))
        limit = retransmit_limit(cfg.retransmit_mult, table.cluster_size())
        by_name = table.by_name
        seen: dict[str, None] = {}
        for idx in picks:
            name = live[idx] if idx < len(live) else recent[idx - len(live)][1]
            if name in seen:
                continue
            seen[name] = None
            m = by_name.get(name)
            if m is None or m.state == LEFT:
                continue
            msgs: list[Any] = []
            self.queue.take(self._budget, limit, msgs, limits.MAX_MESSAGES_PER_ENVELOPE)
            if not msgs:
                return
            self.counters.updates_sent += len(msgs)
            self.counters.packets_sent += 1
            self.counters.gossip_packets_sent += 1
            self._outbox.append(Outgoing(m.addr, msgs, False))

    def _expire_recent_dead(self, now: float) -> None:
        recent = self._recent_dead
        horizon = now - self.config.gossip_to_the_dead_time
        while recent and recent[0][0] < horizon:
            recent.popleft()

    # ------------------------------------------------------------------ push-pull

    def _local_state(self) -> list[MemberState]:
        """Our table as push-pull entries (cached until the table changes)."""
        cached = self._state_cache
        if cached is not None and cached[0] == self.version:
            return cached[1]
        state = [m._wire or m.wire() for m in self.table.by_name.values()]
        if len(state) > limits.MAX_PUSHPULL_MEMBERS:
            del state[limits.MAX_PUSHPULL_MEMBERS :]
        self._state_cache = (self.version, state)
        return state

    def _push_pull(self, pool: Any) -> None:
        if not pool:
            return
        name = pool.choice(self.rng)
        m = self.table.by_name.get(name)
        if m is not None:
            self._stream(m.addr, PushPull(False, False, self._local_state()))

    def _stream(self, addr: str, message: PushPull) -> None:
        self.counters.streams_sent += 1
        self._outbox.append(Outgoing(addr, [message], True))

    def _merge(self, remote: list[MemberState], now: float, regossip_new: bool) -> None:
        """memberlist's mergeState: alive as Alive, left as a leave, dead as a suspicion.

        Unlike memberlist, members first learned from a push-pull *reply* are not queued
        for gossip (``regossip_new`` False): the reply already carried them, and a joiner
        would otherwise re-gossip the whole table it was just given (N^2 updates in a join
        storm) while its own Alive, the one update that matters, waits behind them. The
        answering side (a seed learning the joiner) re-gossips as memberlist does, and
        changes to members we knew (revivals, incarnations, suspicions) always are.
        """
        by_name = self.table.by_name
        me = self.name
        todo: list[MemberState] = []
        for r in remote:
            m = by_name.get(r.name)
            if m is None:
                if r.state == ALIVE:
                    todo.append(r)
            elif r.incarnation > m.incarnation or r.name == me:
                todo.append(r)
            elif r.state == ALIVE and r.addr != m.addr:
                todo.append(r)  # a claim from another address: _on_alive judges it
            elif r.incarnation == m.incarnation and r.state > m.state and r.state != ALIVE:
                todo.append(r)  # same incarnation, worse news (suspect/dead/left)
        self.rng.shuffle(todo)  # random order: consumers (Plumtree) see peers unbiased
        for r in todo:
            name = r.name
            state = r.state
            if state == ALIVE:
                self._on_alive(Alive(name, r.incarnation, r.addr, r.meta), now, regossip_new)
            elif state == LEFT:
                self._on_dead(Dead(name, r.incarnation, name), now)
            else:
                self._on_suspect(Suspect(name, r.incarnation, me), now)

    # ------------------------------------------------------------------ helpers

    def _local_alive(self) -> Alive:
        local = self.local
        return Alive(self.name, local.incarnation, self.addr, local.meta)

    def _probe_list_insert(self, name: str) -> None:
        """memberlist: append, then swap with a random position (keeps detection fast)."""
        lst = self._probe_list
        lst.append(name)
        j = int(self.rng.random() * len(lst))
        lst[j], lst[-1] = lst[-1], lst[j]

    def _changed(self) -> None:
        self.version += 1

    def _check_meta(self, meta: dict[str, str]) -> None:
        if len(meta) > limits.MAX_META_ENTRIES:
            raise ValueError(f"metadata has {len(meta)} entries (max {limits.MAX_META_ENTRIES})")
        for key, value in meta.items():
            if len(key) > limits.MAX_META_KEY_LEN or len(value) > limits.MAX_META_VALUE_LEN:
                raise ValueError(f"metadata entry {key[:20]!r} is too long")
        size = len(_meta_encoder.encode(meta))
        if size > self.config.max_meta_bytes:
            raise ValueError(
                f"metadata encodes to {size} bytes (max_meta_bytes {self.config.max_meta_bytes})"
            )
