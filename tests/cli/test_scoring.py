"""plumctl.scoring: the seed's health score, key queries and threshold levels."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plumctl.promql import histogram_deltas, histogram_quantile, rate
from plumctl.promtext import Scrape, parse
from plumctl.scoring import (
    CLASSIFIED,
    Level,
    NodeRates,
    Score,
    classify,
    classify_rates,
    cluster_score,
    health_score,
    key_queries,
    rates_and_score,
)
from plumtree.core.health import SEED_THRESHOLDS, Status

NO: frozenset[tuple[str, str]] = frozenset()


def node(at: float, **values: float) -> Scrape:
    return Scrape.from_samples({(k, NO): float(v) for k, v in values.items()}, at=at)


def grafts(at: float, eager: float, sent: float, failed: float) -> Scrape:
    return node(
        at,
        plumtree_eager_peers=eager,
        plumtree_graft_sent_total=sent,
        plumtree_graft_failed_total=failed,
    )


# -- health_score -------------------------------------------------------------------------


def test_score_healthy_is_one_without_reasons() -> None:
    s = health_score(grafts(0, 3, 10, 0), grafts(10, 3, 10, 0))
    assert s.value == 1.0
    assert s.reasons == ()
    assert s.inputs["window_s"] == 10.0


def test_score_few_eager_peers() -> None:
    s = health_score(grafts(0, 1, 0, 0), grafts(10, 1, 0, 0))
    assert s.value == pytest.approx(1 / 3)
    assert s.reasons == ("eager peers 1 of 3 (x0.33)",)


def test_score_graft_failures() -> None:
    # 25 sent and 20 failed over 10 s: 1 - 2.0 / (2.5 + 0.001) = 0.2003...
    s = health_score(grafts(0, 3, 0, 0), grafts(10, 3, 25, 20))
    assert s.value == pytest.approx(1 - 2.0 / 2.501)
    assert s.reasons == ("Graft failures 2.0/s of 2.5/s sent (x0.20)",)
    assert s.inputs["graft_sent_per_s"] == 2.5
    assert s.inputs["graft_failed_per_s"] == 2.0


def test_score_both_factors_multiply() -> None:
    s = health_score(grafts(0, 1, 0, 0), grafts(10, 1, 25, 20))
    assert s.value == pytest.approx((1 / 3) * (1 - 2.0 / 2.501))
    assert len(s.reasons) == 2


def test_score_clamped_to_one_by_many_eager_peers() -> None:
    s = health_score(grafts(0, 6, 0, 0), grafts(10, 6, 10, 2))  # 2.0 * 0.8004 -> 1
    assert s.value == 1.0
    assert s.reasons == ()
    t = health_score(grafts(0, 6, 0, 0), grafts(10, 6, 10, 8))  # 2.0 * 0.2002 = 0.4004
    assert t.value == pytest.approx(2 * (1 - 0.8 / 1.001))
    assert t.reasons == ("Graft failures 0.8/s of 1.0/s sent (x0.20)",)


def test_score_clamped_at_zero_when_failures_exceed_sends() -> None:
    s = health_score(grafts(0, 3, 0, 0), grafts(10, 3, 0, 10))  # 1 - 1/0.001 = -999
    assert s.value == 0.0
    assert s.reasons == ("Graft failures 1.0/s of 0.0/s sent (x0.00)",)


def test_score_isolated_node() -> None:
    s = health_score(grafts(0, 0, 0, 0), grafts(10, 0, 0, 0))
    assert s.value == 0.0
    assert s.reasons == ("eager peers 0 of 3 (x0.00)",)


def test_score_counter_reset_between_scrapes() -> None:
    # the node restarted: 5 sent and 5 failed since, over 10 s -> 0.5/s each
    s = health_score(grafts(0, 3, 100, 50), grafts(10, 3, 5, 5))
    assert s.value == pytest.approx(1 - 0.5 / 0.501)


def test_score_unknown_inputs() -> None:
    first = health_score(None, grafts(10, 3, 0, 0))
    assert first.value is None
    assert any("two scrapes" in r for r in first.reasons)
    no_eager = health_score(node(0), node(10, plumtree_graft_sent_total=1))
    assert no_eager.value is None
    assert any("plumtree_eager_peers" in r for r in no_eager.reasons)
    old = health_score(node(0, plumtree_eager_peers=3), node(10, plumtree_eager_peers=3))
    assert old.value is None
    assert "score unknown: plumtree_graft_sent_total not exported" in old.reasons
    assert old.as_dict()["score"] is None


# -- cluster_score ------------------------------------------------------------------------


def test_cluster_score_min_worst_and_reasons() -> None:
    scores = {
        "n1": Score(1.0),
        "n2": Score(0.5, ("eager peers 1 of 3 (x0.33)",)),
        "n3": Score(0.5, ("Graft failures 1.0/s of 2.0/s sent (x0.50)",)),
        "n4": Score(None, ("score unknown: plumtree_eager_peers not exported",)),
    }
    value, worst, reasons = cluster_score(scores)
    assert value == 0.5
    assert worst == ("n2", "n3")
    assert reasons == (
        "n2: eager peers 1 of 3 (x0.33)",
        "n3: Graft failures 1.0/s of 2.0/s sent (x0.50)",
        "n4: score unknown (plumtree_eager_peers not exported)",
    )


def test_cluster_score_empty_and_all_unknown() -> None:
    assert cluster_score({}) == (None, (), ())
    c = cluster_score({"a": Score(None)})
    assert c.value is None and c.worst == ()
    assert c.reasons == ("a: score unknown (unknown)",)


# -- key_queries --------------------------------------------------------------------------

LAT = "plumtree_graft_latency_seconds"
HOPS = "plumtree_message_hops"


def exposition(
    counters: Mapping[str, float],
    gauges: Mapping[str, float],
    hists: Mapping[str, Sequence[tuple[str, float]]],
) -> str:
    lines = []
    for name, v in counters.items():
        lines += [f"# TYPE {name.removesuffix('_total')} counter", f"{name} {v}"]
    for name, v in gauges.items():
        lines += [f"# TYPE {name} gauge", f"{name} {v}"]
    for name, buckets in hists.items():
        lines.append(f"# TYPE {name} histogram")
        lines += [f'{name}_bucket{{le="{le}"}} {c}' for le, c in buckets]
        lines.append(f"{name}_count {buckets[-1][1]}")
    return "\n".join(lines) + "\n"


def _cum(le: list[str], prev: Sequence[float], delta: Sequence[float]) -> list[tuple[str, float]]:
    return [(b, p + d) for b, p, d in zip(le, prev, delta, strict=True)]


LAT_LE = ["0.01", "0.05", "0.1", "0.5", "1.0", "5.0", "+Inf"]
HOPS_LE = ["1.0", "2.0", "3.0", "5.0", "10.0", "+Inf"]
LAT_PREV = [0, 0, 0, 0, 0, 0, 50]  # 50 old observations above 5 s: must not leak in
LAT_DELTA = [0, 50, 90, 100, 100, 100, 100]
HOPS_PREV = [0, 0, 0, 0, 0, 0]
HOPS_DELTA = [10, 40, 70, 90, 100, 100]

GAUGES = {
    "plumtree_eager_peers": 2,
    "plumtree_lazy_peers": 4,
    "plumtree_total_peers": 6,
    "plumtree_cache_size": 850,
    "plumtree_cache_capacity": 1000,
    "plumtree_pending_grafts": 3,
}


def full_pair() -> tuple[Scrape, Scrape]:
    prev = parse(
        exposition(
            {
                "plumtree_messages_delivered_total": 100,
                "plumtree_messages_broadcast_total": 10,
                "plumtree_messages_duplicate_total": 20,
                "plumtree_graft_sent_total": 5,
                "plumtree_graft_failed_total": 1,
                "plumtree_graft_success_total": 2,
            },
            GAUGES,
            {
                LAT: list(zip(LAT_LE, LAT_PREV, strict=True)),
                HOPS: list(zip(HOPS_LE, HOPS_PREV, strict=True)),
            },
        ),
        at=50.0,
    )
    cur = parse(
        exposition(
            {
                "plumtree_messages_delivered_total": 160,
                "plumtree_messages_broadcast_total": 16,
                "plumtree_messages_duplicate_total": 38,
                "plumtree_graft_sent_total": 11,
                "plumtree_graft_failed_total": 4,
                "plumtree_graft_success_total": 5,
            },
            GAUGES,
            {
                LAT: _cum(LAT_LE, LAT_PREV, LAT_DELTA),
                HOPS: _cum(HOPS_LE, HOPS_PREV, HOPS_DELTA),
            },
        ),
        at=56.0,
    )
    return prev, cur


def test_key_queries_worked_example() -> None:
    r = key_queries(*full_pair())
    assert r.window_s == 6.0
    assert r.delivered_per_s == 10.0
    assert r.broadcast_per_s == 1.0
    assert r.duplicate_per_s == 3.0
    assert r.duplicate_pct == pytest.approx(30.0)  # 18 of 60
    assert r.delivered_in_window == 60.0
    assert r.graft_sent_per_s == 1.0
    assert r.graft_failed_per_min == pytest.approx(30.0)  # 3 in 6 s
    assert r.graft_success_pct == pytest.approx(50.0)  # 3 ok, 3 failed
    assert r.graft_p99_s == pytest.approx(0.46)  # 0.1 + 0.4 * 9/10, on the deltas
    assert r.hops_p50 == pytest.approx(2 + 10 / 30)
    assert r.hops_p99 == pytest.approx(9.5)
    assert r.cache_utilisation == pytest.approx(0.85)
    assert (r.eager_peers, r.lazy_peers, r.total_peers, r.pending_grafts) == (2, 4, 6, 3)


def test_key_queries_first_poll_only_gauges() -> None:
    _, cur = full_pair()
    r = key_queries(None, cur)
    assert r.eager_peers == 2 and r.cache_utilisation == pytest.approx(0.85)
    rates = {f.name for f in dataclasses.fields(NodeRates)} - {
        "eager_peers",
        "lazy_peers",
        "total_peers",
        "pending_grafts",
        "cache_utilisation",
    }
    assert all(getattr(r, name) is None for name in rates)


def test_key_queries_quiet_window_is_unknown_not_zero() -> None:
    prev, _ = full_pair()
    same = parse("", at=0.0)
    quiet = Scrape.from_samples(dict(prev.samples), at=prev.at + 5)
    r = key_queries(prev, quiet)
    assert r.delivered_per_s == 0.0
    assert r.duplicate_pct is None  # nothing delivered
    assert r.graft_success_pct is None  # no Grafts concluded
    assert r.graft_p99_s is None and r.hops_p50 is None  # no observations
    empty = key_queries(same, same)
    assert all(v is None for v in empty.as_dict().values())


def test_key_queries_older_node_without_metrics() -> None:
    prev = node(0, plumtree_eager_peers=3, plumtree_cache_size=5)
    cur = node(5, plumtree_eager_peers=3, plumtree_cache_size=5)
    r = key_queries(prev, cur)
    assert r.eager_peers == 3
    assert r.cache_utilisation is None  # no capacity exported
    assert r.delivered_per_s is None and r.graft_p99_s is None
    zero_cap = node(5, plumtree_cache_size=5, plumtree_cache_capacity=0)
    assert key_queries(None, zero_cap).cache_utilisation is None


_COUNTERS = {
    "delivered_per_s": "plumtree_messages_delivered_total",
    "broadcast_per_s": "plumtree_messages_broadcast_total",
    "duplicate_per_s": "plumtree_messages_duplicate_total",
    "graft_sent_per_s": "plumtree_graft_sent_total",
}
_COUNTER_VALUES = st.dictionaries(
    st.sampled_from([*_COUNTERS.values(), "plumtree_graft_failed_total", "plumtree_eager_peers"]),
    st.integers(0, 1000).map(float),
)


@given(_COUNTER_VALUES, _COUNTER_VALUES, st.sampled_from([-1.0, 0.0, 0.5, 6.0]))
def test_key_queries_are_the_promql_functions(
    before: dict[str, float], after: dict[str, float], dt: float
) -> None:
    """Every rate is promql.rate over the same two scrapes (resets, absences, empty and
    negative windows included), and the score is health_score's, whichever way asked."""
    prev, cur = node(10.0, **before), node(10.0 + dt, **after)
    r = key_queries(prev, cur)
    for field_name, counter in _COUNTERS.items():
        assert getattr(r, field_name) == rate(prev, cur, counter)
    failed = rate(prev, cur, "plumtree_graft_failed_total")
    assert r.graft_failed_per_min == (None if failed is None else 60.0 * failed)
    assert rates_and_score(prev, cur) == (r, health_score(prev, cur))
    assert rates_and_score(None, cur) == (key_queries(None, cur), health_score(None, cur))


