"""The pure model of ``top``: snapshots in, rows out, numbers from :mod:`plumctl.scoring`."""

from __future__ import annotations

import json

from plumctl.promtext import Scrape
from plumctl.scoring import (
    Level,
    classify_rates,
    cluster_score,
    health_score,
    key_queries,
)
from plumctl.tui.model import (
    BLOCKS,
    SORTS,
    ClusterModel,
    cells,
    name_filter,
    sort_key,
    spark,
)
from plumctl.tui.source import ClusterSnapshot, Member, NodeSample
from tests.tui.fakes import NO, FakeNode


def snap(at: float, nodes: dict[str, FakeNode], **errors: str) -> ClusterSnapshot:
    members = tuple(Member(n.name, n.state, f"http://{n.name}") for n in nodes.values())
    samples = {}
    for n in nodes.values():
        if n.state not in ("alive", "suspect"):
            continue
        if n.name in errors:
            samples[n.name] = NodeSample(n.name, f"http://{n.name}", error=errors[n.name])
        else:
            samples[n.name] = NodeSample(
                n.name, f"http://{n.name}", scrape=n.scrape(at), health=n.health_body()
            )
    return ClusterSnapshot(at=at, via="http://a", members=members, nodes=samples)


def two_nodes() -> dict[str, FakeNode]:
    return {"a": FakeNode("a"), "b": FakeNode("b", eager=1, lazy=0)}


def test_rates_levels_and_scores_are_the_scoring_helpers() -> None:
    nodes = two_nodes()
    model = ClusterModel()
    model.update(snap(100.0, nodes))
    first = nodes["a"].scrape(100.0)
    nodes["a"].counters["plumtree_messages_delivered_total"] += 300
    nodes["a"].counters["plumtree_messages_duplicate_total"] += 60
    nodes["a"].counters["plumtree_graft_sent_total"] += 20
    nodes["a"].counters["plumtree_graft_failed_total"] += 4
    model.update(snap(130.0, nodes))
    second = nodes["a"].scrape(130.0)
    row = model.rows["a"]
    assert row.rates == key_queries(first, second)
    assert row.levels == classify_rates(key_queries(first, second))
    assert row.score == health_score(first, second)
    assert row.rates is not None
    assert row.rates.delivered_per_s == 10.0 and row.rates.duplicate_pct == 20.0
    assert row.rates.graft_failed_per_min == 8.0
    assert model.rows["b"].levels["eager_peers"] is Level.WARNING  # eager 1, no lazy peer
    scores = {n: r.score for n, r in model.rows.items() if r.score}
    assert model.cluster == cluster_score(scores)
    assert model.delivered_per_s == 10.0
    assert model.duplicate_pct == 20.0  # 2 duplicates/s over 10 delivered/s
    c = cells(row)
    assert c["graft_fail"].text == "8.0" and c["graft_fail"].level is Level.WARNING
    assert c["dup"].text == "20.0" and c["dup"].level is Level.OK  # 20 % < 30 %


def test_first_poll_has_gauges_but_no_rates() -> None:
    model = ClusterModel()
    model.update(snap(1.0, two_nodes()))
    c = cells(model.rows["a"])
    assert c["eager"].text == "2" and c["delivered"].text == "n/a"
    assert c["delivered"].level is Level.UNKNOWN
    assert model.cluster.value is None and model.delivered_per_s is None


def test_histories_are_bounded() -> None:
    nodes = two_nodes()
    model = ClusterModel(history=3)
    for i in range(6):
        nodes["a"].eager = i
        model.update(snap(10.0 * i, nodes))
    assert list(model.rows["a"].eager_hist) == [3, 4, 5]
    assert len(model.rows["a"].graft_hist) == 3
    assert len(model.delivered_hist) == 3


def test_stale_tracking() -> None:
    model = ClusterModel()
    assert model.stale_for(5.0) is None
    model.update(snap(10.0, two_nodes()))
    assert model.stale_for(50.0) is None
    model.fail(20.0, "cannot reach node")
    model.fail(30.0, "cannot reach node")
    assert model.stale_for(42.0) == 32.0  # since the last good poll
    assert model.error == "cannot reach node"
    assert set(model.rows) == {"a", "b"}  # rows stay
    model.update(snap(50.0, two_nodes()))
    assert model.stale_for(60.0) is None and model.error is None


def test_stale_before_any_good_poll_counts_from_the_first_failure() -> None:
    model = ClusterModel()
    model.fail(5.0, "down")
    model.fail(9.0, "down")
    assert model.stale_for(12.0) == 7.0


def test_unreachable_node_keeps_its_last_values_dimmed() -> None:
    nodes = two_nodes()
    model = ClusterModel()
    model.update(snap(1.0, nodes))
    nodes["a"].eager = 9
    model.update(snap(2.0, nodes, a="connection refused"))
    row = model.rows["a"]
    assert row.state == "unreachable" and not row.live
    assert row.error == "connection refused"
    c = cells(row)
    assert c["eager"].text == "2" and c["eager"].dim
    assert c["state"].level is Level.WARNING
    assert row.as_dict()["reachable"] is False


def test_joins_failures_and_reaped_members() -> None:
    nodes = two_nodes()
    model = ClusterModel()
    model.update(snap(1.0, nodes))
    assert model.joined == [] and model.failed == []  # the first poll is not "joining"
    nodes["c"] = FakeNode("c")
    nodes["b"].state = "dead"
    model.update(snap(2.0, nodes))
    assert model.joined == ["c"] and model.failed == ["b"]
    assert model.rows["b"].state == "dead"
    assert model.counts() == {"alive": 2, "suspect": 0, "dead": 1, "left": 0}
    del nodes["b"]  # reaped: stays dead
    del nodes["c"]  # vanished while alive: "gone", counted as dead
    model.update(snap(3.0, nodes))
    assert model.rows["b"].state == "dead" and model.rows["c"].state == "gone"
    assert model.failed == ["c"]
    assert model.counts()["dead"] == 2
    assert cells(model.rows["c"])["state"].level is Level.CRITICAL


