"""Every admin endpoint's success and error shapes, through plumctl's own client."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from plumctl.client import ApiError, AsyncClient, AuthFailed
from plumctl.monitoring import catalog
from plumtree.core import stats
from tests.runtime.conftest import LocalCluster, wait_for


@pytest.fixture
async def pair(cluster: LocalCluster) -> LocalCluster:
    await cluster.add(token="s3cret")
    await cluster.add()
    await cluster.add()  # three: with fewer than two peers a node is Degraded (redundancy)
    await cluster.converge()
    return cluster


TOKEN = "s3cret"  # n0's; n1 and n2 have none


def url(cluster: LocalCluster, i: int = 0) -> str:
    url = cluster.nodes[i].admin_url
    assert url is not None
    return url


async def test_status_members_peers(pair: LocalCluster) -> None:
    async with AsyncClient(url(pair), token=TOKEN) as c:
        status = await c.status()
        assert status["name"] == "n0" and status["profile"] == "local"
        assert status["gossip_addr"] == pair.nodes[0].gossip_addr
        assert status["members"]["alive"] == 3 and status["uptime_s"] >= 0
        assert "plumtree" in status["config"] and "swim" in status["config"]
        members = await c.members()
        assert members["kind"] == "MemberList"
        by_name = {m["name"]: m for m in members["items"]}
        assert set(by_name) == {"n0", "n1", "n2"}
        assert by_name["n1"]["admin_url"] == pair.nodes[1].admin_url, "admin URL spread by SWIM"
        assert by_name["n1"]["state"] == "alive" and by_name["n1"]["incarnation"] >= 1
        peers = await c.peers()
        assert sorted(p["peer"] for p in peers["items"]) == ["n1", "n2"]
        assert {p["state"] for p in peers["items"]} <= {"eager", "lazy"}


async def test_health_codes_follow_the_status(pair: LocalCluster) -> None:
    async with AsyncClient(url(pair), token=TOKEN) as c:
        body, code = await c.health()
    assert (body["status"], code) == ("Healthy", 200)
    assert body["node"] == "n0" and "connectivity" in body["components"]
    lone = await pair.add(name="lone", join=False)
    async with httpx.AsyncClient() as raw:
        r = await raw.get(f"{lone.admin_url}/v1/health")
    assert r.status_code == 500 and r.json()["status"] == "Unhealthy"


async def test_broadcast_needs_the_token_and_is_then_visible_everywhere(pair: LocalCluster) -> None:
    async with AsyncClient(url(pair)) as anonymous:
        with pytest.raises(AuthFailed):
            await anonymous.broadcast(b"nope")
    async with AsyncClient(url(pair), token="wrong") as wrong:
        with pytest.raises(AuthFailed):
            await wrong.broadcast(b"nope")
    async with AsyncClient(url(pair), token="s3cret") as c:
        sent = await c.broadcast(b"hello")
        assert sent["size"] == 5 and len(sent["id"]) == 32
    async with AsyncClient(url(pair, 1)) as other:  # n1 has no token: open
        await wait_for(lambda: len(pair.delivered["n1"]) == 1)
        info = await other.message(sent["id"])
        assert info["delivered"] and info["origin"] == "n0" and info["hops"] >= 1
        unknown = await other.message("00" * 16)
        assert unknown["delivered"] is False and unknown["at"] is None
        again = await other.broadcast(b"no token needed here")
        assert len(again["id"]) == 32


async def test_error_shapes_are_json(pair: LocalCluster) -> None:
    base = url(pair, 1)
    async with httpx.AsyncClient() as raw:
        too_big = await raw.post(f"{base}/v1/broadcast", content=b"x" * 70_000)
        assert too_big.status_code == 413
        assert too_big.json()["error"] == "payload too large"
        bad_id = await raw.get(f"{base}/v1/messages/xyz")
        assert bad_id.status_code == 400 and bad_id.json()["error"] == "bad message id"
        missing = await raw.get(f"{base}/v1/nothing")
        assert missing.status_code == 404 and "error" in missing.json()
        wrong_method = await raw.delete(f"{base}/v1/members")
        assert wrong_method.status_code == 405 and "error" in wrong_method.json()
        redirect = await raw.get(f"{base}/metrics/")
        assert redirect.status_code == 404, "/metrics is an exact path, no redirect"
    async with AsyncClient(base) as c:
        with pytest.raises(ApiError) as err:
            await c.broadcast(b"x" * 70_000)
        assert err.value.status == 413


async def test_routing_is_exact_and_answers_like_a_router(pair: LocalCluster) -> None:
    """The low-level server routes by a dict: HEAD works on every GET path, a wrong
    method is a 405 naming the allowed ones, and only one segment follows
    /v1/messages/. A body too large to read (no Content-Length) is a JSON 413."""
    base = url(pair, 1)
    async with httpx.AsyncClient() as raw:
        head = await raw.head(f"{base}/v1/status")
        assert head.status_code == 200
        assert head.headers["content-type"].startswith("application/json")
        head_post = await raw.head(f"{base}/v1/broadcast")
        assert head_post.status_code == 405 and head_post.headers["allow"] == "POST"
        get_post = await raw.get(f"{base}/v1/broadcast")
        assert get_post.status_code == 405 and get_post.json()["error"] == "Method Not Allowed"
        assert (await raw.put(f"{base}/v1/members")).headers["allow"] == "GET,HEAD"
        for path in ("/v1/messages/", "/v1/messages/" + "00" * 16 + "/x", "/", "/v1/status/"):
            missing = await raw.get(base + path)
            assert (missing.status_code, missing.json()["error"]) == (404, "Not Found"), path
        found = await raw.get(f"{base}/v1/messages/{'00' * 16}")
        assert found.status_code == 200 and found.json()["delivered"] is False

        async def chunks():  # streamed: no Content-Length to refuse early
            for _ in range(40):
                yield b"x" * 65_536

        streamed = await raw.post(f"{base}/v1/broadcast", content=chunks())
        assert streamed.status_code == 413 and "error" in streamed.json()
        after = await raw.get(f"{base}/v1/status")
        assert after.status_code == 200, "the API still answers"
        for encoded in ("/v1%2Fstatus", "/v1/status%2F", "/metrics%2F"):
            aliased = await raw.get(base + encoded)
            assert aliased.status_code == 404, f"{encoded} is no alias"
        assert (await raw.post(f"{base}/v1%2Fleave")).status_code == 404
    # a HEAD answer has no body: the next answer on the connection follows its head
    both = await _raw(
        base,
        b"HEAD /v1/status HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /v1/peers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    first, rest = both.split(b"\r\n\r\n", 1)
    assert first.startswith(b"HTTP/1.1 200") and rest.startswith(b"HTTP/1.1 200")
    assert b'"kind":"PeerList"' in rest


async def test_undecodable_header_bytes_get_json_answers(pair: LocalCluster) -> None:
    """Header bytes that are not UTF-8 reach the handlers as surrogates: the token
    check and the Expect check answer 401 and 417 as JSON, not 500."""
    bad_token = await _raw(
        url(pair, 0),  # n0 wants a token
        b"POST /v1/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\nhi",
    )
    assert bad_token.startswith(b"HTTP/1.1 401"), bad_token[:80]
    assert json.loads(bad_token.split(b"\r\n\r\n", 1)[1])["error"] == "unauthorized"
    bad_expect = await _raw(
        url(pair, 1),
        b"POST /v1/broadcast HTTP/1.1\r\nHost: x\r\nExpect: \xff-continue\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\nhi",
    )
    assert bad_expect.startswith(b"HTTP/1.1 417"), bad_expect[:80]
    assert json.loads(bad_expect.split(b"\r\n\r\n", 1)[1])["error"] == "Expectation Failed"


async def _raw(base: str, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; everything the node answers until it closes."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), 10.0)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_events_stream_newline_delimited_json(pair: LocalCluster) -> None:
    node = pair.nodes[1]
    async with (
        httpx.AsyncClient(timeout=5.0) as raw,
        raw.stream("GET", f"{node.admin_url}/v1/events?level=debug") as response,
    ):
        assert response.headers["content-type"].startswith("application/x-ndjson")
        node.broadcast(b"watch me")
        kinds = []
        async for line in response.aiter_lines():
            event = json.loads(line)
            kinds.append(event["kind"])
            if event["kind"] == "delivered":
                assert len(event["id"]) == 32 and event["hops"] == 0 and "seq" in event
                break
    assert "delivered" in kinds
    replay = node.events.recent(level="debug")
    assert any(e["kind"] == "delivered" for e in replay)


async def test_membership_events_outlive_a_flood_of_deliveries(pair: LocalCluster) -> None:
    """``plumctl top``'s detail pane asks for ``recent=50&level=info``: under load the
    per-message ``delivered`` events must not push the membership events out."""
    node = pair.nodes[1]
    async with httpx.AsyncClient(timeout=5.0) as raw:
        # the flood comes after the node's own join settled: a late `joined` event
        # among the last five would not be what this test is about
        for _ in range(250):
            early = (await raw.get(f"{node.admin_url}/v1/events?recent=50&level=info")).json()
            if "joined" in {e["kind"] for e in early["items"]}:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("node n1 never said it joined")
    for i in range(1_200):  # more than the replay buffer holds
        pair.nodes[0].broadcast(b"m%d" % i)
    pair.nodes[0].broadcast(b"the last one, 33 bytes long......")
    await wait_for(lambda: len(pair.delivered[node.name]) == 1_201, 10.0)
    async with httpx.AsyncClient(timeout=5.0) as raw:
        info = (await raw.get(f"{node.admin_url}/v1/events?recent=50&level=info")).json()
        debug = (await raw.get(f"{node.admin_url}/v1/events?recent=5")).json()
    assert {"member_joined", "peer_added"} <= {e["kind"] for e in info["items"]}
    assert [e["kind"] for e in debug["items"]] == ["delivered"] * 5
    # rendered on read from a record (no subscriber was listening): every field is there
    newest = debug["items"][-1]
    assert newest["origin"] == "n0" and newest["from"] in {"n0", "n2"} and newest["hops"] >= 1
    assert newest["size"] == 33 and newest["level"] == "debug"
    assert len(newest["id"]) == 32 and abs(newest["at"] - time.time()) < 30
    assert newest["id"] == pair.delivered[node.name][-1].id


async def test_leave_endpoint_needs_the_token_then_stops_the_node(pair: LocalCluster) -> None:
    async with httpx.AsyncClient() as raw:
        denied = await raw.post(f"{url(pair)}/v1/leave")
        assert denied.status_code == 401
        ok = await raw.post(f"{url(pair)}/v1/leave", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["left"] is True
    await asyncio.wait_for(pair.nodes[0].stopped.wait(), 5)
    survivor = pair.nodes[1]
    await wait_for(
        lambda: any(m["name"] == "n0" and m["state"] == "left" for m in survivor.members())
    )


async def test_metrics_have_every_seed_name_type_and_bucket(pair: LocalCluster) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    pair.nodes[1].broadcast(b"count me")
    await wait_for(lambda: len(pair.delivered["n0"]) == 1)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as raw:
        response = await raw.get(f"{url(pair)}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "_created" not in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in stats.SEED_COUNTERS:
        assert families[f"plumtree_{name}"].type == "counter", name
    for gauge in (
        "eager_peers",
        "lazy_peers",
        "total_peers",
        "cache_size",
        "cache_capacity",
        "ihave_queue_size",
        "pending_grafts",
    ):
        assert families[f"plumtree_{gauge}"].type == "gauge", gauge
    expected = {
        "plumtree_graft_latency_seconds": stats.GRAFT_LATENCY_BUCKETS,
        "plumtree_message_size_bytes": stats.MESSAGE_SIZE_BUCKETS,
        "plumtree_message_hops": stats.MESSAGE_HOPS_BUCKETS,
        "plumtree_ihave_batch_size": stats.IHAVE_BATCH_BUCKETS,
    }
    for name, bounds in expected.items():
        family = families[name]
        assert family.type == "histogram"
        les = [float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")]
        assert les == [*bounds, float("inf")], name
    assert families["plumtree_messages_delivered"].samples[0].value == 1.0
    # the capacity is the count or the byte bound, whichever binds at the mean size
    store = pair.nodes[0].plumtree.store
    retention = pair.nodes[0].config.protocol.plumtree
    assert len(store) == 1
    assert families["plumtree_cache_capacity"].samples[0].value == min(
        retention.retention_messages, retention.retention_bytes * len(store) // store.bytes
    )
    swim_states = {s.labels["state"] for s in families["swim_members"].samples}
    assert swim_states == {"alive", "suspect", "dead", "left"}
    exported = {s.name for f in families.values() for s in f.samples}
    missing = catalog.series_names() - exported - set(catalog.WITH_DATA_DIR)  # (no data dir)
    assert not missing, f"the monitoring catalog names series nodes do not export: {missing}"


def _expecting(length: int) -> bytes:
    return (
        b"POST /v1/broadcast HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


async def _first_answer(base: str, head: bytes, body: bytes = b"") -> list[bytes]:
    """Send ``head``; read the first answer's head; if it is 100 Continue, send ``body``
    and read the final answer too. The heads in order, then the final answer's body."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head)
        heads = [await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)]
        if heads[0].startswith(b"HTTP/1.1 100"):
            writer.write(body)
            heads.append(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0))
        length = int(heads[-1].lower().split(b"content-length:")[1].split(b"\r\n")[0])
        return [*heads, await reader.readexactly(length)]
    finally:
        writer.close()
        await writer.wait_closed()


