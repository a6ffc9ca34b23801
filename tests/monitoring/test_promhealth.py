"""``plumctl health --prometheus`` without a server: the API client's error mapping, the
judgement of targets from query results, and the command, against a fake Prometheus
(httpx.MockTransport). The real server is exercised in test_prometheus_live.py."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from plumctl import exitcodes, promhealth
from plumctl.cli import app
from plumctl.client import (
    ApiError,
    AuthFailed,
    BadResponse,
    ClientError,
    Prometheus,
    Unreachable,
)
from plumctl.healthcheck import UNREACHABLE, verdict
from plumctl.monitoring.dashboard import HEALTH_SCORE
from plumctl.output import reset_consoles
from plumctl.promhealth import PromTarget, node_healths, queries
from plumtree.core.health import HealthInputs, evaluate
from tests.ports import free_port

URL = "http://prom.test:9090"
T0 = 1_700_000_000.0


def vector(*samples: tuple[dict[str, str], float]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": m, "value": [T0, _fmt(v)]} for m, v in samples],
        },
    }


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> Prometheus:
    return Prometheus(URL, 2.0, transport=httpx.MockTransport(handler))


def ask(prom: Prometheus, expr: str = "up", at: float | None = None) -> Any:
    async def go() -> Any:
        async with prom:
            return await prom.query(expr, at)

    return asyncio.run(go())


# ---- the API client ------------------------------------------------------------------------


def test_query_parses_an_instant_vector_with_nan_and_sends_the_time() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json=vector(({"instance": "a:1", "job": "p"}, 1.0), ({"instance": "b:2"}, math.nan)),
        )

    samples = ask(client_for(handler), "rate(x[5m])", at=T0)
    assert [(s.labels, s.at) for s in samples] == [
        ({"instance": "a:1", "job": "p"}, T0),
        ({"instance": "b:2"}, T0),
    ]
    assert samples[0].value == 1.0 and math.isnan(samples[1].value)
    assert seen[0].url.path == "/api/v1/query"
    assert seen[0].url.params["query"] == "rate(x[5m])"
    assert float(seen[0].url.params["time"]) == T0
    assert "authorization" not in seen[0].headers  # the nodes' --token is not for Prometheus


def test_a_refused_query_is_an_api_error_naming_the_query() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400,
            json={
                "status": "error",
                "errorType": "bad_data",
                "error": '1:6: parse error: unexpected "]"',
            },
        )

    with pytest.raises(ApiError) as caught:
        ask(client_for(handler), "rate(]")
    err = caught.value
    assert err.exit_code == exitcodes.FAILED
    assert str(err) == (
        f"Prometheus at {URL} refused the query 'rate(]': bad_data: "
        '1:6: parse error: unexpected "]" (HTTP 400)'
    )


@pytest.mark.parametrize(
    ("response", "error", "words"),
    [
        (
            httpx.Response(404, text="404 page not found"),
            ApiError,
            "is http://prom.test:9090 a Prometheus server?",
        ),
        (httpx.Response(401), AuthFailed, "requires authentication (HTTP 401)"),
        (
            httpx.Response(302, headers={"location": "/login"}),
            ApiError,
            "redirect (HTTP 302 to /login)",
        ),
        (
            httpx.Response(200, text="<html>"),
            BadResponse,
            "did not answer with the Prometheus API's JSON",
        ),
        (
            httpx.Response(
                200, json={"status": "success", "data": {"resultType": "matrix", "result": []}}
            ),
            BadResponse,
            "with a 'matrix', not an instant vector",
        ),
        (
            httpx.Response(
                200,
                json={
                    "status": "success",
                    "data": {"resultType": "vector", "result": [{"metric": {}}]},
                },
            ),
            BadResponse,
            "malformed sample",
        ),
    ],
)
def test_errors_are_one_line_client_errors(
    response: httpx.Response, error: type[ClientError], words: str
) -> None:
    with pytest.raises(error) as caught:
        ask(client_for(lambda request: response))
    message = str(caught.value)
    assert words in message and "\n" not in message
    assert caught.value.exit_code == exitcodes.FAILED


def test_no_server_is_unreachable() -> None:
    port = free_port()
    with pytest.raises(Unreachable) as caught:
        ask(Prometheus(f"http://127.0.0.1:{port}", 2.0))
    assert (
        str(caught.value)
        == f"cannot reach Prometheus at http://127.0.0.1:{port}: connection refused"
    )
    assert caught.value.exit_code == exitcodes.UNREACHABLE


def test_a_bad_url_is_unreachable() -> None:
    with pytest.raises(Unreachable, match=r"^cannot reach Prometheus at ftp://x: invalid URL"):
        Prometheus("ftp://x")


# ---- judging targets from query results ----------------------------------------------------

KEY = ("plumtree", "127.0.0.1:7947")
HEALTHY_GAUGES = {
    "eager_peers": 2.0,
    "lazy_peers": 1.0,
    "cache_size": 10.0,
    "cache_capacity": 1000.0,
    "pending_grafts": 0.0,
    "ihave_queue_size": 0.0,
    "ihave_queue_capacity": 10000.0,
}


def results(
    gauges: dict[str, float] | None = None,
    increases: dict[str, float] | None = None,
    score: float | None = 2 / 3,
    rates: tuple[float, float] | None = (0.0, 0.0),
) -> dict[str, dict[tuple[str, str], float]]:
    values: dict[str, dict[tuple[str, str], float]] = {}
    for field, value in (HEALTHY_GAUGES | (gauges or {})).items():
        values[f"gauge:{field}"] = {KEY: value}
    for metric, value in (increases or {}).items():
        values[f"increase:{metric}"] = {KEY: value}
    if score is not None:
        values["score"] = {KEY: score}
    if rates is not None:
        values["score_sent_rate"] = {KEY: rates[0]}
        values["score_failed_rate"] = {KEY: rates[1]}
    return values


def judge(values: dict[str, dict[tuple[str, str], float]], up: bool = True) -> Any:
    target = PromTarget("node-0", KEY, up, "http://127.0.0.1:7947", None if up else "refused")
    [node] = node_healths([target], values, 300.0)
    return node


def test_a_healthy_target_is_judged_by_the_nodes_own_model() -> None:
    node = judge(results())
    expected = evaluate(HealthInputs(2, 1, 10, 1000, 0, 0, 10000, window_seconds=300.0))
    assert (node.status, node.message) == ("Healthy", expected.message)
    assert node.components == expected.as_dict()["components"]
    assert node.score == pytest.approx(2 / 3)
    assert node.score_reasons == ["eager peers 2 of 3 (x0.67)"]
    assert (node.node, node.admin_url, node.membership, node.http_status) == (
        "node-0",
        "http://127.0.0.1:7947",
        "alive",
        None,
    )


@pytest.mark.parametrize(
    ("gauges", "increases", "status", "words"),
    [
        ({"eager_peers": 0.0}, {}, "Unhealthy", "isolated"),
        ({"eager_peers": 1.0, "lazy_peers": 0.0}, {}, "Degraded", "reduced redundancy"),
        ({"cache_size": 960.0}, {}, "Unhealthy", "memory pressure"),
        ({"cache_size": 810.0}, {}, "Degraded", "cache 81% full"),
        ({"pending_grafts": 101.0}, {}, "Degraded", "Graft backlog: 101 pending"),
        ({"ihave_queue_size": 9000.0}, {}, "Degraded", "IHave queue 90% full"),
        # 30 failures in 5m = 6/min (> 5/min warning); 101 = 20.2/min (> 20/min critical)
        ({}, {"plumtree_graft_failed_total": 30.0}, "Degraded", "6.0 Graft failures/min"),
        ({}, {"plumtree_graft_failed_total": 101.0}, "Unhealthy", "20.2 Graft failures/min"),
        (
            {},
            {"plumtree_graft_sent_total": 20.0, "plumtree_graft_failed_total": 2.4},
            "Degraded",
            "Graft failure rate 10%",
        ),
        (
            {},
            {"plumtree_messages_delivered_total": 40.0, "plumtree_messages_duplicate_total": 21.0},
            "Unhealthy",
            "duplicate rate 52%",
        ),
        (
            {},
            {"plumtree_messages_delivered_total": 19.4, "plumtree_messages_duplicate_total": 19.0},
            "Healthy",
            "all checks passed",  # 19 deliveries: too few to judge, as on the node
        ),
        ({}, {"plumtree_ihave_dropped_total": 0.6}, "Degraded", "1 messages dropped"),
        ({}, {"plumtree_pending_grafts_dropped_total": 3.0}, "Degraded", "3 messages dropped"),
    ],
)
def test_each_check_of_the_model_sees_its_promql_input(
    gauges: dict[str, float], increases: dict[str, float], status: str, words: str
) -> None:
    node = judge(results(gauges, increases))
    assert node.status == status
    assert words in node.message


def test_an_older_node_without_the_queue_capacity_is_not_judged_on_it() -> None:
    values = results({"ihave_queue_size": 5000.0})
    del values["gauge:ihave_queue_capacity"]
    assert judge(values).status == "Healthy"


def test_a_down_target_is_unreachable_with_prometheus_words() -> None:
    node = judge({}, up=False)
    assert node.status == UNREACHABLE and not node.reachable
    assert node.message == "down in Prometheus (up == 0, its last scrape failed: refused)"
    assert node.score is None


def test_a_target_without_plumtree_gauges_is_unreachable() -> None:
    values = results()
    del values["gauge:eager_peers"], values["gauge:cache_capacity"]
    node = judge(values)
    assert node.status == UNREACHABLE
    assert "no plumtree_eager_peers, plumtree_cache_capacity" in node.message


def test_the_score_is_prometheus_value_clamped_with_the_seeds_reasons() -> None:
    node = judge(results({"eager_peers": 3.0}, score=0.5, rates=(1.0, 0.5)))
    assert node.score == 0.5
    assert node.score_reasons == ["Graft failures 0.5/s of 1.0/s sent (x0.50)"]
    assert judge(results(score=-0.2)).score == 0.0
    assert judge(results(score=1.7, rates=None)).score == 1.0


def test_no_rate_yet_makes_the_score_unknown_with_a_reason() -> None:
    node = judge(results(score=None))
    assert node.score is None
    assert node.score_reasons[0].startswith("score unknown: no Graft rates in Prometheus")
    assert node.status == "Healthy"


def test_the_score_query_is_the_seeds_verbatim_clamped_at_zero() -> None:
    q = queries("2m")
    assert q["score"] == f"clamp_min(\n{HEALTH_SCORE},\n0\n)"
    assert "(plumtree_eager_peers / 3) *" in q["score"]
    assert (
        "rate(plumtree_graft_failed_total[5m]) / (rate(plumtree_graft_sent_total[5m]) + 0.001)"
        in q["score"]
    )
    assert q["increase:plumtree_graft_failed_total"] == "increase(plumtree_graft_failed_total[2m])"
    assert q["gauge:eager_peers"] == "plumtree_eager_peers"


# ---- collect() and the command against a fake Prometheus ---------------------------------

NODES = {  # instance -> node label
    "127.0.0.1:7001": "node-a",
    "127.0.0.1:7002": "node-b",
    "127.0.0.1:7003": "node-c",
}


class FakePrometheus:
    """Answers the discovery query, the gauge/score queries, and /api/v1/targets."""

    def __init__(self, down: tuple[str, ...] = (), eager: float = 2.0, empty: bool = False):
        self.down = down
        self.eager = eager
        self.empty = empty
        self.times: list[str | None] = []
        self.queries: list[str] = []

    def labels(self, instance: str) -> dict[str, str]:
        return {"instance": instance, "job": "plumtree", "node": NODES[instance]}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/targets":
            return httpx.Response(
                200,
                json={
                    "status": "success",
                    "data": {
                        "activeTargets": [
                            {
                                "labels": self.labels(i),
                                "scrapeUrl": f"http://{i}/metrics",
                                "lastError": "connection refused" if i in self.down else "",
                                "health": "down" if i in self.down else "up",
                            }
                            for i in NODES
                        ]
                    },
                },
            )
        expr = request.url.params["query"]
        self.queries.append(expr)
        self.times.append(request.url.params.get("time"))
        if self.empty:
            return httpx.Response(200, json=vector())
        live = [i for i in NODES if i not in self.down]
        if expr == promhealth.discovery_query():
            return httpx.Response(
                200, json=vector(*((self.labels(i), 0.0 if i in self.down else 1.0) for i in NODES))
            )
        value = {
            "plumtree_eager_peers": self.eager,
            "plumtree_lazy_peers": 1.0,
            "plumtree_cache_capacity": 1000.0,
            "plumtree_ihave_queue_capacity": 10000.0,
            promhealth.SCORE: min(self.eager / 3, 1.0),
        }.get(expr, 0.0)
        return httpx.Response(200, json=vector(*((self.labels(i), value) for i in live)))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakePrometheus]:
    def install(**kwargs: Any) -> FakePrometheus:
        server = FakePrometheus(**kwargs)
        real = Prometheus

        def make(url: str, timeout: float = 5.0, **_: Any) -> Prometheus:
            assert url == URL
            return real(url, timeout, transport=httpx.MockTransport(server))

        monkeypatch.setattr(promhealth, "Prometheus", make)
        return server

    return install


def run(*args: str) -> Any:
    reset_consoles()
    return CliRunner().invoke(app, list(args), prog_name="plumctl")


def test_collect_pins_every_query_to_one_instant(fake: Callable[..., FakePrometheus]) -> None:
    server = fake()
    items = asyncio.run(promhealth.collect(URL, 2.0, "5m", 300.0, None))
    assert [n.node for n in items] == ["node-a", "node-b", "node-c"]
    assert server.times[0] is None  # discovery: "now", as Prometheus sees it
    assert {float(t) for t in server.times[1:] if t is not None} == {T0}
    assert None not in server.times[1:]
    assert promhealth.SCORE in server.queries


def test_command_all_healthy_as_json(fake: Callable[..., FakePrometheus]) -> None:
    fake()
    result = run("health", "--all", "--prometheus", URL, "-o", "json")
    assert result.exit_code == exitcodes.OK, result.output
    doc = json.loads(result.stdout)
    assert (doc["kind"], doc["source"], doc["status"], doc["interval_s"]) == (
        "ClusterHealth",
        "prometheus",
        "Healthy",
        300.0,
    )
    assert doc["score"] == pytest.approx(2 / 3)
    assert [i["node"] for i in doc["items"]] == ["node-a", "node-b", "node-c"]
    assert doc["items"][0]["admin_url"] == "http://127.0.0.1:7001"


def test_command_output_has_the_direct_modes_format(fake: Callable[..., FakePrometheus]) -> None:
    """Same NodeHealth, verdict() and renderer: same table, same JSON keys, same exit code."""
    from plumctl.healthcheck import NodeHealth

    fake(down=("127.0.0.1:7003",))
    items = asyncio.run(promhealth.collect(URL, 2.0, "5m", 300.0, None))
    direct = verdict(
        [NodeHealth("n", "http://n", "Healthy", "ok", score=1.0, http_status=200)], single=False
    ).as_dict()
    result = run("health", "--all", "--prometheus", URL)
    assert result.exit_code == exitcodes.DEGRADED == verdict(items, single=False).exit_code
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NODE", "STATUS", "SCORE", "MESSAGE"]
    assert "node-c   Unreachable   -       down in Prometheus" in result.stdout
    assert "cluster: Degraded · score 0.67 (lowest: node-a, node-b) · 3 nodes" in result.stdout
    as_json = run("health", "--all", "--prometheus", URL, "-o", "json")
    doc = json.loads(as_json.stdout)
    assert doc.keys() == direct.keys()
    assert all(item.keys() == direct["items"][0].keys() for item in doc["items"])


def test_command_without_all_asks_only_the_nodes_instance(
    fake: Callable[..., FakePrometheus],
) -> None:
    fake(down=("127.0.0.1:7003",))
    result = run("health", "--node", "http://127.0.0.1:7002", "--prometheus", URL, "-o", "json")
    assert result.exit_code == exitcodes.OK, result.output
    assert [i["node"] for i in json.loads(result.stdout)["items"]] == ["node-b"]
    down = run("health", "--node", "127.0.0.1:7003", "--prometheus", URL)
    assert down.exit_code == exitcodes.UNREACHABLE
    isolated = fake(eager=0.0)
    assert isolated.eager == 0.0
    alone = run("health", "--node", "http://127.0.0.1:7001", "--prometheus", URL)
    assert alone.exit_code == exitcodes.FAILED  # the only node asked is Unhealthy
    assert "isolated: no eager peers" in alone.stdout


def test_command_unknown_instance_is_exit_3_naming_the_known_ones(
    fake: Callable[..., FakePrometheus],
) -> None:
    fake()
    result = run("health", "--node", "http://127.0.0.1:9999", "--prometheus", URL)
    assert result.exit_code == exitcodes.UNREACHABLE
    assert result.stderr == (
        f"plumctl: error: Prometheus at {URL} has no plumtree target with instance "
        "127.0.0.1:9999 (the --node); it scrapes 127.0.0.1:7001, 127.0.0.1:7002, "
        "127.0.0.1:7003; use --all, or --node with one of those\n"
    )


def test_command_no_plumtree_targets_is_exit_3(fake: Callable[..., FakePrometheus]) -> None:
    fake(empty=True)
    result = run("health", "--all", "--prometheus", URL)
    assert result.exit_code == exitcodes.UNREACHABLE
    assert result.stderr.startswith(f"plumctl: error: Prometheus at {URL} has no plumtree targets")
    assert len(result.stderr.splitlines()) == 1


def test_command_unreachable_prometheus_is_exit_3() -> None:
    port = free_port()
    result = run("health", "--all", "--prometheus", f"http://127.0.0.1:{port}")
    assert result.exit_code == exitcodes.UNREACHABLE
    assert result.stderr == (
        f"plumctl: error: cannot reach Prometheus at http://127.0.0.1:{port}: connection refused\n"
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--window", "1m"), "--window: only with --prometheus"),
        (("--prometheus", URL, "--window", "often"), "--window: expected a duration"),
        (("--prometheus", URL, "--window", "0s"), "--window: must be longer than 0s"),
    ],
)
def test_window_usage_errors(args: tuple[str, ...], words: str) -> None:
    result = run("health", *args)
    assert result.exit_code == exitcodes.USAGE
    assert words in result.stderr


@pytest.mark.parametrize(
    ("given", "sent"), [("90", "1m30s"), ("1.5m", "1m30s"), ("250ms", "250ms")]
)
def test_window_takes_the_cli_duration_grammar(
    fake: Callable[..., FakePrometheus], given: str, sent: str
) -> None:
    server = fake()
    result = run("health", "--all", "--prometheus", URL, "--window", given, "-o", "json")
    assert result.exit_code == 0, result.output
    assert f"increase(plumtree_graft_failed_total[{sent}])" in server.queries


def test_window_sets_the_counter_ranges(fake: Callable[..., FakePrometheus]) -> None:
    server = fake()
    result = run("health", "--all", "--prometheus", URL, "--window", "90s", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["interval_s"] == 90.0
    assert "increase(plumtree_graft_failed_total[90s])" in server.queries
    assert promhealth.SCORE in server.queries  # the score keeps the seed's [5m]
