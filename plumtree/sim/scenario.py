"""Broadcast scenarios: N nodes, B broadcasts from random origins, optional faults.

Reports the paper's metrics (reliability, RMR, LDH) plus latency, control overhead and
Graft activity, and runs the eager-flood baseline on the same overlay and seed.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from plumtree.core import events as ev
from plumtree.core.config import PlumtreeConfig, SwimConfig
from plumtree.core.plumtree import Plumtree
from plumtree.sim import parallel
from plumtree.sim.engine import SimNode, Simulator
from plumtree.sim.flood import FloodNode
from plumtree.sim.network import LATENCY_PROFILES, Network
from plumtree.sim.overlay import random_overlay, repair
from plumtree.sim.stats import mean, percentile


@dataclass(frozen=True, slots=True)
class SimParams:
    """One simulated run. Times are simulated seconds."""

    nodes: int = 200
    broadcasts: int = 100
    warmup: int = 20
    loss: float = 0.0
    crash: float = 0.0
    profile: str = "lan"
    seed: int = 1
    interval: float = 0.25
    degree: int = 5
    detection_delay: float | None = None
    payload_size: int = 64
    membership: str = "oracle"
    flood: bool = True
    flood_broadcasts: int = 30
    #: 0: any live node originates; k: only the first k nodes do (1: a single sender)
    origins: int = 0
    plumtree: PlumtreeConfig | None = None
    #: swim membership only: fraction of nodes whose processing is delayed by 2x the
    #: probe timeout, and simulated seconds of steady state before the broadcasts
    slow: float = 0.0
    duration: float = 0.0
    #: processes to split an oracle-membership run across (0: as many as pay off here,
    #: see ``parallel.default_parts``); the report is the same whatever the split
    workers: int = 0
    #: a fault scenario on the node's own stack (see ``plumtree.sim.faults``): freeze,
    #: partition, restart or churn, on this fraction of the nodes, for this long
    fault: str = ""
    fault_fraction: float = 0.05
    fault_duration: float = 30.0

    def plumtree_config(self) -> PlumtreeConfig:
        return self.plumtree or PlumtreeConfig.preset(self.profile)

    def detection(self) -> float:
        """Default: memberlist's minimum suspicion timeout for this cluster size."""
        if self.detection_delay is not None:
            return self.detection_delay
        swim = SwimConfig.preset(self.profile)
        return swim.suspicion_mult * max(1.0, math.log10(self.nodes)) * swim.probe_interval


@dataclass(slots=True)
class _Broadcast:
    index: int
    origin: int
    sent_at: float
    live: int
    delivered: bytearray
    count: int = 0
    duplicates: int = 0
    max_hops: int = 0
    last_at: float = 0.0
    grafts: int = 0
    msg_id: bytes = b""
    #: when each relayed copy (hops > 0) was delivered, in the order seen
    times: list[float] = field(default_factory=list)

    def absorb(self, other: _Broadcast) -> None:
        """Add what another part of a split run saw of the same message (other nodes)."""
        for i, got in enumerate(other.delivered):
            if got:
                self.delivered[i] = 1
        self.count += other.count
        self.duplicates += other.duplicates
        self.max_hops = max(self.max_hops, other.max_hops)
        self.last_at = max(self.last_at, other.last_at)
        self.grafts += other.grafts
        self.times.extend(other.times)


