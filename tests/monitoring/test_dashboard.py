"""The Grafana dashboard: importable JSON, the seed's panels and queries, valid PromQL."""

from __future__ import annotations

import json
import re
from pathlib import Path

from plumctl.monitoring import catalog
from plumctl.monitoring.dashboard import (
    NODE,
    all_expressions,
    all_panels,
    dashboard,
    render_json,
)
from plumctl.monitoring.rules import rule_groups
from plumctl.monitoring.yamlout import dump

from .conftest import Promtool
from .support import promtool_ok

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# The seed guide's "Overview Panel", verbatim: title -> [(expr, legend)].
SEED_PANELS = {
    "Message Rate": [
        ("rate(plumtree_messages_broadcast_total[5m])", "Broadcast"),
        ("rate(plumtree_messages_delivered_total[5m])", "Delivered"),
        ("rate(plumtree_messages_duplicate_total[5m])", "Duplicate"),
    ],
    "Peer Counts": [
        ("plumtree_eager_peers", "Eager"),
        ("plumtree_lazy_peers", "Lazy"),
        ("plumtree_total_peers", "Total"),
    ],
    "Graft Operations": [
        ("rate(plumtree_graft_sent_total[5m])", "Sent"),
        ("rate(plumtree_graft_success_total[5m])", "Success"),
        ("rate(plumtree_graft_failed_total[5m])", "Failed"),
    ],
    "Graft Latency": [("rate(plumtree_graft_latency_seconds_bucket[5m])", None)],
}

# The seed guide's "Key Queries", verbatim: panel title -> expression.
SEED_QUERIES = {
    "Message Delivery Rate": "rate(plumtree_messages_delivered_total[5m])",
    "Duplicate Rate %": "100 * rate(plumtree_messages_duplicate_total[5m]) / "
    "rate(plumtree_messages_delivered_total[5m])",
    "P99 Graft Latency": "histogram_quantile(0.99, rate(plumtree_graft_latency_seconds_bucket[5m]))",
    "Cluster Health Score": """clamp_max(
  (plumtree_eager_peers / 3) *
  (1 - rate(plumtree_graft_failed_total[5m]) / (rate(plumtree_graft_sent_total[5m]) + 0.001)),
  1
)""",
}


def panels_by_title() -> dict[str, dict]:
    return {p["title"]: p for p in all_panels(dashboard())}


def test_json_round_trips() -> None:
    text = render_json()
    assert json.loads(text) == json.loads(json.dumps(dashboard()))
    assert text == render_json()  # stable output


def test_top_level_fields() -> None:
    board = dashboard()
    assert board["uid"] == "plumtree-overview"
    assert board["title"] == "Plumtree Overview"
    assert 36 <= board["schemaVersion"] <= 41
    assert board["time"] == {"from": "now-1h", "to": "now"}
    assert board["refresh"]
    assert board["id"] is None


def test_variables() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["type"] == "query"
    assert instance["datasource"] == DATASOURCE
    assert instance["query"] == "label_values(plumtree_eager_peers, instance)"


def test_every_variable_used_is_defined() -> None:
    text = render_json()
    defined = {v["name"] for v in dashboard()["templating"]["list"]}
    used = set(re.findall(r"\$\{?(\w+)", text)) - {"labels", "value"}
    assert used <= defined, used - defined


def test_panels_have_ids_gridpos_and_the_datasource_variable() -> None:
    panels = all_panels(dashboard())
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    assert all(isinstance(i, int) and i > 0 for i in ids)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"}, panel["title"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["type"] in {"row", "timeseries", "heatmap", "stat"}, panel["title"]
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(refs) == len(set(refs))
        for target in panel.get("targets", []):
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip()


def test_seed_panels_keep_the_seed_expressions_and_legends() -> None:
    """The node row narrows the seed's expressions to one node; nothing else changes."""
    panels = panels_by_title()
    for title, queries in SEED_PANELS.items():
        panel = panels[title]
        got = [(t["expr"].replace(NODE, ""), t.get("legendFormat")) for t in panel["targets"]]
        if title == "Graft Latency":
            assert panel["type"] == "heatmap"
            assert panel["targets"][0]["format"] == "heatmap"
            assert panel["options"]["calculate"] is False
            # The seed gives no legend; Grafana names heatmap buckets from {{le}}.
            got = [(expr, None) for expr, _ in got]
        else:
            assert panel["type"] == "timeseries"
        assert got == queries, title
        assert all(NODE in t["expr"] for t in panel["targets"]), title


