"""The seed's health model: each threshold flips the status exactly where the seed says."""

from __future__ import annotations

import pytest

from plumtree.core.health import CounterWindow, HealthInputs, Status, evaluate


def inputs(**changes: object) -> HealthInputs:
    base: dict[str, object] = {
        "eager_peers": 2,
        "lazy_peers": 3,
        "cache_size": 10,
        "cache_capacity": 100,
        "pending_grafts": 0,
        "window_seconds": 60.0,
    }
    base.update(changes)
    return HealthInputs(**base)  # type: ignore[arg-type]


def status(**changes: object) -> Status:
    return evaluate(inputs(**changes)).status


def test_a_normal_node_is_healthy_with_every_component_reported() -> None:
    report = evaluate(inputs())
    assert report.status is Status.HEALTHY
    assert report.message == "all checks passed"
    assert set(report.as_dict()["components"]) == {  # type: ignore[arg-type]
        "connectivity",
        "redundancy",
        "graft",
        "cache",
        "duplicates",
        "pending_grafts",
        "backlog",
        "delivery",
        "store",
    }


def test_http_codes_follow_the_seed() -> None:
    assert [s.http_status for s in Status] == [200, 503, 500]


def test_no_eager_peer_is_critical_isolation() -> None:
    report = evaluate(inputs(eager_peers=0, lazy_peers=4))
    assert report.status is Status.UNHEALTHY
    assert "isolated" in report.message and "4 lazy peers only" in report.message


def test_a_tree_leaf_with_one_eager_and_lazy_backups_is_healthy() -> None:
    assert status(eager_peers=1, lazy_peers=2) is Status.HEALTHY


def test_fewer_than_two_peers_in_total_is_reduced_redundancy() -> None:
    assert status(eager_peers=1, lazy_peers=0) is Status.DEGRADED
    assert status(eager_peers=1, lazy_peers=1) is Status.HEALTHY


@pytest.mark.parametrize(
    ("failed_per_min", "expected"),
    [(5, Status.HEALTHY), (5.5, Status.DEGRADED), (20, Status.DEGRADED), (21, Status.UNHEALTHY)],
)
def test_graft_failure_rate_thresholds(failed_per_min: float, expected: Status) -> None:
    # 60 s window: failures in window == failures per minute; many sent so the ratio is low
    assert status(graft_failed_in_window=failed_per_min, graft_sent_in_window=10_000) is expected


def test_graft_failure_ratio_of_ten_percent_degrades_once_there_is_enough_data() -> None:
    assert status(graft_failed_in_window=1, graft_sent_in_window=10) is Status.DEGRADED
    assert status(graft_failed_in_window=1, graft_sent_in_window=11) is Status.HEALTHY
    assert status(graft_failed_in_window=1, graft_sent_in_window=5) is Status.HEALTHY


@pytest.mark.parametrize(
    ("size", "expected"),
    [(80, Status.HEALTHY), (81, Status.DEGRADED), (95, Status.DEGRADED), (96, Status.UNHEALTHY)],
)
def test_cache_thresholds(size: int, expected: Status) -> None:
    assert status(cache_size=size, cache_capacity=100) is expected


@pytest.mark.parametrize(
    ("dups", "expected"),
    [(30, Status.HEALTHY), (31, Status.DEGRADED), (50, Status.DEGRADED), (51, Status.UNHEALTHY)],
)
def test_duplicate_rate_thresholds(dups: int, expected: Status) -> None:
    assert status(delivered_in_window=100, duplicates_in_window=dups) is expected


def test_duplicate_rate_is_not_judged_on_a_handful_of_messages() -> None:
    assert status(delivered_in_window=1, duplicates_in_window=2) is Status.HEALTHY


def test_pending_graft_backlog() -> None:
    assert status(pending_grafts=100) is Status.HEALTHY
    assert status(pending_grafts=101) is Status.DEGRADED


def test_drops_and_a_full_queue_are_a_backlog() -> None:
    assert status(drops_in_window=1) is Status.DEGRADED
    assert status(ihave_queue_size=90, ihave_queue_capacity=100) is Status.DEGRADED


def test_the_message_lists_every_problem_worst_first() -> None:
    report = evaluate(inputs(eager_peers=0, lazy_peers=1, pending_grafts=500))
    assert report.status is Status.UNHEALTHY
    first, *rest = report.message.split("; ")
    assert first.startswith("isolated")
    assert any("Graft backlog" in part for part in rest)


def test_counter_window_turns_totals_into_recent_increases() -> None:
    w = CounterWindow(window=10.0)
    w.record(0.0, (0, 0))
    w.record(5.0, (5, 1))
    w.record(12.0, (12, 1))
    w.record(16.0, (20, 3))
    seconds, deltas = w.deltas(16.0, (20, 3))
    assert seconds == 11.0  # oldest kept sample is at t=5 (t=0 fell out of the window)
    assert deltas == (15, 2)


def test_messages_count_one_peer_in_the_singular() -> None:
    checks = {c.name: c.message for c in evaluate(inputs(eager_peers=1, lazy_peers=0)).checks}
    assert checks["connectivity"] == "1 eager peer"
    alone = evaluate(inputs(eager_peers=0, lazy_peers=1)).message
    assert "(1 lazy peer only)" in alone
    two = {c.name: c.message for c in evaluate(inputs(eager_peers=1, lazy_peers=1)).checks}
    assert two["redundancy"] == "1 eager + 1 lazy peers"
