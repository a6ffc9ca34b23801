"""``--membership swim``: every simulated node runs the node's own stack (core/stack.py).

Each node is a :class:`~plumtree.core.stack.Stack` (address == name): SWIM membership
driving Plumtree, with the runtime's joining, reconciling and routing, so what the
simulator reports is what the runtime does.

The scenario: all nodes start within one second and join through node 0; we measure how
long each takes to see all N members alive. Then the usual broadcasts run (warm-up, then
measured) with the same metrics as the oracle mode; with ``crash`` some nodes crash in the
middle, and we measure how long until every live member marks each of them dead. Any
live node that anybody ever declares dead is a false positive.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Any

from plumtree.core import events as ev
from plumtree.core.config import PlumtreeConfig, ProtocolConfig, SwimConfig
from plumtree.core.dissemination import retransmit_limit
from plumtree.core.ids import MessageId
from plumtree.core.plumtree import Plumtree
from plumtree.core.stack import PLUMTREE_TYPE_SET, Stack
from plumtree.core.state import NodeState
from plumtree.core.suspicion import suspicion_timeout
from plumtree.core.swim import Outgoing, Swim
from plumtree.sim.engine import Simulator
from plumtree.sim.network import LATENCY_PROFILES, Network
from plumtree.sim.scenario import (
    SimParams,
    SimReport,
    _Broadcast,
    _Recorder,
    _run_protocol,
    _summarise,
    _tally,
    asdict_params,
)
from plumtree.sim.stats import percentile

#: Nodes start at uniform times in [0, START_SPREAD).
START_SPREAD = 1.0
#: Give up waiting for convergence after this many simulated seconds.
CONVERGENCE_LIMIT = 60.0

_JOINED = ev.MemberJoined
_ALIVE = ev.MemberAlive
_FAILED = ev.MemberFailed


class SwimStackNode:
    """One simulated node: the engine's surface over a :class:`Stack`."""

    __slots__ = ("config", "name", "rng", "stack", "starts")

    def __init__(
        self, name: str, swim_config: SwimConfig, plumtree_config: PlumtreeConfig, seed: int
    ) -> None:
        self.name = name
        self.config = ProtocolConfig("sim", plumtree_config, swim_config)
        self.rng = random.Random(seed)
        self.stack: Stack | None = None
        #: how often it started: a restart without its store is a new epoch
        self.starts = 0

    # ------------------------------------------------------------ lifecycle

    def start(
        self,
        now: float,
        seeds: list[str],
        restored: NodeState | None = None,
        fresh: bool = False,
    ) -> None:
        """(Re)start the process: from ``restored`` (its store), or without history."""
        self.starts += 1
        self.stack = Stack(
            self.name,
            self.name,
            self.config,
            self.rng,
            now,
            epoch=self.starts,
            restored=restored,
            fresh=fresh,
        )
        if seeds:
            self.stack.join(seeds, now)

    def stop(self) -> None:
        """The process is gone (a crash): it keeps nothing but what ``snapshot`` saved."""
        self.stack = None

    @property
    def swim(self) -> Swim | None:
        return self.stack.swim if self.stack is not None else None

    @property
    def plumtree(self) -> Plumtree | None:
        return self.stack.plumtree if self.stack is not None else None

    @property
    def counters(self) -> Any:
        """Plumtree's counters (what the shared report reads, e.g. graft failures)."""
        return self.stack.plumtree.counters if self.stack is not None else None

    def broadcast(self, payload: bytes, now: float) -> MessageId:
        assert self.stack is not None
        return self.stack.broadcast(payload, now)

    # ------------------------------------------------------------ the engine's surface

    def receive(self, sender: str, message: Any, now: float) -> None:
        stack = self.stack
        if stack is None:
            return  # not started (or crashed): the process is not listening
        if type(message) is Outgoing:
            stack.receive(sender, sender, message.messages, message.reliable, now)
        else:
            stack.receive(sender, sender, (message,), True, now)

    def handle_timer(self, now: float) -> None:
        if self.stack is not None:
            self.stack.handle_timer(now)

    def next_deadline(self) -> float | None:
        return self.stack.next_deadline() if self.stack is not None else None

    def take_outgoing(self) -> list[tuple[str, Any]]:
        if self.stack is None:
            return []
        out: list[tuple[str, Any]] = []
        for o in self.stack.take_outgoing():
            if o.reliable and type(o.messages[0]) in PLUMTREE_TYPE_SET:
                # one by one: the engine counts and times each Plumtree message
                out.extend((o.addr, m) for m in o.messages)
            else:
                out.append((o.addr, o))
        return out

    def take_events(self) -> list[ev.Event]:
        return self.stack.take_events() if self.stack is not None else []