async def test_expect_100_continue_is_answered_after_the_checks(pair: LocalCluster) -> None:
    """curl sends ``Expect: 100-continue`` for bodies over 1 KiB and otherwise waits a
    second: the node says Continue, but only to an upload it will take."""
    body = b"y" * 2000
    interim, final, answer = await _first_answer(url(pair, 1), _expecting(len(body)), body)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n" and final.startswith(b"HTTP/1.1 200")
    assert json.loads(answer)["size"] == 2000
    too_big, _ = await _first_answer(url(pair, 1), _expecting(70_000))
    assert too_big.startswith(b"HTTP/1.1 413"), "too large: refused before the body is sent"
    no_token, _ = await _first_answer(url(pair, 0), _expecting(5))  # n0 wants a token
    assert no_token.startswith(b"HTTP/1.1 401"), "no token: refused before the body is sent"


async def test_a_token_guards_every_endpoint_reads_included(cluster: LocalCluster) -> None:
    """With a token, every path (known or not, any method) answers 401 JSON without it,
    with a wrong one or with another scheme; ``public_metrics`` opens exactly /metrics
    and /v1/health; the refusals are counted by reason."""
    from plumtree.admin.server import MESSAGES, ROUTES

    closed = await cluster.add(token=TOKEN)
    public = await cluster.add(token=TOKEN, public_metrics=True)
    paths = [*ROUTES, MESSAGES + "00" * 16, "/v1/nothing", "/"]
    refusals = {
        "none": {},
        "wrong": {"Authorization": "Bearer s3cre"},
        "longer": {"Authorization": f"Bearer {TOKEN}x"},
        "basic": {"Authorization": f"Basic {TOKEN}"},
        "bare": {"Authorization": TOKEN},
    }
    async with httpx.AsyncClient(timeout=5.0) as raw:
        for path in paths:
            for method in ("GET", "POST", "HEAD"):
                for why, headers in refusals.items():
                    r = await raw.request(method, closed.admin_url + path, headers=headers)
                    assert r.status_code == 401, (method, path, why)
                    assert r.headers["www-authenticate"].startswith("Bearer")
                    if method != "HEAD":
                        assert r.json()["error"] == "unauthorized"
        good = {"Authorization": f"Bearer {TOKEN}"}
        for path in ("/v1/status", "/v1/members", "/v1/peers", "/v1/vector", "/metrics"):
            assert (await raw.get(closed.admin_url + path, headers=good)).status_code == 200
        lower = {"Authorization": f"bearer  {TOKEN}"}  # the scheme is case-insensitive
        assert (await raw.get(closed.admin_url + "/v1/status", headers=lower)).status_code == 200
        health = await raw.get(closed.admin_url + "/v1/health", headers=good)
        assert health.status_code in (200, 500, 503) and "status" in health.json()
        # public metrics: the two scraper paths open, the rest still closed
        assert (await raw.get(public.admin_url + "/metrics")).status_code == 200
        assert "status" in (await raw.get(public.admin_url + "/v1/health")).json()
        for path in ("/v1/status", "/v1/members", "/v1/events?recent=1", "/metrics/"):
            assert (await raw.get(public.admin_url + path)).status_code == 401, path
        assert (await raw.post(public.admin_url + "/v1/leave")).status_code == 401
        metrics = (await raw.get(public.admin_url + "/metrics")).text
    expected = 5 * 3 * len(paths)
    assert closed.admin.guard.rejected["unauthorized"] == expected
    assert 'plumtree_admin_rejected_total{reason="unauthorized"} 5.0' in metrics


