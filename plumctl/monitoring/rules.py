"""Prometheus alerting rules for plumtree nodes, from the monitoring guide (docs/monitoring.md).

Two sources, both in the monitoring guide (docs/monitoring.md):

* the monitoring guide's "Prometheus Alert Rules" YAML: its five rules are kept as written (names,
  expressions, ``for``, severity, summaries). One deliberate fix: the guide describes
  ``PlumtreeHighGraftFailures`` as "{{ $value }}/min", but its expression is a per-second
  ``rate()``; the description now says "/s". Rules the guide left without a description get
  one, and every rule gets a ``runbook`` hint (the tables' "Action" column);
* the monitoring guide's two alert tables: every row the YAML leaves out becomes a rule of its own;
* exact delivery, which the monitoring guide's counters cannot see: a message given up as lost
  (critical, at once) and messages missing for 5 minutes (warning).

Thresholds are read from :data:`plumtree.core.health.SEED_THRESHOLDS`, the same numbers
``plumctl health`` and the TUI use. Rates use the monitoring guide's ``[5m]`` window, and per-minute
thresholds become per-second ones the way the guide converts them (20/min -> 0.33/s,
i.e. rounded to two decimals).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plumctl.monitoring.yamlout import Quoted, dump
from plumtree.core.health import SEED_THRESHOLDS, Thresholds

GROUP = "plumtree"
WINDOW = "5m"

_DUP_RATE = f"rate(plumtree_messages_duplicate_total[{WINDOW}])"
_DELIVERED_RATE = f"rate(plumtree_messages_delivered_total[{WINDOW}])"
_GRAFT_FAILED_RATE = f"rate(plumtree_graft_failed_total[{WINDOW}])"
_CACHE_RATIO = "plumtree_cache_size / plumtree_cache_capacity"


def _enough_deliveries(t: Thresholds) -> str:
    """The health model's floor: a ratio over a handful of messages is noise, not topology."""
    return f"increase(plumtree_messages_delivered_total[{WINDOW}]) >= {t.duplicate_ratio_min_delivered}"


@dataclass(frozen=True, slots=True)
class AlertRule:
    alert: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    runbook: str
    origin: str  # where in the guide this rule comes from (a YAML comment in the file)

    def as_prometheus(self) -> dict[str, Any]:
        """The rule as Prometheus reads it."""
        return {
            "alert": self.alert,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook": self.runbook,
            },
        }


def per_second(per_minute: float) -> float:
    """A per-minute threshold as the guide writes it per second (20/min -> 0.33)."""
    return round(per_minute / 60.0, 2)


def _num(value: float) -> str:
    return format(value, "g")