def test_rates_and_score_match_on_the_worked_example() -> None:
    prev, cur = full_pair()
    rates, score = rates_and_score(prev, cur)
    assert (rates, score) == (key_queries(prev, cur), health_score(prev, cur))
    assert rates.hops_p99 == histogram_quantile(
        0.99, histogram_deltas(prev, cur, "plumtree_message_hops")
    )


# -- classify -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "value", "level"),
    [
        ("eager_peers", 0, Level.CRITICAL),
        ("eager_peers", 1, Level.WARNING),
        ("eager_peers", 2, Level.OK),
        ("total_peers", 1, Level.WARNING),
        ("total_peers", 2, Level.OK),
        ("graft_failed_per_min", 5, Level.OK),
        ("graft_failed_per_min", 5.1, Level.WARNING),
        ("graft_failed_per_min", 20, Level.WARNING),
        ("graft_failed_per_min", 20.1, Level.CRITICAL),
        ("cache_utilisation", 0.80, Level.OK),
        ("cache_utilisation", 0.81, Level.WARNING),
        ("cache_utilisation", 0.95, Level.WARNING),
        ("cache_utilisation", 0.951, Level.CRITICAL),
        ("duplicate_pct", 30, Level.OK),
        ("duplicate_pct", 31, Level.WARNING),
        ("duplicate_pct", 50, Level.WARNING),
        ("duplicate_pct", 50.5, Level.CRITICAL),
        ("pending_grafts", 100, Level.OK),
        ("pending_grafts", 101, Level.WARNING),
        ("pending_grafts", None, Level.UNKNOWN),
        ("eager_peers", math.nan, Level.UNKNOWN),
    ],
)
def test_classify_seed_table(metric: str, value: float | None, level: Level) -> None:
    assert classify(metric, value) is level


