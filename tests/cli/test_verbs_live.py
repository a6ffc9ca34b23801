"""serf's verbs (tags, members filters, info, rtt, join, leave, force-leave) against a real
multi-process cluster on loopback (``plumctl cluster up``) and one more node process."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plumctl.localcluster import node_command
from tests.cli.helpers import invoke, json_out
from tests.ledger import NodeProcs, node_procs, wait_until
from tests.ports import free_port


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcs]:
    with node_procs(tmp_path_factory.mktemp("verbs") / "c", 4) as c:
        wait_until(lambda: all(_states(c, i).count("alive") == 4 for i in range(4)), 30)
        yield c


def _members(url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = httpx.get(url + "/v1/members", timeout=5).json()["items"]
    return items


def _states(c: NodeProcs, i: int) -> list[str]:
    return [m["state"] for m in _members(c.urls[i])]


def _member(url: str, name: str) -> dict[str, Any] | None:
    return next((m for m in _members(url) if m["name"] == name), None)


def cli(url: str, *args: str) -> Any:
    return invoke("--node", url, *args)


# -- tags and members filters -------------------------------------------------------------


def test_tags_set_and_unset_reach_every_member(cluster: NodeProcs) -> None:
    one = cluster.procs[1]
    doc = json_out(cli(one.admin_url, "tags", "set", "role=api", "zone=eu-1", "-o", "json"))
    assert doc["tags"] == {"role": "api", "zone": "eu-1"}

    def tagged(tags: dict[str, str]) -> bool:
        return all((_member(url, one.name) or {}).get("tags") == tags for url in cluster.urls)

    wait_until(lambda: tagged({"role": "api", "zone": "eu-1"}), 10, 0.1)
    doc = json_out(cli(one.admin_url, "tags", "unset", "zone", "-o", "json"))
    assert doc["tags"] == {"role": "api"}
    wait_until(lambda: tagged({"role": "api"}), 10, 0.1)
    # the admin URL (a reserved tag) is still advertised
    assert all((_member(url, one.name) or {})["admin_url"] == one.admin_url for url in cluster.urls)


@pytest.mark.parametrize("verb", [["set", "admin=http://evil"], ["unset", "insecure_gossip"]])
def test_reserved_tags_are_refused(cluster: NodeProcs, verb: list[str]) -> None:
    result = cli(cluster.urls[2], "tags", *verb)
    assert result.exit_code == 1
    assert "reserved" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    response = httpx.post(cluster.urls[2] + "/v1/tags", json={"set": {"admin": "x"}}, timeout=5)
    assert response.status_code == 400 and response.json()["error"] == "reserved tag"


def test_tags_that_do_not_fit_are_refused_with_the_limit(cluster: NodeProcs) -> None:
    big = [f"k{i}=" + "v" * 200 for i in range(8)]
    result = cli(cluster.urls[2], "tags", "set", *big)
    assert result.exit_code == 1
    assert "max_meta_bytes 512" in result.stderr
    assert "k0" not in (_member(cluster.urls[0], cluster.procs[2].name) or {})["tags"]


def test_tags_bad_input_is_a_usage_error_or_400(cluster: NodeProcs) -> None:
    assert cli(cluster.urls[2], "tags", "set", "novalue").exit_code == 2
    for body in [b"[]", b"{", b'{"set": {"a": 1}}', b'{"unset": "a"}']:
        response = httpx.post(cluster.urls[2] + "/v1/tags", content=body, timeout=5)
        assert response.status_code == 400, body
        assert response.json()["error"] == "bad request body"


def test_members_filters_combine_with_and(cluster: NodeProcs) -> None:
    one = cluster.procs[1]
    cli(one.admin_url, "tags", "set", "role=api")
    url = cluster.urls[0]
    wait_until(lambda: (_member(url, one.name) or {}).get("tags", {}).get("role") == "api", 10)

    def names(*args: str) -> list[str]:
        return sorted(
            m["name"] for m in json_out(cli(url, "members", "-o", "json", *args))["items"]
        )

    everyone = sorted(p.name for p in cluster.procs)
    assert names() == everyone
    assert names("--tag", "role=api") == [one.name]
    assert names("--tag", "role=a.*") == [one.name]
    assert names("--tag", "role=ap") == []  # the whole value must match
    assert names("--name", one.name) == [one.name]
    assert names("--name", ".*", "--status", "alive") == everyone
    assert names("--name", one.name, "--tag", "role=db") == []
    assert names("--name", cluster.procs[0].name, "--tag", "role=api") == []
    assert names("--tag", "nosuch=.*") == []
    for bad in [["--name", "("], ["--status", "[a"], ["--tag", "role=("], ["--tag", "role"]]:
        result = cli(url, "members", *bad)
        assert result.exit_code == 2, bad
        assert len(result.stderr.strip().splitlines()) == 1


# -- info and rtt -------------------------------------------------------------------------


def test_info_shows_the_node_runtime_facts(cluster: NodeProcs) -> None:
    p = cluster.procs[0]
    doc = json_out(cli(p.admin_url, "info", "-o", "json"))
    assert doc["kind"] == "Info" and doc["name"] == p.name
    assert doc["gossip_addr"] == p.gossip_addr and doc["admin_url"] == p.admin_url
    assert doc["gossip_bind"] == p.gossip_addr
    assert isinstance(doc["wire_version"], int) and doc["version"]
    assert doc["keyring"] == {"enabled": False, "keys": 0, "primary": None, "file": None}
    assert doc["store"]["data_dir"].endswith(p.name) and doc["store"]["fsync"]
    assert doc["durable"] is True and doc["uptime_s"] > 0
    assert doc["members"]["alive"] >= 3 and "epoch" in doc and "delivery_cursor" in doc
    table = cli(p.admin_url, "info")
    assert table.exit_code == 0
    for label in ("version", "gossip advertise", "keyring", "store", "uptime", "members"):
        assert label in table.stdout


def test_rtt_from_this_node_and_between_two_others(cluster: NodeProcs) -> None:
    a, b, c = cluster.procs[0], cluster.procs[1], cluster.procs[2]

    def measured(url: str, to: str) -> bool:
        doc = httpx.get(url + "/v1/rtt", params={"to": to}, timeout=5).json()
        return doc["rtt_ms"] is not None

    wait_until(lambda: measured(a.admin_url, b.name) and measured(b.admin_url, c.name), 30)
    doc = json_out(cli(a.admin_url, "rtt", b.name, "-o", "json"))
    assert doc["from"] == a.name and doc["to"] == b.name
    assert doc["source"] == "swim-probe" and doc["rtt_ms"] >= 0
    doc = json_out(cli(a.admin_url, "rtt", b.name, c.name, "-o", "json"))
    assert doc["from"] == b.name and doc["to"] == c.name and doc["rtt_ms"] >= 0
    text = cli(a.admin_url, "rtt", b.name)
    assert text.exit_code == 0 and "(source: swim-probe)" in text.stdout
    assert " ms " in text.stdout or "clock resolution" in text.stdout
    unknown = cli(a.admin_url, "rtt", "nobody")
    assert unknown.exit_code == 1 and "nobody" in unknown.stderr


# -- join, leave ----------------------------------------------------------------------------


@contextlib.contextmanager
def lone_node(directory: Path, name: str) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """A node process started with no seed: (process, admin URL, gossip address)."""
    gossip = f"127.0.0.1:{free_port()}"
    api = f"127.0.0.1:{free_port()}"
    log = (directory / f"{name}.log").open("wb")
    cmd = node_command(name, gossip, api, directory / name, [], ["--profile", "local"])
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    url = f"http://{api}"
    try:
        wait_until(lambda: httpx.get(url + "/v1/status", timeout=2).status_code == 200, 30, 0.1)
        yield proc, url, gossip
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_join_then_leave_a_fresh_node(cluster: NodeProcs, tmp_path: Path) -> None:
    with lone_node(tmp_path, "fresh") as (proc, url, _):
        by_name = "localhost:" + cluster.procs[1].gossip_addr.rpartition(":")[2]
        seeds = [cluster.procs[0].gossip_addr, f"127.0.0.1:{free_port()}", by_name]
        result = cli(url, "--timeout", "3", "join", *seeds, "-o", "json")
        assert result.exit_code == 0, result.output
        doc = json_out(result)
        assert doc["joined"] == 2
        assert [s["joined"] for s in doc["seeds"]] == [True, False, True]
        assert doc["seeds"][0]["member"] == cluster.procs[0].name
        assert doc["seeds"][2]["member"] == cluster.procs[1].name  # a host name resolved
        assert doc["seeds"][1]["reason"] == "no answer in 3s"
        wait_until(
            lambda: all((_member(u, "fresh") or {}).get("state") == "alive" for u in cluster.urls),
            10,
        )
        left = cli(url, "leave", "-o", "json")
        assert left.exit_code == 0, left.output
        assert json_out(left)["stopped"] is True
        assert proc.wait(10) == 0
        wait_until(
            lambda: all((_member(u, "fresh") or {}).get("state") == "left" for u in cluster.urls),
            10,
        )


def test_join_nowhere_exits_1(tmp_path: Path) -> None:
    with lone_node(tmp_path, "alone") as (_, url, _gossip):
        result = cli(url, "--timeout", "1", "join", f"127.0.0.1:{free_port()}")
        assert result.exit_code == 1
        assert "not joined" in result.stderr and "joined 0 of 1" in result.stdout
        bad = cli(url, "join", "not an address:x")
        assert bad.exit_code == 1 and "bad address" in bad.stderr


# -- force-leave (last: it kills a member) ------------------------------------------------------


def test_force_leave_refuses_a_live_member_then_removes_a_killed_one(cluster: NodeProcs) -> None:
    victim = cluster.procs[3]
    url = cluster.urls[0]
    refused = cli(url, "force-leave", victim.name)
    assert refused.exit_code == 1
    assert "is alive" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert cli(url, "force-leave", "nobody").exit_code == 1
    cluster.kill9(3)
    wait_until(lambda: (_member(url, victim.name) or {}).get("state") in ("suspect", "dead"), 30)
    doc = json_out(cli(url, "force-leave", victim.name, "-o", "json"))
    assert doc["member"] == victim.name and doc["was"] in ("suspect", "dead")
    wait_until(
        lambda: all(
            (_member(u, victim.name) or {}).get("state") == "left" for u in cluster.urls[:3]
        ),
        10,
        0.1,
    )
