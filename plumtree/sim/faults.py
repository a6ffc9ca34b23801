"""Fault scenarios on the node's own stack (``--membership swim``), with exact accounting.

N nodes join, then broadcast at a steady rate from random live origins while a fault
hits some of them; then the stream stops and the cluster settles. Every delivery of
every node is counted per message, so the report says exactly what the promise says:

* ``duplicates_delivered``: deliveries beyond the first of a message to the same
  application (a restart with its store is the same application; one without it is a
  new one, owed only what is broadcast after it started);
* ``lost``: messages nodes gave up and counted (nobody reachable held them any more);
* ``missing``: messages nodes know exist and have not delivered yet (being repaired);
* ``undelivered``: owed, yet neither delivered nor counted lost nor known missing: a
  silent loss, which must never happen;
* ``history_redelivered``: messages broadcast before a restart without the store,
  which the old process may have delivered, delivered again to the new application
  (it should start where its peers are; what came while it was down may or may not).

Faults (a fraction of the nodes, never node 0, for ``fault_duration`` seconds):

* ``freeze``: the processes stop (SIGSTOP): what reaches them waits, their timers fire
  late, all at once when they wake;
* ``partition``: the fraction is cut off from the rest (both sides go on broadcasting);
* ``restart``: kill -9, then a restart from the node's store (its state as of the crash);
* ``churn``: nodes crash and come back one after another all along the fault, half from
  their store, half without it (a new epoch, a new application).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

from plumtree.core import events as ev
from plumtree.core.state import NodeState
from plumtree.sim.scenario import SimParams, SimReport, asdict_params, empty_result
from plumtree.sim.swim_stack import SwimCluster

FAULTS = ("freeze", "partition", "restart", "churn")
#: seconds of steady stream before the fault, and after it before the stream stops
LEAD = 5.0
TAIL = 5.0
#: simulated seconds the cluster gets to settle after the stream stops
SETTLE_LIMIT = 120.0


@dataclass
class _Message:
    sent_at: float
    origin: int
    #: per node: deliveries to its current application
    got: dict[int, int] = field(default_factory=dict)


class _Ledger:
    """Every delivery of every node, per message; what each application is owed."""

    def __init__(self, n: int) -> None:
        self.messages: dict[bytes, _Message] = {}
        #: per node: when its current application started (a restart without the store
        #: starts a new one; with the store it is the same application)
        self.app_since = [math.inf] * n
        #: per node: when its previous application ended (killed), for history
        self.old_app_until = [-math.inf] * n
        self.duplicates = 0
        self.history_redelivered = 0
        self.repaired = 0
        self.latest: dict[int, float] = {}

    def on_event(self, i: int, event: ev.Event, now: float) -> None:
        if type(event) is not ev.Delivered:
            return
        msg = self.messages.get(event.id)
        if msg is None:
            return  # not one of the measured broadcasts
        if msg.sent_at < self.app_since[i]:
            # a new application (a restart without the store) is not owed history: it
            # should start where its peers are, not be sent everything again. What was
            # broadcast while it was down may come (its start point is its first peer's
            # vector); what its old process may have seen must not
            if msg.sent_at < self.old_app_until[i]:
                self.history_redelivered += 1
            return
        seen = msg.got.get(i, 0)
        if seen:
            self.duplicates += 1
        msg.got[i] = seen + 1
        if event.repaired:
            self.repaired += 1
        self.latest[i] = now


class FaultCluster(SwimCluster):
    """A :class:`SwimCluster` whose nodes can be frozen, cut off, killed and restarted."""

    def __init__(self, params: SimParams) -> None:
        super().__init__(params)
        self.ledger = _Ledger(self.n)
        inner = self.recorder.on_event

        def on_event(i: int, event: ev.Event) -> None:
            inner(i, event)
            self.ledger.on_event(i, event, self.sim.now)

        self.sim.on_event = on_event
        self._emit_rebind()
        self.down: set[int] = set()

    def _emit_rebind(self) -> None:
        # the engine's emitter holds the sink it was built with: build it again
        self.sim._emit, self.sim._arm = self.sim._make_emitters()

    def broadcast_from(self, origin: int) -> None:
        sim = self.sim

        def originate(node: Any) -> None:
            msg_id = node.broadcast(self.payload, sim.now)
            self.ledger.messages[msg_id] = _Message(sim.now, origin)

        sim.call(origin, originate)

    def freeze(self, nodes: list[int], until: float) -> None:
        for i in nodes:
            self.network.frozen[i] = until

    def kill(self, i: int) -> NodeState | None:
        """kill -9: the process and its memory are gone; returns what its store held."""
        node = self.nodes[i]
        saved = node.plumtree.snapshot(self.sim.now) if node.plumtree is not None else None
        self.ledger.old_app_until[i] = self.sim.now
        self.network.crashed.add(i)
        node.stop()
        self.down.add(i)
        return saved

    def revive(self, i: int, saved: NodeState | None) -> None:
        """Start node ``i`` again: from its store, or without one (a new application).
        From its store it broadcasts in a new epoch, as the runtime does after a crash
        (its last seqs may have left before they were durable)."""
        if saved is not None:
            saved = replace(saved, epoch=saved.epoch + 1)
        self.network.crashed.discard(i)
        self.down.discard(i)
        sim = self.sim
        seeds = [self.names[j] for j in range(self.n) if j != i and j not in self.down][:3]
        if saved is None:
            self.ledger.app_since[i] = sim.now
            for msg in self.ledger.messages.values():
                msg.got.pop(i, None)  # the old application's deliveries are not its own

        def start(node: Any) -> None:
            node.start(sim.now, seeds, restored=saved, fresh=saved is None)

        sim.call(i, start)


def run_faults(params: SimParams) -> SimReport:
    """Run ``params.fault`` (see the module docstring) and account for every message."""
    if params.fault not in FAULTS:
        raise ValueError(f"fault: expected one of {', '.join(FAULTS)}, got {params.fault!r}")
    t0 = time.perf_counter()
    c = FaultCluster(params)
    c.start_all()
    converged = c.converge()
    sim, rng, n = c.sim, c.rng, c.n
    start = sim.now + 1.0
    for i in range(n):
        c.ledger.app_since[i] = 0.0
    count = max(1, round(params.fault_fraction * n))
    victims = sorted(rng.sample(range(1, n), min(count, n - 1)))
    fault_at = start + LEAD
    fault_end = fault_at + params.fault_duration
    stream_end = fault_end + TAIL
    saved: dict[int, NodeState | None] = {}

    # the stream: every ``interval`` a random node that is up (and awake) broadcasts
    t = start
    while t < stream_end:
        sim.at(t, lambda: _broadcast(c))
        t += params.interval

    if params.fault == "freeze":
        sim.at(fault_at, lambda: c.freeze(victims, fault_end))
    elif params.fault == "partition":
        groups = [1 if i in set(victims) else 0 for i in range(n)]
        sim.at(fault_at, lambda: c.network.partition(groups))
        sim.at(fault_end, lambda: c.network.partition(None))
    elif params.fault == "restart":

        def kill_all() -> None:
            for i in victims:
                saved[i] = c.kill(i)

        def revive_all() -> None:
            for i in victims:
                c.revive(i, saved[i])

        sim.at(fault_at, kill_all)
        sim.at(fault_end, revive_all)
    else:  # churn: one victim after the other, down for a tenth of the fault each
        step = params.fault_duration / len(victims)
        down_for = max(1.0, params.fault_duration / 10)
        for k, i in enumerate(victims):
            at = fault_at + k * step
            keep_store = k % 2 == 0

            def kill_one(i: int = i, keep: bool = keep_store) -> None:
                state = c.kill(i)
                saved[i] = state if keep else None

            def revive_one(i: int = i) -> None:
                c.revive(i, saved[i])

            sim.at(at, kill_one)
            sim.at(at + down_for, revive_one)

    sim.run_until(stream_end)
    # settle: until nothing is missing anywhere (or the limit)
    settle_start = sim.now
    while sim.now < settle_start + SETTLE_LIMIT:
        sim.run_until(sim.now + 1.0)
        if _missing(c) == 0 and not c.down:
            break
    settled_in = sim.now - settle_start
    wall = time.perf_counter() - t0
    return _report(params, c, victims, converged, settled_in, wall)


def _broadcast(c: FaultCluster) -> None:
    now = c.sim.now
    up = [
        i
        for i in range(c.n)
        if i not in c.down and c.network.frozen.get(i, 0.0) <= now and c.nodes[i].stack is not None
    ]
    if up:
        c.broadcast_from(up[c.rng.randrange(len(up))])


def _missing(c: FaultCluster) -> int:
    return sum(
        node.plumtree.streams.missing()
        for i, node in enumerate(c.nodes)
        if i not in c.down and node.plumtree is not None
    )


def _lost(c: FaultCluster) -> int:
    return sum(
        node.plumtree.counters.lost_unavailable + node.plumtree.counters.lost_limit
        for node in c.nodes
        if node.plumtree is not None
    )


def _report(
    params: SimParams,
    c: FaultCluster,
    victims: list[int],
    converged: bool,
    settled_in: float,
    wall: float,
) -> SimReport:
    ledger = c.ledger
    live = [i for i in range(c.n) if i not in c.down]
    owed = delivered = gave_up = known_missing = silent = 0
    for msg_id, msg in ledger.messages.items():
        for i in live:
            if ledger.app_since[i] > msg.sent_at:
                continue  # its application started after this was broadcast
            owed += 1
            if msg.got.get(i):
                delivered += 1
                continue
            tree = c.nodes[i].plumtree
            assert tree is not None
            stream, seq = tree.locate(msg_id)
            if stream is not None and stream.is_lost(seq):
                gave_up += 1
            elif stream is not None and not stream.has(seq) and seq <= stream.head:
                known_missing += 1
            else:
                silent += 1  # neither delivered, nor counted lost, nor known missing
    lost = _lost(c)
    missing = _missing(c)
    extra: dict[str, Any] = {
        "fault": params.fault,
        "fault_nodes": len(victims),
        "fault_duration_s": params.fault_duration,
        "converged": converged,
        "messages": len(ledger.messages),
        "owed_deliveries": owed,
        "delivered_once": delivered,
        "duplicates_delivered": ledger.duplicates,
        "history_redelivered": ledger.history_redelivered,
        "lost": lost,
        "missing": missing,
        "lost_owed": gave_up,
        "missing_owed": known_missing,
        "undelivered": silent,
        "repaired": ledger.repaired,
        "settled_after_s": settled_in,
        "reliability": delivered / owed if owed else 1.0,
        "wall_seconds": wall,
    }
    return SimReport(asdict_params(params), empty_result(wall, c.sim.now), None, 0, extra)