def test_classify_reads_the_thresholds_object() -> None:
    strict = dataclasses.replace(SEED_THRESHOLDS, pending_grafts_warning=10)
    assert classify("pending_grafts", 11) is Level.OK
    assert classify("pending_grafts", 11, strict) is Level.WARNING


def test_classify_unknown_metric_is_a_bug() -> None:
    assert "delivered_per_s" not in CLASSIFIED
    with pytest.raises(KeyError):
        classify("delivered_per_s", 1.0)


def test_level_maps_to_status() -> None:
    assert Level.OK.status is Status.HEALTHY
    assert Level.WARNING.status is Status.DEGRADED
    assert Level.CRITICAL.status is Status.UNHEALTHY
    assert Level.UNKNOWN.status is None


def test_classify_rates_whole_row() -> None:
    levels = classify_rates(key_queries(*full_pair()))
    assert set(levels) == CLASSIFIED
    assert levels["eager_peers"] is Level.OK
    assert levels["graft_failed_per_min"] is Level.CRITICAL  # 30/min
    assert levels["cache_utilisation"] is Level.WARNING  # 85 %
    assert levels["duplicate_pct"] is Level.OK  # exactly 30 %
    assert levels["pending_grafts"] is Level.OK


def test_classify_rates_does_not_judge_duplicates_on_few_deliveries() -> None:
    base = key_queries(None, node(0))
    few = dataclasses.replace(base, duplicate_pct=100.0, delivered_in_window=1.0)
    many = dataclasses.replace(base, duplicate_pct=100.0, delivered_in_window=1000.0)
    assert classify_rates(few)["duplicate_pct"] is Level.OK
    assert classify_rates(many)["duplicate_pct"] is Level.CRITICAL


