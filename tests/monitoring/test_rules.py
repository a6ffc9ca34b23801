"""The alert rules: the seed's rules verbatim, its table rows, and promtool unit tests.

Every alert is run through ``promtool test rules`` both ways: input series that make it
fire (checked for its exact labels and annotations) and series just on the safe side.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from plumctl.monitoring.catalog import referenced_metrics, series_names
from plumctl.monitoring.rules import alert_rules, per_second, render_yaml, rule_groups
from plumtree.core.health import SEED_THRESHOLDS, Thresholds

from .conftest import Promtool
from .support import promtool_ok

# The seed guide's "Prometheus Alert Rules", copied verbatim (None: the seed has none).
SEED_RULES = [
    {
        "alert": "PlumtreeNodeIsolated",
        "expr": "plumtree_eager_peers < 1",
        "for": "1m",
        "severity": "critical",
        "summary": "Node {{ $labels.instance }} is isolated",
        "description": "Node has no eager peers for more than 1 minute",
    },
    {
        "alert": "PlumtreeHighGraftFailures",
        "expr": "rate(plumtree_graft_failed_total[5m]) > 0.33",
        "for": "2m",
        "severity": "critical",
        "summary": "High Graft failure rate on {{ $labels.instance }}",
        "description": "Graft failure rate is {{ $value }}/min",
    },
    {
        "alert": "PlumtreeCachePressure",
        "expr": "plumtree_cache_size / plumtree_cache_capacity > 0.95",
        "for": "5m",
        "severity": "critical",
        "summary": "Cache near capacity on {{ $labels.instance }}",
        "description": None,
    },
    {
        "alert": "PlumtreeHighDuplicateRate",
        "expr": "rate(plumtree_messages_duplicate_total[5m]) / "
        "rate(plumtree_messages_delivered_total[5m]) > 0.5",
        "for": "5m",
        "severity": "warning",
        "summary": "High duplicate message rate on {{ $labels.instance }}",
        "description": None,
    },
    {
        "alert": "PlumtreeLowPeerCount",
        "expr": "plumtree_total_peers < 2",
        "for": "2m",
        "severity": "warning",
        "summary": "Low peer count on {{ $labels.instance }}",
        "description": None,
    },
]

# The seed's alert tables, row by row -> (rule, severity, for) implementing it.
TABLE_ROWS = {
    ("plumtree_eager_peers < 1", "critical"): "PlumtreeNodeIsolated",
    ("graft failures > 20/min", "critical"): "PlumtreeHighGraftFailures",
    ("cache > 95%", "critical"): "PlumtreeCachePressure",
    ("duplicates > 50%", "critical"): "PlumtreeSevereDuplicateRate",
    ("plumtree_eager_peers < 2", "warning"): "PlumtreeReducedRedundancy",
    ("graft failures > 5/min", "warning"): "PlumtreeElevatedGraftFailures",
    ("cache > 80%", "warning"): "PlumtreeCacheUsageHigh",
    ("duplicates > 30%", "warning"): "PlumtreeElevatedDuplicateRate",
    ("pending grafts > 100", "warning"): "PlumtreeGraftBacklog",
}


#: the alerts of exact delivery (no seed row: the seed's counters could not see it)
EXACT_DELIVERY = {"PlumtreeMessagesLost", "PlumtreeMessagesMissing", "PlumtreeStoreFailing"}
#: what the member table says (no seed row either)
MEMBERSHIP = {"PlumtreeMemberDead"}


def by_name() -> dict[str, dict]:
    return {r["alert"]: r for r in rule_groups()["groups"][0]["rules"]}


def test_one_group_named_as_the_seed() -> None:
    groups = rule_groups()["groups"]
    assert [g["name"] for g in groups] == ["plumtree"]


def test_seed_rules_come_first_and_verbatim() -> None:
    rules = rule_groups()["groups"][0]["rules"]
    assert [r["alert"] for r in rules[: len(SEED_RULES)]] == [s["alert"] for s in SEED_RULES]
    for seed, rule in zip(SEED_RULES, rules, strict=False):
        assert rule["expr"] == seed["expr"]
        assert rule["for"] == seed["for"]
        assert rule["labels"] == {"severity": seed["severity"]}
        assert rule["annotations"]["summary"] == seed["summary"]
        if seed["description"] is not None and seed["alert"] != "PlumtreeHighGraftFailures":
            assert rule["annotations"]["description"] == seed["description"]


def test_the_one_deliberate_fix_is_the_graft_failure_unit() -> None:
    """The seed's expression is a per-second rate; its description said '/min'."""
    rule = by_name()["PlumtreeHighGraftFailures"]
    assert rule["expr"] == "rate(plumtree_graft_failed_total[5m]) > 0.33"
    assert "/min" not in rule["annotations"]["description"].split(",")[0]
    assert "$value }}/s" in rule["annotations"]["description"]