class _SwimRecorder(_Recorder):
    """Broadcast delivery facts plus membership convergence, detection, false positives."""

    def __init__(self, n: int, names: list[str], nodes: list[SwimStackNode]) -> None:
        super().__init__(n)
        self.names = names
        self.nodes = nodes
        self.sim: Simulator | None = None
        self.started_at = [math.nan] * n
        self.converged_at = [math.nan] * n
        self.unconverged = n
        self.crashed_at: dict[str, float] = {}
        self.failed_seen: dict[str, dict[int, float]] = {}
        self.false_positive_names: dict[str, None] = {}
        self.false_positive_events = 0
        self.partition_events = 0

    def on_event(self, i: int, event: ev.Event) -> None:
        kind = type(event)
        if kind is _JOINED or kind is _ALIVE:
            if self.unconverged and self.converged_at[i] != self.converged_at[i]:  # nan
                swim = self.nodes[i].swim
                if swim is not None and swim.alive_count == self.n:
                    assert self.sim is not None
                    self.converged_at[i] = self.sim.now
                    self.unconverged -= 1
        elif kind is _FAILED:
            name: str = event.name  # type: ignore[attr-defined]
            assert self.sim is not None
            if name in self.crashed_at:
                self.failed_seen[name].setdefault(i, self.sim.now)
            else:
                self.false_positive_events += 1
                self.false_positive_names[name] = None
        elif kind is ev.PartitionSuspected:
            self.partition_events += 1
        else:
            super().on_event(i, event)


def detection_bound(swim: SwimConfig, n: int) -> float:
    """memberlist's bound: suspicion timeout plus the time to notice and to disseminate.

    * noticing: up to two probe periods (someone's probe reaches the failed member within
      one period on average, and that probe round fails at the end of the next);
    * the minimum suspicion timeout SuspicionMult * max(1, log10 N) * ProbeInterval
      (reached once SuspicionMult - 2 independent confirmations arrived);
    * dissemination of the Dead: the gossip rounds in which members retransmit it,
      RetransmitMult * ceil(log10(N+1)) * GossipInterval.
    """
    notice = 2.0 * swim.probe_interval
    suspicion = suspicion_timeout(swim.suspicion_mult, n, swim.probe_interval)
    spread = retransmit_limit(swim.retransmit_mult, n) * swim.gossip_interval
    return notice + suspicion + spread


def _pcts(values: list[float]) -> tuple[float | None, float | None, float | None]:
    if not values:
        return None, None, None
    values = sorted(values)
    return percentile(values, 0.5), percentile(values, 0.99), values[-1]


