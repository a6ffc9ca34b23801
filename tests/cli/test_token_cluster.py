"""Every operator command against a local cluster whose nodes all want a bearer token
(``plumctl cluster up --token-file``): with the token (``--token`` or ``PLUMCTL_TOKEN``)
each works, without it each fails in one line with exit 1; ``cluster status`` finds the
token through the cluster's state."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from plumctl import exitcodes
from plumctl.localcluster import is_our_node
from tests.cli.helpers import plumctl_env

TOKEN = "cluster-token-0123"
NODES = 3


def run(*args: str, token: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = plumctl_env()
    if token:
        env["PLUMCTL_TOKEN"] = TOKEN
    return subprocess.run(
        [sys.executable, "-m", "plumctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[dict]]]:  # type: ignore[type-arg]
    root = tmp_path_factory.mktemp("token-cluster")
    token_file = root / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    where = root / "c"
    up = run(
        "cluster", "up", "-n", str(NODES), "--dir", str(where),
        "--token-file", str(token_file), "-o", "json",
        token=False, timeout=120,
    )  # fmt: skip
    items = json.loads(up.stdout)["items"] if up.returncode == 0 else []
    try:
        assert up.returncode == 0, up.stderr  # converged: polled with the file's token
        assert json.loads(up.stdout)["converged"] is True
        yield where, items
    finally:
        run("cluster", "down", "--dir", str(where), "--grace", "5", token=False)
        for item in items:
            if is_our_node(item["pid"], item["name"]):
                os.kill(item["pid"], signal.SIGKILL)


def test_every_command_works_with_the_token(cluster: tuple[Path, list[dict]]) -> None:  # type: ignore[type-arg]
    where, items = cluster
    seed = items[0]["admin_url"]
    out = {}
    for args in (
        ("members", "-o", "json"),
        ("peers", "--all", "-o", "json"),
        ("health", "--all", "--interval", "0.3", "-o", "json"),
        ("audit", "-o", "json"),
        ("metrics", "-o", "json"),
        ("broadcast", "with-token", "--wait", "-o", "json"),
        ("top", "-o", "json", "--interval", "0.3"),
    ):
        result = run("--node", seed, *args)
        assert result.returncode in (exitcodes.OK, exitcodes.DEGRADED), (args, result.stderr)
        out[args[0]] = json.loads(result.stdout)
    assert len(out["members"]["items"]) == NODES
    assert {i["name"] for i in out["top"]["items"]} == {i["name"] for i in items}
    status = run("cluster", "status", "--dir", str(where), "-o", "json", token=False)
    assert status.returncode in (exitcodes.OK, exitcodes.DEGRADED), status.stderr
    healths = {i["health"] for i in json.loads(status.stdout)["items"]}
    assert healths <= {"Healthy", "Degraded"}, status.stdout  # never "unreachable"
    # monitor: a stream; --since 0 replays the node's buffer, the first line is enough
    with subprocess.Popen(
        [sys.executable, "-m", "plumctl", "--node", seed, "monitor", "--since", "0",
         "--level", "debug", "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**plumctl_env(), "PLUMCTL_TOKEN": TOKEN},
    ) as monitor:  # fmt: skip
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(
            target=lambda: [lines.put(x) for x in monitor.stdout or ()], daemon=True
        ).start()
        try:
            assert "kind" in json.loads(lines.get(timeout=30))
        finally:
            monitor.kill()
            monitor.wait(15)


def test_without_the_token_every_command_fails_in_one_line(
    cluster: tuple[Path, list[dict]],  # type: ignore[type-arg]
) -> None:
    _, items = cluster
    seed = items[0]["admin_url"]
    for args in (
        ("members",),
        ("peers",),
        ("health",),
        ("metrics",),
        ("broadcast", "nope"),
        ("monitor",),
    ):
        result = run("--node", seed, *args, token=False)
        assert result.returncode == exitcodes.FAILED, (args, result.returncode, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "token" in lines[0], (args, lines)


def test_the_token_file_may_come_from_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cluster up --config`` with ``node.token_file``: the cluster state remembers it
    (resolved as the nodes resolve it, from the working directory) for polling and status."""
    from plumctl.commands.cluster import _token_file

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "node.toml"
    config.write_text('[node]\ntoken_file = "secrets/token"\n')
    assert _token_file(None, config) == str(tmp_path / "secrets" / "token")
    assert _token_file(tmp_path / "flag", config) == str(tmp_path / "flag"), "the flag wins"
    config.write_text("[node\n")
    assert _token_file(None, config) is None
    assert _token_file(None, None) is None