def test_key_queries_are_the_seed_queries() -> None:
    panels = panels_by_title()
    for title, expr in SEED_QUERIES.items():
        assert [t["expr"] for t in panels[title]["targets"]] == [expr], title
    stat = panels["Cluster Health Score (min over nodes)"]
    assert stat["type"] == "stat"
    assert stat["targets"][0]["expr"] == f"min(\n{SEED_QUERIES['Cluster Health Score']}\n)"


def test_operational_panels() -> None:
    panels = panels_by_title()
    assert panels["Pending Grafts"]["targets"][0]["expr"] == "plumtree_pending_grafts"
    assert panels["Cache Utilisation"]["targets"][0]["expr"] == (
        "plumtree_cache_size / plumtree_cache_capacity"
    )
    assert panels["SWIM Members by State"]["targets"][0]["legendFormat"] == "{{state}}"
    steps = panels["Cache Utilisation"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 0.8, 0.95]


def test_all_expressions_collects_every_target() -> None:
    board = dashboard()
    exprs = all_expressions(board)
    count = sum(len(p.get("targets", [])) for p in all_panels(board))
    assert len(exprs) == count
    # Panels nested in a collapsed row are found too.
    board["panels"].append(
        {"type": "row", "collapsed": True, "panels": [{"targets": [{"expr": "up"}]}]}
    )
    assert all_expressions(board)[-1] == "up"


def test_expressions_reference_only_exported_metrics() -> None:
    known = catalog.series_names()
    for expr in all_expressions(dashboard()):
        names = catalog.referenced_metrics(expr)
        assert names, expr
        assert names <= known, (expr, names - known)
    assert "plumtree_eager_peers" in known  # the instance variable's metric


def test_every_expression_parses_with_promtool(promtool: Promtool, tmp_path: Path) -> None:
    """promtool validates PromQL offline: each expression becomes a recording rule.
    Grafana variables are replaced by a sample value first."""
    exprs = all_expressions(dashboard())
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:expr_{i}", "expr": expr.replace("$instance", "n1:7947")}
                    for i, expr in enumerate(exprs)
                ],
            }
        ]
    }
    (tmp_path / "exprs.yml").write_text(dump(rules))
    proc = promtool("check", "rules", "exprs.yml")
    promtool_ok(proc)
    assert f"SUCCESS: {len(exprs)} rules found" in proc.stdout


def test_promtool_rejects_bad_promql(promtool: Promtool, tmp_path: Path) -> None:
    """The check above is not blind: a broken expression fails it."""
    bad = {"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "rate(x[5m]"}]}]}
    (tmp_path / "bad.yml").write_text(dump(bad))
    assert promtool("check", "rules", "bad.yml").returncode != 0


def test_catalog_extracts_metric_names() -> None:
    ref = catalog.referenced_metrics
    assert ref("plumtree_eager_peers < 1") == {"plumtree_eager_peers"}
    assert ref('sum by (le) (rate(a_bucket{instance="$x", le!="1"}[5m])) offset 1h') == {"a_bucket"}
    assert ref("histogram_quantile(0.99, rate(h_bucket[5m])) and on(instance) up") == {
        "h_bucket",
        "up",
    }
    assert ref("100 * a / b > 0.5 unless c") == {"a", "b", "c"}
    assert ref("clamp_max(x, 1e3)") == {"x"}


def test_catalog_lists_each_metric_once() -> None:
    names = [*catalog.COUNTERS, *catalog.GAUGES, *catalog.HISTOGRAMS]
    assert len(names) == len(set(names))
    assert all(n.endswith("_total") for n in catalog.COUNTERS)
    assert "up" not in catalog.series_names()
    # The rules and the dashboard together use the seed's core metrics.
    used = set()
    for rule in rule_groups()["groups"][0]["rules"]:
        used |= catalog.referenced_metrics(rule["expr"])
    for expr in all_expressions(dashboard()):
        used |= catalog.referenced_metrics(expr)
    assert {"plumtree_eager_peers", "plumtree_graft_failed_total", "swim_members"} <= used