def test_every_table_row_has_its_rule() -> None:
    rules = by_name()
    for (_row, severity), name in TABLE_ROWS.items():
        assert rules[name]["labels"]["severity"] == severity, name
    seed_yaml_only = {"PlumtreeHighDuplicateRate", "PlumtreeLowPeerCount"}
    assert set(TABLE_ROWS.values()) | seed_yaml_only | EXACT_DELIVERY | MEMBERSHIP == set(rules)


def test_table_rows_expressions() -> None:
    rules = by_name()
    dup = (
        "rate(plumtree_messages_duplicate_total[5m]) / rate(plumtree_messages_delivered_total[5m])"
    )
    guard = "and increase(plumtree_messages_delivered_total[5m]) >= 20"
    assert rules["PlumtreeElevatedGraftFailures"]["expr"] == (
        "rate(plumtree_graft_failed_total[5m]) > 0.08"
    )
    assert rules["PlumtreeCacheUsageHigh"]["expr"] == (
        "plumtree_cache_size / plumtree_cache_capacity > 0.8"
    )
    assert rules["PlumtreeElevatedDuplicateRate"]["expr"] == f"{dup} > 0.3\n{guard}"
    assert rules["PlumtreeSevereDuplicateRate"]["expr"] == f"{dup} > 0.5\n{guard}"
    assert rules["PlumtreeGraftBacklog"]["expr"] == "plumtree_pending_grafts > 100"
    assert rules["PlumtreeReducedRedundancy"]["expr"] == (
        "plumtree_eager_peers < 2 and plumtree_lazy_peers < 1"
    )


def test_every_rule_has_severity_summary_description_and_runbook() -> None:
    for rule in rule_groups()["groups"][0]["rules"]:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}
        assert all(v.strip() for v in rule["annotations"].values()), rule["alert"]
        assert "{{ $labels.instance }}" in rule["annotations"]["summary"]


def test_descriptions_explain_the_mappings() -> None:
    rules = by_name()
    high = rules["PlumtreeHighDuplicateRate"]["annotations"]["description"]
    assert "PlumtreeSevereDuplicateRate" in high and "PlumtreeElevatedDuplicateRate" in high
    redundancy = rules["PlumtreeReducedRedundancy"]["annotations"]["description"]
    assert "lazy" in redundancy and "leaves" in redundancy


def test_thresholds_come_from_seed_thresholds() -> None:
    t = dataclasses.replace(
        SEED_THRESHOLDS,
        eager_critical_below=2,
        eager_warning_below=3,
        total_peers_warning_below=4,
        graft_failed_per_min_critical=30.0,
        graft_failed_per_min_warning=6.0,
        cache_ratio_critical=0.9,
        cache_ratio_warning=0.7,
        duplicate_ratio_critical=0.6,
        duplicate_ratio_warning=0.4,
        pending_grafts_warning=7,
    )
    exprs = {r.alert: r.expr for r in alert_rules(t)}
    assert exprs["PlumtreeNodeIsolated"].endswith("< 2")
    assert exprs["PlumtreeReducedRedundancy"].startswith("plumtree_eager_peers < 3 ")
    assert exprs["PlumtreeLowPeerCount"].endswith("< 4")
    assert exprs["PlumtreeHighGraftFailures"].endswith("> 0.5")
    assert exprs["PlumtreeElevatedGraftFailures"].endswith("> 0.1")
    assert exprs["PlumtreeCachePressure"].endswith("> 0.9")
    assert exprs["PlumtreeCacheUsageHigh"].endswith("> 0.7")
    assert "> 0.6\n" in exprs["PlumtreeSevereDuplicateRate"]
    assert "> 0.6" in exprs["PlumtreeHighDuplicateRate"]
    assert "> 0.4\n" in exprs["PlumtreeElevatedDuplicateRate"]
    assert exprs["PlumtreeGraftBacklog"].endswith("> 7")
    assert isinstance(SEED_THRESHOLDS, Thresholds)