def alert_rules(t: Thresholds = SEED_THRESHOLDS) -> list[AlertRule]:
    """Every alert, the monitoring guide's YAML rules first (in the monitoring guide's order), then the table rows."""
    graft_crit = per_second(t.graft_failed_per_min_critical)
    graft_warn = per_second(t.graft_failed_per_min_warning)
    dup_crit = _num(t.duplicate_ratio_critical)
    dup_warn = _num(t.duplicate_ratio_warning)
    pct = _percent
    return [
        # ---- the monitoring guide's YAML, as written ------------------------------------------------
        AlertRule(
            alert="PlumtreeNodeIsolated",
            expr=f"plumtree_eager_peers < {t.eager_critical_below}",
            for_="1m",
            severity="critical",
            summary="Node {{ $labels.instance }} is isolated",
            description="Node has no eager peers for more than 1 minute",
            runbook=(
                "Node is isolated, check network: can it reach the other members' gossip "
                "port (UDP and TCP)? Look at `plumctl peers` and `plumctl members` on it."
            ),
            origin="guide's rules; alert table: plumtree_eager_peers < 1, Critical",
        ),
        AlertRule(
            alert="PlumtreeHighGraftFailures",
            expr=f"{_GRAFT_FAILED_RATE} > {_num(graft_crit)}",
            for_="2m",
            severity="critical",
            summary="High Graft failure rate on {{ $labels.instance }}",
            # Deliberate fix: the guide says "{{ $value }}/min"; $value is per second.
            description=(
                'Graft failure rate is {{ printf "%.2f" $value }}/s, above '
                f"{_num(graft_crit)}/s ({_num(t.graft_failed_per_min_critical)}/min)"
            ),
            runbook=(
                "Tree repair failing, investigate: Grafts to peers that lack the message or "
                "are gone. Check membership churn and transport errors on the node."
            ),
            origin=(
                "guide's rules; alert table: plumtree_graft_failed_total rate > 20/min, "
                "Critical (description fixed: $value is per second)"
            ),
        ),
        AlertRule(
            alert="PlumtreeCachePressure",
            expr=f"{_CACHE_RATIO} > {_num(t.cache_ratio_critical)}",
            for_="5m",
            severity="critical",
            summary="Cache near capacity on {{ $labels.instance }}",
            description=(
                "Message cache is {{ $value | humanizePercentage }} full "
                f"(critical above {pct(t.cache_ratio_critical)})"
            ),
            runbook="Memory pressure, increase cache or reduce TTL",
            origin="guide's rules; alert table: plumtree_cache_size > 95% capacity, Critical",
        ),
        AlertRule(
            alert="PlumtreeHighDuplicateRate",
            expr=f"{_DUP_RATE} / {_DELIVERED_RATE} > {dup_crit}",
            for_="5m",
            severity="warning",
            summary="High duplicate message rate on {{ $labels.instance }}",
            description=(
                "Duplicates are {{ $value | humanizePercentage }} of deliveries. This is "
                f"the monitoring guide's own rule (above {pct(t.duplicate_ratio_critical)}, severity "
                "warning), kept as written; the monitoring guide's alert table rates the same condition "
                "critical (PlumtreeSevereDuplicateRate) and warns from "
                f"{pct(t.duplicate_ratio_warning)} (PlumtreeElevatedDuplicateRate)."
            ),
            runbook="Severe topology issues: review fanout settings and peer churn",
            origin=(
                "guide's rules (severity warning as written); alert table row "
                "duplicate rate > 50%, Critical, is PlumtreeSevereDuplicateRate"
            ),
        ),
        AlertRule(
            alert="PlumtreeLowPeerCount",
            expr=f"plumtree_total_peers < {t.total_peers_warning_below}",
            for_="2m",
            severity="warning",
            summary="Low peer count on {{ $labels.instance }}",
            description=(
                "Node has {{ $value }} peer(s), eager and lazy together, for more than 2 minutes"
            ),
            runbook=(
                "Reduced redundancy: check that the node can reach the rest of the cluster "
                "(`plumctl members`, `plumctl peers`)."
            ),
            origin="guide's rules (no table row of its own)",
        ),
        # ---- the monitoring guide's alert tables: rows its YAML leaves out ---------------------------
        AlertRule(
            alert="PlumtreeElevatedGraftFailures",
            expr=f"{_GRAFT_FAILED_RATE} > {_num(graft_warn)}",
            for_="2m",
            severity="warning",
            summary="Elevated Graft failure rate on {{ $labels.instance }}",
            description=(
                'Graft failure rate is {{ printf "%.2f" $value }}/s, above '
                f"{_num(graft_warn)}/s ({_num(t.graft_failed_per_min_warning)}/min)"
            ),
            runbook="Some tree repair issues: watch for peer churn and transport errors",
            origin="alert table: plumtree_graft_failed_total rate > 5/min, Warning",
        ),
        AlertRule(
            alert="PlumtreeCacheUsageHigh",
            expr=f"{_CACHE_RATIO} > {_num(t.cache_ratio_warning)}",
            for_="5m",
            severity="warning",
            summary="Cache filling up on {{ $labels.instance }}",
            description=(
                "Message cache is {{ $value | humanizePercentage }} full "
                f"(warning above {pct(t.cache_ratio_warning)}, critical above "
                f"{pct(t.cache_ratio_critical)})"
            ),
            runbook="Monitor memory usage",
            origin="alert table: plumtree_cache_size > 80% capacity, Warning",
        ),
        AlertRule(
            alert="PlumtreeElevatedDuplicateRate",
            expr=f"{_DUP_RATE} / {_DELIVERED_RATE} > {dup_warn}\nand {_enough_deliveries(t)}",
            for_="5m",
            severity="warning",
            summary="Elevated duplicate message rate on {{ $labels.instance }}",
            description=(
                "Duplicates are {{ $value | humanizePercentage }} of deliveries "
                f"(warning above {pct(t.duplicate_ratio_warning)}). Judged only once "
                f"the node delivered {t.duplicate_ratio_min_delivered} messages in the window, "
                "like its own health check."
            ),
            runbook="Review fanout settings",
            origin="alert table: duplicate rate > 30%, Warning",
        ),
        AlertRule(
            alert="PlumtreeSevereDuplicateRate",
            expr=f"{_DUP_RATE} / {_DELIVERED_RATE} > {dup_crit}\nand {_enough_deliveries(t)}",
            for_="5m",
            severity="critical",
            summary="Severe duplicate message rate on {{ $labels.instance }}",
            description=(
                "Duplicates are {{ $value | humanizePercentage }} of deliveries "
                f"(critical above {pct(t.duplicate_ratio_critical)}, the monitoring guide's alert "
                "table; the monitoring guide's YAML rule PlumtreeHighDuplicateRate fires on the same "
                "condition at severity warning). Judged only once the node "
                f"delivered {t.duplicate_ratio_min_delivered} messages in the window, like its "
                "own health check."
            ),
            runbook="Severe topology issues: review fanout settings and peer churn",
            origin="alert table: duplicate rate > 50%, Critical",
        ),
        AlertRule(
            alert="PlumtreeGraftBacklog",
            expr=f"plumtree_pending_grafts > {t.pending_grafts_warning}",
            for_="5m",
            severity="warning",
            summary="Graft backlog on {{ $labels.instance }}",
            description=(
                f"{{{{ $value }}}} Grafts pending (warning above {t.pending_grafts_warning})"
            ),
            runbook="Graft backlog building: missing messages are not being repaired fast enough",
            origin="alert table: plumtree_pending_grafts > 100, Warning",
        ),
        AlertRule(
            alert="PlumtreeReducedRedundancy",
            # "lazy < 1" is structural (no lazy peer at all), not a tunable threshold.
            expr=f"plumtree_eager_peers < {t.eager_warning_below} and plumtree_lazy_peers < 1",
            for_="2m",
            severity="warning",
            summary="Reduced redundancy on {{ $labels.instance }}",
            description=(
                "Fewer than 2 peers carry this node's messages: {{ $value }} eager peer(s) "
                "and no lazy peer. A Plumtree pruned to a spanning tree leaves most nodes "
                "(the leaves) with exactly one eager peer; their redundancy is the lazy "
                "peers that announce every message (IHave), so the monitoring guide's 'eager peers < 2' "
                "row is judged on eager and lazy peers together, as plumctl health does."
            ),
            runbook="Reduced redundancy: check membership and the node's peers (`plumctl peers`)",
            origin=(
                "alert table: plumtree_eager_peers < 2, Warning (judged on eager + lazy "
                "peers, see plumtree.core.health)"
            ),
        ),
        # ---- exact delivery: what the monitoring guide's counters could not see --------------------
        AlertRule(
            alert="PlumtreeMessagesLost",
            expr=f"sum without(reason) (increase(plumtree_messages_lost_total[{WINDOW}])) > 0",
            for_="0m",
            severity="critical",
            summary="Messages lost on {{ $labels.instance }}",
            description=(
                "{{ $value }} acknowledged broadcast(s) will never be delivered on this node: "
                "no reachable member held them any more (or too many gaps were open at "
                "once). The node's log and its messages_lost events name the origin and "
                "the sequence range."
            ),
            runbook=(
                "The node was away longer than the retention (plumtree.retention_age / "
                "retention_bytes) or the cluster lost the only copies. `plumctl audit` "
                "shows what each node lacks; raise the retention if this recurs."
            ),
            origin="exact delivery (no row in the guide's tables): a loss is never silent",
        ),
        AlertRule(
            alert="PlumtreeMessagesMissing",
            # a gap stuck a minute (health's Degraded line) and still stuck 4 minutes
            # later: missing for 5 minutes. The plain gauge is above 0 on a busy healthy
            # node at almost any instant (messages announced, on their way)
            expr=(
                "plumtree_messages_missing > 0\n"
                f"and plumtree_messages_missing_seconds > {_num(t.missing_degraded_after)}"
            ),
            for_="4m",
            severity="warning",
            summary="Messages missing for 5 minutes on {{ $labels.instance }}",
            description=(
                "{{ $value }} message(s) known to exist have not been delivered here for 5 "
                "minutes: anti-entropy cannot reach a member that holds them (a partition, "
                "or the holders are unreachable), yet nobody has given them up."
            ),
            runbook=(
                "Check `plumctl audit` and `plumctl members` from this node: which members "
                "it cannot reach, and whether the network between them is cut."
            ),
            origin="exact delivery (no row in the guide's tables): missing > 0 for 5 minutes",
        ),
        AlertRule(
            alert="PlumtreeStoreFailing",
            expr="plumtree_store_failing > 0",
            for_="1m",
            severity="critical",
            summary="Durable store failing on {{ $labels.instance }}",
            description=(
                "The node cannot commit to its data dir for more than a minute: it refuses "
                "broadcasts (HTTP 503) rather than acknowledge what it could not keep, and "
                "its health is Unhealthy."
            ),
            runbook=(
                "Check the data dir's disk (space, permissions, I/O errors in the node's "
                "log). Commits are retried every second and resume by themselves."
            ),
            origin="durable store (no row in the guide's tables): a node that cannot keep what it acknowledges",
        ),
        # ---- membership: a member that failed, as `plumctl health --all` sees it --------
        AlertRule(
            alert="PlumtreeMemberDead",
            # summed over the state label, so the alert carries the reporting node's
            # labels like every other rule; every survivor reports the same failure
            expr='sum without(state) (swim_members{state="dead"}) > 0',
            for_="1m",
            severity="warning",
            summary="Dead member(s) in the member table of {{ $labels.instance }}",
            description=(
                "{{ $value }} member(s) failed: SWIM declared them dead (no answer to direct "
                "or indirect probes) and they have not come back. `plumctl health --all` says "
                "Degraded for the same reason. The alert ends when the member is alive again, "
                "leaves, or is forgotten (swim.dead_reap_time)."
            ),
            runbook=(
                "`plumctl members --state dead` names them. Restart the node, or if it is gone "
                "for good let it be reaped."
            ),
            origin="membership (no row in the guide's tables): a failed member, as health --all counts it",
        ),
    ]


