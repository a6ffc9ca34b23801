"""The metrics a plumtree node really exports: the one list the monitoring artefacts use.

Alert rules and dashboard panels may reference these names only (histograms also through
their ``_bucket``/``_sum``/``_count`` series). :func:`referenced_metrics` pulls the metric
names out of a PromQL expression so that tests can hold the artefacts to this list.
"""

from __future__ import annotations

import re

COUNTERS: tuple[str, ...] = (
    "plumtree_messages_broadcast_total",
    "plumtree_messages_delivered_total",
    "plumtree_messages_duplicate_total",
    "plumtree_gossip_sent_total",
    "plumtree_ihave_sent_total",
    "plumtree_graft_sent_total",
    "plumtree_prune_sent_total",
    "plumtree_peer_promotions_total",
    "plumtree_peer_demotions_total",
    "plumtree_peer_added_total",
    "plumtree_peer_removed_total",
    "plumtree_graft_success_total",
    "plumtree_graft_failed_total",
    "plumtree_graft_retries_total",
    "plumtree_ihave_dropped_total",
    "plumtree_pending_grafts_dropped_total",
    "plumtree_cache_evictions_total",
    "plumtree_seen_evictions_total",
    "plumtree_transport_frames_dropped_total",
    "plumtree_transport_decode_errors_total",
    "plumtree_transport_connection_errors_total",
    "plumtree_messages_lost_total",  # label reason="unavailable|limit"
    "plumtree_messages_repaired_total",
    "plumtree_repair_sent_total",
    "plumtree_messages_rejected_total",
    "swim_probes_total",
    "swim_probe_failures_total",
    "swim_suspicions_total",
    "swim_refutations_total",
)

GAUGES: tuple[str, ...] = (
    "plumtree_eager_peers",
    "plumtree_lazy_peers",
    "plumtree_total_peers",
    "plumtree_cache_size",
    "plumtree_cache_capacity",
    "plumtree_ihave_queue_size",
    "plumtree_ihave_queue_capacity",
    "plumtree_pending_grafts",
    "plumtree_seen_size",
    "plumtree_messages_missing",
    "plumtree_messages_missing_seconds",
    "plumtree_store_bytes",
    "plumtree_store_bytes_capacity",
    "plumtree_retention_seconds",
    "plumtree_store_failing",  # only nodes with a data dir (see WITH_DATA_DIR)
    "swim_members",  # label state="alive|suspect|dead|left"
    "swim_local_health",
)

#: exported only by nodes that keep a durable store (--data-dir)
WITH_DATA_DIR: tuple[str, ...] = ("plumtree_store_failing",)

# name -> bucket upper bounds (None: the library's defaults, not part of the contract)
HISTOGRAMS: dict[str, tuple[float, ...] | None] = {
    "plumtree_graft_latency_seconds": (0.01, 0.05, 0.1, 0.5, 1, 5),
    "plumtree_message_size_bytes": (100, 1024, 10240, 65536, 262144),
    "plumtree_message_hops": (1, 2, 3, 5, 10),
    "plumtree_ihave_batch_size": (1, 4, 8, 16, 32, 64),
    "swim_probe_rtt_seconds": None,
}

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def series_names() -> frozenset[str]:
    """Every series name a node exposes (histograms expanded to their three series)."""
    names = set(COUNTERS) | set(GAUGES)
    for h in HISTOGRAMS:
        names.update(h + suffix for suffix in HISTOGRAM_SUFFIXES)
    return frozenset(names)


# PromQL words that look like identifiers but are not metric names.
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "atan2",
        "inf",
        "nan",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_DURATION = re.compile(r"(?<![\w:])\d+(?:ms|s|m|h|d|w|y)(?![\w:])")
_NUMBER = re.compile(r"(?<![\w:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def referenced_metrics(expr: str) -> set[str]:
    """Metric names an expression selects, e.g. ``{"plumtree_eager_peers"}``.

    Good enough for the expressions we write (no ``{__name__=...}`` selectors): strings,
    label matchers, ranges, grouping clauses, numbers, functions and keywords are removed;
    every identifier left is a metric name.
    """
    text = _STRING.sub(" ", expr)
    text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _DURATION.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names: set[str] = set()
    for match in _IDENT.finditer(text):
        word = match.group(0)
        rest = text[match.end() :].lstrip()
        if rest.startswith("("):  # a function call
            continue
        if word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names