def test_per_minute_thresholds_convert_as_the_seed_does() -> None:
    assert per_second(20) == 0.33  # the seed's own conversion
    assert per_second(5) == 0.08


def test_rules_reference_only_exported_metrics() -> None:
    known = series_names()
    for rule in rule_groups()["groups"][0]["rules"]:
        names = referenced_metrics(rule["expr"])
        assert names, rule["alert"]
        assert names <= known, (rule["alert"], names - known)


def test_yaml_is_ascii_and_readable() -> None:
    text = render_yaml()
    assert text.isascii()
    assert "  - alert: PlumtreeNodeIsolated\n    expr: plumtree_eager_peers < 1\n" in text
    assert '      summary: "Node {{ $labels.instance }} is isolated"\n' in text
    assert "# alert table: plumtree_pending_grafts > 100, Warning" in text


def test_promtool_check_rules_accepts_the_file(promtool: Promtool, tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(render_yaml())
    proc = promtool("check", "rules", "rules.yml")
    promtool_ok(proc)
    assert f"SUCCESS: {len(alert_rules())} rules found" in proc.stdout


# ---- promtool test rules -----------------------------------------------------------------

INSTANCE = "n1:7947"
LABELS = {"instance": INSTANCE, "job": "plumtree", "node": "n1"}
SELECTOR = ",".join(f'{k}="{v}"' for k, v in LABELS.items())

Series = dict[str, str]  # metric name -> promtool values notation, e.g. "0+25x20"


@dataclass
class Case:
    fire: Series  # makes the alert fire
    value: str  # how the alert's {{ $value ... }} renders for ``fire``
    safe: list[Series]  # each must not fire
    fire_also: list[tuple[Series, str]] = field(default_factory=list)  # (series, value)
    # For alerts on gauges (true from t=0): not firing one minute before ``for`` ends.
    check_for: bool = False


def counters(dup: int, delivered: int) -> Series:
    """Per-minute increases of the duplicate and delivered counters."""
    return {
        "plumtree_messages_duplicate_total": f"0+{dup}x20",
        "plumtree_messages_delivered_total": f"0+{delivered}x20",
    }


CASES: dict[str, Case] = {
    "PlumtreeNodeIsolated": Case(
        fire={"plumtree_eager_peers": "0x20"},
        value="0",
        safe=[{"plumtree_eager_peers": "1x20"}],
        check_for=True,
    ),
    # 0.33/s is the seed's 20/min rounded: 21/min fires, 19/min does not.
    "PlumtreeHighGraftFailures": Case(
        fire={"plumtree_graft_failed_total": "0+21x20"},
        value="0.35",
        safe=[{"plumtree_graft_failed_total": "0+19x20"}],
    ),
    "PlumtreeCachePressure": Case(
        fire={"plumtree_cache_size": "96x20", "plumtree_cache_capacity": "100x20"},
        value="96%",
        safe=[{"plumtree_cache_size": "95x20", "plumtree_cache_capacity": "100x20"}],
        check_for=True,
    ),
    # The seed's rule, unguarded: with no deliveries at all its ratio is +Inf and it fires.
    "PlumtreeHighDuplicateRate": Case(
        fire=counters(51, 100),
        value="51%",
        safe=[counters(49, 100), counters(50, 100), counters(0, 0)],
        fire_also=[(counters(10, 0), "+Inf%")],
    ),
    "PlumtreeLowPeerCount": Case(
        fire={"plumtree_total_peers": "1x20"},
        value="1",
        safe=[{"plumtree_total_peers": "2x20"}],
        check_for=True,
    ),
    # 0.08/s is 5/min rounded as the seed rounds: 6/min fires, 4/min does not.
    "PlumtreeElevatedGraftFailures": Case(
        fire={"plumtree_graft_failed_total": "0+6x20"},
        value="0.10",
        safe=[{"plumtree_graft_failed_total": "0+4x20"}],
    ),
    "PlumtreeCacheUsageHigh": Case(
        fire={"plumtree_cache_size": "81x20", "plumtree_cache_capacity": "100x20"},
        value="81%",
        safe=[{"plumtree_cache_size": "80x20", "plumtree_cache_capacity": "100x20"}],
        check_for=True,
    ),
    "PlumtreeElevatedDuplicateRate": Case(
        fire=counters(31, 100),
        value="31%",
        # 3 deliveries a minute is 15 in the window: below the health model's floor of 20
        safe=[counters(29, 100), counters(10, 0), counters(0, 0), counters(2, 3)],
    ),
    "PlumtreeSevereDuplicateRate": Case(
        fire=counters(51, 100),
        value="51%",
        safe=[counters(49, 100), counters(50, 100), counters(10, 0), counters(2, 3)],
    ),
    "PlumtreeGraftBacklog": Case(
        fire={"plumtree_pending_grafts": "101x20"},
        value="101",
        safe=[{"plumtree_pending_grafts": "100x20"}],
        check_for=True,
    ),
    # One eager peer and no lazy one: fewer than two peers carry the node's messages.
    # A leaf (one eager peer) with a lazy peer is fine; so are two eager peers. No eager
    # peer but a lazy one is PlumtreeNodeIsolated's business.
    "PlumtreeReducedRedundancy": Case(
        fire={"plumtree_eager_peers": "1x20", "plumtree_lazy_peers": "0x20"},
        value="1",
        safe=[
            {"plumtree_eager_peers": "1x20", "plumtree_lazy_peers": "1x20"},
            {"plumtree_eager_peers": "2x20", "plumtree_lazy_peers": "0x20"},
            {"plumtree_eager_peers": "0x20", "plumtree_lazy_peers": "1x20"},
        ],
        fire_also=[({"plumtree_eager_peers": "0x20", "plumtree_lazy_peers": "0x20"}, "0")],
        check_for=True,
    ),
    # one loss a minute: increase() over 5m extrapolates the 4 seen in the window to 5;
    # summed over the reason label
    "PlumtreeMessagesLost": Case(
        fire={
            'plumtree_messages_lost_total{reason="unavailable"}': "0+1x20",
            'plumtree_messages_lost_total{reason="limit"}': "0x20",
        },
        value="5",
        safe=[
            {
                'plumtree_messages_lost_total{reason="unavailable"}': "0x20",
                'plumtree_messages_lost_total{reason="limit"}': "0x20",
            }
        ],
        fire_also=[
            (
                {
                    'plumtree_messages_lost_total{reason="unavailable"}': "0x20",
                    'plumtree_messages_lost_total{reason="limit"}': "0+1x20",
                },
                "5",
            )
        ],
    ),
    # a gap stuck for minutes fires; messages merely on their way (missing > 0 at every
    # scrape of a busy node, each gap a fraction of a second old) do not
    "PlumtreeMessagesMissing": Case(
        fire={
            "plumtree_messages_missing": "3x20",
            "plumtree_messages_missing_seconds": "90+60x20",
        },
        value="3",
        safe=[
            {"plumtree_messages_missing": "0x20", "plumtree_messages_missing_seconds": "0x20"},
            {"plumtree_messages_missing": "40x20", "plumtree_messages_missing_seconds": "0.2x20"},
        ],
        check_for=True,
    ),
    "PlumtreeStoreFailing": Case(
        fire={"plumtree_store_failing": "1x20"},
        value="1",
        safe=[{"plumtree_store_failing": "0x20"}],
        check_for=True,
    ),
    # a node that sees one member dead (and two alive, itself included) alerts; one that
    # sees no dead member, or only members that left gracefully, does not
    "PlumtreeMemberDead": Case(
        fire={'swim_members{state="dead"}': "1x20", 'swim_members{state="alive"}': "2x20"},
        value="1",
        safe=[
            {'swim_members{state="dead"}': "0x20", 'swim_members{state="alive"}': "3x20"},
            {'swim_members{state="left"}': "1x20", 'swim_members{state="alive"}': "2x20"},
        ],
        check_for=True,
    ),
}

_TEMPLATE = re.compile(r"\{\{ (?:\$value\b[^}]*|printf [^}]*\$value) \}\}")


def rendered(template: str, value: str) -> str:
    """A rule annotation as Prometheus renders it for our series."""
    text = template.replace("{{ $labels.instance }}", INSTANCE)
    text = _TEMPLATE.sub(value, text)
    assert "{{" not in text, f"test does not know how to render {template!r}"
    return text


def duration_minutes(text: str) -> int:
    match = re.fullmatch(r"(\d+)m", text)
    assert match, text
    return int(match.group(1))


def _with_selector(metric: str) -> str:
    """``name`` or ``name{labels}`` with the test target's labels added."""
    name, brace, labels = metric.partition("{")
    return f"{name}{{{labels.rstrip('}')},{SELECTOR}}}" if brace else f"{name}{{{SELECTOR}}}"


def unit_test(name: str, series: Series, evals: list[tuple[str, list[dict]]], alert: str) -> dict:
    return {
        "name": name,
        "interval": "1m",
        "input_series": [
            {"series": _with_selector(metric), "values": values}
            for metric, values in series.items()
        ],
        "alert_rule_test": [
            {"eval_time": at, "alertname": alert, "exp_alerts": expected} for at, expected in evals
        ],
    }


def unit_tests_for(alert: str) -> list[dict]:
    rule = next(r for r in alert_rules() if r.alert == alert)
    case = CASES[alert]

    def firing(value: str) -> dict:
        return {
            "exp_labels": {**LABELS, "severity": rule.severity},
            "exp_annotations": {
                "summary": rendered(rule.summary, value),
                "description": rendered(rule.description, value),
                "runbook": rule.runbook,
            },
        }

    fired = firing(case.value)
    tests = [unit_test(f"{alert} fires", case.fire, [("10m", [fired]), ("20m", [fired])], alert)]
    if case.check_for:
        hold = duration_minutes(rule.for_)
        tests.append(
            unit_test(
                f"{alert} waits for its 'for'",
                case.fire,
                [(f"{hold - 1}m", []), (f"{hold}m", [fired])],
                alert,
            )
        )
    for i, (series, value) in enumerate(case.fire_also):
        tests.append(
            unit_test(f"{alert} fires too ({i})", series, [("10m", [firing(value)])], alert)
        )
    for i, series in enumerate(case.safe):
        tests.append(
            unit_test(f"{alert} stays quiet ({i})", series, [("10m", []), ("20m", [])], alert)
        )
    return tests


def run_unit_tests(promtool: Promtool, tmp_path: Path, tests: list[dict]) -> None:
    (tmp_path / "rules.yml").write_text(render_yaml())
    document = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "tests.yml").write_text(json.dumps(document, indent=2))  # JSON is YAML
    promtool_ok(promtool("test", "rules", "tests.yml"))


