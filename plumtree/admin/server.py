"""The node's admin HTTP API (aiohttp.web's low-level server in the node's own loop).

Handlers are thin: they call the Node and shape JSON. Every error, including ones
aiohttp raises itself (413) or answers for us (404, 405), and bugs, leaves as
``{"error", "detail"}`` JSON with a 4xx/5xx status. With a token set, every request needs
it (``Authorization: Bearer``), compared in constant time, before anything is routed or
read; ``public_metrics`` exempts ``/metrics`` and ``/v1/health`` (scrapers and load
balancers). Deadlines, the connection cap and quiet bad requests live in ``guard.py``.

Why not ``web.Application``: its router, middleware chain and per-request ``Request``
cost about 30 µs per request here (147 vs 118 µs for a hello world on this machine),
and a busy node answers a broadcast POST a thousand times a second. The API is a dozen
fixed paths and one with an id: a dict lookup routes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from plumtree.admin.guard import Guard, GuardedHandler, GuardedServer
from plumtree.core.plumtree import MessageTooLarge
from plumtree.runtime.addresses import format_addr
from plumtree.runtime.node import StoreUnavailable
from plumtree.runtime.transport import os_reason

if TYPE_CHECKING:
    from aiohttp.http_parser import RawRequestMessage
    from aiohttp.streams import StreamReader
    from aiohttp.web_protocol import RequestHandler

    from plumtree.runtime.node import Node

log = logging.getLogger("plumtree.admin")


def _encode(data: Any) -> bytes:
    """Compact JSON, keys sorted (stable for diffs and tests). msgspec: about 0.4 µs for
    a broadcast's answer where ``json.dumps(sort_keys=True)`` took 6 (a new encoder each
    call), on the path a node answers a thousand times a second. What msgspec refuses
    (a string with surrogates from undecodable bytes, a non-string key) still leaves as
    JSON, through the json module."""
    try:
        return _ENCODER.encode(data)
    except (TypeError, ValueError, msgspec.EncodeError):
        return json.dumps(data, sort_keys=True, default=str).encode()


_ENCODER = msgspec.json.Encoder(order="sorted")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encode(data), status=status, content_type="application/json")


def error(status: int, message: str, detail: Any = None) -> web.Response:
    return _json({"error": message, "detail": detail}, status=status)


Handler = Callable[["AdminServer", web.BaseRequest], Awaitable[web.StreamResponse]]


async def errors_as_json(
    admin: AdminServer, request: web.BaseRequest, handler: Handler
) -> web.StreamResponse:
    try:
        return await handler(admin, request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(
            exc.status,
            exc.reason,
            exc.text if exc.text and not exc.text.startswith(str(exc.status)) else None,
        )
    except asyncio.CancelledError:
        raise
    except RequestPayloadError as exc:  # e.g. a broken chunked body: the client's fault
        reason = str(exc.__cause__ or exc)
        request.content.feed_eof()  # nothing more can be read: aiohttp must not linger on it
        admin.guard.bad_request(request.remote, 400, reason)
        answer = error(400, "bad request", reason)
        answer.force_close()
        return answer
    except RuntimeError as exc:
        if "not running" in str(exc):
            return error(503, "node is shutting down")
        log.exception("admin handler failed: %s %s", request.method, request.path)
        return error(500, "internal error", type(exc).__name__)
    except Exception as exc:
        log.exception("admin handler failed: %s %s", request.method, request.path)
        return error(500, "internal error", type(exc).__name__)


#: what ``public_metrics`` opens to clients without the token
PUBLIC_PATHS = frozenset({"/metrics", "/v1/health"})


def _authorized(token: bytes, request: web.BaseRequest) -> bool:
    """Whether the request carries ``token`` as its bearer token (constant-time compare)."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    # compared whatever the scheme: the time taken tells nothing of the token's bytes
    matches = hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token)
    return matches and scheme.lower() == "bearer"


def _unauthorized() -> web.Response:
    answer = error(401, "unauthorized", "this node needs 'Authorization: Bearer <token>'")
    answer.headers["WWW-Authenticate"] = 'Bearer realm="plumtree"'
    return answer


async def read_json_object(
    request: web.BaseRequest, limit: int, shape: str
) -> dict[str, Any] | web.Response:
    """The JSON object a request's body holds (at most ``limit`` bytes), or the error
    answer: 413 above the limit, 400 for anything but a JSON object (``shape`` says
    what is expected)."""
    if request.content_length is not None and request.content_length > limit:
        return error(413, "payload too large", f"a request body is at most {limit} bytes")
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        return error(413, "payload too large", f"a request body is at most {limit} bytes")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict):
        return error(400, "bad request body", f"expected JSON {shape}")
    return doc


