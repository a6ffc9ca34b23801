"""docs/monitoring.md, the monitoring guide, stays true to the code.

Every metric a real node exports (with and without a durable store) has a row with its
type and labels, histogram buckets, health thresholds, alert rules, the score's PromQL
and the event levels are the code's own, and nothing in the repository points at a copy
of the guide outside it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from plumctl.monitoring import catalog
from plumctl.monitoring.dashboard import HEALTH_SCORE
from plumctl.monitoring.rules import alert_rules
from plumtree.core import events
from plumtree.core.health import SEED_THRESHOLDS, Status, Thresholds
from plumtree.core.stats import PROBE_RTT_BUCKETS, PlumtreeHistograms
from plumtree.runtime.eventhub import LEVELS
from tests.runtime.conftest import LocalCluster

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "monitoring.md"
TYPES = {"counter", "gauge", "histogram"}
METRIC_CELL = re.compile(r"^`([A-Za-z_:][A-Za-z0-9_:]*)`$")
DATA_DIR_ONLY = "only with --data-dir"


@dataclasses.dataclass(frozen=True)
class Exported:
    """One metric family as a node exposes it."""

    name: str  # as in the exposition: counters with _total
    type: str
    labels: frozenset[str]
    buckets: tuple[float, ...]  # histograms: the finite ``le`` bounds


def text() -> str:
    return DOC.read_text(encoding="utf-8")


def mentioned(name: str, haystack: str) -> bool:
    """``name`` appears as a whole identifier (``x`` is not found inside ``x_total``)."""
    return re.search(rf"(?<![\w:]){re.escape(name)}(?![\w:])", haystack) is not None


def table_rows(body: str) -> list[list[str]]:
    """Every Markdown table row of ``body`` as its stripped cells (separators left out)."""
    rows = []
    for line in body.splitlines():
        line = line.strip()
        if not (line.startswith("|") and line.endswith("|")):
            continue
        cells = [c.strip() for c in line[1:-1].split("|")]
        if all(set(c) <= set("-: ") for c in cells):
            continue
        rows.append(cells)
    return rows


def section(number: str) -> str:
    """The body of the section headed ``## N.`` or ``### N.M``, up to the next heading."""
    body = text()
    match = re.search(rf"^#+ {re.escape(number)}[. ].*$", body, re.M)
    assert match, f"no section {number} in {DOC.name}"
    rest = body[match.end() :]
    end = re.search(r"^#+ ", rest, re.M)
    return rest[: end.start()] if end else rest


def metric_rows() -> dict[str, list[str]]:
    """Metric tables: rows whose first cell is one backticked name and second a type."""
    rows: dict[str, list[str]] = {}
    for cells in table_rows(text()):
        match = METRIC_CELL.match(cells[0])
        if match is None or len(cells) < 4 or cells[1] not in TYPES:
            continue
        name = match.group(1)
        assert name not in rows, f"{name} has two rows in the metric tables"
        rows[name] = cells
    return rows


def numbers(cell: str) -> tuple[float, ...]:
    return tuple(float(n) for n in cell.split(","))


# -- a real node's exposition ------------------------------------------------------------


async def _scrape(data_dir: str | None) -> str:
    cluster = LocalCluster()
    try:
        node = await cluster.add("doc", data_dir=data_dir)  # None: memory only (the default)
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{node.admin_url}/metrics")
        response.raise_for_status()
        return response.text
    finally:
        await cluster.stop()


def _families(exposition: str) -> dict[str, Exported]:
    found: dict[str, Exported] = {}
    for family in text_string_to_metric_families(exposition):
        name = family.name + "_total" if family.type == "counter" else family.name
        labels = frozenset(k for s in family.samples for k in s.labels if k != "le")
        bounds = sorted(
            {
                float(s.labels["le"])
                for s in family.samples
                if "le" in s.labels and s.labels["le"] != "+Inf"
            }
        )
        found[name] = Exported(name, family.type, labels, tuple(bounds))
    return found


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Exported]]:
    """Families of a node in memory (``plain``) and of one with a data dir (``durable``)."""
    data_dir = tmp_path_factory.mktemp("doc-node")
    return {
        "plain": _families(asyncio.run(_scrape(None))),
        "durable": _families(asyncio.run(_scrape(str(data_dir)))),
    }


