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
comes back from a different address is accepted once that address answers (memberlist
needs DeadNodeReclaimTime);
members first learned from a push-pull reply are not re-gossiped (see ``_merge``).

Hardening against forged or stray packets (no keyring needed for these):

* **Incarnation window.** An update heard second-hand may raise a member's incarnation
  by at most ``limits.INCARNATION_WINDOW``; a claim about ourselves beyond our own
  incarnation + the window is ignored too (before we joined, up to
  ``MAX_NEW_INCARNATION``: a restarted node catches up with its old life). So whatever a
  node accepts about a live member, the member can refute, and a forged
  ``Dead(x, 2**63 - 1)`` is refused and counted. A member's own word (an Alive in a
  datagram from its address, in its name) replaces a view of it beyond the window,
  and an accused member answers its accuser directly, so a view walked up by many
  forged packets is put right by the member itself.
* **Unconfirmed members.** A member learned second-hand gets no traffic but probes
  until one is acked: confirmation probes have their own lane
  (``CONFIRM_PROBES_PER_INTERVAL``, the probe rotation of known members keeps its
  cadence), ``CONFIRM_ATTEMPTS`` each, then the row is dropped. At most
  ``MAX_UNCONFIRMED`` wait at once, and a push-pull from a non-member may add at most
  ``MAX_FROM_STRANGER``. Unconfirmed rows are not gossiped, not in push-pull state, not
  counted in the cluster size, and never gossip, relay or Plumtree targets.
* **PingReq** is served only for a confirmed member, towards a confirmed member, at the
  address we hold for it (never the address the request names).
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from typing import Any

import msgspec

