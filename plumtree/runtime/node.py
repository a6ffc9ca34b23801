"""A cluster node: the SWIM and Plumtree cores on real sockets, timers and an admin API.

The node is the thin adapter of the design: it feeds the cores what the sockets receive
(with ``loop.time()`` as ``now``, never behind a timer that fired), sends what the cores
queue, arms one ``call_at`` timer at the cores' earliest deadline, and turns core events
into deliveries, logs, metrics and the /v1/events stream. Several nodes can run in one
process (the tests do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from plumtree import __version__
from plumtree.core import events as ev
from plumtree.core.config import ProtocolConfig, describe
from plumtree.core.health import HealthReport
from plumtree.core.ids import format_id, parse_id
from plumtree.core.members import is_live
from plumtree.core.messages import PLUMTREE_TYPES, PushPull
from plumtree.core.plumtree import MessageTooLarge, Plumtree
from plumtree.core.swim import Swim
from plumtree.core.wire import VERSION as WIRE_VERSION
from plumtree.core.wire import Envelope
from plumtree.runtime.addresses import format_addr, parse_addr
from plumtree.runtime.crypto import OVERHEAD, Keyring
from plumtree.runtime.eventhub import EventHub
from plumtree.runtime.eventloop import loop_name
from plumtree.runtime.transport import Transport

log = logging.getLogger("plumtree.node")
msglog = logging.getLogger("plumtree.messages")

__all__ = ["Delivery", "MessageTooLarge", "Node", "NodeConfig"]

#: exact types (the messages are never subclassed): a set lookup beats isinstance
PLUMTREE_TYPE_SET = frozenset(PLUMTREE_TYPES)
#: How often the peer sets are reconciled against the full member table.
RECONCILE_INTERVAL = 5.0
#: How often a node with seeds checks that it is not alone (then it joins again).
ISOLATION_CHECK_INTERVAL = 1.0
#: At most one "cache full" log line per this many seconds.
EVICTION_LOG_INTERVAL = 10.0


@dataclass(slots=True)
class NodeConfig:
    """Everything a node needs to start; ``plumctl node start`` builds one from flags."""

    name: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    bind: str = "0.0.0.0:7946"
    advertise: str | None = None
    api: str | None = "127.0.0.1:7947"
    join: list[str] = field(default_factory=list)
    label: str = ""
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    token: str | None = None
    keyring: Keyring | None = None
    tags: dict[str, str] = field(default_factory=dict)
    send_queue_limit: int = 4096
    delivery_queue_limit: int = 10_000
    join_retry_max: float = 10.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """A broadcast as the application receives it (exactly once per id)."""

    id: str
    payload: bytes
    origin: str
    sender: str
    hops: int
    at: float  # unix time


class Node:
    """One cluster member. ``await start()``, ``broadcast()``, ``await stop()``."""

    def __init__(
        self, config: NodeConfig, on_deliver: Callable[[Delivery], None] | None = None
    ) -> None:
        self.config = config
        self.name = config.name
        self.version = __version__
        self.on_deliver = on_deliver
        self.events = EventHub()
        self._render_delivered = self._delivered_doc  # (one bound method, not one a message)
        self.delivery_dropped = 0
        self.unroutable = 0
        self.unknown_senders = 0
        self._subscribers: list[asyncio.Queue[Delivery]] = []
        self._rng = random.Random(int.from_bytes(os.urandom(8), "big"))
        self.transport = Transport(
            config.name,
            config.label,
            self._on_envelope,
            keyring=config.keyring,
            queue_limit=config.send_queue_limit,
        )
        self.plumtree: Plumtree = None  # type: ignore[assignment]  # set in start()
        self.swim: Swim = None  # type: ignore[assignment]
        self.admin: Any = None
        self.gossip_addr = ""
        self.admin_url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        #: the cores' clock never runs backwards, nor behind a deadline that fired
        self._clock_floor = 0.0
        self._clock_offset = 0.0
        self._started_at = 0.0
        self._next_reconcile = 0.0
        self._join_task: asyncio.Task[None] | None = None
        self._evicted_unlogged = 0
        self._evictions_logged_at = float("-inf")
        self.stopped = asyncio.Event()
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind sockets, start the admin API, then join the seeds (in the background)."""
        loop = self._loop = asyncio.get_running_loop()
        cfg = self.config
        self._clock_offset = time.time() - loop.time()
        self._started_at = loop.time()
        host, port = parse_addr(cfg.bind, 7946)
        bound_host, bound_port = await self.transport.start(host, port)
        adv_host, adv_port = (
            parse_addr(cfg.advertise, bound_port) if cfg.advertise else (bound_host, bound_port)
        )
        if adv_host in ("0.0.0.0", "::", ""):
            adv_host = _default_advertise_host()
        self.gossip_addr = format_addr(adv_host, adv_port)
        try:
            if cfg.api is not None:
                from plumtree.admin.server import AdminServer

                api_host, api_port = parse_addr(cfg.api, 7947)
                self.admin = AdminServer(self, api_host, api_port)
                self.admin_url = await self.admin.start()
        except BaseException:
            await self.transport.close()
            raise
        swim_cfg = cfg.protocol.swim
        if cfg.keyring is not None:
            from dataclasses import replace

            swim_cfg = replace(swim_cfg, udp_buffer_size=swim_cfg.udp_buffer_size - OVERHEAD)
        now = loop.time()
        meta = dict(cfg.tags)
        if self.admin_url:
            meta["admin"] = self.admin_url
        self.swim = Swim(
            cfg.name,
            self.gossip_addr,
            swim_cfg,
            random.Random(self._rng.random()),
            now,
            meta,
            label=cfg.label,
        )
        self.plumtree = Plumtree(
            cfg.name, cfg.protocol.plumtree, random.Random(self._rng.random()), now
        )
        self._next_reconcile = now + RECONCILE_INTERVAL
        log.info(
            "node %s started: gossip %s, admin %s, profile %s, %s loop%s",
            self.name,
            self.gossip_addr,
            self.admin_url or "off",
            cfg.protocol.profile,
            loop_name(loop),
            ", encrypted" if cfg.keyring else "",
            extra={"fields": {"node": self.name, "label": cfg.label, "join": cfg.join}},
        )
        log.debug(
            "effective configuration",
            extra={
                "fields": {"plumtree": describe(cfg.protocol.plumtree), "swim": describe(swim_cfg)}
            },
        )
        self._pump()
        if cfg.join:
            self._join_task = loop.create_task(self._join_loop(), name=f"{self.name} join")

    async def _join_loop(self) -> None:
        """Join through the seeds, then keep watching: a node left alone (every member
        it knew failed or left, say its seed restarted while the others were gone)
        joins through its seeds again, as it first did, instead of staying a cluster of
        one. It stops only when the node leaves or stops."""
        while not self._stopping:
            await self._join_once()
            while not self._stopping and not self.swim.left and self.swim.joined:
                await asyncio.sleep(ISOLATION_CHECK_INTERVAL)
            if self._stopping or self.swim.left:
                return
            log.warning(
                "alone: no member besides this node is alive; rejoining through %s",
                ", ".join(self.config.join),
                extra={"fields": {"seeds": self.config.join}},
            )

    async def _join_once(self) -> None:
        """Push-pull with the seeds until one answers, backing off (and saying so)."""
        delay = 0.2
        attempt = 0
        while not self._stopping and not self.swim.left and not self.swim.joined:
            attempt += 1
            self.swim.join(list(self.config.join), self._now())
            self._pump()
            await asyncio.sleep(delay)
            if self.swim.joined or self.swim.left:
                break
            log.warning(
                "cannot join through %s yet (attempt %d); retrying in %.1fs",
                ", ".join(self.config.join),
                attempt,
                min(delay * 2, self.config.join_retry_max),
                extra={"fields": {"seeds": self.config.join, "attempt": attempt}},
            )
            delay = min(delay * 2, self.config.join_retry_max)
        if self.swim.joined and not self.swim.left:
            log.info("joined the cluster (%d members alive)", self.swim.alive_count)

    async def leave(self, timeout: float = 2.0) -> None:
        """Announce a graceful leave and give it time to spread (bounded)."""
        if self.swim is None or self.swim.left:
            return
        loop = asyncio.get_running_loop()
        self.events.publish({"kind": "leaving", "at": time.time(), "node": self.name})
        self.swim.leave(self._now())
        self._pump()
        deadline = loop.time() + timeout
        # a few gossip rounds carry the Dead(self) announcement; stop early if alone
        rounds = 0
        while loop.time() < deadline and self.swim.alive_count > 0 and rounds < 5:
            await asyncio.sleep(self.config.protocol.swim.gossip_interval)
            rounds += 1
        await self.transport.drain(max(0.0, deadline - loop.time()))

    async def stop(self, leave: bool = True, timeout: float = 3.0) -> None:
        """Leave (optionally), drain send queues within ``timeout``, close everything."""
        if self._stopping:
            await self.stopped.wait()
            return
        if leave and self.swim is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.leave(timeout=timeout * 0.7), timeout)
        self._stopping = True
        if self._join_task is not None:
            self._join_task.cancel()
            with contextlib.suppress(BaseException):
                await self._join_task
        if self._timer is not None:
            self._timer.cancel()
        for sub in list(self.events.subscribers):
            sub.offer({"kind": "stream_end", "level": "error", "at": time.time()})
        if self.admin is not None:
            await self.admin.stop()
        await self.transport.close()
        log.info("node %s stopped", self.name)
        self.stopped.set()

    # ------------------------------------------------------------------ application API

    def broadcast(self, payload: bytes) -> str:
        """Broadcast ``payload`` to the cluster; returns the message id (hex)."""
        self._check_running()
        msg_id = self.plumtree.broadcast(payload, self._now())
        hexid = format_id(msg_id)
        if msglog.isEnabledFor(logging.DEBUG):  # per message, as the delivery lines are:
            # at INFO this line cost more CPU than the broadcast itself (~0.3 ms)
            msglog.debug(
                "broadcast %s (%d bytes)",
                hexid,
                len(payload),
                extra={"fields": {"id": hexid, "hops": 0, "size": len(payload)}},
            )
        self._pump()
        return hexid

    async def deliveries(self, limit: int | None = None) -> AsyncIterator[Delivery]:
        """Every delivery from now on (bounded queue: overflow is counted, not hidden)."""
        queue: asyncio.Queue[Delivery] = asyncio.Queue(limit or self.config.delivery_queue_limit)
        self._subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)

    def members(self) -> list[dict[str, Any]]:
        self._check_running()
        out = []
        for m in self.swim.members():
            meta = dict(m.meta)
            admin = meta.pop("admin", None)
            out.append(
                {
                    "name": m.name,
                    "addr": m.addr,
                    "admin_url": admin,
                    "state": m.state,
                    "incarnation": m.incarnation,
                    "tags": meta,
                    "since": self._wall(m.state_change),
                    "self": m.name == self.name,
                }
            )
        return out

    def peers(self) -> list[dict[str, Any]]:
        self._check_running()
        rtts = self.swim.rtts()
        out = []
        for info in self.plumtree.peer_infos():
            row = info.as_dict()
            row["since"] = self._wall(info.since)
            rtt = rtts.get(info.name)
            row["rtt_ms"] = None if rtt is None else round(rtt * 1000, 3)
            out.append(row)
        return out

    def health(self) -> HealthReport:
        self._check_running()
        return self.plumtree.health(self._now())

    def message(self, hexid: str) -> dict[str, Any]:
        """What this node knows of a message id (raises ValueError on a malformed id)."""
        self._check_running()
        msg_id = parse_id(hexid)
        entry = self.plumtree.lookup(msg_id)
        if entry is None:
            return {
                "id": hexid,
                "delivered": False,
                "at": None,
                "hops": None,
                "from": None,
                "origin": None,
                "pending": self.plumtree.is_pending(msg_id),
            }
        return {
            "id": hexid,
            "delivered": True,
            "at": self._wall(entry.at),
            "hops": entry.hops,
            "from": entry.parent,
            "origin": entry.origin,
            "pending": False,
        }

    def status(self) -> dict[str, Any]:
        self._check_running()
        cfg = self.config
        counts: dict[str, int] = {"alive": 0, "suspect": 0, "dead": 0, "left": 0}
        for m in self.swim.members():
            counts[m.state] = counts.get(m.state, 0) + 1
        return {
            "name": self.name,
            "version": self.version,
            "wire_version": WIRE_VERSION,
            "cluster_label": cfg.label,
            "gossip_addr": self.gossip_addr,
            "admin_url": self.admin_url,
            "uptime_s": round(self._now() - self._started_at, 3),
            "profile": cfg.protocol.profile,
            "encrypted": cfg.keyring is not None,
            "joined": self.swim.joined or not cfg.join,
            "members": counts,
            "incarnation": self.swim.incarnation,
            "config": {
                "plumtree": describe(cfg.protocol.plumtree),
                "swim": describe(cfg.protocol.swim),
            },
        }

    # ------------------------------------------------------------------ plumbing

    def _check_running(self) -> None:
        if self.swim is None or self._stopping:
            raise RuntimeError("node is not running")

    def _now(self) -> float:
        assert self._loop is not None
        now = self._loop.time()
        if now < self._clock_floor:
            return self._clock_floor
        self._clock_floor = now
        return now

    def _wall(self, core_time: float) -> float:
        return round(core_time + self._clock_offset, 6)

    def _on_envelope(self, envelope: Envelope, source: str, reliable: bool) -> None:
        if self._stopping or self.swim is None:
            return
        now = self._now()
        sender = envelope.sender
        if sender == self.name:
            return
        swim_msgs: list[Any] = []
        table = self.swim.table
        # Plumtree takes messages from live members only; looked up once per envelope
        # (again after a push-pull, which may have taught us the sender)
        live = is_live(table.get(sender))
        receive = self.plumtree.receive
        for msg in envelope.messages:
            if type(msg) in PLUMTREE_TYPE_SET:
                if live:
                    receive(sender, msg, now)  # type: ignore[arg-type]
                else:
                    self.unknown_senders += 1  # not (or no longer) a live member
            elif reliable and isinstance(msg, PushPull):
                # the TCP source port is ephemeral: answer at the address the sender
                # advertises for itself in its own state (or the one we know)
                reply = next((m.addr for m in msg.members if m.name == sender), None)
                if reply is None:
                    known = table.get(sender)
                    reply = known.addr if known is not None else source
                self.swim.receive_stream(reply, sender, msg, now)
                live = is_live(table.get(sender))
            else:
                swim_msgs.append(msg)
        if swim_msgs:
            self.swim.receive_packet(source, sender, swim_msgs, now)
        self._pump()

    def _on_timer(self) -> None:
        due = self._timer_at
        self._timer = None
        self._timer_at = None
        if self._stopping:
            return
        # uvloop's clock ticks in whole milliseconds and runs a timer in the tick its
        # deadline falls in, up to 1 ms early. Fed that time, the cores found nothing
        # due, asked for the same deadline again, and the loop spun until the clock
        # ticked: hundreds of wake-ups per timer, most of a node's CPU at low rates.
        # The timer is for ``due``, so the cores' clock moves to it.
        if due is not None and due > self._clock_floor:
            self._clock_floor = due
        now = self._now()
        self.swim.handle_timer(now)
        self.plumtree.handle_timer(now)
        if now >= self._next_reconcile:
            self._next_reconcile = now + RECONCILE_INTERVAL
            added, removed = self.plumtree.reconcile(self.swim.live_names(), now)
            if added or removed:
                log.info("reconciled peers with membership: +%d -%d", added, removed)
        self._pump()

    def _pump(self) -> None:
        """Move everything the cores produced to the sockets and the application."""
        swim, tree, transport = self.swim, self.plumtree, self.transport
        for _ in range(100):
            for out in swim.take_outgoing():
                if out.reliable:
                    transport.send_reliable(out.addr, out.messages)
                else:
                    transport.send_datagram(out.addr, out.messages)
            membership = swim.take_events()
            for event in membership:
                self._membership_event(event)  # may make Plumtree output: taken below
            outgoing = tree.take_outgoing()
            if outgoing:
                by_peer: dict[str, list[Any]] = {}
                for peer, msg in outgoing:
                    by_peer.setdefault(peer, []).append(msg)
                for peer, msgs in by_peer.items():
                    member = swim.table.get(peer)
                    if not is_live(member):
                        self.unroutable += len(msgs)
                        continue
                    transport.send_reliable(member.addr, msgs)
            for event in tree.take_events():
                self._tree_event(event)
            # Sending makes no core output, and what the membership events made was
            # taken above: another pass only after those, in case that ever changes.
            # (An application's on_deliver that broadcasts pumps by itself.)
            if not membership:
                break
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self._stopping or self._loop is None:
            return
        deadline = min(
            self.swim.next_deadline(), self.plumtree.next_deadline(), self._next_reconcile
        )
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _membership_event(self, event: ev.Event) -> None:
        now = self._now()
        doc = _event_doc(event, self._clock_offset + now)
        match event:
            case ev.MemberJoined(name=name) | ev.MemberAlive(name=name):
                if name != self.name:
                    self.plumtree.add_peer(name, now)
                how = "joined" if isinstance(event, ev.MemberJoined) else "is alive again"
                log.info("member %s %s", name, how, extra={"fields": {"member": name}})
            case ev.MemberFailed(name=name) | ev.MemberLeft(name=name) | ev.MemberReaped(name=name):
                removed = self.plumtree.remove_peer(name, now)
                member = self.swim.table.get(name)
                if member is not None:
                    self.transport.close_link(member.addr)
                how = {ev.MemberFailed: "failed", ev.MemberLeft: "left", ev.MemberReaped: "reaped"}[
                    type(event)
                ]
                if removed or not isinstance(event, ev.MemberReaped):
                    log.info("member %s %s", name, how, extra={"fields": {"member": name}})
            case ev.MemberSuspected(name=name, by=by):
                log.info("member %s suspected by %s", name, by, extra={"fields": {"member": name}})
            case ev.PartitionSuspected(failed=failed, alive=alive):
                log.warning(
                    "network partition suspected: %d members failed together, %d still alive",
                    failed,
                    alive,
                    extra={"fields": {"failed": failed, "alive": alive}},
                )
            case ev.Refuted(incarnation=incarnation, by=by):
                log.info("refuted a suspicion by %s with incarnation %d", by, incarnation)
            case _:
                pass
        self.events.publish(doc)

    def _tree_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.Delivered):
            self._deliver(event)
            return
        doc = _event_doc(event, self._clock_offset + self._now())
        match event:
            case ev.GraftFailed(id=msg_id, attempts=attempts):
                hexid = format_id(msg_id)
                msglog.info(
                    "graft failed for %s after %d attempts",
                    hexid,
                    attempts,
                    extra={"fields": {"id": hexid, "hops": None, "attempts": attempts}},
                )
            case ev.CacheEvicted(count=count):
                self._log_evictions(count)
            case ev.PeerAdded(peer=peer):
                log.info("peer %s added", peer, extra={"fields": {"peer": peer}})
            case ev.PeerRemoved(peer=peer):
                log.info("peer %s removed", peer, extra={"fields": {"peer": peer}})
            case (
                ev.PeerPromoted(peer=peer, reason=reason) | ev.PeerDemoted(peer=peer, reason=reason)
            ):
                state = "eager" if isinstance(event, ev.PeerPromoted) else "lazy"
                log.debug("peer %s now %s (%s)", peer, state, reason)
            case ev.GraftSent(peer=peer, ids=ids) if msglog.isEnabledFor(logging.DEBUG):
                hexids = [format_id(i) for i in ids]
                msglog.debug("graft to %s", peer, extra={"fields": {"ids": hexids, "hops": None}})
            case _:
                pass
        self.events.publish(doc)

    def _log_evictions(self, count: int) -> None:
        """One INFO line per interval, not one per message, while the cache is full."""
        self._evicted_unlogged += count
        now = self._now()
        if now - self._evictions_logged_at >= EVICTION_LOG_INTERVAL:
            log.info(
                "cache full: evicted %d payloads before their TTL (since last report)",
                self._evicted_unlogged,
                extra={"fields": {"evicted": self._evicted_unlogged}},
            )
            self._evicted_unlogged = 0
            self._evictions_logged_at = now

    def _deliver(self, event: ev.Delivered) -> None:
        if msglog.isEnabledFor(logging.DEBUG):
            hexid = format_id(event.id)
            msglog.debug(
                "delivered %s from %s",
                hexid,
                event.sender,
                extra={
                    "fields": {
                        "id": hexid,
                        "hops": event.hops,
                        "origin": event.origin,
                        "from": event.sender,
                    }
                },
            )
        if self.on_deliver is not None or self._subscribers:  # (plumctl node start: neither)
            self._hand_over(
                Delivery(
                    format_id(event.id),
                    event.payload,
                    event.origin,
                    event.sender,
                    event.hops,
                    self._wall(event.at),
                )
            )
        # rendered only if someone reads it (see EventHub.publish_deferred); the record
        # leaves the payload out, so the ring never holds payloads alive
        self.events.publish_deferred(
            (event.id, event.at, event.hops, event.origin, event.sender, len(event.payload)),
            self._render_delivered,
        )

    def _delivered_doc(self, seq: int, record: tuple[Any, ...]) -> dict[str, Any]:
        msg_id, at, hops, origin, sender, size = record
        return {
            "kind": "delivered",
            "level": "debug",
            "seq": seq,
            "at": self._wall(at),
            "id": format_id(msg_id),
            "hops": hops,
            "origin": origin,
            "from": sender,
            "size": size,
        }

    def _hand_over(self, delivery: Delivery) -> None:
        """To the application: its callback, then every ``deliveries()`` iterator."""
        hexid = delivery.id
        if self.on_deliver is not None:
            try:
                self.on_deliver(delivery)
            except Exception:
                log.exception("on_deliver callback failed for %s", hexid)
        for queue in self._subscribers:
            if queue.full():
                self.delivery_dropped += 1
                log.warning(
                    "delivery subscriber too slow: dropped %s",
                    hexid,
                    extra={"fields": {"id": hexid, "hops": delivery.hops}},
                )
            else:
                queue.put_nowait(delivery)


def _event_doc(event: ev.Event, at: float) -> dict[str, Any]:
    import msgspec

    doc: dict[str, Any] = msgspec.to_builtins(event, enc_hook=None)
    for key in ("id",):
        if isinstance(getattr(event, key, None), bytes):
            doc[key] = format_id(getattr(event, key))
    if isinstance(getattr(event, "ids", None), list):
        doc["ids"] = [format_id(i) for i in event.ids]  # type: ignore[attr-defined]
    doc.pop("payload", None)
    doc["at"] = round(at, 6)
    return doc


def _default_advertise_host() -> str:
    """Best guess at a routable address when bound to the wildcard."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.255", 1))  # no packet is sent: this only picks a route
        addr: str = s.getsockname()[0]
        return addr
    return "127.0.0.1"
