"""``/v1/keys``: live keyring changes on in-process nodes, their file, their refusals."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import httpx
import pytest

from plumctl.client import ApiError, AsyncClient, AuthFailed
from plumtree.runtime.crypto import Keyring, encode_key
from plumtree.runtime.keys import KeyConflict, plan, write_keyring_file
from tests.runtime.conftest import LocalCluster, wait_for

OLD, NEW, OTHER = os.urandom(32), os.urandom(16), os.urandom(24)


def keyring_file(path: Path, *keys: bytes) -> Path:
    write_keyring_file(path, list(keys))
    return path


def on_disk(path: Path) -> list[str]:
    return list(json.loads(path.read_text()))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_plan_keeps_the_primary_first_and_refuses_what_would_cut_the_node_off() -> None:
    assert plan((OLD,), "install", NEW) == [OLD, NEW]
    assert plan((OLD, NEW), "install", NEW) == [OLD, NEW]  # already there: unchanged
    assert plan((OLD, NEW), "use", NEW) == [NEW, OLD]
    assert plan((NEW, OLD), "remove", OLD) == [NEW]
    assert plan((NEW,), "remove", OLD) == [NEW]  # absent: unchanged
    with pytest.raises(KeyConflict, match="not installed"):
        plan((OLD,), "use", NEW)
    with pytest.raises(KeyConflict, match="primary"):
        plan((OLD, NEW), "remove", OLD)


def test_the_keyring_file_is_replaced_whole_and_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("[]")
    path.chmod(0o644)
    write_keyring_file(path, [NEW, OLD])
    assert on_disk(path) == [encode_key(NEW), encode_key(OLD)]
    assert mode(path) == 0o600
    assert Keyring.load(path).keys == (NEW, OLD)
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]  # no temporary file left


async def test_rotation_through_the_api_changes_the_live_keyring_and_its_file(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    files = [keyring_file(tmp_path / f"n{i}.json", OLD) for i in range(2)]
    nodes = [
        await cluster.add(keyring=Keyring.load(f), keyring_file=str(f), token="s3cret")
        for f in files
    ]
    await cluster.converge()
    clients = [AsyncClient(str(n.admin_url), token="s3cret") for n in nodes]
    try:
        listed = await clients[0].keys()
        assert listed["keys"] == [encode_key(OLD)] and listed["file"] == str(files[0])
        for op, key, expected in (
            ("install", NEW, [OLD, NEW]),
            ("use", NEW, [NEW, OLD]),
            ("remove", OLD, [NEW]),
        ):
            for node, client, path in zip(nodes, clients, files, strict=True):
                answer = await client.change_keys(op, encode_key(key))
                assert answer["changed"] is True and answer["persisted"] is True
                assert answer["keys"] == [encode_key(k) for k in expected]
                assert node.transport.keyring is not None
                assert node.transport.keyring.keys == tuple(expected), "live, no restart"
                assert on_disk(path) == answer["keys"] and mode(path) == 0o600
        again = await clients[0].change_keys("install", encode_key(NEW))
        assert again["changed"] is False and again["keys"] == [encode_key(NEW)]
        # the rotated cluster still talks: a broadcast sealed with NEW gets through
        msg = await nodes[0].publish(b"after rotation")
        await wait_for(lambda: any(d.id == msg for d in cluster.delivered["n1"]))
        assert all(n.transport.stats.decrypt_errors == 0 for n in nodes)
        kinds = [e["kind"] for e in nodes[0].events.recent(50, "info")]
        assert kinds.count("keyring_changed") == 3
    finally:
        for c in clients:
            await c.aclose()


async def test_refusals_are_json_4xx_and_change_nothing(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    path = keyring_file(tmp_path / "k.json", OLD, NEW)
    node = await cluster.add(keyring=Keyring.load(path), keyring_file=str(path), token="t")
    url = str(node.admin_url)
    before = path.read_bytes()
    cases = [
        ("use", {"key": encode_key(OTHER)}, 409, "key not installed"),
        ("remove", {"key": encode_key(OLD)}, 409, "cannot remove the primary key"),
        ("install", {"key": "bm90IGEga2V5"}, 400, "bad key"),  # base64 of 9 bytes
        ("install", {"key": "***"}, 400, "bad key"),
        ("install", {"key": 5}, 400, "bad request body"),
        ("install", ["x"], 400, "bad request body"),
        ("install", {"key": "A" * 5000}, 413, "payload too large"),
    ]
    async with httpx.AsyncClient(headers={"Authorization": "Bearer t"}) as raw:
        for op, body, status, error in cases:
            r = await raw.post(f"{url}/v1/keys/{op}", content=json.dumps(body))
            assert (r.status_code, r.json()["error"]) == (status, error), (op, body)
        r = await raw.post(f"{url}/v1/keys/install", content=b"{not json")
        assert r.status_code == 400 and r.json()["error"] == "bad request body"
        r = await raw.get(f"{url}/v1/keys/install")
        assert r.status_code == 405
    async with httpx.AsyncClient() as anonymous:  # the listing holds the keys: token too
        for method, endpoint in (("GET", "/v1/keys"), ("POST", "/v1/keys/install")):
            r = await anonymous.request(method, url + endpoint, content=b"{}")
            assert r.status_code == 401, endpoint
    assert node.transport.keyring is not None and node.transport.keyring.keys == (OLD, NEW)
    assert path.read_bytes() == before


async def test_a_keyring_file_that_cannot_be_written_changes_nothing(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    ring = Keyring([OLD])
    gone = tmp_path / "gone" / "k.json"  # its directory does not exist
    node = await cluster.add(keyring=ring, keyring_file=str(gone))
    async with AsyncClient(str(node.admin_url)) as client:
        with pytest.raises(ApiError) as err:
            await client.change_keys("install", encode_key(NEW))
    assert err.value.status == 500 and err.value.error == "keyring file not saved"
    assert "nothing changed" in str(err.value.detail)
    assert ring.keys == (OLD,)


async def test_without_a_file_changes_are_live_but_not_persisted(cluster: LocalCluster) -> None:
    node = await cluster.add(keyring=Keyring([OLD]))
    async with AsyncClient(str(node.admin_url)) as client:
        answer = await client.change_keys("install", encode_key(NEW))
    assert answer["persisted"] is False and answer["file"] is None
    assert answer["keys"] == [encode_key(OLD), encode_key(NEW)]


async def test_a_node_without_a_keyring_answers_409_on_every_keys_endpoint(
    cluster: LocalCluster,
) -> None:
    node = await cluster.add()
    async with AsyncClient(str(node.admin_url)) as client:
        for call in (client.keys(), client.change_keys("install", encode_key(NEW))):
            with pytest.raises(ApiError) as err:
                await call
            assert err.value.status == 409 and err.value.error == "gossip encryption is off"


async def test_a_wrong_token_is_refused_through_the_client(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    node = await cluster.add(keyring=Keyring([OLD]), token="right")
    async with AsyncClient(str(node.admin_url), token="wrong") as client:
        with pytest.raises(AuthFailed):
            await client.change_keys("install", encode_key(NEW))
    assert node.transport.keyring is not None and node.transport.keyring.keys == (OLD,)