# -- metrics -----------------------------------------------------------------------------


def test_every_catalog_series_is_in_the_guide() -> None:
    body = text()
    missing = sorted(n for n in catalog.series_names() if not mentioned(n, body))
    assert not missing, f"{DOC.name} does not mention {missing}"


def test_every_exported_family_has_a_row_with_its_type_and_labels(
    exported: dict[str, dict[str, Exported]],
) -> None:
    rows = metric_rows()
    families = {**exported["plain"], **exported["durable"]}
    assert set(families) - set(rows) == set(), "exported, but no row in the metric tables"
    for name, family in families.items():
        cells = rows[name]
        assert cells[1] == family.type, f"{name}: the guide says {cells[1]}, the node {family.type}"
        if family.type == "histogram":
            continue  # third column: buckets (test_histogram_buckets)
        if family.labels:
            for label in family.labels:
                assert f"`{label}`" in cells[2], f"{name}: label {label} not in {cells[2]!r}"
        else:
            assert cells[2] == "-", f"{name} has no labels, the guide says {cells[2]!r}"


def test_the_guide_lists_no_metric_a_node_does_not_export(
    exported: dict[str, dict[str, Exported]],
) -> None:
    families = {**exported["plain"], **exported["durable"]}
    assert set(metric_rows()) - set(families) == set()


def test_store_metrics_are_marked_data_dir_only(
    exported: dict[str, dict[str, Exported]],
) -> None:
    only_durable = set(exported["durable"]) - set(exported["plain"])
    assert only_durable, "a node with a data dir exports no metric of its own"
    assert set(exported["plain"]) <= set(exported["durable"])
    marked = {name for name, cells in metric_rows().items() if DATA_DIR_ONLY in cells[-1]}
    assert marked == only_durable


def test_histogram_buckets(exported: dict[str, dict[str, Exported]]) -> None:
    code = {f"plumtree_{name}": h.bounds for name, h in PlumtreeHistograms().items()}
    code["swim_probe_rtt_seconds"] = tuple(float(b) for b in PROBE_RTT_BUCKETS)
    written = {
        name: numbers(cells[2]) for name, cells in metric_rows().items() if cells[1] == "histogram"
    }
    assert written == code
    for name, bounds in code.items():
        assert exported["plain"][name].buckets == bounds, name
        contract = catalog.HISTOGRAMS[name]
        if contract is not None:
            assert tuple(float(b) for b in contract) == bounds, name


# -- health ------------------------------------------------------------------------------


def _g(value: float) -> str:
    return format(value, "g")


def _pct(ratio: float) -> str:
    return f"{100 * ratio:g}%"


def threshold_phrases(t: Thresholds) -> dict[str, tuple[str, str]]:
    """Thresholds field -> (health check, the phrase the guide's check table must say)."""
    return {
        "eager_critical_below": ("connectivity", f"eager peers < {t.eager_critical_below}"),
        "eager_warning_below": ("redundancy", f'"eager peers < {t.eager_warning_below}"'),
        "total_peers_warning_below": (
            "redundancy",
            f"eager + lazy peers < {t.total_peers_warning_below}",
        ),
        "graft_failed_per_min_critical": (
            "graft",
            f"more than {_g(t.graft_failed_per_min_critical)} Graft failures/min",
        ),
        "graft_failed_per_min_warning": (
            "graft",
            f"more than {_g(t.graft_failed_per_min_warning)} Graft failures/min",
        ),
        "graft_failure_ratio_degraded": (
            "graft",
            f"failures ≥ {_pct(t.graft_failure_ratio_degraded)} of Grafts sent",
        ),
        "graft_failure_ratio_min_sent": (
            "graft",
            f"once at least {t.graft_failure_ratio_min_sent} were sent",
        ),
        "cache_ratio_critical": ("cache", f"cache above {_pct(t.cache_ratio_critical)}"),
        "cache_ratio_warning": ("cache", f"cache above {_pct(t.cache_ratio_warning)}"),
        "duplicate_ratio_critical": (
            "duplicates",
            f"duplicates above {_pct(t.duplicate_ratio_critical)} of deliveries",
        ),
        "duplicate_ratio_warning": (
            "duplicates",
            f"duplicates above {_pct(t.duplicate_ratio_warning)} of deliveries",
        ),
        "duplicate_ratio_min_delivered": (
            "duplicates",
            f"from {t.duplicate_ratio_min_delivered} deliveries in the window",
        ),
        "pending_grafts_warning": (
            "pending_grafts",
            f"more than {t.pending_grafts_warning} pending Grafts",
        ),
        "backlog_ratio_warning": ("backlog", f"at least {_pct(t.backlog_ratio_warning)} full"),
        "missing_degraded_after": (
            "delivery",
            f"missing for {_g(t.missing_degraded_after)} s or more",
        ),
    }


