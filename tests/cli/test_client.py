"""plumctl.client against a REAL loopback HTTP server (aiohttp on 127.0.0.1:0), no mocks.

One server runs on its own thread and event loop for the whole module, so both the sync
client and the async client (on pytest-asyncio's loop) talk to it over real sockets. Its
behaviour is chosen by the first path segment ("personality"): the client's base URL is
``http://127.0.0.1:PORT/<mode>``, so every test gets a node that behaves as it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path

import pytest
import typer
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.aiohttp import make_aiohttp_handler

from plumctl import exitcodes
from plumctl.client import (
    ApiError,
    AsyncClient,
    AuthFailed,
    BadResponse,
    Client,
    ClientError,
    StreamBroken,
    Unreachable,
    exit_on_error,
    fan_out,
    fan_out_sync,
    normalise_url,
)
from plumctl.scoring import health_score, key_queries
from tests.ports import free_port

TOKEN = "s3cret"
MAX_PAYLOAD = 64
MSG_ID = "0123456789abcdef0123456789abcdef"

# -- the fake node -------------------------------------------------------------------------


def _metrics_text() -> bytes:
    reg = CollectorRegistry()
    Counter("plumtree_graft_sent_total", "x", registry=reg).inc(4)
    Gauge("plumtree_eager_peers", "x", registry=reg).set(3)
    return generate_latest(reg)  # with _created series, as a real node might


# The "live" personality serves this registry the way nodes do (prometheus_client's own
# aiohttp handler, content negotiation, gzip); tests move its counters between scrapes.
LIVE = CollectorRegistry()
LIVE_EAGER = Gauge("plumtree_eager_peers", "eager", registry=LIVE)
LIVE_SENT = Counter("plumtree_graft_sent_total", "sent", registry=LIVE)
LIVE_FAILED = Counter("plumtree_graft_failed_total", "failed", registry=LIVE)
LIVE_DELIVERED = Counter("plumtree_messages_delivered_total", "delivered", registry=LIVE)
_live_handler = make_aiohttp_handler(LIVE)


def _ok(mode: str) -> bool:
    return mode.startswith("ok") or mode == "auth"


async def _misbehave(request: web.Request) -> web.StreamResponse | None:
    """The shared bad behaviours; None means: answer normally."""
    mode = request.match_info["mode"]
    if mode == "auth" and request.headers.get("Authorization") != f"Bearer {TOKEN}":
        return web.json_response({"error": "unauthorized", "detail": None}, status=401)
    if mode == "nonjson":
        return web.Response(
            text="<html>\n<h1>welcome to nginx</h1></html>", content_type="text/html"
        )
    if mode == "crash":
        return web.Response(
            status=500, text="500 Internal Server Error\n\nServer got itself in trouble"
        )
    if mode == "redirect":
        raise web.HTTPTemporaryRedirect(location=str(request.rel_url.path) + "/")
    if mode == "slow":
        await asyncio.sleep(5)
    if mode == "cut":
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b'{"name": "n1", ')
        assert request.transport is not None
        request.transport.close()
        return response
    return None


async def status(request: web.Request) -> web.StreamResponse:
    if bad := await _misbehave(request):
        return bad
    if request.match_info["mode"] == "wrongshape":
        return web.json_response(["not", "an", "object"])
    return web.json_response(
        {
            "name": "n1",
            "version": "0.1.0",
            "wire_version": 1,
            "cluster_label": "",
            "gossip_addr": "127.0.0.1:7946",
            "admin_url": "http://127.0.0.1:7947",
            "uptime_s": 12.5,
            "profile": "local",
            "config": {"seen_authorization": request.headers.get("Authorization")},
        }
    )


async def members(request: web.Request) -> web.StreamResponse:
    if bad := await _misbehave(request):
        return bad
    if request.match_info["mode"] == "wrongshape":
        return web.json_response({"kind": "MemberList", "node": "n1"})
    item = {
        "name": "n1",
        "addr": "127.0.0.1:7946",
        "admin_url": "http://127.0.0.1:7947",
        "state": "alive",
        "incarnation": 0,
        "tags": {},
        "since": 1.0,
    }
    return web.json_response({"kind": "MemberList", "node": "n1", "items": [item]})


async def peers(request: web.Request) -> web.StreamResponse:
    if bad := await _misbehave(request):
        return bad
    return web.json_response({"kind": "PeerList", "node": "n1", "items": []})


async def health(request: web.Request) -> web.StreamResponse:
    if bad := await _misbehave(request):
        return bad
    status, code = {"degraded": ("Degraded", 503), "unhealthy": ("Unhealthy", 500)}.get(
        request.match_info["mode"], ("Healthy", 200)
    )
    body = {"node": "n1", "status": status, "message": "m", "components": {}}
    return web.json_response(body, status=code)


async def broadcast(request: web.Request) -> web.StreamResponse:
    if bad := await _misbehave(request):
        return bad
    payload = await request.read()
    if len(payload) > MAX_PAYLOAD:
        return web.json_response(
            {"error": "payload too large", "detail": {"size": len(payload), "max": MAX_PAYLOAD}},
            status=413,
        )
    return web.json_response({"id": MSG_ID, "size": len(payload)})


async def message(request: web.Request) -> web.StreamResponse:
    if bad := await _misbehave(request):
        return bad
    mid = request.match_info["id"]
    if len(mid) != 32 or any(c not in "0123456789abcdef" for c in mid):
        return web.json_response(
            {"error": "bad message id", "detail": "expected 32 hex digits"}, status=400
        )
    body = {"id": mid, "delivered": True, "at": 1.5, "hops": 2, "from": "n2", "origin": "n3"}
    return web.json_response({**body, "pending": False})


async def leave(request: web.Request) -> web.StreamResponse:
    if bad := await _misbehave(request):
        return bad
    return web.json_response({"left": True})


async def metrics(request: web.Request) -> web.StreamResponse:
    mode = request.match_info["mode"]
    if mode == "badmetrics":
        return web.Response(text="this is { not prometheus\n")
    if mode == "live":
        return await _live_handler(request)
    if bad := await _misbehave(request):
        return bad
    return web.Response(body=_metrics_text(), content_type="text/plain")


async def events(request: web.Request) -> web.StreamResponse:
    mode = request.match_info["mode"]
    if mode not in ("cut", "nonjson") and (bad := await _misbehave(request)):
        return bad
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    since = request.query.get("since")
    await response.write(json.dumps({"kind": "join", "at": 1.0, "since": since}).encode() + b"\n")
    await response.write(b"\n")  # blank keep-alive lines are skipped
    if mode == "nonjson":
        await response.write(b"not json\n")
    await response.write(b'{"kind": "promote", "at": 2.0}\n')
    if mode == "cut":
        await asyncio.sleep(0.05)  # let the client read what was sent
        assert request.transport is not None
        request.transport.close()  # the node dies mid-stream: no final chunk
        return response
    await response.write_eof()
    return response


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/{mode}/v1/status", status)
    app.router.add_get("/{mode}/v1/members", members)
    app.router.add_get("/{mode}/v1/peers", peers)
    app.router.add_get("/{mode}/v1/health", health)
    app.router.add_post("/{mode}/v1/broadcast", broadcast)
    app.router.add_get("/{mode}/v1/messages/{id}", message)
    app.router.add_post("/{mode}/v1/leave", leave)
    app.router.add_get("/{mode}/metrics", metrics)
    app.router.add_get("/{mode}/v1/events", events)
    return app


def self_signed_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a fresh self-signed certificate for 127.0.0.1."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-node")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx, cert_file


class ServerThread:
    """aiohttp on 127.0.0.1:0 (plain, and TLS with a self-signed cert) in a thread with its
    own loop; stop() undoes everything start() did."""

    def __init__(self, tls: ssl.SSLContext, cert_file: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-node", daemon=True)
        self.runner: web.AppRunner | None = None
        self.tls = tls
        self.cert_file = cert_file
        self.port = 0
        self.tls_port = 0

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        self.runner = web.AppRunner(make_app(), shutdown_timeout=0.2, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]
        await web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.tls).start()
        self.tls_port = self.runner.addresses[1][1]

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    srv = ServerThread(*self_signed_tls(tmp_path_factory.mktemp("tls")))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def url(server: ServerThread, mode: str = "ok") -> str:
    return f"http://127.0.0.1:{server.port}/{mode}"


@pytest.fixture
def closed_port() -> int:
    return free_port()


# -- sync client: the happy path ----------------------------------------------------------


def test_every_endpoint_sync(server: ServerThread) -> None:
    with Client(url(server)) as c:
        assert c.status()["name"] == "n1"
        assert c.members()["items"][0]["state"] == "alive"
        assert c.peers()["kind"] == "PeerList"
        assert c.health() == (
            {"node": "n1", "status": "Healthy", "message": "m", "components": {}},
            200,
        )
        assert c.broadcast(b"hello") == {"id": MSG_ID, "size": 5}
        assert c.message(MSG_ID)["hops"] == 2
        assert c.leave() == {"left": True}
        assert "plumtree_graft_sent_total 4.0" in c.metrics_text()
        scrape = c.scrape()
        assert scrape.value("plumtree_graft_sent_total") == 4.0
        assert not any(n.endswith("_created") for n in scrape.names())
        assert [e["kind"] for e in c.events(since=12.5)] == ["join", "promote"]


def test_events_passes_since(server: ServerThread) -> None:
    with Client(url(server)) as c:
        assert next(iter(c.events(since=12.5)))["since"] == "12.5"
        assert next(iter(c.events()))["since"] is None


def test_token_only_sent_when_given(server: ServerThread) -> None:
    with Client(url(server)) as c:
        assert c.status()["config"]["seen_authorization"] is None
    with Client(url(server), token="") as c:
        assert c.status()["config"]["seen_authorization"] is None
    with Client(url(server), token=TOKEN) as c:
        assert c.status()["config"]["seen_authorization"] == f"Bearer {TOKEN}"


def test_health_non_200_are_answers(server: ServerThread) -> None:
    with Client(url(server, "degraded")) as c:
        body, code = c.health()
        assert (body["status"], code) == ("Degraded", 503)
    with Client(url(server, "unhealthy")) as c:
        assert c.health()[1] == 500


# -- sync client: error mapping ------------------------------------------------------------


def test_connection_refused(closed_port: int) -> None:
    base = f"http://127.0.0.1:{closed_port}"
    with Client(base) as c, pytest.raises(Unreachable) as err:
        c.status()
    assert str(err.value) == f"cannot reach node at {base}: connection refused"
    assert err.value.exit_code == exitcodes.UNREACHABLE == 3


def test_dns_failure() -> None:
    with Client("http://no-such-node.invalid:7947") as c, pytest.raises(Unreachable) as err:
        c.status()
    assert "cannot reach node at http://no-such-node.invalid:7947: cannot resolve host" in str(
        err.value
    )


def test_timeout(server: ServerThread) -> None:
    with Client(url(server, "slow"), timeout=0.2) as c, pytest.raises(Unreachable) as err:
        c.status()
    assert str(err.value).endswith(": no answer within 0.2s")
    assert err.value.exit_code == 3


def test_tls_to_a_plain_http_node(server: ServerThread) -> None:
    base = f"https://127.0.0.1:{server.port}/ok"
    with Client(base) as c, pytest.raises(Unreachable) as err:
        c.status()
    assert f"cannot reach node at {base}: TLS error" in str(err.value)


def test_tls_certificate_not_trusted(server: ServerThread) -> None:
    base = f"https://127.0.0.1:{server.tls_port}/ok"
    with Client(base) as c, pytest.raises(Unreachable) as err:
        c.status()
    assert f"cannot reach node at {base}: TLS error (CERTIFICATE_VERIFY_FAILED)" == str(err.value)


def test_tls_with_the_nodes_certificate(server: ServerThread) -> None:
    trust = ssl.create_default_context()
    trust.load_verify_locations(server.cert_file)
    with Client(f"https://127.0.0.1:{server.tls_port}/ok", verify=trust) as c:
        assert c.status()["name"] == "n1"


@pytest.mark.parametrize("bad", ["ftp://node:7947", "http://[::1", "http://", "   "])
def test_invalid_url(bad: str) -> None:
    with pytest.raises(Unreachable) as err:
        Client(bad)
    assert "invalid URL" in str(err.value)
    assert err.value.exit_code == 3


def test_url_normalisation() -> None:
    assert normalise_url("127.0.0.1:7947") == "http://127.0.0.1:7947"
    assert normalise_url(" https://n1:7947/ ") == "https://n1:7947"


@pytest.mark.parametrize("token", [None, "wrong"])
def test_auth_failed(server: ServerThread, token: str | None) -> None:
    with Client(url(server, "auth"), token=token) as c, pytest.raises(AuthFailed) as err:
        c.broadcast(b"x")
    assert str(err.value) == "authentication failed: the node requires a valid --token"
    assert err.value.exit_code == exitcodes.FAILED


def test_auth_ok(server: ServerThread) -> None:
    with Client(url(server, "auth"), token=TOKEN) as c:
        assert c.broadcast(b"x")["size"] == 1


def test_413_carries_server_error_and_detail(server: ServerThread) -> None:
    with Client(url(server)) as c, pytest.raises(ApiError) as err:
        c.broadcast(b"x" * (MAX_PAYLOAD + 1))
    e = err.value
    assert (e.status, e.error, e.detail) == (413, "payload too large", {"size": 65, "max": 64})
    assert str(e).startswith('payload too large: {"max": 64, "size": 65} (HTTP 413 from ')
    assert "\n" not in str(e)
    assert e.exit_code == 1


def test_400_bad_message_id(server: ServerThread) -> None:
    with Client(url(server)) as c, pytest.raises(ApiError) as err:
        c.message("nothex")
    assert str(err.value).startswith("bad message id: expected 32 hex digits (HTTP 400")


def test_message_id_cannot_escape_the_path(server: ServerThread) -> None:
    with Client(url(server)) as c, pytest.raises(ApiError) as err:
        c.message("../../v1/leave")  # quoted into one segment: the node says bad id
    assert err.value.status in (400, 404)


def test_500_without_json_body(server: ServerThread) -> None:
    with Client(url(server, "crash")) as c:
        with pytest.raises(ApiError) as err:
            c.status()
        assert str(err.value).startswith(
            "HTTP 500 Internal Server Error (500 Internal Server Error Server got itself in trouble)"
        )
        with pytest.raises(ApiError):  # a crash page is not a health answer
            c.health()


def test_non_json_body_is_bad_response(server: ServerThread) -> None:
    with Client(url(server, "nonjson")) as c, pytest.raises(BadResponse) as err:
        c.members()
    msg = str(err.value)
    assert "answered GET /nonjson/v1/members with a body that is not JSON" in msg
    assert "text/html" in msg and "\n" not in msg
    assert err.value.exit_code == 1


def test_wrong_json_shape_is_bad_response(server: ServerThread) -> None:
    with Client(url(server, "wrongshape")) as c:
        with pytest.raises(BadResponse, match="not an object"):
            c.status()
        with pytest.raises(BadResponse, match="without 'items'"):
            c.members()


def test_redirect_is_not_followed(server: ServerThread) -> None:
    with Client(url(server, "redirect")) as c, pytest.raises(ApiError) as err:
        c.metrics_text()
    assert err.value.status == 307
    assert "redirect (HTTP 307 to /redirect/metrics/); not following it" in str(err.value)


def test_unparseable_metrics_is_bad_response(server: ServerThread) -> None:
    with Client(url(server, "badmetrics")) as c, pytest.raises(BadResponse) as err:
        c.scrape()
    assert "served unreadable metrics" in str(err.value)


def test_connection_cut_mid_response(server: ServerThread) -> None:
    with Client(url(server, "cut")) as c, pytest.raises(Unreachable) as err:
        c.status()
    assert "connection closed by the node" in str(err.value)


def test_events_cut_mid_stream_is_stream_broken(server: ServerThread) -> None:
    got = []
    with Client(url(server, "cut")) as c, pytest.raises(StreamBroken) as err:
        for event in c.events():
            got.append(event["kind"])
    assert got == ["join", "promote"]  # what arrived before the cut was delivered
    assert str(err.value).startswith(f"lost the event stream from node at {url(server, 'cut')}")
    assert err.value.exit_code == 3


def test_events_bad_line_and_refused(server: ServerThread, closed_port: int) -> None:
    with Client(url(server, "nonjson")) as c, pytest.raises(BadResponse, match="not JSON"):
        list(c.events())
    with Client(f"http://127.0.0.1:{closed_port}") as c, pytest.raises(Unreachable) as err:
        list(c.events())
    assert not isinstance(err.value, StreamBroken)
    with Client(url(server, "auth")) as c, pytest.raises(AuthFailed):
        list(c.events())


def test_exit_on_error_prints_one_line_and_exits(
    closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    base = f"http://127.0.0.1:{closed_port}"
    with pytest.raises(typer.Exit) as err, exit_on_error(), Client(base) as c:
        c.status()
    assert err.value.exit_code == 3
    assert (
        capsys.readouterr().err
        == f"plumctl: error: cannot reach node at {base}: connection refused\n"
    )


# -- async client ----------------------------------------------------------------------------


async def test_every_endpoint_async(server: ServerThread) -> None:
    async with AsyncClient(url(server), token=TOKEN) as c:
        assert (await c.status())["config"]["seen_authorization"] == f"Bearer {TOKEN}"
        assert len((await c.members())["items"]) == 1
        assert (await c.peers())["items"] == []
        assert (await c.health())[1] == 200
        assert (await c.broadcast(b"abc"))["size"] == 3
        assert (await c.message(MSG_ID))["delivered"] is True
        assert (await c.leave())["left"] is True
        assert (await c.scrape()).value("plumtree_eager_peers") == 3.0
        async with aclosing(c.events(since=3)) as stream:
            assert [e["kind"] async for e in stream] == ["join", "promote"]


async def test_async_errors(server: ServerThread, closed_port: int) -> None:
    async with AsyncClient(f"http://127.0.0.1:{closed_port}") as c:
        with pytest.raises(Unreachable, match="connection refused"):
            await c.status()
    async with AsyncClient(url(server, "auth"), token="nope") as c:
        with pytest.raises(AuthFailed):
            await c.members()
    async with AsyncClient(url(server, "degraded")) as c:
        assert (await c.health())[1] == 503
    async with AsyncClient(url(server, "slow"), timeout=0.2) as c:
        with pytest.raises(Unreachable, match=r"no answer within 0\.2s"):
            await c.peers()
    async with AsyncClient(url(server, "redirect")) as c:
        with pytest.raises(ApiError, match="not following it"):
            await c.metrics_text()
    async with AsyncClient(url(server, "nonjson")) as c:
        with pytest.raises(BadResponse):
            await c.status()


async def test_async_events_cut_mid_stream(server: ServerThread) -> None:
    got = []
    async with AsyncClient(url(server, "cut")) as c:
        with pytest.raises(StreamBroken):
            async with aclosing(c.events()) as stream:
                async for event in stream:
                    got.append(event["kind"])
    assert got == ["join", "promote"]


# -- fan-out -----------------------------------------------------------------------------------


async def test_fan_out_many_nodes_one_dead_does_not_fail_others(
    server: ServerThread, closed_port: int
) -> None:
    good = [url(server, f"ok{i}") for i in range(34)]
    dead = f"http://127.0.0.1:{closed_port}"
    urls = [*good, dead, url(server, "auth"), url(server, "crash"), "ftp://nope", good[0]]

    async def fn(c: AsyncClient) -> str:
        body, _ = await c.health()
        return str(body["status"])

    results = await fan_out(urls, fn, timeout=2.0, limit=8)
    assert list(results) == [*good, dead, url(server, "auth"), url(server, "crash"), "ftp://nope"]
    assert all(results[u] == "Healthy" for u in good)
    assert isinstance(results[dead], Unreachable)
    assert isinstance(results[url(server, "auth")], AuthFailed)
    assert isinstance(results[url(server, "crash")], ApiError)
    assert isinstance(results["ftp://nope"], Unreachable)


async def test_fan_out_is_concurrent_but_bounded(server: ServerThread) -> None:
    in_flight = peak = 0

    async def fn(c: AsyncClient) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await c.status()
        finally:
            in_flight -= 1

    await fan_out([url(server, f"ok{i}") for i in range(12)], fn, limit=3)
    assert 1 < peak <= 3  # in parallel, never more than `limit` at once


async def test_fan_out_deadline_per_node(server: ServerThread) -> None:
    async def fn(c: AsyncClient) -> dict[str, object]:
        return await c.status()

    results = await fan_out([url(server, "slow"), url(server)], fn, timeout=10, deadline=1.0)
    slow = results[url(server, "slow")]
    assert isinstance(slow, Unreachable)
    assert str(slow).endswith("no complete answer within 1s")
    assert isinstance(results[url(server)], dict)


async def test_fan_out_bugs_propagate(server: ServerThread) -> None:
    async def fn(c: AsyncClient) -> None:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await fan_out([url(server)], fn)


def test_fan_out_sync_from_a_command(server: ServerThread) -> None:
    async def fn(c: AsyncClient) -> float | None:
        return (await c.scrape()).value("plumtree_graft_sent_total")

    assert fan_out_sync([url(server, "ok1"), url(server, "ok2")], fn) == {
        url(server, "ok1"): 4.0,
        url(server, "ok2"): 4.0,
    }


async def test_two_live_scrapes_to_a_score(server: ServerThread) -> None:
    """End to end: a node's registry, served as nodes serve it, scraped twice, scored."""
    LIVE_EAGER.set(1)
    async with AsyncClient(url(server, "live")) as c:
        prev = await c.scrape()
        LIVE_SENT.inc(10)
        LIVE_FAILED.inc(5)
        LIVE_DELIVERED.inc(40)
        cur = await c.scrape()
    assert cur.at > prev.at  # client-side monotonic stamps
    dt = cur.at - prev.at
    rates = key_queries(prev, cur)
    assert rates.delivered_per_s == pytest.approx(40 / dt)
    assert rates.graft_failed_per_min == pytest.approx(60 * 5 / dt)
    score = health_score(prev, cur)
    want = (1 / 3) * (1 - (5 / dt) / (10 / dt + 0.001))
    assert score.value == pytest.approx(max(want, 0.0))
    assert score.reasons[0] == "eager peers 1 of 3 (x0.33)"


def test_error_hierarchy() -> None:
    for cls in (Unreachable, StreamBroken, AuthFailed, ApiError, BadResponse):
        assert issubclass(cls, ClientError)
    assert StreamBroken.exit_code == Unreachable.exit_code == 3
    with contextlib.suppress(ClientError):
        raise StreamBroken("x")