async def status(admin: AdminServer, request: web.BaseRequest) -> web.Response:
    return _json(admin.node.status())


async def members(admin: AdminServer, request: web.BaseRequest) -> web.Response:
    node = admin.node
    return _json({"kind": "MemberList", "node": node.name, "items": node.members()})


async def peers(admin: AdminServer, request: web.BaseRequest) -> web.Response:
    node = admin.node
    return _json({"kind": "PeerList", "node": node.name, "items": node.peers()})


async def health(admin: AdminServer, request: web.BaseRequest) -> web.Response:
    node = admin.node
    report = node.health()
    body = {"node": node.name, **report.as_dict(), "rates": node.score_rates()}
    return _json(body, status=report.status.http_status)


async def broadcast(admin: AdminServer, request: web.BaseRequest) -> web.Response:
    node = admin.node
    limit = node.config.protocol.plumtree.max_message_size
    if request.content_length is not None and request.content_length > limit:
        return error(
            413, "payload too large", f"{request.content_length} bytes > max_message_size {limit}"
        )
    refused = await _continue(request)
    if refused is not None:
        return refused
    try:
        async with asyncio.timeout(admin.limits.body_timeout):
            payload = await request.read()
    except TimeoutError:
        admin.guard.rejected["body_timeout"] += 1
        answer = error(
            408, "request timeout", f"no whole body within {admin.limits.body_timeout:g}s"
        )
        answer.force_close()
        return answer
    try:
        # acknowledged once durable in this node's store (at once without one)
        msg_id = await node.publish(payload)
    except MessageTooLarge as exc:
        return error(413, "payload too large", str(exc))
    except StoreUnavailable as exc:
        return error(503, "store unavailable", str(exc))
    return _json({"id": msg_id, "size": len(payload), "durable": node.durable})


async def _continue(request: web.BaseRequest) -> web.Response | None:
    """Answer ``Expect: 100-continue`` (curl sends it for bodies over 1 KiB and otherwise
    waits a second). Called once the token and the declared size are checked, so a
    refused upload is refused before its body is sent."""
    expect = request.headers.get("Expect")
    if expect is None or request.version < (1, 1):
        return None
    if expect.lower() != "100-continue":
        return error(417, "Expectation Failed", "the only Expect understood is 100-continue")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the answer proper starts now
    return None


async def message(admin: AdminServer, request: web.BaseRequest) -> web.Response:
    try:
        return _json(admin.node.message(request.rel_url.path_safe[len(MESSAGES) :]))
    except ValueError:
        return error(400, "bad message id", "expected 32 hex characters")


async def vector(admin: AdminServer, request: web.BaseRequest) -> web.Response:
    """Per origin stream: delivered, missing, lost (``plumctl audit`` compares them)."""
    return _json(admin.node.vector())


#: Most deliveries one ``GET /v1/deliveries`` returns, and the longest it may wait.
DELIVERIES_MAX = 1000
DELIVERIES_WAIT_MAX = 60.0