class SwimCluster:
    """N simulated SWIM + Plumtree nodes on one network (what ``run_swim`` drives).

    Tests use it directly to partition, heal, crash and broadcast between measurements.
    """

    def __init__(self, params: SimParams) -> None:
        self.params = params
        n = self.n = params.nodes
        self.swim_config = SwimConfig.preset(params.profile)
        self.plumtree_config = params.plumtree_config()
        self.rng = random.Random(params.seed)
        self.names = [f"n{i:05d}" for i in range(n)]
        self.nodes = [
            SwimStackNode(name, self.swim_config, self.plumtree_config, params.seed * 1_000_003 + i)
            for i, name in enumerate(self.names)
        ]
        profile = LATENCY_PROFILES.get(params.profile, LATENCY_PROFILES["lan"])
        self.network = Network(n, profile, params.loss, params.seed)
        self.slow = sorted(self.rng.sample(range(n), round(params.slow * n)))
        for i in self.slow:
            self.network.slow[i] = 2.0 * self.swim_config.probe_timeout
        self.recorder = _SwimRecorder(n, self.names, self.nodes)
        self.sim = Simulator(list(self.nodes), self.network, self.recorder.on_event)
        self.recorder.sim = self.sim
        self.live = list(range(n))
        self.victims: list[int] = []
        self.payload = bytes(params.payload_size)

    @property
    def now(self) -> float:
        return self.sim.now

    def run_until(self, t: float) -> None:
        self.sim.run_until(t)

    def start_all(self) -> None:
        """Node 0 at t=0, everyone else within START_SPREAD s, joining through node 0."""
        sim = self.sim
        for i in range(self.n):
            at = 0.0 if i == 0 else sim.now + self.rng.uniform(0.0, START_SPREAD)
            self.recorder.started_at[i] = at
            seeds = [self.names[0]] if i else []
            sim.at(at, self._starter(i, seeds))

    def _starter(self, i: int, seeds: list[str]) -> Callable[[], None]:
        sim = self.sim

        def start_node(node: Any) -> None:
            node.start(sim.now, seeds)

        return lambda: sim.call(i, start_node)

    def converge(self, limit: float = CONVERGENCE_LIMIT, step: float = 0.25) -> bool:
        """Run until every node saw all N members alive (or ``limit`` seconds passed)."""
        t = self.sim.now
        end = t + limit
        while self.recorder.unconverged and t < end:
            t += step
            self.sim.run_until(t)
        return not self.recorder.unconverged

    def convergence_times(self) -> list[float]:
        r = self.recorder
        return [c - s for c, s in zip(r.converged_at, r.started_at, strict=True) if c == c]

    def crash(self, count: int) -> list[int]:
        """Crash ``count`` random live nodes (never node 0, the seed)."""
        chosen = self.rng.sample(self.live[1:], min(count, len(self.live) - 1))
        for j in chosen:
            self.recorder.crashed_at[self.names[j]] = self.sim.now
            self.recorder.failed_seen[self.names[j]] = {}
        self.victims.extend(chosen)
        self.network.crashed.update(chosen)
        crashed = self.network.crashed
        self.live[:] = [i for i in self.live if i not in crashed]
        return chosen

    def broadcast(self, origin: int, k: int = -1) -> _Broadcast:
        sim = self.sim
        b = _Broadcast(k, origin, sim.now, len(self.live), bytearray(self.n))

        def originate(node: Any) -> None:
            self.recorder.register(node.broadcast(self.payload, sim.now), b)

        sim.call(origin, originate)
        return b

    def all_detected(self) -> bool:
        live = self.live
        for seen in self.recorder.failed_seen.values():
            if len(seen) < len(live) or any(i not in seen for i in live):
                return False
        return True

    def detection_times(self) -> tuple[list[float], int]:
        """Per victim: time until every live node marked it dead; and how many never."""
        times: list[float] = []
        undetected = 0
        for victim in self.victims:
            name = self.names[victim]
            seen = self.recorder.failed_seen[name]
            if all(i in seen for i in self.live):
                times.append(max(seen[i] for i in self.live) - self.recorder.crashed_at[name])
            else:
                undetected += 1
        return times, undetected

    def alive_views(self) -> dict[int, list[str]]:
        """Per live node: the names it currently sees alive (itself included)."""
        out: dict[int, list[str]] = {}
        for i in self.live:
            swim = self.nodes[i].swim
            if swim is not None:
                out[i] = sorted(m.name for m in swim.alive_members())
        return out


