"""serf's verbs over the admin API, in-process: the token, the JSON errors, the status
fields ``plumctl info`` reads, and force-leave of a member that stopped answering."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from plumtree.runtime.crypto import Keyring, encode_key, fingerprint
from plumtree.runtime.keys import write_keyring_file
from tests.runtime.conftest import LocalCluster, wait_for

MUTATING = [
    ("/v1/tags", {"set": {"role": "api"}}),
    ("/v1/join", {"addrs": ["127.0.0.1:1"], "timeout": 0.1}),
    ("/v1/force-leave", {"name": "n1"}),
]


@pytest.fixture
async def trio(cluster: LocalCluster) -> LocalCluster:
    await cluster.add(token="s3cret")
    await cluster.add()
    await cluster.add()
    await cluster.converge()
    return cluster


@pytest.mark.parametrize(("path", "body"), MUTATING)
async def test_changes_need_the_token_when_one_is_set(
    trio: LocalCluster, path: str, body: dict[str, object]
) -> None:
    url = trio.nodes[0].admin_url
    async with httpx.AsyncClient() as raw:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = await raw.post(f"{url}{path}", json=body, headers=headers)
            assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert trio.nodes[0].swim.local.meta.get("role") is None


async def test_verbs_answer_json_errors(trio: LocalCluster) -> None:
    url = trio.nodes[1].admin_url
    async with httpx.AsyncClient() as raw:
        cases = [
            ("/v1/join", b'{"addrs": []}', 400, "bad request body"),
            ("/v1/join", b'{"addrs": ["a:1"], "timeout": true}', 400, "bad timeout"),
            ("/v1/join", b'{"addrs": ["no port here:x"]}', 400, "bad address"),
            ("/v1/force-leave", b'{"name": ""}', 400, "bad request body"),
            ("/v1/force-leave", b'{"name": "nobody"}', 404, "no such member"),
            ("/v1/force-leave", b'{"name": "n2"}', 409, "member is alive"),
            ("/v1/force-leave", b'{"name": "n1"}', 400, "cannot force-leave self"),
            ("/v1/tags", b'{"set": {"": "x"}}', 400, "bad tag"),
            ("/v1/tags", b"x" * 20000, 413, "payload too large"),
        ]
        for path, body, status, error in cases:
            r = await raw.post(f"{url}{path}", content=body)
            assert (r.status_code, r.json()["error"]) == (status, error), (path, body)
        r = await raw.get(f"{url}/v1/rtt")
        assert r.status_code == 400 and r.json()["error"] == "bad query"
        r = await raw.get(f"{url}/v1/rtt", params={"to": "nobody"})
        assert r.status_code == 404 and r.json()["error"] == "no such member"
        r = await raw.get(f"{url}/v1/rtt", params={"to": "n1"})  # itself: no measurement
        assert r.status_code == 200 and r.json()["rtt_ms"] is None


async def test_force_leave_of_a_stopped_member_is_left_on_the_others(trio: LocalCluster) -> None:
    gone = trio.nodes[2]
    await gone.stop(leave=False)  # as a crash: no leave announced
    n0, n1 = trio.nodes[0], trio.nodes[1]
    await wait_for(lambda: n1.swim.member("n2").state in ("suspect", "dead"), 30)  # type: ignore[union-attr]
    async with httpx.AsyncClient() as raw:
        r = await raw.post(f"{n1.admin_url}/v1/force-leave", json={"name": "n2"})
    assert r.status_code == 200 and r.json()["was"] in ("suspect", "dead")
    await wait_for(lambda: n0.swim.member("n2").state == "left", 10)  # type: ignore[union-attr]
    assert n1.swim.member("n2").state == "left"  # type: ignore[union-attr]


async def test_status_shows_the_keyring_by_fingerprint_only(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    keys = [os.urandom(32), os.urandom(32)]
    path = tmp_path / "keys.json"
    write_keyring_file(path, keys)
    node = await cluster.add(keyring=Keyring.load(path), keyring_file=str(path))
    async with httpx.AsyncClient() as raw:
        r = await raw.get(f"{node.admin_url}/v1/status")
    status = r.json()
    assert status["keyring"] == {
        "enabled": True,
        "keys": 2,
        "primary": fingerprint(keys[0]),
        "file": str(path),
    }
    assert status["gossip_bind"] == node.gossip_addr
    assert all(encode_key(k) not in r.text and k.hex() not in r.text for k in keys)