async def test_an_event_reader_that_stops_reading_is_cut_off(cluster: LocalCluster) -> None:
    """A /v1/events client that never reads (a tiny receive buffer, full at once) holds
    its stream only until one write has waited ``body_timeout``: then the node closes it
    and counts it; the other endpoints answer all along."""
    import socket

    from plumtree.admin.limits import ApiLimits

    node = await cluster.add(api_limits=ApiLimits(body_timeout=1.0))
    loop = asyncio.get_running_loop()
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    stalled.setblocking(False)
    try:
        host, port = url(cluster).removeprefix("http://").rsplit(":", 1)
        await loop.sock_connect(stalled, (host, int(port)))
        await loop.sock_sendall(stalled, b"GET /v1/events?level=debug HTTP/1.1\r\nHost: x\r\n\r\n")
        guard = node.admin.guard
        deadline = loop.time() + 60.0
        while not guard.rejected["write_timeout"] and loop.time() < deadline:
            for _ in range(500):  # each delivery is an event on the stream
                node.broadcast(b"event")
            await asyncio.sleep(0.01)
        assert guard.rejected["write_timeout"] == 1, dict(guard.rejected)
        await wait_for(lambda: not guard.open, 10.0)
        async with AsyncClient(url(cluster)) as c:
            assert (await c.status())["name"] == node.name
        # the same for plain answers: pipelined scrapes, none of them read
        stalled.close()
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        stalled.setblocking(False)
        await loop.sock_connect(stalled, (host, int(port)))
        await loop.sock_sendall(stalled, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 300)
        await wait_for(lambda: guard.rejected["write_timeout"] == 2, 60.0)
        await wait_for(lambda: not guard.open, 10.0)
    finally:
        stalled.close()