@pytest.mark.parametrize(
    ("eager", "lazy", "level"),
    [
        (0, 5, Level.CRITICAL),  # isolated, whatever the lazy peers
        (0, None, Level.CRITICAL),
        (1, 0, Level.WARNING),  # eager < 2 and lazy < 1: reduced redundancy
        (1, 1, Level.OK),  # a tree leaf with a lazy backup is healthy
        (1, 4, Level.OK),
        (1, None, Level.WARNING),  # lazy unknown: the seed's row as written
        (1, math.nan, Level.WARNING),
        (2, 0, Level.OK),
        (None, 3, Level.UNKNOWN),
    ],
)
def test_classify_eager_peers_with_lazy(
    eager: float | None, lazy: float | None, level: Level
) -> None:
    assert classify("eager_peers", eager, lazy=lazy) is level


def test_classify_rates_judges_eager_with_lazy_like_the_health_model() -> None:
    from plumtree.core.health import HealthInputs, evaluate

    def rates(eager: int, lazy: int) -> dict[str, Level]:
        return classify_rates(
            key_queries(None, node(1, plumtree_eager_peers=eager, plumtree_lazy_peers=lazy))
        )

    for eager, lazy in [(0, 0), (0, 3), (1, 0), (1, 1), (1, 5), (2, 0), (3, 3)]:
        level = rates(eager, lazy)["eager_peers"]
        inputs = HealthInputs(eager, lazy, cache_size=0, cache_capacity=10, pending_grafts=0)
        report = evaluate(inputs)
        peers = {c.name: c.status for c in report.checks}
        node_status = max(peers["connectivity"], peers["redundancy"], key=lambda s: s.rank)
        assert level.status is node_status, (eager, lazy)
