"""Prometheus exposition of one node, from the numbers its cores already keep.

A custom collector reads the cores at scrape time: gauges are always current, counters
are the cores' own totals (no second bookkeeping), no ``_created`` series are emitted,
and each node has its own ``CollectorRegistry`` (several nodes can share a process).
Names, types and buckets are exactly those of the monitoring guide (docs/monitoring.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from plumtree.core.health import Status
from plumtree.core.stats import SEED_COUNTERS, Histogram

if TYPE_CHECKING:
    from plumtree.runtime.node import Node

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_SEED_COUNTER_HELP = {
    "messages_broadcast": "Total broadcasts initiated",
    "messages_delivered": "Messages delivered to application",
    "messages_duplicate": "Duplicate messages received",
    "gossip_sent": "Gossip messages sent",
    "ihave_sent": "IHave messages sent",
    "graft_sent": "Graft messages sent",
    "prune_sent": "Prune messages sent",
    "peer_promotions": "Peers promoted to eager",
    "peer_demotions": "Peers demoted to lazy",
    "peer_added": "Peers added to cluster",
    "peer_removed": "Peers removed from cluster",
    "graft_success": "Successful Graft requests",
    "graft_failed": "Failed Graft requests",
    "graft_retries": "Graft retry attempts",
}

_EXTRA_COUNTER_HELP = {
    "gossip_received": "Gossip messages received",
    "ihave_received": "IHave messages received",
    "graft_received": "Graft messages received",
    "prune_received": "Prune messages received",
    "graft_rate_limited": "Graft requests ignored by the per-peer rate limit",
    "graft_unknown": "Graft requests for ids no longer cached",
    "graft_answers_limited": "Grafted ids not sent: the peer's answer byte budget was spent",
    "ihave_dropped": "IHave announcements dropped because the queue was full",
    "ihave_skipped": "IHave announcements not sent: the lazy peer had announced the id to us",
    "pending_grafts_dropped": "Missing ids not tracked because too many were pending",
    "cache_evictions": "Payloads evicted from the cache before their TTL",
    "seen_evictions": "Per-message tree records evicted before their TTL (dedup is unaffected)",
    "optimizations": "Eager parents swapped for a shorter lazy path",
    "messages_too_large": "Broadcasts refused for exceeding max_message_size",
    "graft_premature": "Grafted messages whose eager copy arrived after all (timer too short)",
    "graft_undone": "Links a premature Graft made, pruned again by the node that grafted",
    "sync_sent": "Anti-entropy digests (version vectors) sent",
    "sync_received": "Anti-entropy digests (version vectors) received",
    "messages_repaired": "Messages delivered by anti-entropy (not down the tree)",
    "repair_sent": "Messages sent to peers that lacked them (anti-entropy answers)",
    "repair_duplicate": "Anti-entropy copies of messages already delivered",
    "repair_requests": "Digests sent asking peers to repair a gap that lasted",
    "messages_rejected": "Messages refused: an id not of its stream, a retired epoch, ours",
    "streams_retired": "Finished origin streams forgotten (their epochs stay refused)",
    "own_seqs_skipped": "Own sequence numbers skipped: peers held them, our store lacked them (restored from an older copy)",
    "messages_deferred": "New messages left missing while the store could not keep them",
}

_GAUGE_HELP = {
    "eager_peers": "Current eager peer count",
    "lazy_peers": "Current lazy peer count",
    "total_peers": "Total peer count",
    "cache_size": "Messages in cache (payloads kept for repair)",
    "cache_capacity": (
        "Messages the cache holds at the current mean size: its count or byte bound,"
        " whichever binds (plumtree_cache_size alert divisor)"
    ),
    "ihave_queue_size": "Pending IHave announcements",
    "ihave_queue_capacity": "Capacity of the IHave queue (plumtree_ihave_queue_size divisor)",
    "pending_grafts": "Pending Graft requests",
    "seen_size": "Messages the tree keeps per-message records of",
    "ihave_timeout_seconds": "Current adaptive wait after an IHave before grafting",
    "messages_missing": "Messages known to exist and not delivered here yet (being repaired)",
    "messages_missing_seconds": "How long the oldest unrepaired gap has lasted (0: none)",
    "streams": "Origin streams (origin, epoch) this node keeps a watermark for",
    "store_bytes": "Bytes of payloads kept for repair (with per-entry overhead)",
    "store_bytes_capacity": "Byte bound of the payloads kept for repair",
    "retention_seconds": (
        "Span of the payloads kept, oldest to newest: how far back this node repairs"
    ),
}

_HISTOGRAM_HELP = {
    "graft_latency_seconds": "Time from Graft to delivery",
    "message_size_bytes": "Message payload size",
    "message_hops": "Number of hops messages travel",
    "ihave_batch_size": "Size of IHave batches",
}

_TRANSPORT = {
    # stats field: (metric suffix, help, labels)
    "frames_dropped": ("frames_dropped", "Messages dropped on full per-peer send queues"),
    "decode_errors": ("decode_errors", "Datagrams and frames that failed to decode"),
    "decrypt_errors": ("decrypt_errors", "Datagrams and frames no keyring key authenticates"),
    "label_mismatches": ("label_mismatches", "Messages from another cluster label"),
    "connection_errors": ("connection_errors", "Failed connects, writes and sends"),
    "oversize_dropped": ("oversize_dropped", "Datagrams and frames above the size limit"),
    "frames_sent": ("frames_sent", "TCP frames sent"),
    "frames_received": ("frames_received", "TCP frames received"),
    "datagrams_sent": ("datagrams_sent", "UDP datagrams sent"),
    "datagrams_received": ("datagrams_received", "UDP datagrams received"),
}


def _labelled(name: str, doc: str, by_reason: dict[str, int]) -> Iterator[Metric]:
    family = CounterMetricFamily(name, doc, labels=["reason"])
    for reason, value in by_reason.items():
        family.add_metric([reason], value)
    yield family


def histogram_family(name: str, doc: str, hist: Histogram) -> HistogramMetricFamily:
    buckets = [(_le(bound), float(count)) for bound, count in hist.cumulative()]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=hist.sum)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class NodeCollector(Collector):
    """Everything one node exports, read from its cores when Prometheus scrapes."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        tree = node.plumtree
        counters = tree.counters
        for name in SEED_COUNTERS:
            yield CounterMetricFamily(
                f"plumtree_{name}", _SEED_COUNTER_HELP[name], value=getattr(counters, name)
            )
        for name, doc in _EXTRA_COUNTER_HELP.items():
            yield CounterMetricFamily(f"plumtree_{name}", doc, value=getattr(counters, name))
        yield from _labelled(
            "plumtree_messages_lost",
            "Messages given up: no reachable member holds them (unavailable), or too many"
            " gaps at once (limit)",
            {"unavailable": counters.lost_unavailable, "limit": counters.lost_limit},
        )
        gauges = tree.gauges()
        missing_for = tree.missing_for(node._now())
        for name, doc in _GAUGE_HELP.items():
            value = missing_for if name == "messages_missing_seconds" else getattr(gauges, name)
            yield GaugeMetricFamily(f"plumtree_{name}", doc, value=value)
        for name, hist in tree.histograms.items():
            yield histogram_family(f"plumtree_{name}", _HISTOGRAM_HELP[name], hist)
        yield self._health(node)
        yield from self._transport(node)
        yield from self._swim(node)
        yield from self._store(node)
        yield from self._runtime(node)

    def _health(self, node: Node) -> Metric:
        """The node's /v1/health verdict as a state set: 1 for its status, 0 for the others.

        Lets a dashboard (``plumctl top``) or Prometheus read every node's status from the
        one scrape it makes anyway, instead of a second request per node.
        """
        status = node.health().status
        family = GaugeMetricFamily(
            "plumtree_health_status",
            "Node health status as /v1/health reports it (1 for the current status)",
            labels=["status"],
        )
        for candidate in Status:
            family.add_metric([candidate.value], 1.0 if candidate is status else 0.0)
        return family

    def _transport(self, node: Node) -> Iterator[Metric]:
        stats = node.transport.stats
        sent = CounterMetricFamily("plumtree_transport_bytes_sent", "Bytes sent", labels=["proto"])
        sent.add_metric(["udp"], stats.udp_bytes_sent)
        sent.add_metric(["tcp"], stats.tcp_bytes_sent)
        yield sent
        received = CounterMetricFamily(
            "plumtree_transport_bytes_received", "Bytes received", labels=["proto"]
        )
        received.add_metric(["udp"], stats.udp_bytes_received)
        received.add_metric(["tcp"], stats.tcp_bytes_received)
        yield received
        for field, (suffix, doc) in _TRANSPORT.items():
            yield CounterMetricFamily(
                f"plumtree_transport_{suffix}", doc, value=getattr(stats, field)
            )
        yield GaugeMetricFamily(
            "plumtree_transport_queue_depth",
            "Messages waiting in per-peer send queues",
            value=node.transport.queue_depth(),
        )
        yield from _labelled(
            "plumtree_transport_replays_dropped",
            "Authenticated messages refused: stamped outside the window (stale) or seen"
            " before (replay)",
            {"stale": stats.replay_stale, "replay": stats.replay_replayed},
        )
        yield from _labelled(
            "plumtree_transport_connections_refused",
            "Inbound TCP connections closed at once: over the total or the per-source cap",
            {"limit": stats.refused_limit, "source_limit": stats.refused_source_limit},
        )
        yield from _labelled(
            "plumtree_transport_connections_closed",
            "Inbound TCP connections the node closed: frame longer than the maximum, over"
            " the buffer budget, frame not complete in time, idle",
            {
                "oversize": stats.closed_oversize,
                "buffer": stats.closed_buffer,
                "frame_timeout": stats.closed_frame_timeout,
                "idle": stats.closed_idle,
            },
        )
        yield GaugeMetricFamily(
            "plumtree_transport_inbound_connections",
            "Inbound gossip TCP connections open",
            value=node.transport.inbound_count(),
        )
        yield GaugeMetricFamily(
            "plumtree_transport_inbound_buffered_bytes",
            "Bytes of unfinished inbound frames held (bounded by transport.max_buffered_bytes)",
            value=node.transport.buffered,
        )
        yield GaugeMetricFamily(
            "plumtree_gossip_insecure",
            "1 when gossip is reachable from the network without a keyring (--insecure-gossip)",
            value=1.0 if node.insecure else 0.0,
        )

    def _swim(self, node: Node) -> Iterator[Metric]:
        swim = node.swim
        by_state = GaugeMetricFamily("swim_members", "Members by state", labels=["state"])
        counts = {"alive": 0, "suspect": 0, "dead": 0, "left": 0}
        for member in swim.members():
            counts[member.state] = counts.get(member.state, 0) + 1
        for state, count in counts.items():
            by_state.add_metric([state], count)
        yield by_state
        c = swim.counters
        yield CounterMetricFamily("swim_probes", "Probes sent", value=c.probes_sent)
        yield CounterMetricFamily(
            "swim_probe_failures", "Probes that got no ack", value=c.probe_failures
        )
        yield CounterMetricFamily(
            "swim_indirect_probes", "Indirect probes requested", value=c.indirect_probes
        )
        yield CounterMetricFamily("swim_suspicions", "Suspicions raised", value=c.suspicions)
        yield CounterMetricFamily(
            "swim_refutations", "Suspicions of this node refuted", value=c.refutations
        )
        yield CounterMetricFamily(
            "swim_pushpull", "Push-pull state exchanges", value=c.pushpull_exchanges
        )
        yield GaugeMetricFamily(
            "swim_local_health", "Lifeguard local health (0 is best)", value=swim.local_health()
        )
        yield GaugeMetricFamily(
            "swim_unconfirmed_members",
            "Members learned second-hand whose address has not answered a probe yet",
            value=swim.unconfirmed_count,
        )
        yield CounterMetricFamily(
            "swim_confirm_probes", "Probes sent to confirm members", value=c.confirm_probes_sent
        )
        refused = CounterMetricFamily(
            "swim_refused",
            "Membership input refused or dropped (forged, stray or implausible)",
            labels=["reason"],
        )
        for reason, value in (
            ("incarnation", c.incarnations_refused),
            ("unconfirmed_full", c.unconfirmed_refused),
            ("unanswered", c.unconfirmed_dropped),
            ("pingreq", c.pingreqs_refused),
            ("pushpull_reply", c.pushpull_replies_refused),
        ):
            refused.add_metric([reason], value)
        yield refused
        yield histogram_family("swim_probe_rtt_seconds", "Probe round-trip time", swim.probe_rtt)

    def _store(self, node: Node) -> Iterator[Metric]:
        """The durable store (absent without --data-dir)."""
        persistence = node.persistence
        if persistence is None:
            return
        yield CounterMetricFamily(
            "plumtree_store_commits",
            "Group commits to the durable store",
            value=persistence.commits,
        )
        yield CounterMetricFamily(
            "plumtree_store_errors",
            "Commits to the durable store that failed",
            value=persistence.errors,
        )
        yield GaugeMetricFamily(
            "plumtree_store_commit_seconds",
            "Duration of the last commit (submit to durable)",
            value=persistence.commit_seconds,
        )
        yield GaugeMetricFamily(
            "plumtree_store_backlog",
            "Batches waiting for the store's writer",
            value=persistence.writer.pending,
        )
        yield GaugeMetricFamily(
            "plumtree_store_failing",
            "1 while the store cannot commit (the node then refuses broadcasts)",
            value=1.0 if persistence.failing else 0.0,
        )

    def _runtime(self, node: Node) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "plumtree_delivery_dropped",
            "Deliveries a slow subscriber could not take (bounded subscriber queues)",
            value=node.delivery_dropped,
        )
        yield CounterMetricFamily(
            "plumtree_events_dropped",
            "Events dropped on slow /v1/events streams",
            value=node.events.dropped,
        )
        yield CounterMetricFamily(
            "plumtree_key_requests_answered",
            "Keyring queries from other members applied and answered (plumctl keys)",
            value=node.key_queries.answered,
        )
        yield CounterMetricFamily(
            "plumtree_key_messages_refused",
            "Keyring queries and answers refused: over UDP, from a non-member, unasked, or"
            " too many at once",
            value=node.key_queries.refused + (node.stack.key_refused if node.stack else 0),
        )
        yield CounterMetricFamily(
            "plumtree_query_requests_answered",
            "Queries from members (plumctl query) a handler of this node answered",
            value=node.queries.answered,
        )
        yield CounterMetricFamily(
            "plumtree_query_messages_refused",
            "Query acks and answers nobody waits for, and queries beyond 32 at once",
            value=node.queries.refused,
        )
        yield from self._handlers(node)
        yield from self._admin(node)
        info = InfoMetricFamily("plumtree_node", "Node identity")
        info.add_metric(
            [],
            {"node": node.name, "version": node.version, "profile": node.config.protocol.profile},
        )
        yield info

    def _handlers(self, node: Node) -> Iterator[Metric]:
        """The ``--handler`` commands' runs and what went wrong (zero without handlers)."""
        stats = node.handlers.stats
        for name, doc, value in (
            ("runs", "Event handler commands started", stats.runs),
            (
                "failures",
                "Event handler runs that exited non-zero or could not start",
                stats.failures,
            ),
            ("timeouts", "Event handler runs killed at the time limit", stats.timeouts),
            ("dropped", "Events a handler's full queue could not take", stats.dropped),
        ):
            yield CounterMetricFamily(f"plumtree_handler_{name}", doc, value=value)

    def _admin(self, node: Node) -> Iterator[Metric]:
        """The admin API's refusals and open connections (zero without an admin API)."""
        from plumtree.admin.limits import REASONS

        guard = node.admin.guard if node.admin is not None else None
        rejected = CounterMetricFamily(
            "plumtree_admin_rejected",
            "Admin requests refused and connections closed, by reason",
            labels=["reason"],
        )
        for reason in REASONS:
            rejected.add_metric([reason], guard.rejected[reason] if guard else 0)
        yield rejected
        yield GaugeMetricFamily(
            "plumtree_admin_connections",
            "Open admin API connections",
            value=len(guard.open) if guard else 0,
        )


def make_registry(node: Node) -> CollectorRegistry:
    # collectors_without_names: NodeCollector has no describe(), and restricted scrapes
    # (?name[]=...) must still reach it
    registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
    registry.register(NodeCollector(node))
    return registry


def render(registry: CollectorRegistry, names: list[str] | None = None) -> bytes:
    """The text exposition; with ``names`` only those samples (``?name[]=`` as in
    prometheus_client's own handlers: sample names, e.g. ``x_total`` or ``x_bucket``)."""
    from prometheus_client.exposition import generate_latest

    if names:
        return generate_latest(registry.restricted_registry(names))
    return generate_latest(registry)


__all__ = ["CONTENT_TYPE", "NodeCollector", "make_registry", "render"]
