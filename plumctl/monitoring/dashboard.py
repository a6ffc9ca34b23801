"""The Grafana dashboard for plumtree clusters, as one JSON document importable as-is.

Two rows:

* **Cluster**: the monitoring guide's "Key Queries" exactly as the guide writes them (one series per
  node): Cluster Health Score (per node, and its minimum over nodes as a stat, which is
  how ``plumctl health`` scores the cluster), Message Delivery Rate, Duplicate Rate %,
  P99 Graft Latency; plus pending Grafts and cache utilisation with the alert thresholds
  drawn in.
* **Node $instance**: the monitoring guide's four panels (Message Rate, Peer Counts, Graft
  Operations, Graft Latency) with the monitoring guide's expressions and legends, narrowed to the node
  chosen in the ``instance`` variable (a ``{instance="$instance"}`` matcher is the only
  change: the monitoring guide's legends name no node, so these panels show one node at a time), and
  the node's view of SWIM membership.

Every panel and target uses the ``${datasource}`` variable (a Prometheus data source).
"""

from __future__ import annotations

import json
from typing import Any

from plumtree.core.health import SEED_THRESHOLDS, Thresholds

UID = "plumtree-overview"
TITLE = "Plumtree Overview"
SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
NODE = (
    '{instance="$instance"}'  # the matcher the node row adds to the monitoring guide's expressions
)

# The monitoring guide's "Cluster Health Score" PromQL, verbatim.
HEALTH_SCORE = """\
clamp_max(
  (plumtree_eager_peers / 3) *
  (1 - rate(plumtree_graft_failed_total[5m]) / (rate(plumtree_graft_sent_total[5m]) + 0.001)),
  1
)"""
DELIVERY_RATE = "rate(plumtree_messages_delivered_total[5m])"
DUPLICATE_PERCENT = (
    "100 * rate(plumtree_messages_duplicate_total[5m]) / "
    "rate(plumtree_messages_delivered_total[5m])"
)
P99_GRAFT_LATENCY = "histogram_quantile(0.99, rate(plumtree_graft_latency_seconds_bucket[5m]))"


def _target(expr: str, legend: str | None, ref: str, **extra: Any) -> dict[str, Any]:
    target: dict[str, Any] = {"datasource": DATASOURCE, "refId": ref, "expr": expr}
    if legend is not None:
        target["legendFormat"] = legend
    target.update(extra)
    return target


def _targets(*pairs: tuple[str, str | None]) -> list[dict[str, Any]]:
    return [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def _thresholds(*steps: tuple[float, str]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": "green", "value": None}]
        + [{"color": color, "value": value} for value, color in steps],
    }


def _timeseries(
    title: str,
    targets: list[dict[str, Any]],
    unit: str,
    description: str,
    thresholds: dict[str, Any] | None = None,
    **defaults: Any,
) -> dict[str, Any]:
    custom: dict[str, Any] = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 10,
        "showPoints": "never",
        "spanNulls": False,
    }
    field_defaults: dict[str, Any] = {
        "unit": unit,
        "color": {"mode": "palette-classic"},
        "custom": custom,
        **defaults,
    }
    if thresholds is not None:
        field_defaults["thresholds"] = thresholds
        custom["thresholdsStyle"] = {"mode": "dashed"}
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": field_defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def _row(title: str) -> dict[str, Any]:
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "datasource": DATASOURCE,
        "panels": [],
    }