def test_every_alert_has_a_case() -> None:
    assert set(CASES) == {r.alert for r in alert_rules()}
    for name, case in CASES.items():
        assert case.fire and case.safe, name


@pytest.mark.parametrize("alert", sorted(CASES))
def test_promtool_unit_tests(alert: str, promtool: Promtool, tmp_path: Path) -> None:
    tests = unit_tests_for(alert)
    # Annotations that need no $value are checked as literal text too.
    if alert == "PlumtreeNodeIsolated":
        annotations = tests[0]["alert_rule_test"][0]["exp_alerts"][0]["exp_annotations"]
        assert annotations["summary"] == "Node n1:7947 is isolated"
        assert annotations["description"] == "Node has no eager peers for more than 1 minute"
    if alert == "PlumtreeHighGraftFailures":
        annotations = tests[0]["alert_rule_test"][0]["exp_alerts"][0]["exp_annotations"]
        assert annotations["description"] == "Graft failure rate is 0.35/s, above 0.33/s (20/min)"
    run_unit_tests(promtool, tmp_path, tests)


def test_the_harness_catches_a_wrong_expectation(promtool: Promtool, tmp_path: Path) -> None:
    """A safe series expected to fire must make promtool fail (the harness is not blind)."""
    tests = [
        unit_test(
            "wrong on purpose",
            {"plumtree_eager_peers": "1x20"},
            [("10m", [{"exp_labels": {**LABELS, "severity": "critical"}}])],
            "PlumtreeNodeIsolated",
        )
    ]
    (tmp_path / "rules.yml").write_text(render_yaml())
    document = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "tests.yml").write_text(json.dumps(document))
    proc = promtool("test", "rules", "tests.yml")
    assert proc.returncode != 0
    assert "PlumtreeNodeIsolated" in proc.stdout + proc.stderr