class _Recorder:
    """Collects per-broadcast delivery facts from the event stream.

    With ``strays``, facts about a message nobody registered here (one another part of a
    split run originated) go to a record of its own, to be merged with the original.
    """

    def __init__(self, n: int, strays: bool = False) -> None:
        self.n = n
        self.by_id: dict[bytes, _Broadcast] = {}
        self.ordered: list[_Broadcast] = []
        self.strays: list[_Broadcast] | None = [] if strays else None

    def register(self, msg_id: bytes, b: _Broadcast) -> None:
        b.msg_id = msg_id
        self.by_id[msg_id] = b
        self.ordered.append(b)

    def _record(self, msg_id: bytes) -> _Broadcast | None:
        b = self.by_id.get(msg_id)
        if b is None and self.strays is not None:
            b = self.by_id[msg_id] = _Broadcast(-1, -1, math.nan, 0, bytearray(self.n))
            b.msg_id = msg_id
            self.strays.append(b)
        return b

    def on_event(self, i: int, event: ev.Event) -> None:
        kind = type(event)
        if kind is ev.Delivered:
            b = self.by_id.get(event.id)  # type: ignore[attr-defined]
            if b is None:
                b = self._record(event.id)  # type: ignore[attr-defined]
                if b is None:
                    return
            if b.delivered[i]:
                b.duplicates += 1
                return
            b.delivered[i] = 1
            b.count += 1
            at = event.at  # type: ignore[attr-defined]
            if at > b.last_at:
                b.last_at = at
            hops = event.hops  # type: ignore[attr-defined]
            if hops:
                b.times.append(at)
                if hops > b.max_hops:
                    b.max_hops = hops
        elif kind is ev.GraftSent:
            for msg_id in event.ids:  # type: ignore[attr-defined]
                b = self._record(msg_id)
                if b is not None:
                    b.grafts += 1


@dataclass(slots=True)
class _Tally:
    """Run-wide totals the summary needs besides the broadcasts."""

    gossip_by_id: dict[bytes, int]
    events: int
    graft_failures: int
    lost: int = 0
    missing: int = 0


def _tally(sim: Simulator, nodes: list[Any], live: list[int] | None = None) -> _Tally:
    lost, missing = _exactness(nodes, live)
    return _Tally(sim.gossip_by_id, sim.processed, _graft_failures(nodes), lost, missing)


def _exactness(nodes: list[Any], live: list[int] | None = None) -> tuple[int, int]:
    """(messages given up, messages known and not delivered yet) over the nodes (the
    live ones only for what is missing: a crashed node's gaps are nobody's concern)."""
    lost = missing = 0
    alive = None if live is None else set(live)
    for i, node in enumerate(nodes):
        tree = getattr(node, "plumtree", node)
        counters = getattr(tree, "counters", None)
        streams = getattr(tree, "streams", None)
        if counters is None or streams is None:
            continue
        lost += counters.lost_unavailable + counters.lost_limit
        if alive is None or i in alive:
            missing += streams.missing()
    return lost, missing


def _graft_failures(nodes: list[Any]) -> int:
    return sum(
        getattr(getattr(node, "counters", None), "graft_failed", 0)
        for node in nodes
        if node is not None
    )


@dataclass(frozen=True, slots=True)
class ProtocolResult:
    reliability: float
    reliability_min: float
    rmr: float
    ldh: float
    ldh_max: int
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    last_delivery_p50_ms: float
    last_delivery_p99_ms: float
    duplicates_delivered: int
    messages: dict[str, int]
    gossip_messages: int
    control_overhead: float
    broadcasts_to_heal: int | None
    reliability_after_heal: float | None
    graft_failures: int
    events: int
    sim_seconds: float
    wall_seconds: float
    #: processes the run was split across (the numbers above do not depend on it)
    workers: int = 1
    #: exact accounting at the end: messages nodes gave up (counted lost), and messages
    #: they know exist and have not delivered yet
    lost: int = 0
    missing: int = 0