def _panels(t: Thresholds) -> list[tuple[dict[str, Any], int, int]]:
    """(panel, width, height) in reading order; :func:`_layout` places them."""
    per_node = "{{instance}}"
    score_stat = {
        "type": "stat",
        "title": "Cluster Health Score (min over nodes)",
        "description": "The monitoring guide's Cluster Health Score; the cluster scores its weakest node.",
        "datasource": DATASOURCE,
        "targets": [_target(f"min(\n{HEALTH_SCORE}\n)", "cluster", "A")],
        "fieldConfig": {
            "defaults": {
                "unit": "none",
                "min": 0,
                "max": 1,
                "decimals": 2,
                "color": {"mode": "continuous-RdYlGr"},
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "area",
            "textMode": "value",
            "orientation": "auto",
            "justifyMode": "auto",
        },
    }
    heatmap = {
        "type": "heatmap",
        "title": "Graft Latency",
        "description": "The monitoring guide's Graft Latency heatmap (Graft to delivery), on the chosen node.",
        "datasource": DATASOURCE,
        "targets": [
            _target(
                f"rate(plumtree_graft_latency_seconds_bucket{NODE}[5m])",
                "{{le}}",
                "A",
                format="heatmap",
            )
        ],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {
            "calculate": False,
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "scale": "exponential"},
            "yAxis": {"axisPlacement": "left", "unit": "s"},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"mode": "single", "yHistogram": True},
            "legend": {"show": True},
        },
    }
    return [
        (_row("Cluster"), 24, 1),
        (score_stat, 6, 8),
        (
            _timeseries(
                "Cluster Health Score",
                _targets((HEALTH_SCORE, per_node)),
                "none",
                "The monitoring guide's Cluster Health Score per node: (eager peers / 3) x (1 - Graft "
                "failure ratio), capped at 1.",
                min=0,
            ),
            18,
            8,
        ),
        (
            _timeseries(
                "Message Delivery Rate",
                _targets((DELIVERY_RATE, per_node)),
                "ops",
                "Messages delivered to the application per second, per node.",
            ),
            12,
            8,
        ),
        (
            _timeseries(
                "Duplicate Rate %",
                _targets((DUPLICATE_PERCENT, per_node)),
                "percent",
                "Duplicates as a share of deliveries. Alerts: warning above "
                f"{100 * t.duplicate_ratio_warning:g}%, critical above "
                f"{100 * t.duplicate_ratio_critical:g}%.",
                _thresholds(
                    (100 * t.duplicate_ratio_warning, "orange"),
                    (100 * t.duplicate_ratio_critical, "red"),
                ),
            ),
            12,
            8,
        ),
        (
            _timeseries(
                "P99 Graft Latency",
                _targets((P99_GRAFT_LATENCY, per_node)),
                "s",
                "99th percentile of the time from Graft to delivery, per node.",
            ),
            12,
            8,
        ),
        (
            _timeseries(
                "Pending Grafts",
                _targets(("plumtree_pending_grafts", per_node)),
                "short",
                f"Graft requests waiting for an answer. Alert: above {t.pending_grafts_warning}.",
                _thresholds((t.pending_grafts_warning, "orange")),
            ),
            12,
            8,
        ),
        (
            _timeseries(
                "Cache Utilisation",
                _targets(("plumtree_cache_size / plumtree_cache_capacity", per_node)),
                "percentunit",
                "Message cache fill. Alerts: warning above "
                f"{100 * t.cache_ratio_warning:g}%, critical above "
                f"{100 * t.cache_ratio_critical:g}%.",
                _thresholds((t.cache_ratio_warning, "orange"), (t.cache_ratio_critical, "red")),
                min=0,
                max=1,
            ),
            24,
            8,
        ),
        (
            _timeseries(
                "Messages Missing",
                _targets(("plumtree_messages_missing", per_node)),
                "short",
                "Messages known to exist and not delivered yet on each node (being repaired "
                "by anti-entropy). Alert: missing for 5 minutes.",
                _thresholds((1, "orange")),
                min=0,
                decimals=0,
            ),
            12,
            8,
        ),
        (
            _timeseries(
                "Messages Lost and Repaired",
                _targets(
                    (
                        "sum without(reason) (increase(plumtree_messages_lost_total[5m]))",
                        "lost {{instance}}",
                    ),
                    ("increase(plumtree_messages_repaired_total[5m])", "repaired {{instance}}"),
                ),
                "short",
                "Repaired: delivered by anti-entropy, not down the tree. Lost: given up, "
                "nobody reachable held them any more (alert at once).",
                _thresholds((1, "red")),
                min=0,
            ),
            12,
            8,
        ),
        (_row("Node $instance"), 24, 1),
        (
            _timeseries(
                "Message Rate",
                _targets(
                    (f"rate(plumtree_messages_broadcast_total{NODE}[5m])", "Broadcast"),
                    (f"rate(plumtree_messages_delivered_total{NODE}[5m])", "Delivered"),
                    (f"rate(plumtree_messages_duplicate_total{NODE}[5m])", "Duplicate"),
                ),
                "ops",
                "The monitoring guide's Message Rate panel, on the chosen node.",
            ),
            12,
            8,
        ),
        (
            _timeseries(
                "Peer Counts",
                _targets(
                    (f"plumtree_eager_peers{NODE}", "Eager"),
                    (f"plumtree_lazy_peers{NODE}", "Lazy"),
                    (f"plumtree_total_peers{NODE}", "Total"),
                ),
                "short",
                "The monitoring guide's Peer Counts panel, on the chosen node.",
                min=0,
                decimals=0,
            ),
            12,
            8,
        ),
        (
            _timeseries(
                "Graft Operations",
                _targets(
                    (f"rate(plumtree_graft_sent_total{NODE}[5m])", "Sent"),
                    (f"rate(plumtree_graft_success_total{NODE}[5m])", "Success"),
                    (f"rate(plumtree_graft_failed_total{NODE}[5m])", "Failed"),
                ),
                "ops",
                "The monitoring guide's Graft Operations panel, on the chosen node.",
            ),
            12,
            8,
        ),
        (heatmap, 12, 8),
        (
            _timeseries(
                "SWIM Members by State",
                _targets((f"swim_members{NODE}", "{{state}}")),
                "short",
                "The chosen node's membership table: alive, suspect, dead and left members.",
                min=0,
                decimals=0,
            ),
            24,
            8,
        ),
    ]