def test_the_cluster_status_is_health_all_s_verdict() -> None:
    nodes = two_nodes()
    model = ClusterModel()
    assert model.status() is None  # before the first poll
    model.update(snap(1.0, nodes))
    assert model.status() == "Healthy"
    nodes["b"].health = "Degraded"
    model.update(snap(2.0, nodes))
    assert model.status() == "Degraded"
    nodes["a"].health = "Unhealthy"
    model.update(snap(3.0, nodes, a="timeout"))  # a's report is stale: a is unreachable
    assert model.status() == "Degraded"
    assert cells(model.rows["a"])["health"].text == "Unreachable"


def test_a_dead_member_is_failed_and_the_cluster_degraded() -> None:
    # issue 19: after a crash the row still read Healthy 0.67 and the headline stayed
    # green, while plumctl health --all said Degraded
    nodes = {**two_nodes(), "c": FakeNode("c")}
    model = ClusterModel()
    model.update(snap(1.0, nodes))
    model.update(snap(2.0, nodes))
    assert model.status() == "Healthy" and model.rows["c"].score is not None
    nodes["c"].state = "dead"
    model.update(snap(3.0, nodes))
    row = cells(model.rows["c"])
    assert (row["health"].text, row["health"].level) == ("Failed", Level.CRITICAL)
    assert row["score"].text == "n/a"
    assert model.status() == "Degraded"
    judged = model.verdict()
    assert judged is not None and judged.exit_code == 4
    assert judged.reasons[0] == "c: failed: SWIM declared it dead (no answer to probes)"
    doc = model.as_dict(now=4.0)
    assert doc["status"] == "Degraded" and doc["status_reasons"][0].startswith("c: failed")
    item = next(i for i in doc["items"] if i["name"] == "c")
    assert item["health"] == "Failed" and item["score"] is None
    # left gracefully: not counted, as in health --all
    nodes["c"].state = "left"
    model.update(snap(5.0, nodes))
    assert cells(model.rows["c"])["health"].text == "Left"
    assert model.status() == "Healthy"


def test_as_dict_is_json_with_a_stable_shape() -> None:
    nodes = two_nodes()
    model = ClusterModel()
    model.update(snap(1.0, nodes))
    model.update(snap(3.0, nodes))
    doc = json.loads(json.dumps(model.as_dict(now=4.0)))
    assert doc["kind"] == "ClusterTop" and doc["stale_s"] is None
    assert [i["name"] for i in doc["items"]] == ["a", "b"]
    item = doc["items"][0]
    assert item["state"] == "alive" and item["reachable"] is True
    assert item["rates"]["eager_peers"] == 2 and item["levels"]["eager_peers"] == "ok"
    assert doc["members"] == {"alive": 2, "suspect": 0, "dead": 0, "left": 0}


def test_spark() -> None:
    assert spark([]) == ""
    assert spark([0, 0, 0]) == BLOCKS[0] * 3
    assert spark([0, 4, 8]) == BLOCKS[0] + BLOCKS[4] + BLOCKS[7]
    assert len(spark(range(100), width=12)) == 12


def test_name_filter() -> None:
    assert name_filter("")("anything")
    assert name_filter("WEB")("web-1")
    assert name_filter("^db-[12]$")("db-2") and not name_filter("^db-[12]$")("db-3")
    bad = name_filter("db-[")  # not a regex: a substring
    assert bad("x-db-[1]") and not bad("db-1")


def test_sort_keys_put_missing_values_last() -> None:
    nodes = {n: FakeNode(n) for n in ("a", "b", "c")}
    model = ClusterModel()
    model.update(snap(0.0, nodes))
    nodes["b"].counters["plumtree_graft_failed_total"] = 6
    nodes["c"].answers = False
    model.update(snap(60.0, nodes, c="down"))
    labels = [label for label, _ in SORTS]
    by_failures = labels.index("graft fail/min")
    rows = sorted(model.rows.values(), key=lambda r: sort_key(by_failures, r))
    assert [r.name for r in rows] == ["b", "a", "c"]  # c has no rate at all
    by_state = labels.index("state")
    rows = sorted(model.rows.values(), key=lambda r: sort_key(by_state, r))
    assert rows[0].name == "c"  # unreachable before alive


def test_scrape_helper_is_plain() -> None:
    s = FakeNode("x").scrape(1.0)
    assert isinstance(s, Scrape) and s.value("plumtree_eager_peers") == 2.0
    assert ("plumtree_lazy_peers", NO) in s.samples


def test_a_node_running_insecure_gossip_is_marked() -> None:
    nodes = two_nodes()
    nodes["b"].counters["plumtree_gossip_insecure"] = 1.0  # (a gauge, set like the others)
    model = ClusterModel()
    model.update(snap(100.0, nodes))
    a, b = cells(model.rows["a"])["name"], cells(model.rows["b"])["name"]
    assert (a.text, a.level) == ("a", Level.OK)
    assert (b.text, b.level) == ("b !", Level.CRITICAL)
    doc = model.as_dict()
    flags = {row["name"]: row["insecure_gossip"] for row in doc["items"]}
    assert flags == {"a": False, "b": True}