async def deliveries(admin: AdminServer, request: web.BaseRequest) -> web.Response:
    """The delivery log after a cursor: ``?after=C&limit=N&wait=S&payload=1&log=ID``.

    ``wait``: with nothing after ``after`` yet, hold the request up to S seconds (a
    long poll). ``log``: the log the consumer's cursor belongs to (409 if the node now
    keeps another one). ``first`` is the oldest cursor still readable: a consumer whose cursor
    is older than that was away longer than the retention, and ``skipped`` says how many
    deliveries it can no longer read (never a silent gap).
    """
    node = admin.node
    query = request.query
    try:
        after = int(query.get("after", "0"))
        limit = int(query.get("limit", "100"))
        wait = float(query.get("wait", "0"))
    except ValueError:
        return error(400, "bad query", "after and limit are integers, wait is seconds")
    if after < 0 or not 1 <= limit <= DELIVERIES_MAX or not 0 <= wait <= DELIVERIES_WAIT_MAX:
        return error(
            400,
            "bad query",
            f"after >= 0, limit 1-{DELIVERIES_MAX}, wait 0-{DELIVERIES_WAIT_MAX:g} seconds",
        )
    with_payload = query.get("payload", "0") in ("1", "true", "yes")
    node_log = node.log
    log_text = query.get("log")
    if log_text is not None and log_text != str(node_log.log_id):
        # the consumer's cursor belongs to another log: the node restarted without its
        # store and numbers its deliveries from 1 again
        return error(
            409,
            "delivery log changed",
            {"log": node_log.log_id, "first": node_log.first, "last": node_log.last},
        )
    if wait and node_log.last <= after:
        await node_log.wait(after, wait)
    if node_log.closed:
        return error(503, "node is shutting down")
    first = node_log.first
    items = node_log.read(after, limit)
    import base64

    rows = []
    for e in items:
        row: dict[str, Any] = {
            "cursor": e.cursor,
            "id": e.id,
            "origin": e.origin,
            "epoch": e.epoch,
            "seq": e.seq,
            "hops": e.hops,
            "from": e.sender,
            "at": e.at,
            "size": len(e.payload or b""),
        }
        if with_payload:
            row["payload"] = base64.b64encode(e.payload or b"").decode()
        rows.append(row)
    return _json(
        {
            "kind": "DeliveryList",
            "node": node.name,
            "log": node_log.log_id,
            "durable": node.durable,
            "first": first,
            "last": node_log.last,
            "skipped": max(0, first - after - 1),
            "items": rows,
        }
    )


#: Most events ``GET /v1/events?recent=N`` returns (the node keeps the last 1000 debug
#: events and, apart, the last 1000 louder ones).
RECENT_EVENTS_MAX = 1000