from plumtree.core import events as ev
from plumtree.core import limits
from plumtree.core.awareness import Awareness
from plumtree.core.config import SwimConfig
from plumtree.core.dissemination import TransmitQueue, retransmit_limit
from plumtree.core.members import (
    ALIVE,
    DEAD,
    LEFT,
    STATE_NAMES,
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
from plumtree.core.ratelimit import RateLimiter
from plumtree.core.stats import PROBE_RTT_BUCKETS, Histogram
from plumtree.core.suspicion import Suspicion, suspicion_timeout
from plumtree.core.swim_stats import SwimCounters, SwimGauges
from plumtree.core.wire import encoded_size

__all__ = [
    "CONFIRM_ATTEMPTS",
    "CONFIRM_PROBES_PER_INTERVAL",
    "MAX_FROM_STRANGER",
    "MAX_UNCONFIRMED",
    "Outgoing",
    "Swim",
    "pushpull_scale",
]

_MAX_SEQ = limits.MAX_SEQ
_MAX_INC = limits.MAX_INCARNATION
_WINDOW = limits.INCARNATION_WINDOW
_MAX_NEW_INC = limits.MAX_NEW_INCARNATION
#: Unconfirmed members held at once (5,000 ghosts offered: this many wait, the rest are
#: refused and counted), and how many one push-pull from a non-member may add.
MAX_UNCONFIRMED = 1024
MAX_FROM_STRANGER = 64
#: Confirmation probes sent per probe interval (their own lane, apart from the probe
#: rotation), and probes, one probe interval apart, an unconfirmed member gets before it
#: is dropped: a full table of ghosts is cleared in (ATTEMPTS + 1) * MAX_UNCONFIRMED /
#: PER_INTERVAL probe intervals (48), each ghost in ATTEMPTS + 1 (3).
CONFIRM_PROBES_PER_INTERVAL = 64
CONFIRM_ATTEMPTS = 2
#: Answers to an accuser (our Alive, sent straight back): per accuser, per probe interval.
_ANSWERS_PER_INTERVAL = 2
#: Bytes an envelope adds around its messages besides label and sender: magic+version (3),
#: outer array (1), two string headers (<= 3 each) and the message-list header (3).
_ENVELOPE_FIXED = 13
_meta_encoder = msgspec.msgpack.Encoder()


def pushpull_scale(interval: float, n: int) -> float:
    """memberlist's pushPullScale: x (ceil(log2 n - log2 32) + 1) above 32 members."""
    if n <= 32:
        return interval
    return interval * (math.ceil(math.log2(n) - math.log2(32)) + 1)


def host_of(addr: str) -> str:
    """The host part of ``host:port`` (``[v6]:port`` included; a bare name is its own)."""
    host, sep, port = addr.rpartition(":")
    if sep and port.isdigit() and (":" not in host or host.startswith("[")):
        return host
    return addr


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
        # confirmation of members learned second-hand (their own probe lane)
        self._confirm_heap: list[tuple[float, int, str]] = []
        self._confirm_order = 0
        self._confirming: dict[int, tuple[str, str]] = {}
        self._next_confirm: float | None = None
        #: hosts we sent a push-pull request to, waiting for their reply (bounded): a
        #: reply from one of them may teach us its whole table, a stranger's only a few
        self._asked: dict[str, None] = {}
        self._answers = RateLimiter(
            _ANSWERS_PER_INTERVAL / cfg.probe_interval, _ANSWERS_PER_INTERVAL
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
        if self.left:
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

    def check_meta_fits(self, meta: dict[str, str]) -> None:
        """Raise ValueError (naming the limit) unless ``meta`` passes the metadata bounds
        and our Alive carrying it fits one datagram (``udp_buffer_size``)."""
        self._check_meta(meta)
        local = self.local
        size = encoded_size(Alive(self.name, local.incarnation + 1, self.addr, dict(meta)))
        if size > self._budget:
            raise ValueError(
                f"our Alive with these tags is {size} bytes, more than a datagram holds"
                f" ({self._budget} of udp_buffer_size {self.config.udp_buffer_size})"
            )

    def force_leave(self, name: str, now: float) -> str:
        """serf's force-leave: record a failed member as *left* and gossip it, so every
        member stops waiting for it now rather than after the reap time.

        Only a dead or suspect member (ValueError for a live one, ourselves, or a name
        not in the table; a member already left is left alone). The announcement is the
        member's own leave (``Dead`` with origin = the member): if it is in fact alive
        it refutes it with a higher incarnation, as it does any accusation. Returns the
        state it had here.
        """
        m = self.table.by_name.get(name)
        if m is None:
            raise ValueError(f"no member named {name!r}")
        if m is self.local:
            raise ValueError("a node cannot force itself out (use leave)")
        before = STATE_NAMES[m.state]
        if m.state == ALIVE:
            raise ValueError(f"member {name!r} is alive: only a failed member can be forced out")
        if m.state != LEFT:
            self._on_dead(Dead(name, m.incarnation, name), now)
        return before

    def receive_packet(self, from_addr: str, sender: str, messages: list[Any], now: float) -> None:
        """Handle one datagram's messages (a probe message plus piggybacked updates)."""
        by_name = self.table.by_name
        local = self.local
        s = by_name.get(sender)
        if s is not None and not s.confirmed and s.addr == from_addr:
            self._confirm(s, now)  # a datagram from its address, in its name: proof enough
        # a confirmed member speaking from its own address vouches for the members it
        # gossips: it gossips only those whose address answered it
        vouched = s is not None and s.confirmed and s.addr == from_addr and s is not local
        for msg in messages:
            kind = type(msg)
            if kind is Alive:
                self.counters.updates_received += 1
                m = by_name.get(msg.name)
                if (
                    m is not None
                    and msg.incarnation <= m.incarnation
                    and m is not local
                    and m.incarnation - msg.incarnation <= _WINDOW
                ):
                    continue  # old news (the common case): nothing to do
                first_hand = msg.name == sender and from_addr == (msg.addr if m is None else m.addr)
                self._on_alive(msg, now, True, first_hand, vouched)
            elif kind is Suspect:
                self.counters.updates_received += 1
                self._on_suspect(msg, now, from_addr, sender)
            elif kind is Dead:
                self.counters.updates_received += 1
                self._on_dead(msg, now, from_addr, sender)
            elif kind is Ping:
                self._on_ping(from_addr, msg)
            elif kind is Ack:
                self._on_ack(msg.seq, now)
            elif kind is PingReq:
                self._on_pingreq(from_addr, sender, msg, now)
            elif kind is Nack:
                self._on_nack(msg.seq)
            else:
                self.counters.ignored_messages += 1

    def receive_stream(
        self, from_addr: str, sender: str, message: Any, now: float, answer: bool = True
    ) -> None:
        """Handle a push-pull received over a stream; a request is answered in kind
        (unless ``answer`` is False: the caller could not tell that ``from_addr`` is
        where the request came from, and our whole table must not go to a stranger)."""
        if type(message) is not PushPull:
            self.counters.ignored_messages += 1
            return
        # vouched for: an answer to a request we sent to that host (a seed's reply to our
        # join), or a confirmed member's own push-pull, from the host it lives on
        vouched = False
        if answer:
            known = self.table.by_name.get(sender)
            vouched = is_live(known) and known.addr == from_addr
            if message.reply:
                host = host_of(from_addr)
                vouched = vouched or host in self._asked
                self._asked.pop(host, None)
        if not message.reply and not answer:
            self.counters.pushpull_replies_refused += 1
        elif not message.reply:
            # memberlist answers with its state as it was, then merges the remote one
            self._stream(from_addr, PushPull(message.join, True, self._local_state()))
        self.counters.pushpull_exchanges += 1
        was_joined = self.joined
        self._merge(message.members, now, not message.reply, from_addr, sender, vouched)
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
        if self._next_confirm is not None and now >= self._next_confirm:
            self._confirm_tick(now)

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
        if self._next_confirm is not None and self._next_confirm < deadline:
            deadline = self._next_confirm
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
        """Every known member (ourselves included), in table order; members learned
        second-hand whose address has not answered yet are not members yet."""
        return [m.record() for m in self.table.by_name.values() if m.confirmed]

    def alive_members(self) -> list[MemberRecord]:
        return [m.record() for m in self.table.by_name.values() if m.state == ALIVE and m.confirmed]

    def member(self, name: str) -> MemberRecord | None:
        m = self.table.get(name)
        return None if m is None or not m.confirmed else m.record()

    @property
    def unconfirmed_count(self) -> int:
        """Members learned second-hand, waiting for their address to answer a probe."""
        return len(self.table.unconfirmed)

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
            unconfirmed=len(self.table.unconfirmed),
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
        probed = self._confirming.pop(seq, None)
        if probed is not None:
            m = self.table.by_name.get(probed[0])
            if m is not None and not m.confirmed and m.addr == probed[1]:
                self._confirm(m, now)
            return
        self.counters.unknown_acks += 1

    def _on_nack(self, seq: int) -> None:
        self.counters.nacks_received += 1
        p = self._probe
        if p is not None and p.seq == seq:
            p.nacks += 1
        else:
            self.counters.unknown_nacks += 1

    def _on_pingreq(self, from_addr: str, sender: str, req: PingReq, now: float) -> None:
        self.counters.pingreqs_received += 1
        if req.target == self.name:
            self._packet(from_addr, [Ack(req.seq)], 7)
            return
        # a relay only for a member, only towards a member, at the address *we* hold
        # for it: a forged PingReq cannot make us ping an arbitrary address
        by_name = self.table.by_name
        target = by_name.get(req.target)
        if not is_live(by_name.get(sender)) or not is_live(target) or target is self.local:
            self.counters.pingreqs_refused += 1
            return
        if len(self._relays) >= self.config.handoff_queue_depth:
            self.counters.relays_dropped += 1
            return
        seq = self._next_seq()
        self._relays[seq] = _Relay(from_addr, req.seq)
        heapq.heappush(self._relay_timers, (now + self._nack_timeout, seq))
        self._packet(target.addr, [Ping(seq, req.target)], 10 + _str_size(req.target))

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

    def _on_alive(
        self,
        a: Alive,
        now: float,
        regossip_new: bool = True,
        first_hand: bool = False,
        vouched: bool = False,
    ) -> None:
        """``first_hand``: in a datagram from the member's own address, in its name;
        ``vouched``: from a confirmed member, which gossips only members it confirmed."""
        name = a.name
        if name == self.name:
            self._alive_about_us(a)
            return
        table = self.table
        m = table.by_name.get(name)
        if m is not None and not m.confirmed:
            if _MAX_NEW_INC >= a.incarnation > m.incarnation:
                m.incarnation = a.incarnation  # (its tries stay: a new address or number
                m.addr = a.addr  # does not buy a ghost more probes)
                m.meta = a.meta
                m.touch()
            if vouched and m.addr == a.addr:
                self._confirm(m, now)
            return
        if m is not None and a.addr != m.addr and m.state >= DEAD and a.incarnation > m.incarnation:
            # a failed member back at another address must prove that address again
            if a.incarnation - m.incarnation > _WINDOW and not first_hand:
                self.counters.incarnations_refused += 1
                return
            table.remove(name)
            self._changed()
            m = None
        if m is None:
            if a.incarnation > _MAX_NEW_INC:
                self.counters.incarnations_refused += 1
                return
            if len(table) >= self.config.max_members:
                self.counters.members_dropped += 1
                return
            confirmed = first_hand or vouched
            if not confirmed and len(table.unconfirmed) >= MAX_UNCONFIRMED:
                self.counters.unconfirmed_refused += 1
                return
            m = Member(name, a.addr, a.incarnation, a.meta, now, confirmed=confirmed)
            table.add(m)
            if confirmed:
                self._member_joined(m, regossip_new)
            else:
                self._await_confirmation(m, now)
            return
        if a.incarnation <= m.incarnation:
            if not first_hand or m.incarnation - a.incarnation <= _WINDOW:
                return
            # the member itself says so, and what we hold of it is beyond what it could
            # refute (walked up by forged updates, or its previous life): its word wins
            self.counters.incarnation_resets += 1
            m.incarnation = a.incarnation - 1
        elif a.incarnation - m.incarnation > _WINDOW and not first_hand:
            self.counters.incarnations_refused += 1
            return
        old_state = m.state
        if a.addr != m.addr and old_state <= SUSPECT:
            self.counters.addr_conflicts += 1  # two live nodes claim one name
            return
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

    def _member_joined(self, m: Member, regossip: bool) -> None:
        """A confirmed member is new to us: probe it, tell the others, tell the caller."""
        self._probe_list_insert(m.name)
        if regossip:
            self._queue_update(m.name, Alive(m.name, m.incarnation, m.addr, m.meta))
        self._changed()
        self._events.append(ev.MemberJoined(m.name, m.addr, m.incarnation, m.meta))

    def _await_confirmation(self, m: Member, now: float) -> None:
        self._push_confirm(now, m.name)

    def _push_confirm(self, at: float, name: str) -> None:
        self._confirm_order += 1
        heapq.heappush(self._confirm_heap, (at, self._confirm_order, name))
        if self._next_confirm is None or at < self._next_confirm:
            self._next_confirm = at

    def _confirm(self, m: Member, now: float) -> None:
        """Its address answered: from now on it is a member like any other."""
        self.table.confirm(m)
        self.counters.members_confirmed += 1
        self._member_joined(m, True)

    def _confirm_tick(self, now: float) -> None:
        """One confirmation probe (rate-bounded lane); drop those that never answered."""
        heap = self._confirm_heap
        by_name = self.table.by_name
        interval = self.config.probe_interval
        while heap and heap[0][0] <= now:
            _, _, name = heapq.heappop(heap)
            m = by_name.get(name)
            if m is None or m.confirmed:
                continue
            if m.tries >= CONFIRM_ATTEMPTS:
                self.table.remove(name)  # never answered: it was never a member
                self.counters.unconfirmed_dropped += 1
                continue
            m.tries += 1
            seq = self._next_seq()
            confirming = self._confirming
            confirming[seq] = (name, m.addr)
            if len(confirming) > 4 * CONFIRM_PROBES_PER_INTERVAL:
                del confirming[next(iter(confirming))]
            self.counters.confirm_probes_sent += 1
            self.counters.packets_sent += 1
            # a bare Ping: nothing piggybacked to an address that has not answered yet
            self._outbox.append(Outgoing(m.addr, [Ping(seq, name)], False))
            self._push_confirm(now + interval, name)
            break
        if heap:
            self._next_confirm = max(now + interval / CONFIRM_PROBES_PER_INTERVAL, heap[0][0])
        else:
            self._next_confirm = None

    def _alive_about_us(self, a: Alive) -> None:
        if self.left:
            return  # a stale Alive must not undo our leave
        local = self.local
        if a.incarnation < local.incarnation:
            return
        if a.incarnation == local.incarnation and a.meta == local.meta and a.addr == local.addr:
            return
        if self._beyond_window(a.incarnation):
            return
        self._refute(a.incarnation, a.name)

    def _beyond_window(self, accused: int) -> bool:
        """A claim about us we could not refute without exhausting incarnations: ignored
        (counted). Before we joined, our old life may be far ahead: we catch up."""
        limit = self.local.incarnation + _WINDOW
        if not self.joined and limit < _MAX_NEW_INC:
            limit = _MAX_NEW_INC
        if accused > limit:
            self.counters.incarnations_refused += 1
            return True
        return False

    def _accused(
        self, accused: int, by: str, from_addr: str | None, sender: str, now: float
    ) -> None:
        """A Suspect or Dead about us: refute it (within the window), and answer who told
        us straight away, so our own word reaches the node that holds the claim."""
        if self.left:
            return
        if accused >= self.local.incarnation and not self._beyond_window(accused):
            self._refute(accused, by)
        if from_addr is None:
            return
        m = self.table.by_name.get(sender)
        # only to a member, at the address it sends from: no reflection to strangers
        if not is_live(m) or m.addr != from_addr or not self._answers.allow(from_addr, now):
            return
        self.counters.accusers_answered += 1
        alive = self._local_alive()
        self._packet(from_addr, [alive], encoded_size(alive))

    def _on_suspect(
        self, s: Suspect, now: float, from_addr: str | None = None, sender: str = ""
    ) -> None:
        name = s.name
        if name == self.name:
            self._accused(s.incarnation, s.origin, from_addr, sender, now)
            return
        m = self.table.by_name.get(name)
        if m is None or not m.confirmed or s.incarnation < m.incarnation:
            return
        if s.incarnation - m.incarnation > _WINDOW:
            self.counters.incarnations_refused += 1
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

    def _on_dead(self, d: Dead, now: float, from_addr: str | None = None, sender: str = "") -> None:
        name = d.name
        if name == self.name:
            self._accused(d.incarnation, d.origin, from_addr, sender, now)
            return
        m = self.table.by_name.get(name)
        if m is None or not m.confirmed or d.incarnation < m.incarnation:
            return
        if d.incarnation - m.incarnation > _WINDOW:
            self.counters.incarnations_refused += 1
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
        state = [m._wire or m.wire() for m in self.table.by_name.values() if m.confirmed]
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
        if not message.reply:
            asked = self._asked
            asked[host_of(addr)] = None
            if len(asked) > 64:
                del asked[next(iter(asked))]
        self._outbox.append(Outgoing(addr, [message], True))

    def _merge(
        self,
        remote: list[MemberState],
        now: float,
        regossip_new: bool,
        from_addr: str | None = None,
        sender: str = "",
        vouched: bool = False,
    ) -> None:
        """memberlist's mergeState: alive as Alive, left as a leave, dead as a suspicion.

        Unlike memberlist, members first learned from a push-pull *reply* are not queued
        for gossip (``regossip_new`` False): the reply already carried them, and a joiner
        would otherwise re-gossip the whole table it was just given (N^2 updates in a join
        storm) while its own Alive, the one update that matters, waits behind them. The
        answering side (a seed learning the joiner) re-gossips as memberlist does, and
        changes to members we knew (revivals, incarnations, suspicions) always are.

        Unless ``vouched`` for (see ``receive_stream``), every member it teaches us
        starts unconfirmed, and it may add at most ``MAX_FROM_STRANGER`` of them.
        """
        by_name = self.table.by_name
        me = self.name
        todo: list[MemberState] = []
        new_room = len(remote) if vouched else MAX_FROM_STRANGER
        for r in remote:
            m = by_name.get(r.name)
            if m is None:
                if r.state == ALIVE:
                    if new_room <= 0:
                        self.counters.unconfirmed_refused += 1
                        continue
                    new_room -= 1
                    todo.append(r)
            elif r.incarnation > m.incarnation or r.name == me:
                todo.append(r)
            elif r.incarnation == m.incarnation and r.state > m.state and r.state != ALIVE:
                todo.append(r)  # same incarnation, worse news (suspect/dead/left)
        self.rng.shuffle(todo)  # random order: consumers (Plumtree) see peers unbiased
        # our own row first: a restarted node catches up with its old incarnation
        # while it has not joined, before the others in the reply make it joined
        todo.sort(key=lambda r: r.name != me)
        for r in todo:
            name = r.name
            state = r.state
            if state == ALIVE:
                alive = Alive(name, r.incarnation, r.addr, r.meta)
                self._on_alive(alive, now, regossip_new, False, vouched)
            elif state == LEFT:
                self._on_dead(Dead(name, r.incarnation, name), now, from_addr, sender)
            else:
                self._on_suspect(Suspect(name, r.incarnation, me), now, from_addr, sender)

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