@dataclass(frozen=True, slots=True)
class SimReport:
    """Everything ``plumctl sim -o json`` prints (flat keys are the stable schema)."""

    params: dict[str, Any]
    plumtree: ProtocolResult
    flood: ProtocolResult | None
    crashed: int
    #: mode-specific flat keys merged into ``as_dict`` (swim: convergence, detection, ...)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        p = self.plumtree
        out: dict[str, Any] = {
            "nodes": self.params["nodes"],
            "broadcasts": self.params["broadcasts"],
            "warmup": self.params["warmup"],
            "profile": self.params["profile"],
            "seed": self.params["seed"],
            "loss": self.params["loss"],
            "crash": self.params["crash"],
            "membership": self.params["membership"],
            "degree": self.params["degree"],
            "crashed": self.crashed,
            "reliability": p.reliability,
            "reliability_min": p.reliability_min,
            "rmr": p.rmr,
            "ldh": p.ldh,
            "ldh_max": p.ldh_max,
            "latency_p50_ms": p.latency_p50_ms,
            "latency_p99_ms": p.latency_p99_ms,
            "latency_max_ms": p.latency_max_ms,
            "last_delivery_p50_ms": p.last_delivery_p50_ms,
            "last_delivery_p99_ms": p.last_delivery_p99_ms,
            "control_overhead": p.control_overhead,
            "gossip_messages": p.gossip_messages,
            "ihave_messages": p.messages.get("IHave", 0),
            "graft_messages": p.messages.get("Graft", 0),
            "prune_messages": p.messages.get("Prune", 0),
            "graft_failures": p.graft_failures,
            "duplicates_delivered": p.duplicates_delivered,
            "lost": p.lost,
            "missing": p.missing,
            "broadcasts_to_heal": p.broadcasts_to_heal,
            "reliability_after_heal": p.reliability_after_heal,
            "events": p.events,
            "sim_seconds": p.sim_seconds,
            "wall_seconds": p.wall_seconds,
            "events_per_second": p.events / p.wall_seconds if p.wall_seconds > 0 else 0.0,
            "workers": p.workers,
        }
        f = self.flood
        out.update(
            {
                "flood_rmr": f.rmr if f else None,
                "flood_ldh": f.ldh if f else None,
                "flood_reliability": f.reliability if f else None,
                "flood_latency_p99_ms": f.latency_p99_ms if f else None,
                "flood_broadcasts": self.params["flood_broadcasts"] if f else 0,
            }
        )
        out.update(self.extra)
        return out


def run(params: SimParams) -> SimReport:
    """Run Plumtree (and the flood baseline) on the same overlay, faults and origins."""
    if params.fault:
        from importlib import import_module

        faults: Any = import_module("plumtree.sim.faults")  # lazily: optional mode
        fault_report: SimReport = faults.run_faults(params)
        return fault_report
    if params.membership != "oracle":
        from importlib import import_module

        swim_stack: Any = import_module("plumtree.sim.swim_stack")  # lazily: optional mode
        report: SimReport = swim_stack.run_swim(params)
        return report
    parts = _parts(params)
    crashed = round(params.crash * params.nodes) if params.crash else 0
    if parts > 1 and params.flood:
        # the flood baseline rides along in part 0, in the time it would wait for the
        # others (see _plumtree_with_flood)
        outs = parallel.run_split(
            parts, lambda part, mesh: _plumtree_with_flood(params, parts, part, mesh)
        )
        plumtree = _merge(params, [pt for pt, _ in outs], parts)
        flood_part = outs[0][1]
        assert flood_part is not None
        return SimReport(asdict_params(params), plumtree, _merge(params, [flood_part], 1), crashed)
    plumtree = _run_protocol(params, "plumtree", params.warmup + params.broadcasts)
    flood = run_flood(params) if params.flood else None
    return SimReport(asdict_params(params), plumtree, flood, crashed)


def empty_result(wall: float, sim_seconds: float) -> ProtocolResult:
    """A result with no broadcast measurements (scenarios that report their own)."""
    return ProtocolResult(
        reliability=1.0,
        reliability_min=1.0,
        rmr=0.0,
        ldh=0.0,
        ldh_max=0,
        latency_p50_ms=0.0,
        latency_p99_ms=0.0,
        latency_max_ms=0.0,
        last_delivery_p50_ms=0.0,
        last_delivery_p99_ms=0.0,
        duplicates_delivered=0,
        messages={},
        gossip_messages=0,
        control_overhead=0.0,
        broadcasts_to_heal=None,
        reliability_after_heal=None,
        graft_failures=0,
        events=0,
        sim_seconds=sim_seconds,
        wall_seconds=wall,
    )


def run_flood(params: SimParams) -> ProtocolResult:
    """The eager-flood baseline of ``run(params)`` alone (its ``report.flood``), e.g. to
    run it in another process; ``params.flood`` is not consulted."""
    return _run_protocol(params, "flood", _flood_total(params))


def _flood_total(params: SimParams) -> int:
    return min(params.warmup + params.broadcasts, params.warmup + params.flood_broadcasts)


def _parts(params: SimParams) -> int:
    parts = params.workers if params.workers > 0 else parallel.default_parts(params.nodes)
    return max(1, min(parts, params.nodes))  # a part with no node would only wait


def asdict_params(params: SimParams) -> dict[str, Any]:
    d = asdict(params)
    d["plumtree"] = None if params.plumtree is None else "custom"
    return d


