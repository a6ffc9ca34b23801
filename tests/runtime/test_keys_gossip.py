"""``/v1/keys/cluster``: keyring changes carried over gossip from one node's admin API,
on in-process nodes over real loopback sockets; and what a forger can (not) do."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import httpx
import pytest

from plumctl.client import ApiError, AsyncClient
from plumtree.core import wire
from plumtree.core.messages import KeyRequest
from plumtree.runtime.addresses import parse_addr
from plumtree.runtime.crypto import Keyring, encode_key, fingerprint
from plumtree.runtime.keyquery import QueryRefused
from plumtree.runtime.keys import write_keyring_file
from plumtree.runtime.node import Node
from tests.runtime.conftest import LocalCluster, wait_for

OLD, NEW, EVIL = os.urandom(32), os.urandom(32), os.urandom(32)


async def encrypted(cluster: LocalCluster, tmp_path: Path, n: int = 3) -> list[Node]:
    nodes = []
    for i in range(n):
        path = tmp_path / f"n{i}.json"
        write_keyring_file(path, [OLD])
        nodes.append(
            await cluster.add(keyring=Keyring.load(path), keyring_file=str(path), token="t")
        )
    await cluster.converge()
    return nodes


def ring(node: Node) -> tuple[bytes, ...]:
    assert node.transport.keyring is not None
    return node.transport.keyring.keys


async def test_one_admin_api_rotates_every_member_over_gossip(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    nodes = await encrypted(cluster, tmp_path)
    client = AsyncClient(str(nodes[0].admin_url), token="t")
    try:
        for op, key, expected in (
            ("install", NEW, (OLD, NEW)),
            ("use", NEW, (NEW, OLD)),
            ("remove", OLD, (NEW,)),
        ):
            doc = await client.cluster_keys(op, encode_key(key), 5.0)
            assert doc["missing"] == [] and doc["key"] == fingerprint(key)
            assert [(n["node"], n["ok"], n["changed"], n["persisted"]) for n in doc["nodes"]] == [
                (node.name, True, True, True) for node in sorted(nodes, key=lambda n: n.name)
            ]
            assert all(n["keys"] == [fingerprint(k) for k in expected] for n in doc["nodes"])
            assert [ring(node) for node in nodes] == [expected] * 3  # live, every member
        listing = await client.cluster_keys(None, "", 5.0)
        assert {n["primary"] for n in listing["nodes"]} == {fingerprint(NEW)}
        assert encode_key(NEW) not in str(listing), "answers carry fingerprints, never keys"
        # the others were asked over gossip, not through their admin API
        assert [n.key_queries.answered for n in nodes] == [0, 4, 4]
        # a second install of a present key: answered, unchanged
        again = await client.cluster_keys("install", encode_key(NEW), 5.0)
        assert [n["changed"] for n in again["nodes"]] == [False] * 3
    finally:
        await client.aclose()


async def test_a_refusal_on_the_members_is_per_node_and_changes_nothing(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    nodes = await encrypted(cluster, tmp_path)
    answer = await nodes[1].key_queries.ask("use", NEW, 5.0)  # not installed anywhere
    assert not answer.missing
    assert [(a.ok, a.error) for a in answer.answers] == [
        (False, "key not installed: install it first: plumctl keys install KEY")
    ] * 3
    assert [ring(n) for n in nodes] == [(OLD,)] * 3


async def test_a_member_that_does_not_answer_in_time_is_missing(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    nodes = await encrypted(cluster, tmp_path)
    # node-2 stops reading gossip (as if frozen): SWIM still has it alive for a while
    nodes[2].transport.on_envelope = lambda *_: None
    answer = await nodes[0].key_queries.ask("install", NEW, 1.0)
    assert answer.missing == [(nodes[2].name, "alive")]
    assert sorted(a.node for a in answer.answers if a.ok) == sorted(n.name for n in nodes[:2])
    assert ring(nodes[2]) == (OLD,)


async def test_a_forged_plaintext_key_request_is_dropped_and_counted(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    nodes = await encrypted(cluster, tmp_path)
    target = nodes[1]
    before = target.transport.stats.decrypt_errors
    forged = KeyRequest(os.urandom(16), "install", EVIL)
    frame = wire.encode(wire.Envelope("", nodes[0].name, [forged]))
    host, port = parse_addr(target.gossip_addr)
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(len(frame).to_bytes(4, "big") + frame)
    await wait_for(lambda: target.transport.stats.decrypt_errors > before, 5)
    await asyncio.sleep(0.2)
    assert ring(target) == (OLD,) and target.key_queries.answered == 0


async def test_a_sealed_key_request_over_udp_or_from_a_stranger_is_refused(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    nodes = await encrypted(cluster, tmp_path)
    target = nodes[1]
    keyring = Keyring([OLD])  # an insider's copy of the gossip key
    host, port = parse_addr(target.gossip_addr)
    request = KeyRequest(os.urandom(16), "install", EVIL)
    over_udp = keyring.encrypt(wire.encode(wire.Envelope("", nodes[0].name, [request])), b"")
    stranger = keyring.encrypt(wire.encode(wire.Envelope("", "nobody", [request])), b"")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.sendto(over_udp, (host, port))
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(len(stranger).to_bytes(4, "big") + stranger)
    await wait_for(lambda: target.stack.key_refused == 2, 5)
    assert ring(target) == (OLD,) and target.key_queries.answered == 0


async def test_a_node_without_keyring_answers_an_error_and_sends_no_key_in_clear(
    cluster: LocalCluster,
) -> None:
    plain = [await cluster.add(token="t") for _ in range(2)]
    await cluster.converge()
    answer = await plain[0].key_queries.ask("list", b"", 5.0)
    assert [(a.ok, a.error) for a in answer.answers] == [(False, "gossip encryption is off")] * 2
    assert plain[1].key_queries.answered == 1  # it was asked over gossip, and answered
    with pytest.raises(QueryRefused, match="encryption is off"):
        await plain[0].key_queries.ask("install", NEW, 1.0)
    client = AsyncClient(str(plain[0].admin_url), token="t")
    try:
        with pytest.raises(ApiError) as refused:
            await client.cluster_keys("install", encode_key(NEW), 1.0)
        assert refused.value.status == 409
    finally:
        await client.aclose()


async def test_the_cluster_endpoints_need_the_token_and_check_their_input(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    nodes = await encrypted(cluster, tmp_path, n=2)
    base = str(nodes[0].admin_url)
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        assert (await http.get("/v1/keys/cluster")).status_code == 401
        body = {"key": encode_key(NEW)}
        assert (await http.post("/v1/keys/cluster/install", json=body)).status_code == 401
        auth = {"Authorization": "Bearer t"}
        for timeout in ("0", "-1", "nan", "soon"):
            bad = await http.get("/v1/keys/cluster", params={"timeout": timeout}, headers=auth)
            assert bad.status_code == 400 and bad.json()["error"] == "bad timeout", timeout
        bad = await http.post(
            "/v1/keys/cluster/install", json={"key": encode_key(NEW), "timeout": True}, headers=auth
        )
        assert bad.status_code == 400
        bad = await http.post("/v1/keys/cluster/use", json={"key": "short"}, headers=auth)
        assert bad.status_code == 400 and bad.json()["error"] == "bad key"
        ok = await http.get("/v1/keys/cluster", params={"timeout": "2"}, headers=auth)
        assert ok.status_code == 200 and ok.json()["timeout"] == 2.0
    assert [ring(n) for n in nodes] == [(OLD,)] * 2