def health_checks() -> dict[str, str]:
    """The guide's check table: check name -> its whole row."""
    checks: dict[str, str] = {}
    for cells in table_rows(section("3.1")):
        match = re.match(r"`(\w+)`", cells[0])
        if match:
            checks[match.group(1)] = " | ".join(cells)
    return checks


def test_every_health_threshold_is_quoted_as_the_code_has_it() -> None:
    t = SEED_THRESHOLDS
    phrases = threshold_phrases(t)
    fields = {f.name for f in dataclasses.fields(Thresholds)}
    assert set(phrases) == fields, "a threshold without a phrase in the guide's check table"
    checks = health_checks()
    for field, (check, phrase) in phrases.items():
        assert check in checks, f"no row for the {check} check"
        assert phrase in checks[check], f"{field}: {phrase!r} not in the {check} row"


def test_the_check_table_has_every_check_and_no_other() -> None:
    from plumtree.core.health import HealthInputs, evaluate

    report = evaluate(
        HealthInputs(eager_peers=0, lazy_peers=0, cache_size=0, cache_capacity=1, pending_grafts=0)
    )
    expected = {c.name for c in report.checks} | {"store"}  # node.health() adds "store"
    assert set(health_checks()) == expected


def test_statuses_and_http_codes() -> None:
    rows = {cells[0]: cells[1] for cells in table_rows(section("3")) if len(cells) == 3}
    for status in Status:
        assert rows.get(status.value) == str(status.http_status), status


# -- score, alerts, events ---------------------------------------------------------------


def test_the_score_is_the_code_s_promql() -> None:
    assert HEALTH_SCORE in section("4")


def test_the_alert_table_has_every_rule_with_its_expression_severity_and_for() -> None:
    written = sorted(
        (cells[0], cells[1].strip("`"), cells[2], cells[3])
        for cells in table_rows(section("5.2"))
        if re.fullmatch(r"Plumtree\w+", cells[0])
    )
    expected = sorted(
        (r.alert, " ".join(r.expr.split()), r.severity, r.for_) for r in alert_rules()
    )
    assert written == expected


def test_every_event_kind_is_listed_with_its_level() -> None:
    node_kinds = {"leaving", "keyring_changed"}  # the node's own, not the protocol's
    kinds = {str(cls.__struct_config__.tag) for cls in events.Event.__subclasses__()} | node_kinds
    written = {}
    for cells in table_rows(section("7.2")):
        match = re.fullmatch(r"`(\w+)`", cells[0])
        if match:
            written[match.group(1)] = cells[1]
    assert set(written) == kinds
    for kind in kinds:
        assert written[kind] == LEVELS[kind], kind


# -- the guide lives here ----------------------------------------------------------------

#: Built from parts so this file does not match itself.
OUTSIDE = ("shared/" + "seed", "monitoring-guide" + ".md")
SKIP_DIRS = {"__pycache__", "node_modules"}


def _sources() -> list[Path]:
    """The repository's *.md and *.py files (hidden directories, caches and builds left out)."""
    found: list[Path] = []
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [
            d for d in dirs if not (d.startswith(".") or d in SKIP_DIRS or d.endswith(".egg-info"))
        ]
        found.extend(Path(top, f) for f in files if f.endswith((".md", ".py")))
    return found


def test_nothing_refers_to_a_guide_outside_the_repository() -> None:
    sources = _sources()
    assert DOC in sources and Path(__file__).resolve() in sources
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sources
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if any(needle in line for needle in OUTSIDE)
    ]
    assert not offenders, "the monitoring guide is docs/monitoring.md:\n" + "\n".join(offenders)
