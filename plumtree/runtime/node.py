"""A cluster node: the protocol stack on real sockets, timers and, with a data dir, a store.

The node is the thin adapter of the design: it feeds the stack (``core/stack.py``) what
the sockets receive (with ``time.monotonic()`` as ``now``, never behind a timer that
fired), sends what the stack queues, arms one ``call_at`` timer at the stack's earliest
deadline, and turns events into deliveries, the delivery log, logs, metrics and the
/v1/events stream. With ``data_dir`` every pump's output is committed to the store in a
group commit (``runtime/persistence.py``); our own broadcasts leave only once durable.
Several nodes can run in one process (the tests do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from plumtree import __version__
from plumtree.admin.limits import ApiLimits
from plumtree.core import events as ev
from plumtree.core.config import ProtocolConfig, describe
from plumtree.core.health import HealthReport
from plumtree.core.ids import STREAM_KEY_LEN, format_id, parse_id
from plumtree.core.messages import KEY_TYPES
from plumtree.core.plumtree import MessageTooLarge, Plumtree
from plumtree.core.stack import Stack
from plumtree.core.state import DeliveryRecord, NodeState
from plumtree.core.swim import Swim
from plumtree.core.wire import VERSION as WIRE_VERSION
from plumtree.core.wire import Envelope
from plumtree.runtime.addresses import format_addr, parse_addr
from plumtree.runtime.crypto import OVERHEAD, Keyring, fingerprint
from plumtree.runtime.deliverylog import DeliveryLog
from plumtree.runtime.eventhub import EventHub
from plumtree.runtime.eventloop import loop_name
from plumtree.runtime.gossippolicy import INSECURE_TAG
from plumtree.runtime.gossippolicy import check as check_gossip_policy
from plumtree.runtime.handlers import (
    DEFAULT_QUEUE,
    DEFAULT_TIMEOUT,
    Handlers,
    HandlerSpec,
    member_line,
    tag_env,
)
from plumtree.runtime.keyquery import KeyQueries
from plumtree.runtime.keys import KeyManager
from plumtree.runtime.query import Queries
from plumtree.runtime.tcplimits import TcpLimits
from plumtree.runtime.transport import Transport

if TYPE_CHECKING:
    from plumtree.runtime.persistence import Persistence
    from plumtree.store import NodeStore

log = logging.getLogger("plumtree.node")
msglog = logging.getLogger("plumtree.messages")

__all__ = ["Delivery", "MessageTooLarge", "Node", "NodeConfig", "StoreUnavailable"]

KEY_TYPE_SET = frozenset(KEY_TYPES)

#: At most one "cache full" log line per this many seconds.
EVICTION_LOG_INTERVAL = 10.0


class StoreUnavailable(RuntimeError):
    """The durable store cannot commit: a broadcast would not be acknowledged."""


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
    #: bearer token every admin endpoint needs (None: the API is open)
    token: str | None = None
    #: with a token: ``/metrics`` and ``/v1/health`` answer without it (scrapers, probes)
    public_metrics: bool = False
    #: PEM certificate chain and private key: the admin API speaks HTTPS (None: HTTP)
    api_tls: tuple[str, str] | None = None
    api_limits: ApiLimits = field(default_factory=ApiLimits)
    keyring: Keyring | None = None
    #: allow gossip on a non-loopback address without a keyring (``--insecure-gossip``)
    insecure_gossip: bool = False
    #: bounds on inbound gossip TCP connections (the ``[transport]`` table)
    tcp_limits: TcpLimits = field(default_factory=TcpLimits)
    #: the file the keyring came from: live changes (``plumctl keys``) are saved there
    keyring_file: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    send_queue_limit: int = 4096
    delivery_queue_limit: int = 10_000
    join_retry_max: float = 10.0
    #: where the node keeps its state across restarts (None: memory only)
    data_dir: str | None = None
    #: "normal": a commit survives a crash of the process; "full": of the machine too
    fsync: str = "normal"
    #: how long deliveries wait for company before a commit (none wait when someone in
    #: this process consumes them, or for our own broadcasts)
    commit_interval: float = 0.2
    #: event handlers (``--handler``): a command per delivery or membership change
    handlers: list[HandlerSpec] = field(default_factory=list)
    #: seconds a handler run may take before its process group is killed
    handler_timeout: float = DEFAULT_TIMEOUT
    #: events waiting per handler; beyond it they are dropped (counted)
    handler_queue: int = DEFAULT_QUEUE


@dataclass(frozen=True, slots=True)
class Delivery:
    """A broadcast as the application receives it (exactly once per id).

    ``cursor`` numbers this node's deliveries: resume after the last one handled.
    """

    id: str
    payload: bytes
    origin: str
    sender: str
    hops: int
    at: float  # unix time
    cursor: int = 0
    epoch: int = 0
    seq: int = 0


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
        self._subscribers: list[asyncio.Queue[Delivery]] = []
        self._rng = random.Random(int.from_bytes(os.urandom(8), "big"))
        self.transport = Transport(
            config.name,
            config.label,
            self._on_envelope,
            keyring=config.keyring,
            queue_limit=config.send_queue_limit,
            limits=config.tcp_limits,
        )
        #: gossip reachable from the network and unauthenticated (allowed explicitly)
        self.insecure = False
        #: live keyring changes (None: gossip is not encrypted)
        self.keys = KeyManager(config.keyring, config.keyring_file) if config.keyring else None
        #: keyring changes carried to every live member over gossip
        self.key_queries = KeyQueries(self)
        #: the ``--handler`` commands (empty: none; then events cost nothing here)
        self.handlers = Handlers(config.handlers, config.handler_timeout, config.handler_queue)
        #: serf's queries: asked of members over gossip, answered by ``query`` handlers
        self.queries = Queries(self)
        self.stack: Stack = None  # type: ignore[assignment]  # set in start()
        self.plumtree: Plumtree = None  # type: ignore[assignment]
        self.swim: Swim = None  # type: ignore[assignment]
        self.admin: Any = None
        self.gossip_addr = ""
        #: the address gossip is bound to (``gossip_addr`` is the one advertised)
        self.gossip_bind = ""
        self.admin_url: str | None = None
        self.store: NodeStore | None = None
        self.persistence: Persistence | None = None
        self.log: DeliveryLog = DeliveryLog(0)
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        #: our highest own seq (current epoch) that is durable: acknowledged
        self.acked = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        #: the cores' clock never runs backwards, nor behind a deadline that fired
        self._clock_floor = 0.0
        self._clock_offset = 0.0
        self._started_at = 0.0
        self._evicted_unlogged = 0
        self._evictions_logged_at = float("-inf")
        self.stopped = asyncio.Event()
        self._stopping = False
        #: why the node stopped on its own (its name is taken), for ``plumctl node start``
        self.fatal: str | None = None
        self._fatal_stop: asyncio.Task[None] | None = None

    @property
    def unroutable(self) -> int:
        return self.stack.unroutable if self.stack is not None else 0

    @property
    def unknown_senders(self) -> int:
        return self.stack.unknown_senders if self.stack is not None else 0

    @property
    def durable(self) -> bool:
        return self.persistence is not None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the store, bind sockets, start the admin API, then join (in the background)."""
        loop = self._loop = asyncio.get_running_loop()
        cfg = self.config
        self._started_at = self._now()
        self._clock_offset = time.time() - time.monotonic()
        self.insecure = check_gossip_policy(cfg.bind, cfg.keyring is not None, cfg.insecure_gossip)
        restored = self._open_store()
        try:
            host, port = parse_addr(cfg.bind, 7946)
            bound_host, bound_port = await self.transport.start(host, port)
        except BaseException:
            self._close_store()
            raise
        adv_host, adv_port = (
            parse_addr(cfg.advertise, bound_port) if cfg.advertise else (bound_host, bound_port)
        )
        if adv_host in ("0.0.0.0", "::", ""):
            adv_host = _default_advertise_host()
        self.gossip_addr = format_addr(adv_host, adv_port)
        self.gossip_bind = format_addr(bound_host, bound_port)
        try:
            if cfg.api is not None:
                from plumtree.admin.server import AdminServer

                api_host, api_port = parse_addr(cfg.api, 7947)
                self.admin = AdminServer(self, api_host, api_port)
                self.admin_url = await self.admin.start()
        except BaseException:
            await self.transport.close()
            self._close_store()
            raise
        protocol = cfg.protocol
        if cfg.keyring is not None:
            swim = replace(protocol.swim, udp_buffer_size=protocol.swim.udp_buffer_size - OVERHEAD)
            protocol = replace(protocol, swim=swim)
        now = self._now()
        meta = dict(cfg.tags)
        if self.admin_url:
            meta["admin"] = self.admin_url
        if self.insecure:
            meta[INSECURE_TAG] = "true"
        restored, epoch = self._choose_epoch(restored)
        self.stack = Stack(
            cfg.name,
            self.gossip_addr,
            protocol,
            self._rng,
            now,
            meta=meta,
            label=cfg.label,
            epoch=epoch,
            restored=restored,
            fresh=restored is None,
            join_retry_max=cfg.join_retry_max,
        )
        self.swim = self.stack.swim
        self.plumtree = self.stack.plumtree
        self.acked = self.plumtree.own_stream.wm  # (a restart: what the store holds)
        self._start_log(epoch, restored)
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
        if self.insecure:
            log.warning(
                "gossip on %s is NOT authenticated (--insecure-gossip): anyone who reaches"
                " it can forge members and broadcasts; use --keyring",
                cfg.bind,
            )
        if self.store is None:
            log.warning(
                "state is kept in memory only (no --data-dir): after a restart this node"
                " neither resumes its delivery cursor nor catches up on what it missed"
            )
        else:
            log.info(
                "state in %s (fsync %s): %s",
                cfg.data_dir,
                cfg.fsync,
                "resumed" if restored is not None else "new; this node starts where its peers are",
                extra={"fields": {"data_dir": cfg.data_dir, "epoch": epoch}},
            )
        log.debug(
            "effective configuration",
            extra={
                "fields": {
                    "plumtree": describe(protocol.plumtree),
                    "swim": describe(protocol.swim),
                }
            },
        )
        seeds = list(cfg.join)
        if self.store is not None:
            # a restarted node finds its cluster again without --join (serf's snapshot)
            seeds += [a for n, a in self.store.members().items() if n != cfg.name]
        if seeds:
            self.stack.join(seeds, now)
        self._pump()

    def _open_store(self) -> NodeState | None:
        """The durable state to resume from (None: first start, or memory only)."""
        cfg = self.config
        if cfg.data_dir is None:
            return None
        from plumtree.store import InlineWriter, NodeStore, Retention, StoreWriter

        pt = cfg.protocol.plumtree
        retention = Retention(pt.retention_bytes, pt.retention_age, pt.retention_messages)
        store = NodeStore.open(
            cfg.data_dir, cfg.name, retention, "full" if cfg.fsync == "full" else "normal"
        )
        try:
            restored = store.load(time.time())
            from plumtree.runtime.persistence import Persistence

            assert self._loop is not None
            # fsync full waits for the disk: a thread then; else commits are short and
            # the loop makes them itself (see InlineWriter)
            writer = StoreWriter(store) if cfg.fsync == "full" else InlineWriter(store)
            self.persistence = Persistence(
                writer,
                self._loop,
                lambda every: self.plumtree.take_dirty_streams(every),
                self._on_durable,
                cfg.commit_interval,
            )
        except BaseException:
            store.close()
            raise
        self.store = store
        return restored

    def _choose_epoch(self, restored: NodeState | None) -> tuple[NodeState | None, int]:
        """Our epoch: the saved one after a clean stop, else a new one.

        A broadcast leaves at once and is acknowledged once durable, so a process that
        died may have sent seqs its store never saw; numbering on after the saved ones
        would reuse them (peers would take the new messages for duplicates). A new
        epoch never collides; the old one becomes a stream like any other, and what
        peers hold of it is repaired to us. The store's clean mark is durable before
        the first broadcast (``mark_running``), so a machine crash counts as unclean.
        """
        store = self.store
        if store is None:
            return None, _new_epoch()
        name = self.config.name
        if restored is None:
            epoch = _new_epoch()
            store.begin_epoch(name, epoch)
        elif store.clean:
            epoch = restored.epoch
        else:
            epoch = max(_new_epoch(), restored.epoch + 1)
            log.warning(
                "the last run of node %s did not stop cleanly: broadcasting in a new epoch"
                " (%d); what peers hold of the old one (%d) is repaired like any stream",
                name,
                epoch,
                restored.epoch,
                extra={"fields": {"epoch": epoch, "previous_epoch": restored.epoch}},
            )
            store.begin_epoch(name, epoch)
            restored = replace(restored, epoch=epoch)
        store.mark_running()
        return restored, epoch

    def _start_log(self, epoch: int, restored: NodeState | None) -> None:
        store = self.store
        if store is None:
            self.log = DeliveryLog(epoch)
            return
        cursor = restored.cursor if restored is not None else 0
        # the log outlives epochs: its id is the store's
        log_id = store.log_id if store.log_id is not None else epoch
        self.log = DeliveryLog(log_id, cursor, store.deliveries, store.oldest_cursor)

    def _close_store(self, clean: bool = False) -> None:
        """``clean``: everything this run sent is durable, so the next run may go on in
        our epoch (see ``_choose_epoch``)."""
        if self.persistence is not None:
            self.persistence.close()
            writer = self.persistence.writer
            writer.close()
            self.persistence = None
            if writer.alive:
                # still committing (a stuck disk): closing the store under it would lose
                # its batch; the process ends soon anyway, and the lock with it
                log.error("store writer did not finish; leaving the store open")
                self.store = None
                return
        if self.store is not None:
            self.store.close(clean=clean)
            self.store = None

    async def leave(self, timeout: float = 2.0) -> None:
        """Announce a graceful leave and give it time to spread (bounded)."""
        if self.swim is None or self.swim.left:
            return
        loop = asyncio.get_running_loop()
        self.events.publish({"kind": "leaving", "at": time.time(), "node": self.name})
        self.stack.leave(self._now())
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
        if self._timer is not None:
            self._timer.cancel()
        for sub in list(self.events.subscribers):
            sub.offer({"kind": "stream_end", "level": "error", "at": time.time()})
        self.log.close()
        self.key_queries.close()
        self.queries.close()
        await self.handlers.close()
        if self.admin is not None:
            await self.admin.stop()
        await self.transport.close()
        if self.persistence is not None:
            # what is gathered and queued is committed (bounded): a clean stop loses
            # nothing; what commits after this is not announced (we are stopping)
            self.persistence.commit(streams=True)
            self.persistence.close()
            await asyncio.get_running_loop().run_in_executor(
                None, self.persistence.writer.close, timeout
            )
            # (the writer's last callbacks ran before this await returned: FIFO loop)
        self._close_store(clean=self.persistence is not None and self.persistence.settled)
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(RuntimeError("node is not running"))
        log.info("node %s stopped", self.name)
        self.stopped.set()

    # ------------------------------------------------------------------ application API

    def broadcast(self, payload: bytes) -> str:
        """Broadcast ``payload`` (it leaves at once); returns the message id (hex). With a
        store, ``publish`` also waits until it is durable."""
        self._check_running()
        persistence = self.persistence
        if persistence is not None and persistence.failing:
            raise StoreUnavailable(f"the store cannot commit: {persistence.last_error}")
        msg_id = self.stack.broadcast(payload, self._now())
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

    async def publish(self, payload: bytes) -> str:
        """Broadcast and return once the message is durable in our store (at once
        without one): what the HTTP API acknowledges."""
        hexid = self.broadcast(payload)
        if self.persistence is None:
            return hexid
        seq = int(hexid[2 * STREAM_KEY_LEN :], 16)
        if self.acked >= seq:
            return hexid
        assert self._loop is not None
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append((seq, waiter))
        await waiter
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
        persistence = self.persistence
        failing = persistence is not None and persistence.failing
        error = (persistence.last_error or "commit failed") if failing and persistence else None
        return self.plumtree.health(self._now(), store_error=error)

    def score_rates(self) -> dict[str, float | None]:
        """The health score's inputs over the node's recent window (``/v1/health``'s
        ``rates``): one request answers ``plumctl health`` without two scrapes."""
        self._check_running()
        return self.plumtree.score_rates(self._now())

    def message(self, hexid: str) -> dict[str, Any]:
        """What this node knows of a message id (raises ValueError on a malformed id)."""
        self._check_running()
        msg_id = parse_id(hexid)
        tree = self.plumtree
        stream, seq = tree.locate(msg_id)
        entry = tree.lookup(msg_id)
        doc: dict[str, Any] = {
            "id": hexid,
            "delivered": False,
            "lost": False,
            "missing": False,
            "at": None,
            "hops": None,
            "from": None,
            "origin": None,
            "epoch": None,
            "seq": seq,
            "pending": tree.is_pending(msg_id),
        }
        if stream is None:
            return doc
        doc["origin"] = stream.origin
        doc["epoch"] = stream.epoch
        doc["lost"] = stream.is_lost(seq)
        if stream.settled_unknown(seq) and entry is None and tree.stored(msg_id) is None:
            doc["lost"] = None  # settled long ago; whether delivered or lost is forgotten
            doc["delivered"] = None
            return doc
        if stream.delivered(seq):
            doc["delivered"] = True
            stored = tree.stored(msg_id)
            if entry is not None:
                doc.update(at=self._wall(entry.at), hops=entry.hops, **{"from": entry.parent})
            elif stored is not None:
                doc.update(at=self._wall(stored.at), hops=stored.hops)
        elif not stream.has(seq) and seq <= stream.head:
            doc["missing"] = True
        return doc

    def vector(self) -> dict[str, Any]:
        """Per stream: what this node delivered, lacks, and gave up (``plumctl audit``)."""
        self._check_running()
        tree = self.plumtree
        own = tree.own_stream
        streams = []
        for s in tree.streams:
            if not s.head and not s.wm:
                continue
            streams.append(
                {
                    "origin": s.origin,
                    "epoch": s.epoch,
                    "own": s is own,
                    "delivered": s.wm,
                    "above": [[lo, hi] for lo, hi in s.above],
                    "head": s.head,
                    "acked": (self.acked if self.persistence is not None else s.wm)
                    if s is own
                    else None,
                    "floor": s.floor,
                    "missing": s.missing(),
                    "lost": s.lost_total,
                    "lost_ranges": [[lo, hi] for lo, hi in s.lost],
                }
            )
        return {
            "kind": "Vector",
            "node": self.name,
            "epoch": tree.epoch,
            "durable": self.durable,
            # origin -> highest epoch retired here: finished, forgotten, refused if replayed
            "retired": dict(tree.streams.retired),
            "missing": sum(x["missing"] for x in streams),
            "lost": sum(x["lost"] for x in streams),
            "streams": streams,
        }

    def status(self) -> dict[str, Any]:
        self._check_running()
        cfg = self.config
        counts: dict[str, int] = {"alive": 0, "suspect": 0, "dead": 0, "left": 0}
        for m in self.swim.members():
            counts[m.state] = counts.get(m.state, 0) + 1
        store: dict[str, Any] | None = None
        if self.store is not None and self.persistence is not None:
            store = {
                "data_dir": cfg.data_dir,
                "fsync": cfg.fsync,
                "errors": self.persistence.errors,
                "last_error": self.persistence.last_error,
                "backlog": self.persistence.writer.pending,
                **self.store.stats(),  # rows, bytes, commits, ...
            }
        return {
            "name": self.name,
            "version": self.version,
            "wire_version": WIRE_VERSION,
            "cluster_label": cfg.label,
            "gossip_addr": self.gossip_addr,
            "admin_url": self.admin_url,
            "uptime_s": round(self._now() - self._started_at, 3),
            "profile": cfg.protocol.profile,
            "gossip_bind": self.gossip_bind,
            "encrypted": cfg.keyring is not None,
            "keyring": self._keyring_state(),
            "insecure_gossip": self.insecure,
            "joined": self.swim.joined or not self.stack.seeds,
            "members": counts,
            "incarnation": self.swim.incarnation,
            "epoch": self.plumtree.epoch,
            "durable": self.durable,
            "store": store,
            "delivery_cursor": self.log.last,
            "config": {
                "plumtree": describe(cfg.protocol.plumtree),
                "swim": describe(cfg.protocol.swim),
            },
        }

    def _keyring_state(self) -> dict[str, Any]:
        """What ``plumctl info`` shows of the keyring: never a key, only fingerprints."""
        if self.keys is None:
            return {"enabled": False, "keys": 0, "primary": None, "file": None}
        ring = self.keys.keyring.keys
        return {
            "enabled": True,
            "keys": len(ring),
            "primary": fingerprint(ring[0]),
            "file": self.keys.path,
        }

    # ------------------------------------------------------------------ plumbing

    def _check_running(self) -> None:
        if self.swim is None or self._stopping:
            raise RuntimeError("node is not running")

    def _now(self) -> float:
        """The cores' clock: ``time.monotonic()``, never behind a timer that fired.

        Not ``loop.time()``: uvloop's ticks once a millisecond and is read once per loop
        iteration, so probe RTTs came out as 0 or 1 ms and delivery times (``at``, and
        the latencies ``broadcast --wait`` derives from them) went up to a millisecond
        backwards between nodes. Both clocks are CLOCK_MONOTONIC on Linux, so deadlines
        taken from this one still arm ``loop.call_at`` correctly (to the millisecond)."""
        now = time.monotonic()
        if now < self._clock_floor:
            return self._clock_floor
        self._clock_floor = now
        return now

    def _wall(self, core_time: float) -> float:
        return round(core_time + self._clock_offset, 6)

    def _on_envelope(self, envelope: Envelope, source: str, reliable: bool) -> None:
        if self._stopping or self.stack is None:
            return
        stack = self.stack
        stack.receive(source, envelope.sender, envelope.messages, reliable, self._now())
        if stack.key_inbox:
            batch = stack.take_key_messages()
            keys = [item for item in batch if type(item[2]) in KEY_TYPE_SET]
            if keys:
                self.key_queries.receive(keys)
            if len(keys) < len(batch):
                self.queries.receive([item for item in batch if type(item[2]) not in KEY_TYPE_SET])
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
        self.stack.handle_timer(self._now())
        self._pump()

    def _pump(self) -> None:
        """Move everything the stack produced to the sockets, the application and the
        store. Sending makes no core output, and events are handled after what made
        them was sent (an application's on_deliver that broadcasts pumps by itself)."""
        stack, transport = self.stack, self.transport
        for out in stack.take_outgoing():
            if out.reliable:
                transport.send_reliable(out.addr, out.messages)
            else:
                transport.send_datagram(out.addr, out.messages)
        for event in stack.take_events():
            if type(event) is ev.Delivered:
                self._deliver(event)
            else:
                self._event(event)
        persistence = self.persistence
        if persistence is not None:
            # someone in this process waits on each delivery: commit now, not soon
            # (handlers are not waited on: they take deliveries at the group commit's pace)
            persistence.poke(urgent=self.on_deliver is not None or bool(self._subscribers))
            self.plumtree.accepting = not persistence.paused
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self._stopping or self._loop is None:
            return
        deadline = self.stack.next_deadline()
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _event(self, event: ev.Event) -> None:
        """Log, persist and publish a non-delivery event."""
        doc = _event_doc(event, self._clock_offset + self._now())
        persistence = self.persistence
        match event:
            case ev.MemberJoined(name=name) | ev.MemberAlive(name=name):
                if persistence is not None and name != self.name:
                    member = self.swim.table.get(name)
                    persistence.member(name, member.addr if member is not None else None)
                how = "joined" if isinstance(event, ev.MemberJoined) else "is alive again"
                log.info("member %s %s", name, how, extra={"fields": {"member": name}})
            case ev.MemberFailed(name=name) | ev.MemberLeft(name=name) | ev.MemberReaped(name=name):
                member = self.swim.table.get(name)
                if member is not None:
                    self.transport.close_link(member.addr)
                if persistence is not None and not isinstance(event, ev.MemberFailed):
                    persistence.member(name, None)  # failed members may come back
                how = {ev.MemberFailed: "failed", ev.MemberLeft: "left", ev.MemberReaped: "reaped"}[
                    type(event)
                ]
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
            case ev.NameConflict(name=name, addr=addr, claimed_addr=claimed):
                log.warning(
                    "refused a claim to the name %s from %s: a live member holds it at %s",
                    name,
                    claimed,
                    addr,
                    extra={"fields": {"member": name, "addr": addr, "claimed_addr": claimed}},
                )
            case ev.NameTaken(name=name, addr=addr, seed=seed):
                self.fatal = (
                    f"name {name!r} is taken: a live member at {addr} holds it (so says"
                    f" {seed}); start this node with another --name"
                )
                log.error("%s", self.fatal, extra={"fields": {"addr": addr, "seed": seed}})
                if self._loop is not None and self._fatal_stop is None:
                    # not one of them: nothing to leave, nobody to tell
                    self._fatal_stop = self._loop.create_task(self.stop(leave=False))
            case ev.Refuted(incarnation=incarnation, by=by):
                log.info("refuted a suspicion by %s with incarnation %d", by, incarnation)
            case ev.JoinPending(seeds=seeds, attempt=attempt, retry_in=retry_in):
                log.warning(
                    "cannot join through %s yet (attempt %d); retrying in %.1fs",
                    ", ".join(seeds),
                    attempt,
                    retry_in,
                    extra={"fields": {"seeds": seeds, "attempt": attempt}},
                )
            case ev.Joined(alive=alive):
                log.info("joined the cluster (%d members alive)", alive)
            case ev.Isolated(seeds=seeds):
                log.warning(
                    "alone: no member besides this node is alive; rejoining through %s",
                    ", ".join(seeds),
                    extra={"fields": {"seeds": seeds}},
                )
            case ev.Reconciled(added=added, removed=removed):
                log.info("reconciled peers with membership: +%d -%d", added, removed)
            case ev.MessagesLost(origin=origin, epoch=epoch, first=first, last=last, count=count):
                log.warning(
                    "lost %d message(s) of %s (epoch %d, seq %d-%d): %s",
                    count,
                    origin,
                    epoch,
                    first,
                    last,
                    "no reachable member holds them any more"
                    if event.reason == "unavailable"
                    else "too many gaps open at once",
                    extra={
                        "fields": {
                            "origin": origin,
                            "epoch": epoch,
                            "first": first,
                            "last": last,
                            "reason": event.reason,
                        }
                    },
                )
            case ev.OwnSeqsSkipped(epoch=epoch, first=first, last=last):
                log.warning(
                    "peers hold this node's own seqs %d-%d (epoch %d) that its store lacks"
                    " (a data dir restored from an older copy?): numbering after them",
                    first,
                    last,
                    epoch,
                    extra={"fields": {"epoch": epoch, "first": first, "last": last}},
                )
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
        if self.handlers:
            self._member_handlers(event)
        self.events.publish(doc)

    def _member_handlers(self, event: ev.Event) -> None:
        """A membership change to the ``member-*`` handlers (serf's event names)."""
        match event:
            case ev.MemberJoined(name=name) | ev.MemberAlive(name=name):
                kind = "member-join"
            case ev.MemberUpdated(name=name):
                kind = "member-update"
            case ev.MemberFailed(name=name):
                kind = "member-failed"
            case ev.MemberLeft(name=name):
                kind = "member-leave"
            case ev.MemberReaped(name=name):
                kind = "member-reap"
            case _:
                return
        if name == self.name or not self.handlers.wants(kind):
            return
        member = self.swim.member(name)
        addr = member.addr if member is not None else ""
        state = member.state if member is not None else ""
        tags = {k: v for k, v in member.meta.items() if k != "admin"} if member else {}
        env = {
            **self.handler_env(),
            "PLUMTREE_MEMBER_NAME": name,
            "PLUMTREE_MEMBER_ADDR": addr,
            "PLUMTREE_MEMBER_STATE": state,
        }
        self.handlers.offer(kind, env, member_line(name, addr, state, tags))

    def _log_evictions(self, count: int) -> None:
        """One INFO line per interval, not one per message, while the store is full."""
        self._evicted_unlogged += count
        now = self._now()
        if now - self._evictions_logged_at >= EVICTION_LOG_INTERVAL:
            log.info(
                "store full: dropped %d payloads before their retention age (since last report)",
                self._evicted_unlogged,
                extra={"fields": {"evicted": self._evicted_unlogged}},
            )
            self._evicted_unlogged = 0
            self._evictions_logged_at = now

    def _deliver(self, event: ev.Delivered) -> None:
        hexid: str | None = None
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
                        "cursor": event.cursor,
                    }
                },
            )
        wall = self._wall(event.at)
        record = DeliveryRecord(
            event.cursor,
            event.origin,
            event.epoch,
            event.seq,
            event.hops,
            event.sender,
            wall,
            event.payload,
        )
        persistence = self.persistence
        if persistence is not None:
            # our own broadcast of this epoch: acknowledged once this record is
            # durable; the application gets every delivery once durable too (what it
            # saw, a restart neither takes back nor numbers again)
            own = event.hops == 0 and event.origin == self.name
            persistence.delivery(
                record, event.seq if own and event.epoch == self.plumtree.epoch else 0
            )
        else:
            self.log.append_one(record)
            if self._handing_over:  # (node start without handlers: nobody)
                self._hand_over(_delivery(record, hexid or format_id(event.id)))
        # rendered only if someone reads it (see EventHub.publish_deferred); the record
        # leaves the payload out, so the ring never holds payloads alive
        self.events.publish_deferred(
            (event.id, event.at, event.hops, event.origin, event.sender, len(event.payload)),
            self._render_delivered,
        )

    def _on_durable(self, entries: list[DeliveryRecord], own_seq: int) -> None:
        """A batch is committed: its deliveries join the log; our own broadcasts in it
        are acknowledged."""
        if self._stopping or self.stack is None:
            return
        self.log.append(entries)
        if self._handing_over:
            for record in entries:
                self._hand_over(_delivery(record, record.id))
        if own_seq > self.acked:
            self.acked = own_seq
            waiters = self._waiters
            while waiters and waiters[0][0] <= own_seq:
                _, waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)

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

    def handler_env(self) -> dict[str, str]:
        """What every handler run is told of this node (tags as they are now)."""
        return {
            "PLUMTREE_SELF_NAME": self.name,
            "PLUMTREE_SELF_ADDR": self.gossip_addr,
            **tag_env(self.config.tags),
        }

    @property
    def _handing_over(self) -> bool:
        """Someone in this process takes deliveries: a callback, an iterator, a handler."""
        return self.on_deliver is not None or bool(self._subscribers) or bool(self.handlers)

    def _hand_over(self, delivery: Delivery) -> None:
        """To the application: its callback, every ``deliveries()`` iterator and the
        ``delivery`` handlers (each once: this runs once per delivery per process)."""
        hexid = delivery.id
        if self.handlers.wants("delivery"):
            env = {
                **self.handler_env(),
                "PLUMTREE_ORIGIN": delivery.origin,
                "PLUMTREE_MESSAGE_ID": hexid,
                "PLUMTREE_CURSOR": str(delivery.cursor),
                "PLUMTREE_SENDER": delivery.sender,
                "PLUMTREE_HOPS": str(delivery.hops),
            }
            self.handlers.offer("delivery", env, delivery.payload)
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


def _delivery(record: DeliveryRecord, hexid: str) -> Delivery:
    return Delivery(
        hexid,
        record.payload or b"",
        record.origin,
        record.sender,
        record.hops,
        record.at,
        record.cursor,
        record.epoch,
        record.seq,
    )


def _new_epoch() -> int:
    """A start without a store: microseconds since the epoch, so a node's epochs grow."""
    return time.time_ns() // 1000


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
