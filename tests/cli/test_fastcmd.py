"""The fast path (plumctl/fastcmd.py) prints what the typer path prints, exits the same,
and the node's own rates give ``health`` the score two scrapes give (real node processes).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from plumctl import fastcmd, options
from plumctl.localcluster import is_our_node
from tests.cli.helpers import plumctl_env, wait_until
from tests.ports import free_port

TYPER = "import sys; sys.argv[0] = 'plumctl'; from plumctl.cli import app; app(prog_name='plumctl')"
PROBE = (
    "import sys, json; from plumctl.fastcmd import run; code = run(); "
    "sys.stderr.write(json.dumps([code, [m for m in ('typer', 'httpx', 'rich', 'click') "
    "if m in sys.modules]]))"
)


def run(how: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m plumctl ARGS`` ("fast": the real entry point) or the typer app alone."""
    argv = ["-m", "plumctl"] if how == "fast" else ["-c", TYPER]
    return subprocess.run(
        [sys.executable, *argv, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=plumctl_env(),
        check=False,
    )


def fast_answered(*args: str) -> tuple[int | None, list[str]]:
    """(exit code run() gave or None: typer answers, heavy modules it imported)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=plumctl_env(),
        check=False,
    )
    code, mods = json.loads(done.stderr.strip().splitlines()[-1])
    return code, mods


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict]]:
    directory = tmp_path_factory.mktemp("fast") / "c"
    up = run("typer", "cluster", "up", "-n", "3", "--dir", str(directory), "-o", "json")
    doc = json.loads(up.stdout) if up.returncode == 0 else {"items": []}
    try:
        assert up.returncode == 0, up.stderr
        yield doc["items"]
    finally:
        run("typer", "cluster", "down", "--dir", str(directory), "--grace", "5")
        for item in doc["items"]:
            if is_our_node(item["pid"], item["name"]):
                os.kill(item["pid"], signal.SIGKILL)


def test_defaults_match_the_typer_options() -> None:
    assert fastcmd.DEFAULT_NODE == options.DEFAULT_NODE
    assert tuple(o.value for o in options.Output) == fastcmd.OUTPUTS


@pytest.mark.parametrize(
    "args",
    [
        ["members", "--bogus"],
        ["members", "-o", "json", "extra"],
        ["members"],  # the table is Rich's
        ["--cacert", "/x", "members", "-o", "json"],
        ["members", "-o", "json", "--node", "https://127.0.0.1:1"],
        ["members", "-o", "json", "--node", "localhost:1"],
        ["members", "-o", "json", "--timeout", "0"],
        ["members", "-o", "json", "--help"],
        ["broadcast", "--wait", "x"],
        ["broadcast", "-"],
        ["broadcast", "--file", "f"],
        ["health", "-o", "json", "--all"],
        ["health", "-o", "json", "--interval", "1"],
        ["health", "--watch"],
        ["peers", "-o", "json"],
    ],
)
def test_lines_it_does_not_know_go_to_typer(args: list[str]) -> None:
    assert fastcmd.run(args, {}) is None


def test_options_before_and_after_the_command_as_click_reads_them() -> None:
    env = {"PLUMCTL_NODE": "http://10.0.0.1:1/", "PLUMCTL_TOKEN": "t"}
    command, opts, args = fastcmd.parse(
        ["--node", "1.2.3.4:5", "-o", "wide", "members", "-oJSON", "--tag", "a=b", "--tag=c=d"],
        env,
    )
    assert command == "members" and args == []
    assert (opts["node"], opts["output"], opts["token"], opts["tag"]) == (
        "1.2.3.4:5",
        "json",
        "t",
        ["a=b", "c=d"],
    )
    _, opts, _ = fastcmd.parse(["broadcast", "x"], env)
    assert opts["node"] == "http://10.0.0.1:1" and opts["timeout"] == 5.0


def ids_masked(text: str) -> str:
    return re.sub(r"[0-9a-f]{32}", "ID", text)


@pytest.mark.parametrize(
    "args",
    [
        ["members", "-o", "json"],
        ["-o", "json", "members", "--status", "alive|suspect", "--name", "node-[01]"],
        ["members", "-ojson", "--tag", "nosuch=.*"],
        ["members", "-o", "json", "--name", "("],  # exit 2, one line
        ["members", "-o", "json", "--tag", "nokey"],  # exit 2, one line
        ["members", "-o", "json", "--timeout", "0"],  # exit 2, click's usage error
        ["members", "-o", "json", "extra"],  # exit 2
        ["broadcast", "hello"],
        ["broadcast", "-o", "json", "hello"],
        ["broadcast", "x" * 70_000],  # 413 after sending: exit 1, the client's words
        ["health", "-o", "json"],
        ["health"],
        ["health", "-o", "wide"],
    ],
)
def test_fast_path_prints_and_exits_as_typer(cluster: list[dict], args: list[str]) -> None:
    node = ["--node", cluster[0]["admin_url"]]
    fast, slow = run("fast", *node, *args), run("typer", *node, *args)
    assert fast.returncode == slow.returncode, (fast.stderr, slow.stderr)
    assert fast.stderr == slow.stderr
    if args[:3] == ["health", "-o", "json"]:  # the window grows between the two runs
        a, b = json.loads(fast.stdout), json.loads(slow.stdout)
        assert abs(a.pop("interval_s") - b.pop("interval_s")) < 30
        assert a == b
    else:
        assert ids_masked(fast.stdout) == ids_masked(slow.stdout)


def test_hot_commands_are_answered_without_typer_httpx_or_rich(cluster: list[dict]) -> None:
    node = ["--node", cluster[0]["admin_url"]]
    for args in (["members", "-o", "json"], ["broadcast", "hi"], ["health", "-o", "json"]):
        assert fast_answered(*node, *args) == (0, []), args


@pytest.mark.parametrize("command", [["members", "-o", "json"], ["broadcast", "x"]])
def test_unreachable_node_is_exit_3_with_the_same_line(command: list[str]) -> None:
    node = ["--node", f"http://127.0.0.1:{free_port()}"]
    fast, slow = run("fast", *node, *command), run("typer", *node, *command)
    assert fast.returncode == slow.returncode == 3
    assert fast.stderr == slow.stderr and "connection refused" in fast.stderr
    assert len(fast.stderr.splitlines()) == 1


def test_health_from_node_rates_agrees_with_two_scrapes_and_sees_a_kill(
    cluster: list[dict],
) -> None:
    url = cluster[0]["admin_url"]
    own = json.loads(run("fast", "--node", url, "health", "-o", "json").stdout)
    scraped = json.loads(
        run("typer", "--node", url, "health", "--interval", "1", "-o", "json").stdout
    )
    assert (own["source"], scraped["source"]) == ("node", "scrape")
    assert own["status"] == scraped["status"] == "Healthy"
    assert abs(own["score"] - scraped["score"]) < 0.01
    victim = cluster[2]
    if is_our_node(victim["pid"], victim["name"]):
        os.kill(victim["pid"], signal.SIGKILL)

    def noticed() -> bool:  # the node's own status, from the same single request
        doc = json.loads(run("fast", "--node", url, "health", "-o", "json").stdout)
        return bool(doc["status"] != "Healthy")

    wait_until(noticed, timeout=45, step=0.5)
    after = json.loads(run("fast", "--node", url, "health", "-o", "json").stdout)
    twice = json.loads(
        run("typer", "--node", url, "health", "--interval", "1", "-o", "json").stdout
    )
    assert abs(after["score"] - twice["score"]) < 0.01
    assert after["status"] == twice["status"] == "Degraded"


def test_node_reports_rates_on_v1_health(cluster: list[dict]) -> None:
    import httpx

    body = httpx.get(cluster[0]["admin_url"] + "/v1/health").json()
    rates = body["rates"]
    assert set(rates) == {"window_s", "eager_peers", "graft_sent_per_s", "graft_failed_per_s"}
    assert rates["window_s"] > 0 and rates["eager_peers"] >= 1