@dataclass(slots=True)
class _Part:
    """What one part of a run saw (unsplit: the whole run)."""

    registered: list[_Broadcast]
    strays: list[_Broadcast]
    sent: dict[str, int]
    gossip_by_id: dict[bytes, int]
    processed: tuple[int, int]
    graft_failures: int
    crashed: set[int]
    wall: float
    end: float
    lost: int = 0
    missing: int = 0


def _run_protocol(params: SimParams, protocol: str, total: int) -> ProtocolResult:
    parts = _parts(params)
    results = parallel.run_split(
        parts, lambda part, mesh: _run_part(params, protocol, total, parts, part, mesh)
    )
    return _merge(params, results, parts)


def _merge(params: SimParams, results: list[_Part], parts: int) -> ProtocolResult:
    """One protocol's result from what each part of its run saw."""
    by_id = {b.msg_id: b for r in results for b in r.registered}
    for r in results:
        for stray in r.strays:
            origin = by_id.get(stray.msg_id)
            if origin is not None:
                origin.absorb(stray)
    ordered = sorted(by_id.values(), key=lambda b: b.index)
    measured = [b for b in ordered if b.index >= params.warmup]
    gossip: dict[bytes, int] = {}
    sent: dict[str, int] = {}
    for r in results:
        for msg_id, count in r.gossip_by_id.items():
            gossip[msg_id] = gossip.get(msg_id, 0) + count
        for kind, count in r.sent.items():
            sent[kind] = sent.get(kind, 0) + count
    # every part runs every action: count them once
    events = sum(r.processed[0] for r in results) + results[0].processed[1]
    tally = _Tally(
        gossip,
        events,
        sum(r.graft_failures for r in results),
        sum(r.lost for r in results),
        sum(r.missing for r in results),
    )
    crashed = results[0].crashed
    survivors = [i for i in range(params.nodes) if i not in crashed]
    crash_index = params.warmup + params.broadcasts // 2 if params.crash else -1
    wall = max(r.wall for r in results)
    result = _summarise(params, measured, tally, survivors, crash_index, wall, results[0].end, sent)
    return replace(result, workers=parts)


#: CPU time of the flood baseline per broadcast it simulates (not its warm-up, which it
#: skips), as a share of Plumtree's per broadcast, when it runs in the gaps of part 0
#: (10k nodes, lan: stepping it costs about 1.3x running it straight)
FLOOD_COST = 0.6
#: Simulated seconds of the flood per step in part 0's waits: a handful of entries in a
#: flood wave (each step's overhead is then shared), short enough not to delay the
#: next window.
FLOOD_STEP = 2e-7


def _plumtree_with_flood(
    params: SimParams, parts: int, part: int, mesh: parallel.Mesh | None
) -> tuple[_Part, _Part | None]:
    """A part of the Plumtree run; part 0 also runs the whole flood baseline.

    Part 0 gets a smaller share of the Plumtree nodes and fills the moments it would
    spend waiting for the other parts' windows with steps of the flood run, which is
    independent of them (and keeps its own clock). What is left of it when Plumtree is
    done runs then. Results are the same as running the two one after the other.
    """
    total = params.warmup + params.broadcasts
    flood_total = _flood_total(params)
    # the flood's work in units of the whole Plumtree run's; every part should end up
    # with the same total, part 0's including the flood
    flood_work = FLOOD_COST * (flood_total - min(params.warmup, flood_total)) / total
    first = max(0.1, (1.0 + flood_work) / parts - flood_work)
    shares = [first] + [(1.0 - first) / (parts - 1)] * (parts - 1)
    plumtree = _setup_part(params, "plumtree", total, parts, part, shares)
    if part != 0:
        return plumtree.run(mesh), None
    flood = _setup_part(params, "flood", flood_total, 1, 0)
    spent = 0.0
    clock = time.perf_counter
    step = flood.sim.step

    def idle() -> bool:
        nonlocal spent
        t0 = clock()
        more = step(flood.end, FLOOD_STEP)
        spent += clock() - t0
        return more

    assert mesh is not None
    mesh.idle = idle
    result = plumtree.run(mesh)
    mesh.idle = None
    return result, flood.run(None, already=spent)


