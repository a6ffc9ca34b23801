"""The monitoring artefacts against real components: a local 3-node cluster (``plumctl
cluster up``) scraped by a real Prometheus (Debian's ``prometheus`` package) on a free
loopback port, configured only with what ``plumctl monitoring`` generates.

One cluster and one Prometheus serve the whole module (they take seconds to start); the
tests run in file order (``make unit`` distributes by file: one worker, one cluster),
and the last one kills a node. Every process started here is stopped in the fixture's
teardown, by pid, and the temporary directory removed.

Nothing here asserts on speed: every wait is "until the condition holds, or a generous
deadline", and a failure says what was last seen.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from typer.testing import CliRunner

from plumctl.cli import app
from plumctl.monitoring import catalog
from plumctl.monitoring.dashboard import (
    DELIVERY_RATE,
    DUPLICATE_PERCENT,
    HEALTH_SCORE,
    P99_GRAFT_LATENCY,
    all_expressions,
)
from plumctl.output import reset_consoles
from tests.cli.helpers import plumctl, plumctl_env
from tests.ports import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NODES = 3
SHORT_FOR = "5s"  # the test's copy of the rules: every `for:` shortened to this
T = TypeVar("T")


# ---- helpers -------------------------------------------------------------------------------


def generate(*args: str) -> str:
    """Run a ``plumctl monitoring`` generator in-process (the same code, no interpreter
    start-up: it only writes files and, for scrape-config, reads the live member table)."""
    reset_consoles()
    result = CliRunner().invoke(app, list(args), prog_name="plumctl")
    assert result.exit_code == 0, f"plumctl {' '.join(args)}: {result.output}"
    return result.stdout


def ok(proc: subprocess.CompletedProcess[str], *codes: int) -> subprocess.CompletedProcess[str]:
    assert proc.returncode in (codes or (0,)), (
        f"{' '.join(map(str, proc.args))} exited {proc.returncode}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return proc


def wait_for(
    what: str,
    probe: Callable[[], T],
    done: Callable[[T], bool],
    timeout: float = 30.0,
    show: Callable[[T], Any] = lambda result: result,
) -> T:
    """Call ``probe`` until ``done(result)``; fail with ``show(last result)`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            result = probe()
            if done(result):
                return result
            last = show(result)
        except (httpx.HTTPError, OSError, KeyError, ValueError) as exc:
            last = exc
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}; last seen: {last!r}")
        time.sleep(0.25)


def pid_is_ours(pid: int, marker: str) -> bool:
    """Still running and still the process we started (its command line names our dir)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z" and marker in cmdline


@dataclass
class Live:
    """The running cluster and Prometheus, and helpers to ask Prometheus."""

    dir: Path
    prom_url: str
    prom: httpx.Client
    nodes: dict[str, dict[str, Any]]  # name -> {admin_url, pid, instance}
    killed: set[str] = field(default_factory=set)

    @property
    def seed(self) -> str:
        return str(self.nodes["node-0"]["admin_url"])

    def api(self, path: str, **params: Any) -> Any:
        response = self.prom.get(path, params=params)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> dict[str, float]:
        """Instant query -> {node label: value}; fails on any API error."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        data = self.api("/api/v1/query", **params)
        assert data["resultType"] == "vector", (expr, data)
        out: dict[str, float] = {}
        for r in data["result"]:
            name = r["metric"].get("node", r["metric"].get("instance"))
            assert name not in out, f"{expr}: two series for {name}: {data['result']}"
            out[name] = float(r["value"][1])
        return out

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.api("/api/v1/alerts")["alerts"])


# ---- the cluster and Prometheus ------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_path() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail(
            "prometheus not found on PATH: these tests run the generated configuration, "
            "rules and dashboard against a real Prometheus server. Install Debian's "
            "`prometheus` package (apt-get install prometheus), which CI does.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
def live(prometheus_path: str, promtool_path: str) -> Iterator[Live]:
    root = Path(tempfile.mkdtemp(prefix="plumtree-prom-live-"))
    cluster_dir = root / "cluster"
    prom_dir = root / "prometheus"
    prom_dir.mkdir()
    started: dict[str, dict[str, Any]] = {}
    prom_proc: subprocess.Popen[bytes] | None = None
    http = httpx.Client(timeout=10.0, trust_env=False)
    try:
        # 1. a local cluster
        up = ok(plumctl("cluster", "up", "-n", str(NODES), "--dir", str(cluster_dir), "-o", "json"))
        for item in json.loads(up.stdout)["items"]:
            host_port = item["admin_url"].split("://", 1)[1].rstrip("/")
            started[item["name"]] = {
                "admin_url": item["admin_url"],
                "pid": item["pid"],
                "instance": host_port,
            }
        assert sorted(started) == [f"node-{i}" for i in range(NODES)]

        # 2. the rules, with every `for:` shortened in the test's copy, checked by promtool
        rules = prom_dir / "rules.yml"
        generate("monitoring", "rules", "--out", str(rules))
        text, count = re.subn(r"(?m)^(\s*for: ).*$", rf"\g<1>{SHORT_FOR}", rules.read_text())
        assert count >= 5, "no `for:` lines found to shorten"
        rules.write_text(text)
        check = subprocess.run(
            [promtool_path, "check", "rules", str(rules)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr

        # 3. the scrape config and the file_sd targets from the live member table
        seed = started["node-0"]["admin_url"]
        generate(
            "--node",
            seed,
            "monitoring",
            "scrape-config",
            "--targets-file",
            str(prom_dir / "targets.json"),
            "--rules-file",
            str(rules),
            "--interval",
            "1s",
            "--evaluation-interval",
            "1s",
            "--out",
            str(prom_dir / "prometheus.yml"),
        )

        # 4. a real Prometheus on a free loopback port (retry if the port got taken)
        for _attempt in range(3):
            port = free_port()
            log = (prom_dir / "prometheus.log").open("wb")
            prom_proc = subprocess.Popen(
                [
                    prometheus_path,
                    f"--config.file={prom_dir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={prom_dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=prom_dir,
            )
            log.close()
            url = f"http://127.0.0.1:{port}"
            ready = _wait_ready(http, url, prom_proc)
            if ready:
                break
            _stop(prom_proc)
            prom_proc = None
        else:
            pytest.fail(
                "prometheus did not start:\n" + (prom_dir / "prometheus.log").read_text()[-3000:]
            )
        http = httpx.Client(base_url=url, timeout=10.0, trust_env=False)
        live = Live(root, url, http, started)

        # 5. every node's target up
        wait_for(
            "up == 1 for every node",
            lambda: live.query('up{job="plumtree"}'),
            lambda up: up == {name: 1.0 for name in started},
            timeout=45.0,
        )
        yield live
    finally:
        http.close()
        if prom_proc is not None:
            _stop(prom_proc)
        if cluster_dir.exists():
            plumctl("cluster", "down", "--dir", str(cluster_dir), "--grace", "5", timeout=60)
        for node in started.values():  # anything `cluster down` missed: only our own pids
            if pid_is_ours(node["pid"], str(cluster_dir)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node["pid"], signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(http: httpx.Client, url: str, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(httpx.HTTPError):
            if http.get(f"{url}/-/ready").status_code == 200:
                return True
        time.sleep(0.2)
    return False


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def traffic(live: Live, count: int = 6) -> None:
    """``count`` broadcasts from every node in turn, the last one through ``plumctl
    broadcast --wait`` (delivered everywhere before we go on)."""
    nodes = list(live.nodes.values())
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        for i in range(count - 1):
            url = nodes[i % len(nodes)]["admin_url"]
            response = client.post(f"{url}/v1/broadcast", content=f"live-{i}".encode())
            assert response.status_code in (200, 201, 202), response.text
    ok(plumctl("--node", live.seed, "broadcast", "live-last", "--wait"))


# ---- the tests, in order -------------------------------------------------------------------


def test_prometheus_scrapes_every_node_under_its_member_name(live: Live) -> None:
    data = live.api("/api/v1/targets", state="active")
    targets = {
        t["labels"]["node"]: t for t in data["activeTargets"] if t["labels"]["job"] == "plumtree"
    }
    assert sorted(targets) == sorted(live.nodes)
    for name, target in targets.items():
        assert target["labels"]["instance"] == live.nodes[name]["instance"]
        assert target["scrapeUrl"] == f"{live.nodes[name]['admin_url']}/metrics"
        assert target["health"] == "up"
    # the rules are loaded, with the test's shortened `for`, and evaluate without error
    groups = live.api("/api/v1/rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert rules and all(r["health"] == "ok" for r in rules), rules
    assert {r["duration"] for r in rules} == {5.0}
    assert "PlumtreeLowPeerCount" in {r["name"] for r in rules}


def test_key_queries_return_a_value_per_node(live: Live) -> None:
    traffic(live)
    names = set(live.nodes)
    delivered = wait_for(
        "a delivery rate above 0 on every node",
        lambda: live.query(DELIVERY_RATE),
        lambda v: set(v) == names and all(x > 0 for x in v.values()),
    )
    at = time.time()
    assert set(live.query(DELIVERY_RATE, at)) == names
    duplicate = live.query(DUPLICATE_PERCENT, at)
    assert set(duplicate) == names
    assert all(math.isfinite(v) and v >= 0 for v in duplicate.values()), duplicate

    # P99 Graft latency: one series per node. On a healthy loopback cluster there may be no
    # Graft at all; the quantile of empty buckets is NaN, accepted only where no Graft
    # latency was observed in the window.
    p99 = live.query(P99_GRAFT_LATENCY, at)
    assert set(p99) == names
    observed = live.query("increase(plumtree_graft_latency_seconds_count[5m])", at)
    for name, value in p99.items():
        if math.isnan(value):
            assert observed[name] == 0, (name, observed)
        else:
            assert 0 <= value <= 5, (name, value)

    # the Cluster Health Score, verbatim: in [0, 1] and what its own parts say
    score = live.query(HEALTH_SCORE, at)
    assert set(score) == names
    eager = live.query("plumtree_eager_peers", at)
    sent = live.query("rate(plumtree_graft_sent_total[5m])", at)
    failed = live.query("rate(plumtree_graft_failed_total[5m])", at)
    for name, value in score.items():
        assert 0 <= value <= 1, (name, value)
        expected = min((eager[name] / 3) * (1 - failed[name] / (sent[name] + 0.001)), 1)
        assert value == pytest.approx(expected), name
    assert delivered


def _health_both(live: Live, *args: str) -> tuple[int, dict[str, Any], int, dict[str, Any]]:
    """``plumctl health ARGS -o json`` directly and ``--prometheus``, run side by side."""
    base = [sys.executable, "-m", "plumctl", "--node", live.seed, "health", *args, "-o", "json"]
    procs = [
        subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=plumctl_env()
        )
        for cmd in (base, [*base, "--prometheus", live.prom_url])
    ]
    out: list[Any] = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode in (0, 1, 4), f"{proc.args} exited {proc.returncode}: {stderr}"
        out += [proc.returncode, json.loads(stdout)]
    return out[0], out[1], out[2], out[3]


def _compare(live: Live, *args: str) -> tuple[int, dict[str, Any], int, dict[str, Any]]:
    """Direct and Prometheus health side by side, until they agree (gauges in Prometheus
    lag the node by up to one scrape; pruning may still move an eager peer)."""

    def agree(r: tuple[int, dict[str, Any], int, dict[str, Any]]) -> bool:
        code, direct, pcode, prom = r
        d, p = _by_node(direct), _by_node(prom)
        return (
            code == pcode
            and direct["status"] == prom["status"]
            and d.keys() == p.keys()
            and all(_same(d[n], p[n]) for n in d)
        )

    def show(r: tuple[int, dict[str, Any], int, dict[str, Any]]) -> Any:
        code, direct, pcode, prom = r
        return {"direct": (code, _summary(direct)), "prometheus": (pcode, _summary(prom))}

    return wait_for(
        "direct and Prometheus health to agree",
        lambda: _health_both(live, *args),
        agree,
        timeout=30.0,
        show=show,
    )


def _by_node(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["node"]: i for i in doc["items"]}


def _same(direct: dict[str, Any], prom: dict[str, Any]) -> bool:
    if not direct["reachable"] or not prom["reachable"]:
        return direct["reachable"] == prom["reachable"]
    if direct["status"] != prom["status"]:
        return False
    if direct["score"] is None or prom["score"] is None:
        return direct["score"] is prom["score"]
    return bool(abs(direct["score"] - prom["score"]) <= 0.05)


def _summary(doc: dict[str, Any]) -> list[tuple[str, str, Any]]:
    return [(i["node"], i["status"], i["score"]) for i in doc["items"]]


def test_health_through_prometheus_agrees_with_direct_scrapes(live: Live) -> None:
    code, direct, pcode, prom = _compare(live, "--all")
    assert (direct["source"], prom["source"]) == ("scrape", "prometheus")
    assert code == pcode == 0
    assert prom["status"] == "Healthy"
    assert sorted(_by_node(prom)) == sorted(live.nodes)
    assert prom["score"] == pytest.approx(direct["score"], abs=0.05)
    for item in prom["items"]:
        assert item["admin_url"] == live.nodes[item["node"]]["admin_url"]
        assert set(item["components"]) == set(_by_node(direct)[item["node"]]["components"])
    # without --all: just the --node's own target
    code, one, pcode, pone = _compare(live)
    assert [i["node"] for i in pone["items"]] == [i["node"] for i in one["items"]] == ["node-0"]


def test_dashboard_expressions_evaluate_on_live_metrics(live: Live) -> None:
    board = json.loads(generate("monitoring", "dashboard"))
    instance = live.nodes["node-0"]["instance"]
    # the dashboard's node variable: label_values(plumtree_eager_peers, instance)
    instances = live.api("/api/v1/label/instance/values", **{"match[]": "plumtree_eager_peers"})
    assert sorted(instances) == sorted(n["instance"] for n in live.nodes.values())
    live_names = set(live.api("/api/v1/label/__name__/values"))
    exprs = all_expressions(board)
    assert len(exprs) >= 10
    for expr in exprs:
        concrete = expr.replace("$instance", instance)
        data = live.api("/api/v1/query", query=concrete)  # fails on a parse/eval error
        assert data["result"], f"no series for panel expression {concrete!r}"
        names = catalog.referenced_metrics(expr)
        assert names and names <= live_names, (expr, names - live_names)
    # and the catalog the rules and panels are held to is what the nodes really export
    assert catalog.series_names() <= live_names, catalog.series_names() - live_names


def test_killing_a_node_alerts_for_the_survivors(live: Live) -> None:
    victim = "node-2"
    survivors = {n for n in live.nodes if n != victim}
    # the watcher keeps the very file this Prometheus reads its targets from
    watch_file = live.dir / "prometheus" / "targets.json"
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plumctl",
            "--node",
            live.seed,
            "monitoring",
            "scrape-config",
            "--targets-file",
            str(watch_file),
            "--out",
            str(live.dir / "watched-prometheus.yml"),
            "--watch",
            "--refresh",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=plumctl_env(),
    )
    try:
        nodes_in = lambda: [g["labels"]["node"] for g in json.loads(watch_file.read_text())]  # noqa: E731
        wait_for("the watcher's first targets file", nodes_in, lambda n: len(n) == NODES)

        os.kill(live.nodes[victim]["pid"], signal.SIGKILL)
        live.killed.add(victim)

        wait_for(
            f"up == 0 for {victim} only",
            lambda: live.query('up{job="plumtree"}'),
            lambda up: up == {**{n: 1.0 for n in survivors}, victim: 0.0},
        )

        def low_peer_count() -> dict[str, str]:
            return {
                a["labels"]["node"]: a["state"]
                for a in live.alerts()
                if a["labels"]["alertname"] == "PlumtreeLowPeerCount"
            }

        pending = wait_for(
            "PlumtreeLowPeerCount for the survivors",
            low_peer_count,
            lambda a: set(a) == survivors and set(a.values()) <= {"pending", "firing"},
        )
        assert victim not in pending
        firing = wait_for(
            f"PlumtreeLowPeerCount firing after its (shortened) for: {SHORT_FOR}",
            low_peer_count,
            lambda a: a == {n: "firing" for n in survivors},
        )
        assert firing
        alert = next(
            a
            for a in live.alerts()
            if a["labels"]["alertname"] == "PlumtreeLowPeerCount"
            and a["labels"]["node"] == "node-0"
        )
        assert alert["labels"]["severity"] == "warning"
        assert alert["labels"]["instance"] == live.nodes["node-0"]["instance"]
        assert alert["annotations"]["summary"] == (
            f"Low peer count on {live.nodes['node-0']['instance']}"
        )
        assert float(alert["value"]) == 1.0
        # No peer alert names the dead node: its gauges went stale with its target. (An
        # alert on rate(...[5m]) may still name it: rates keep reading its last samples
        # for up to 5 minutes, which is Prometheus's semantics, not a plumtree signal.)
        peer_alerts = {"PlumtreeLowPeerCount", "PlumtreeNodeIsolated", "PlumtreeReducedRedundancy"}
        about_victim = [
            a
            for a in live.alerts()
            if a["labels"]["node"] == victim and a["labels"]["alertname"] in peer_alerts
        ]
        assert not about_victim, about_victim

        # the health command sees it too, the same way in both modes
        code, _direct, pcode, prom = _compare(live, "--all")
        assert code == pcode == 4  # degraded
        items = _by_node(prom)
        assert items[victim]["status"] == "Unreachable"
        assert "down in Prometheus (up == 0" in items[victim]["message"]
        assert {items[n]["status"] for n in survivors} == {"Degraded"}
        assert all("reduced redundancy" in items[n]["message"] for n in survivors)

        # Once SWIM declares it dead, the watcher keeps it as a target: Prometheus goes on
        # seeing it down, and both health paths still agree (issue 19: the watcher dropped
        # it, its series went stale, and health --prometheus said Healthy-but-smaller)
        with httpx.Client(timeout=10.0, trust_env=False) as client:
            wait_for(
                f"{victim} dead in the seed's member table",
                lambda: {
                    m["name"]: m["state"]
                    for m in client.get(f"{live.seed}/v1/members").json()["items"]
                }[victim],
                lambda state: state == "dead",
            )
        time.sleep(2.0)  # four watcher rounds (--refresh 0.5) since then
        assert victim in nodes_in()
        code, direct, pcode, prom = _compare(live, "--all")
        assert code == pcode == 4
        assert _by_node(direct)[victim]["status"] == "Failed"
        assert _by_node(prom)[victim]["status"] == "Unreachable"
        assert live.query('up{job="plumtree"}')[victim] == 0.0

        # and every survivor alerts that a member is dead
        def member_dead() -> dict[str, str]:
            return {
                a["labels"]["node"]: a["state"]
                for a in live.alerts()
                if a["labels"]["alertname"] == "PlumtreeMemberDead"
            }

        wait_for(
            f"PlumtreeMemberDead firing after its (shortened) for: {SHORT_FOR}",
            member_dead,
            lambda a: a == {n: "firing" for n in survivors},
        )
        dead_alert = next(
            a
            for a in live.alerts()
            if a["labels"]["alertname"] == "PlumtreeMemberDead" and a["labels"]["node"] == "node-0"
        )
        assert float(dead_alert["value"]) == 1.0
        assert dead_alert["labels"]["severity"] == "warning"
    finally:
        if watcher.poll() is None:
            watcher.send_signal(signal.SIGTERM)
        try:
            _out, err = watcher.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            watcher.kill()
            _out, err = watcher.communicate(timeout=15)
    assert watcher.returncode == 0, err
    assert "targets changed" not in err, err  # a dead member is not dropped
    assert err.rstrip().endswith("plumctl: stopped watching")