async def events(admin: AdminServer, request: web.BaseRequest) -> web.StreamResponse:
    """The event stream (NDJSON), or with ``?recent=N`` the last N events as one JSON list.

    ``?recent=N`` answers at once from the node's replay buffers (newest last, filtered by
    ``level``) and does not stream: for dashboards that poll (``plumctl top``).
    """
    node = admin.node
    level = request.query.get("level", "debug")
    recent_text = request.query.get("recent")
    if recent_text is not None:
        try:
            recent = int(recent_text)
        except ValueError:
            recent = -1
        if not 0 <= recent <= RECENT_EVENTS_MAX:
            return error(400, "bad 'recent'", f"expected a count from 0 to {RECENT_EVENTS_MAX}")
        items = node.events.recent(recent, level) if recent else []
        return _json({"kind": "EventList", "node": node.name, "items": items})
    since_text = request.query.get("since")
    try:
        since = int(since_text) if since_text is not None else None
    except ValueError:
        return error(400, "bad 'since'", "expected an event sequence number")
    sub = node.events.subscribe(level=level, since=since)
    response = web.StreamResponse(
        headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    try:
        while True:
            try:
                event = await asyncio.wait_for(sub.queue.get(), timeout=15.0)
            except TimeoutError:
                event = {"kind": "heartbeat", "level": "debug"}
            try:
                async with asyncio.timeout(admin.limits.body_timeout):
                    await response.write(_encode(event) + b"\n")
            except TimeoutError:
                # the reader stopped reading: cut it off rather than hold the connection
                admin.guard.rejected["write_timeout"] += 1
                protocol = request.protocol
                if isinstance(protocol, GuardedHandler):
                    protocol.cut()
                break
            if event.get("kind") == "stream_end":
                break
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        sub.close()
    with contextlib.suppress(Exception):
        await response.write_eof()
    return response


async def leave(admin: AdminServer, request: web.BaseRequest) -> web.Response:
    node = admin.node

    async def go() -> None:
        await asyncio.sleep(0.05)  # let the response reach the caller first
        await node.stop(leave=True)

    admin.leave_task = asyncio.get_running_loop().create_task(go())
    return _json({"left": True, "node": node.name})


async def metrics(admin: AdminServer, request: web.BaseRequest) -> web.Response:
    from plumtree.metrics import CONTENT_TYPE, render

    body = render(admin.registry, request.query.getall("name[]", []))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


#: path -> method -> handler; GET answers HEAD too (as aiohttp's router does)
ROUTES: dict[str, dict[str, Handler]] = {
    "/v1/status": {"GET": status},
    "/v1/members": {"GET": members},
    "/v1/peers": {"GET": peers},
    "/v1/health": {"GET": health},
    "/v1/broadcast": {"POST": broadcast},
    "/v1/events": {"GET": events},
    "/v1/vector": {"GET": vector},
    "/v1/deliveries": {"GET": deliveries},
    "/v1/leave": {"POST": leave},
    "/metrics": {"GET": metrics},
}
#: ``/v1/messages/{id}``: one path segment after the prefix
MESSAGES = "/v1/messages/"
MESSAGE_ROUTE: dict[str, Handler] = {"GET": message}


def route(path: str) -> dict[str, Handler] | None:
    """The handlers for ``path`` by method (None: no such path). Exact paths only."""
    methods = ROUTES.get(path)
    if methods is None and path.startswith(MESSAGES):
        rest = path[len(MESSAGES) :]
        if rest and "/" not in rest:
            methods = MESSAGE_ROUTE
    return methods


class AddressInUse(OSError):
    """The admin port is taken."""


class AdminServer:
    def __init__(self, node: Node, host: str, port: int) -> None:
        from plumtree.admin.keys import ROUTES as KEY_ROUTES
        from plumtree.admin.query import ROUTES as QUERY_ROUTES
        from plumtree.admin.verbs import ROUTES as VERB_ROUTES
        from plumtree.metrics import make_registry

        # /v1/keys and serf's verbs live in their own modules (they import this one)
        ROUTES.update(KEY_ROUTES)
        ROUTES.update(VERB_ROUTES)
        ROUTES.update(QUERY_ROUTES)
        self.node = node
        self.host = host
        self.port = port
        self.registry = make_registry(node)
        self.leave_task: asyncio.Task[None] | None = None
        # request bodies up to a max-size broadcast (aiohttp answers 413 above)
        self.client_max_size = max(node.config.protocol.plumtree.max_message_size + 1024, 1 << 20)
        self.runner: web.ServerRunner | None = None
        self.listener: asyncio.Server | None = None
        config = node.config
        self.limits = config.api_limits
        self.guard = Guard(self.limits, asyncio.get_running_loop())
        self.token = config.token.encode() if config.token else None
        self.public = PUBLIC_PATHS if config.public_metrics else frozenset()

    def _make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: Any,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        return web.BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            asyncio.get_running_loop(),
            client_max_size=self.client_max_size,
        )

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        # the path as sent, but for %2F kept encoded (as aiohttp's router matches):
        # /v1%2Fleave is no alias of /v1/leave
        path = request.rel_url.path_safe
        if (
            self.token is not None
            and path not in self.public
            and not _authorized(self.token, request)
        ):
            self.guard.rejected["unauthorized"] += 1
            return _unauthorized()  # before routing: without the token, no path is told apart
        methods = route(path)
        if methods is None:
            return error(404, "Not Found")
        method = request.method
        handler = methods.get("GET" if method == "HEAD" else method)
        if handler is None:
            allowed = [*methods, "HEAD"] if "GET" in methods else list(methods)
            answer = error(405, "Method Not Allowed", f"{method} is not allowed on this path")
            answer.headers["Allow"] = ",".join(sorted(allowed))
            return answer
        return await errors_as_json(self, request, handler)

    async def start(self) -> str:
        """Listen; the admin URL to advertise (https:// with TLS).

        The listening socket is ours (``loop.create_server``) rather than a ``TCPSite``'s:
        only there can the TLS handshake get a deadline (asyncio's default is 60 s).
        """
        tls = None
        if self.node.config.api_tls is not None:
            from plumtree.admin.tls import server_context

            tls = server_context(*self.node.config.api_tls)
        server = GuardedServer(
            self._dispatch, guard=self.guard, request_factory=self._make_request, access_log=None
        )
        self.runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=1.0)
        await self.runner.setup()
        loop = asyncio.get_running_loop()
        try:
            self.listener = await loop.create_server(
                server,
                self.host,
                self.port,
                ssl=tls,
                ssl_handshake_timeout=self.limits.header_timeout if tls else None,
                reuse_address=True,
            )
        except OSError as exc:
            await self.runner.cleanup()
            raise AddressInUse(
                exc.errno,
                f"cannot bind admin API {format_addr(self.host, self.port)}: {os_reason(exc)}",
            ) from None
        host, port = self.listener.sockets[0].getsockname()[:2]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        return f"{'https' if tls else 'http'}://{format_addr(host, port)}"

    async def stop(self) -> None:
        if self.listener is not None:
            self.listener.close()  # accept no more; the runner closes the open connections
        if self.runner is not None:
            with contextlib.suppress(Exception):
                await self.runner.cleanup()