def run_swim(params: SimParams) -> SimReport:
    """The swim-membership scenario (see the module docstring)."""
    t0 = time.perf_counter()
    c = SwimCluster(params)
    sim, recorder, n = c.sim, c.recorder, c.n
    c.start_all()
    c.converge()
    convergence = c.convergence_times()
    converge_wall = time.perf_counter() - t0

    # ---- steady state, then broadcasts (same measurement as the oracle mode)
    pt_cfg = c.plumtree_config
    start = sim.now + 1.0 + params.duration
    total = params.warmup + params.broadcasts
    crash_index = params.warmup + params.broadcasts // 2 if params.crash else -1
    rng = c.rng

    def broadcast(k: int) -> None:
        c.broadcast(c.live[rng.randrange(len(c.live))], k)

    def crash() -> None:
        c.crash(max(1, round(params.crash * n)))

    baseline: dict[str, int] = {}
    sim.at(
        start + params.warmup * params.interval - 1e-9, lambda: baseline.update(sim.sent_by_type)
    )
    for k in range(total):
        if k == crash_index:
            sim.at(start + k * params.interval - params.interval / 2, crash)
        sim.at(start + k * params.interval, _bind(broadcast, k))
    drain = (
        pt_cfg.ihave_interval
        + pt_cfg.ihave_timeout
        + pt_cfg.graft_timeout
        * sum(min(2.0**a, pt_cfg.graft_backoff_cap) for a in range(pt_cfg.graft_max_retries + 1))
    )
    end = start + total * params.interval + max(2.0, drain + 1.0)
    sim.run_until(end)
    bound = detection_bound(c.swim_config, n)
    if c.victims:
        # keep going until every live member marked every victim dead (or clearly never)
        limit = min(recorder.crashed_at.values()) + 3.0 * bound + 60.0
        while sim.now < limit and not c.all_detected():
            sim.run_until(sim.now + 1.0)
        end = max(end, sim.now)
    wall = time.perf_counter() - t0

    measured = [b for b in recorder.ordered if b.index >= params.warmup]
    sent = {k: v - baseline.get(k, 0) for k, v in sim.sent_by_type.items()}
    result = _summarise(
        params, measured, _tally(sim, list(c.nodes), c.live), c.live, crash_index, wall, end, sent
    )
    flood = None
    if params.flood:
        ftotal = min(total, params.warmup + params.flood_broadcasts)
        flood = _run_protocol(params, "flood", ftotal)

    detection, undetected = c.detection_times()
    c50, c99, cmax = _pcts(convergence)
    d50, d99, dmax = _pcts(detection)
    swims = [node.swim for node in c.nodes if node.swim is not None]
    extra: dict[str, Any] = {
        "convergence_p50_s": c50,
        "convergence_p99_s": c99,
        "convergence_max_s": cmax if not recorder.unconverged else None,
        "converged_nodes": n - recorder.unconverged,
        "convergence_wall_seconds": converge_wall,
        "detection_p50_s": d50,
        "detection_p99_s": d99,
        "detection_max_s": dmax,
        "detection_bound_s": bound,
        "undetected": undetected,
        "false_positives": len(recorder.false_positive_names),
        "false_positive_events": recorder.false_positive_events,
        "partition_events": recorder.partition_events,
        "slow_nodes": len(c.slow),
        "swim_packets": sum(s.counters.packets_sent for s in swims),
        "swim_probe_failures": sum(s.counters.probe_failures for s in swims),
        "swim_suspicions": sum(s.counters.suspicions for s in swims),
        "swim_refutations": sum(s.counters.refutations for s in swims),
        "swim_pushpull_exchanges": sum(s.counters.pushpull_exchanges for s in swims),
        "swim_max_health_score": max((s.local_health() for s in swims), default=0),
    }
    return SimReport(asdict_params(params), result, flood, len(c.victims), extra)


def _bind(fn: Callable[[int], None], k: int) -> Callable[[], None]:
    return lambda: fn(k)