@dataclass(slots=True)
class _Setup:
    """A part of a run, built and ready to go."""

    sim: Simulator
    end: float
    finish: Callable[[float], _Part]

    def run(self, mesh: parallel.Mesh | None, already: float = 0.0) -> _Part:
        """Run to the end; ``already``: seconds spent running it before."""
        t0 = time.perf_counter()
        if mesh is None:
            self.sim.run_until(self.end)
        else:
            parallel.run_windows(self.sim, mesh, self.end)
        return self.finish(already + time.perf_counter() - t0)


def _run_part(
    params: SimParams,
    protocol: str,
    total: int,
    parts: int,
    part: int,
    mesh: parallel.Mesh | None,
) -> _Part:
    """Run the nodes of one part (all of them unsplit) and every driver action."""
    return _setup_part(params, protocol, total, parts, part).run(mesh)


def _setup_part(
    params: SimParams,
    protocol: str,
    total: int,
    parts: int,
    part: int,
    shares: list[float] | None = None,
) -> _Setup:
    """Build one part of a run (all of it unsplit): its nodes, network and actions."""
    n = params.nodes
    rng = random.Random(params.seed)
    names = [f"n{i:05d}" for i in range(n)]
    adj = random_overlay(n, params.degree, random.Random(params.seed * 7919 + 1))
    network = Network(
        n, LATENCY_PROFILES.get(params.profile, LATENCY_PROFILES["lan"]), params.loss, params.seed
    )
    if parts > 1 and not params.crash:
        owner, lookahead = parallel.latency_partition(adj, network.base_latency, parts, shares)
    else:
        # a crash adds random links (repair), so no link is known to stay fast-free
        owner = parallel.weighted_owners(n, parts, shares)
        lookahead = network.lookahead
    cfg = params.plumtree_config()
    nodes: list[Any] = []
    for i, name in enumerate(names):
        if owner[i] != part:
            nodes.append(None)
            continue
        node_rng = random.Random(params.seed * 1_000_003 + i)
        node: Any = (
            Plumtree(name, cfg, node_rng) if protocol == "plumtree" else FloodNode(name, node_rng)
        )
        order = list(adj[i])
        node_rng.shuffle(order)
        for j in order:
            node.add_peer(names[j], 0.0)
        nodes.append(node)
    recorder = _Recorder(n, strays=parts > 1)
    sim = Simulator(
        nodes,
        network,
        recorder.on_event,
        owner=owner,
        part=part,
        names=names,
        lookahead=lookahead,
        parts=parts,
    )
    sim.arm_all()

    payload = bytes(params.payload_size)
    crash_index = params.warmup + params.broadcasts // 2 if params.crash else -1
    live = list(range(n))
    start = 1.0
    stateless = protocol == "flood"

    def broadcast(k: int) -> None:
        pool = live if params.origins <= 0 else [i for i in live if i < params.origins] or live
        origin = pool[rng.randrange(len(pool))]
        if stateless and k < params.warmup:
            return  # flooding keeps no state to warm up: only keep the origins in step
        b = _Broadcast(k, origin, sim.now, len(live), bytearray(n))

        def originate(node: SimNode) -> None:
            msg_id = node.broadcast(payload, sim.now)  # type: ignore[attr-defined]
            recorder.register(msg_id, b)

        sim.call(origin, originate)

    def crash() -> None:
        victims = set(rng.sample(live, round(params.crash * n)))
        network.crashed |= victims
        live[:] = [i for i in live if i not in victims]
        sim.at(sim.now + params.detection(), lambda: detect(victims))

    def forget(peers: list[str]) -> Callable[[Any], None]:
        def apply(node: Any) -> None:
            for peer in peers:
                node.remove_peer(peer, sim.now)

        return apply

    def meet(peer: str) -> Callable[[Any], None]:
        def apply(node: Any) -> None:
            node.add_peer(peer, sim.now)

        return apply

    def detect(victims: set[int]) -> None:
        for i in live:
            gone = [names[j] for j in adj[i] if j in victims]
            if gone:
                sim.call(i, forget(gone))
        for a, b in repair(adj, victims, live, max(2, params.degree // 2), rng):
            sim.call(a, meet(names[b]))
            sim.call(b, meet(names[a]))

    baseline: dict[str, int] = {}
    sim.at(
        start + params.warmup * params.interval - 1e-9, lambda: baseline.update(sim.sent_by_type)
    )

    def broadcast_at(k: int) -> Callable[[], None]:
        return lambda: broadcast(k)

    for k in range(total):
        if k == crash_index:
            sim.at(start + k * params.interval - params.interval / 2, crash)
        sim.at(start + k * params.interval, broadcast_at(k))

    cfg_drain = (
        cfg.ihave_interval
        + cfg.ihave_timeout
        + cfg.graft_timeout
        * sum(min(2.0**a, cfg.graft_backoff_cap) for a in range(cfg.graft_max_retries + 1))
    )
    end = start + total * params.interval + max(2.0, cfg_drain + 1.0)

    def finish(wall: float) -> _Part:
        lost, missing = _exactness(nodes, [i for i in range(n) if i not in network.crashed])
        return _Part(
            registered=recorder.ordered,
            strays=recorder.strays or [],
            sent={k: v - baseline.get(k, 0) for k, v in sim.sent_by_type.items()},
            gossip_by_id=sim.gossip_by_id,
            processed=sim.counts(),
            graft_failures=_graft_failures(nodes),
            crashed=set(network.crashed),
            wall=wall,
            end=end,
            lost=lost,
            missing=missing,
        )

    return _Setup(sim, end, finish)


def _summarise(
    params: SimParams,
    measured: list[_Broadcast],
    tally: _Tally,
    survivors: list[int],
    crash_index: int,
    wall: float,
    end: float,
    sent: dict[str, int],
) -> ProtocolResult:
    alive = bytearray(params.nodes)
    for i in survivors:
        alive[i] = 1
    reliabilities: list[float] = []
    rmrs: list[float] = []
    ldhs: list[int] = []
    latencies: list[float] = []
    last: list[float] = []
    clean: list[bool] = []
    dups = 0
    gossip_total = 0
    for b in measured:
        got = sum(1 for i in survivors if b.delivered[i])
        reliabilities.append(got / len(survivors) if survivors else 1.0)
        dups += b.duplicates
        ldhs.append(b.max_hops)
        sent_at = b.sent_at
        latencies.extend([at - sent_at for at in b.times])
        if b.count > 1:
            last.append(b.last_at - b.sent_at)
        clean.append(reliabilities[-1] == 1.0 and b.grafts == 0)
    for b in measured:
        m = tally.gossip_by_id.get(b.msg_id, 0)
        gossip_total += m
        if b.count > 1:
            rmrs.append(m / (b.count - 1) - 1.0)
    heal: int | None = None
    after: float | None = None
    if crash_index >= 0:
        post = [(b, ok) for b, ok in zip(measured, clean, strict=True) if b.index >= crash_index]
        heal = None
        for k in range(len(post)):
            if all(ok for _, ok in post[k:]):
                heal = k
                break
        if heal is not None:
            tail = reliabilities[len(measured) - len(post) + heal :]
            after = min(tail) if tail else 1.0
    latencies.sort()
    last.sort()
    gossip = sent.get("Gossip", 0)
    control = sent.get("IHave", 0) + sent.get("Graft", 0) + sent.get("Prune", 0)
    return ProtocolResult(
        reliability=mean(reliabilities),
        reliability_min=min(reliabilities, default=1.0),
        rmr=mean(rmrs),
        ldh=mean(ldhs),
        ldh_max=max(ldhs, default=0),
        latency_p50_ms=1000 * percentile(latencies, 0.50),
        latency_p99_ms=1000 * percentile(latencies, 0.99),
        latency_max_ms=1000 * (latencies[-1] if latencies else 0.0),
        last_delivery_p50_ms=1000 * percentile(last, 0.50),
        last_delivery_p99_ms=1000 * percentile(last, 0.99),
        duplicates_delivered=dups,
        messages=sent,
        gossip_messages=gossip_total,
        control_overhead=control / gossip if gossip else 0.0,
        broadcasts_to_heal=heal,
        reliability_after_heal=after,
        graft_failures=tally.graft_failures,
        events=tally.events,
        sim_seconds=end,
        wall_seconds=wall,
        lost=tally.lost,
        missing=tally.missing,
    )