def _percent(ratio: float) -> str:
    return f"{100 * ratio:g}%"


def rule_groups(t: Thresholds = SEED_THRESHOLDS) -> dict[str, Any]:
    """The rule file as data: ``{"groups": [{"name": "plumtree", "rules": [...]}]}``."""
    return {"groups": [{"name": GROUP, "rules": [r.as_prometheus() for r in alert_rules(t)]}]}


HEADER = """\
# Prometheus alerting rules for plumtree nodes.
# Generated by `plumctl monitoring rules`; do not edit, regenerate.
# Source: the monitoring guide (docs/monitoring.md). Its "Prometheus Alert Rules" come
# first, as written (one fix: PlumtreeHighGraftFailures' description said /min for a
# per-second rate); then one rule per row of its alert tables that those rules leave
# out; then the alerts of exact delivery, of the durable store and of membership.
# Check: promtool check rules FILE
"""


def render_yaml(t: Thresholds = SEED_THRESHOLDS) -> str:
    """The rule file as YAML, with a comment above each rule naming its source."""
    lines = [HEADER.rstrip("\n"), "groups:", f"- name: {GROUP}", "  rules:"]
    for rule in alert_rules(t):
        data = rule.as_prometheus()
        data["annotations"] = {k: Quoted(v) for k, v in data["annotations"].items()}
        lines.append(f"  # {rule.origin}")
        lines.append(dump([data], indent=2).rstrip("\n"))
    return "\n".join(lines) + "\n"