def _layout(items: list[tuple[dict[str, Any], int, int]]) -> list[dict[str, Any]]:
    """Give each panel an id and a gridPos, filling rows of 24 columns left to right."""
    panels: list[dict[str, Any]] = []
    x = y = row_height = 0
    for panel_id, (panel, width, height) in enumerate(items, start=1):
        if x + width > 24:
            x, y, row_height = 0, y + row_height, 0
        panels.append(
            {"id": panel_id, "gridPos": {"h": height, "w": width, "x": x, "y": y}, **panel}
        )
        x += width
        row_height = max(row_height, height)
    return panels


def dashboard(t: Thresholds = SEED_THRESHOLDS) -> dict[str, Any]:
    """The dashboard as a dict (``json.dumps`` it to import it into Grafana)."""
    return {
        "id": None,
        "uid": UID,
        "title": TITLE,
        "description": "plumtree gossip clusters: the monitoring guide's panels and key queries.",
        "tags": ["plumtree", "gossip"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "includeAll": False,
                    "multi": False,
                    "options": [],
                    "refresh": 1,
                    "regex": "",
                },
                {
                    "name": "instance",
                    "label": "Node",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": "label_values(plumtree_eager_peers, instance)",
                    "definition": "label_values(plumtree_eager_peers, instance)",
                    "current": {},
                    "hide": 0,
                    "includeAll": False,
                    "multi": False,
                    "options": [],
                    "refresh": 2,
                    "regex": "",
                    "sort": 1,
                },
            ]
        },
        "panels": _layout(_panels(t)),
    }


def _walk(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in panels:
        out.append(panel)
        out.extend(_walk(panel.get("panels", [])))  # collapsed rows nest their panels
    return out


def all_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows included (and panels nested in collapsed rows)."""
    return _walk(board.get("panels", []))


def all_expressions(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of every panel target, in panel order."""
    return [
        target["expr"]
        for panel in all_panels(board)
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def render_json(t: Thresholds = SEED_THRESHOLDS) -> str:
    return json.dumps(dashboard(t), indent=2) + "\n"
