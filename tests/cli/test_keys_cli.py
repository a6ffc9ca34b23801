"""``plumctl keys``: fan-out answers, exit codes and refusals against in-process nodes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from plumtree.runtime.crypto import Keyring, decode_key, encode_key, fingerprint
from plumtree.runtime.keys import write_keyring_file
from tests.cli.helpers import invoke, json_out
from tests.cli.threadcluster import ThreadCluster
from tests.ports import free_port

OLD = encode_key(os.urandom(32))
NEW = encode_key(os.urandom(32))


@pytest.fixture
def encrypted(tmp_path: Path) -> Iterator[ThreadCluster]:
    """Three nodes sharing the key OLD, each with its own keyring file."""
    c = ThreadCluster()
    try:

        async def go() -> None:
            for i in range(3):
                path = tmp_path / f"node-{i}.json"
                write_keyring_file(path, [decode_key(OLD)])
                await c.local.add(f"node-{i}", keyring=Keyring.load(path), keyring_file=str(path))
            await c.local.converge()

        c.run(go())
        yield c
    finally:
        c.close()


def test_generate_prints_a_fresh_aes_256_key_and_asks_no_node() -> None:
    one = invoke("--node", f"127.0.0.1:{free_port()}", "keys", "generate")
    two = json_out(invoke("keys", "generate", "-o", "json"))
    assert one.exit_code == 0
    assert len(decode_key(one.stdout.strip())) == 32
    assert two["kind"] == "Key" and two["key"] != one.stdout.strip()


@pytest.mark.parametrize("bad", ["abc", "***", encode_key(b"x" * 20), ""])
def test_a_malformed_key_is_one_line_and_exit_2_before_any_node_is_asked(bad: str) -> None:
    result = invoke("--node", f"127.0.0.1:{free_port()}", "keys", "install", bad)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("plumctl: error: KEY: ")


@pytest.mark.parametrize("via", ["gossip", "direct"])
def test_install_use_list_remove_report_every_node(encrypted: ThreadCluster, via: str) -> None:
    node = encrypted.urls[0]
    mode = ["--direct"] if via == "direct" else []
    # over gossip answers name keys by fingerprint, never the key itself
    old, new = (OLD, NEW) if via == "direct" else (fp(OLD), fp(NEW))
    refused = invoke("--node", node, "keys", "use", NEW, *mode)
    assert refused.exit_code == 1
    assert "node-0, node-1, node-2 do not hold the key" in refused.stderr
    assert all(n.transport.keyring.keys == (decode_key(OLD),) for n in encrypted.nodes)  # type: ignore[union-attr]

    done = json_out(invoke("--node", node, "keys", "install", NEW, "-o", "json", *mode))
    assert done["kind"] == "KeyringChange" and done["ok"] is True and done["failed"] == []
    assert done["via"] == via and done["key"] == new
    assert [(i["node"], i["changed"], i["keys"]) for i in done["items"]] == [
        (f"node-{i}", True, [old, new]) for i in range(3)
    ]
    listing = json_out(invoke("--node", node, "keys", "list", "-o", "json", *mode))
    assert listing["keys"] == [
        {"key": old, "nodes": 3, "primary_on": 3, "of": 3},
        {"key": new, "nodes": 3, "primary_on": 0, "of": 3},
    ]
    early = invoke("--node", node, "keys", "remove", OLD, *mode)
    assert early.exit_code == 1 and "still encrypt with it" in early.stderr

    table = invoke("--node", node, "keys", "use", NEW, *mode)
    assert table.exit_code == 0, table.stderr
    assert "3/3 live members confirmed" in table.stdout
    assert json_out(invoke("--node", node, "keys", "remove", OLD, "-o", "json", *mode))["ok"]
    listing = json_out(invoke("--node", node, "keys", "list", "-o", "json", *mode))
    assert listing["keys"] == [{"key": new, "nodes": 3, "primary_on": 3, "of": 3}]
    assert all(n.transport.keyring.keys == (decode_key(NEW),) for n in encrypted.nodes)  # type: ignore[union-attr]
    if via == "gossip":
        assert NEW not in invoke("--node", node, "keys", "list", "-o", "wide").stdout


def fp(key: str) -> str:
    return fingerprint(decode_key(key))


def test_a_live_member_that_does_not_answer_is_named_and_exit_1(
    encrypted: ThreadCluster,
) -> None:
    down = encrypted.nodes[2]
    encrypted.run(down.admin.stop())  # its admin API is gone; SWIM still says alive
    result = invoke("--node", encrypted.urls[0], "keys", "install", NEW, "-o", "json", "--direct")
    assert result.exit_code == 1
    assert result.stderr.startswith("plumctl: error: not every live member confirmed: node-2: ")
    assert "cannot reach" in result.stderr and len(result.stderr.splitlines()) == 1
    doc = json.loads(result.stdout)
    assert doc["failed"] == ["node-2"]
    assert [i["ok"] for i in doc["items"]] == [True, True, False]
    # the others did change: a retry once node-2 is back changes only what is left
    assert encrypted.nodes[0].transport.keyring.keys[-1] == decode_key(NEW)  # type: ignore[union-attr]
    refused = invoke("--node", encrypted.urls[0], "keys", "use", NEW, "--direct")
    assert refused.exit_code == 1 and "cannot check every live member first" in refused.stderr
    # over gossip node-2's admin API is not needed: it is asked, and answers, by gossip
    assert invoke("--node", encrypted.urls[0], "keys", "install", NEW).exit_code == 0
    assert down.transport.keyring.keys[-1] == decode_key(NEW)  # type: ignore[union-attr]
    assert invoke("--node", encrypted.urls[0], "keys", "use", NEW).exit_code == 0


@pytest.mark.parametrize("mode", [[], ["--direct"]])
def test_a_cluster_without_keyring_says_encryption_is_off(
    three: ThreadCluster, mode: list[str]
) -> None:
    for args in (("keys", "list"), ("keys", "install", NEW), ("keys", "use", NEW, "--force")):
        args = (*args, *mode)
        result = invoke("--node", three.urls[0], *args)
        assert result.exit_code == 1, args
        assert "gossip encryption is off" in result.stderr, args
        assert len(result.stderr.splitlines()) == 1


def test_no_reachable_node_is_exit_3() -> None:
    result = invoke("--node", f"127.0.0.1:{free_port()}", "keys", "list")
    assert result.exit_code == 3 and "cannot reach" in result.stderr


def test_the_pool_counts_answering_nodes_and_dead_members_are_only_listed() -> None:
    from plumctl.commands.keys import refusal, summarise
    from plumctl.targets import Asked, Target

    live = [Target("a", "http://a", "alive"), Target("b", "http://b", "suspect")]
    asked: Asked[dict[str, object]] = Asked("a", live, [Target("c", "http://c", "dead")])
    asked.answers = {
        "a": {"keys": [NEW, OLD], "primary": NEW},
        "b": {"keys": [OLD, NEW], "primary": OLD},
    }
    listing = summarise(asked)
    assert listing.pool() == [
        {"key": NEW, "nodes": 2, "primary_on": 1, "of": 2},
        {"key": OLD, "nodes": 2, "primary_on": 1, "of": 2},
    ]
    assert [n.node for n in listing.skipped] == ["c"] and not listing.failed
    assert refusal("use", NEW, listing) is None  # both hold it: safe to switch
    assert refusal("remove", OLD, listing) == (
        "not removing: b still encrypts with it (plumctl keys use ANOTHER first)"
    )
    asked.answers["b"] = "cannot reach node at http://b: connection refused"
    assert "b: cannot reach" in str(refusal("use", NEW, summarise(asked)))
