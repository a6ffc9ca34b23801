"""Authenticated gossip is the default: who may start without a keyring, and how an
insecure node shows itself (real ``plumctl node start`` processes)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from plumtree.runtime import gossippolicy
from plumtree.runtime.crypto import Keyring
from tests.cli.helpers import wait_until

PLUMCTL = [sys.executable, "-m", "plumctl"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PLUMCTL, *args], capture_output=True, text=True, timeout=60)


def keyring_file(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps([Keyring.generate()]))
    path.chmod(mode)
    return path


@pytest.mark.parametrize("bind", [None, "0.0.0.0:0", "[::]:0", "10.11.12.13:0"])
def test_gossip_on_the_network_without_a_keyring_refuses_to_start(bind: str | None) -> None:
    args = ["node", "start", "--name", "x", "--api", "127.0.0.1:0"]
    result = run(*args, *(["--bind", bind] if bind else []))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no keyring" in lines[0], result.stderr
    assert "--keyring FILE" in lines[0] and "--insecure-gossip" in lines[0]


def test_a_keyring_file_others_can_read_refuses_to_start(tmp_path: Path) -> None:
    keys = keyring_file(tmp_path, 0o644)
    result = run("node", "start", "--bind", "127.0.0.1:0", "--keyring", str(keys))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"plumctl: error: {keys}: keyring readable by group or others (mode 0644):"
        f" run chmod 600 {keys}"
    )


@pytest.mark.parametrize("how", ["flag", "config"])
def test_an_insecure_node_says_so_everywhere(tmp_path: Path, how: str) -> None:
    ready, log = tmp_path / "ready.json", tmp_path / "node.log"
    extra = ["--insecure-gossip"]
    if how == "config":
        config = tmp_path / "node.toml"
        config.write_text("[node]\ninsecure_gossip = true\n")
        extra = ["--config", str(config)]
    argv = [
        *PLUMCTL,
        *("node", "start", "--name", "open", "--bind", "0.0.0.0:0", "--api", "127.0.0.1:0"),
        *("--profile", "local", "--ready-file", str(ready), *extra),
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(ready.exists, 15)
        url = json.loads(ready.read_text())["admin_url"]
        assert httpx.get(url + "/v1/status").json()["insecure_gossip"] is True
        assert "plumtree_gossip_insecure 1.0" in httpx.get(url + "/metrics").text
        wide = run("members", "--node", url, "-o", "wide")
        assert wide.returncode == 0 and "GOSSIP" in wide.stdout and "insecure" in wide.stdout
        doc = json.loads(run("members", "--node", url, "-o", "json").stdout)
        assert doc["items"][0]["tags"] == {gossippolicy.INSECURE_TAG: "true"}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    warnings = [line for line in log.read_text().splitlines() if "NOT authenticated" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0]


def test_the_insecure_tag_is_reserved() -> None:
    result = run("node", "start", "--bind", "127.0.0.1:0", "--tag", "insecure_gossip=false")
    assert result.returncode == 2 and "reserved" in result.stderr


@pytest.mark.parametrize(
    ("bind", "keyring", "allowed", "insecure"),
    [
        ("127.0.0.1:7946", False, False, False),  # loopback: no keyring needed
        ("[::1]:7946", False, False, False),
        ("localhost:7946", False, False, False),
        ("127.0.0.1:7946", False, True, False),  # the flag changes nothing on loopback
        ("0.0.0.0:7946", True, False, False),  # a keyring: fine anywhere
        ("0.0.0.0:7946", False, True, True),
        ("node1.example:7946", False, True, True),  # a name: assumed reachable
    ],
)
def test_the_rule(bind: str, keyring: bool, allowed: bool, insecure: bool) -> None:
    assert gossippolicy.check(bind, keyring, allowed) is insecure


def test_the_rule_refuses_without_consent() -> None:
    with pytest.raises(gossippolicy.InsecureGossip):
        gossippolicy.check("0.0.0.0:7946", False, False)
