"""The node's admin HTTP API (aiohttp.web in the node's own loop).

Handlers are thin: they call the Node and shape JSON. Every error, including ones
aiohttp raises itself (404, 405, 413) and bugs, leaves as ``{"error", "detail"}`` JSON
with a 4xx/5xx status. Mutating endpoints need the bearer token when one is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from plumtree.core.plumtree import MessageTooLarge
from plumtree.runtime.addresses import format_addr
from plumtree.runtime.transport import os_reason

if TYPE_CHECKING:
    from plumtree.runtime.node import Node

log = logging.getLogger("plumtree.admin")

NODE_KEY = web.AppKey("node", object)
SERVER_KEY = web.AppKey("server", object)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, sort_keys=True))


def error(status: int, message: str, detail: Any = None) -> web.Response:
    return _json({"error": message, "detail": detail}, status=status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
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
    except RuntimeError as exc:
        if "not running" in str(exc):
            return error(503, "node is shutting down")
        log.exception("admin handler failed: %s %s", request.method, request.path)
        return error(500, "internal error", type(exc).__name__)
    except Exception as exc:
        log.exception("admin handler failed: %s %s", request.method, request.path)
        return error(500, "internal error", type(exc).__name__)


def _node(request: web.Request) -> Node:
    return request.app[NODE_KEY]  # type: ignore[return-value]


def _authorized(request: web.Request) -> web.Response | None:
    token = _node(request).config.token
    if not token:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        return error(401, "unauthorized", "this endpoint needs 'Authorization: Bearer <token>'")
    return None


async def status(request: web.Request) -> web.Response:
    return _json(_node(request).status())


async def members(request: web.Request) -> web.Response:
    node = _node(request)
    return _json({"kind": "MemberList", "node": node.name, "items": node.members()})


async def peers(request: web.Request) -> web.Response:
    node = _node(request)
    return _json({"kind": "PeerList", "node": node.name, "items": node.peers()})


async def health(request: web.Request) -> web.Response:
    node = _node(request)
    report = node.health()
    body = {"node": node.name, **report.as_dict()}
    return _json(body, status=report.status.http_status)


async def broadcast(request: web.Request) -> web.Response:
    denied = _authorized(request)
    if denied is not None:
        return denied
    node = _node(request)
    limit = node.config.protocol.plumtree.max_message_size
    if request.content_length is not None and request.content_length > limit:
        return error(
            413, "payload too large", f"{request.content_length} bytes > max_message_size {limit}"
        )
    payload = await request.read()
    try:
        msg_id = node.broadcast(payload)
    except MessageTooLarge as exc:
        return error(413, "payload too large", str(exc))
    return _json({"id": msg_id, "size": len(payload)})


async def message(request: web.Request) -> web.Response:
    try:
        return _json(_node(request).message(request.match_info["id"]))
    except ValueError:
        return error(400, "bad message id", "expected 32 hex characters")


#: Most events ``GET /v1/events?recent=N`` returns (the node keeps the last 1000 debug
#: events and, apart, the last 1000 louder ones).
RECENT_EVENTS_MAX = 1000


async def events(request: web.Request) -> web.StreamResponse:
    """The event stream (NDJSON), or with ``?recent=N`` the last N events as one JSON list.

    ``?recent=N`` answers at once from the node's replay buffers (newest last, filtered by
    ``level``) and does not stream: for dashboards that poll (``plumctl top``).
    """
    node = _node(request)
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
            await response.write((json.dumps(event, sort_keys=True) + "\n").encode())
            if event.get("kind") == "stream_end":
                break
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        sub.close()
    with contextlib.suppress(Exception):
        await response.write_eof()
    return response


async def leave(request: web.Request) -> web.Response:
    denied = _authorized(request)
    if denied is not None:
        return denied
    node = _node(request)

    async def go() -> None:
        await asyncio.sleep(0.05)  # let the response reach the caller first
        await node.stop(leave=True)

    server: AdminServer = request.app[SERVER_KEY]  # type: ignore[assignment]
    server.leave_task = asyncio.get_running_loop().create_task(go())
    return _json({"left": True, "node": node.name})


async def metrics(request: web.Request) -> web.Response:
    from plumtree.metrics import CONTENT_TYPE, render

    server: AdminServer = request.app[SERVER_KEY]  # type: ignore[assignment]
    body = render(server.registry, request.query.getall("name[]", []))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def make_app(node: Node, server: AdminServer) -> web.Application:
    limit = max(node.config.protocol.plumtree.max_message_size + 1024, 1024 * 1024)
    app = web.Application(middlewares=[errors_as_json], client_max_size=limit)
    app[NODE_KEY] = node
    app[SERVER_KEY] = server
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/members", members)
    app.router.add_get("/v1/peers", peers)
    app.router.add_get("/v1/health", health)
    app.router.add_post("/v1/broadcast", broadcast)
    app.router.add_get("/v1/messages/{id}", message)
    app.router.add_get("/v1/events", events)
    app.router.add_post("/v1/leave", leave)
    app.router.add_get("/metrics", metrics)
    return app


class AddressInUse(OSError):
    """The admin port is taken."""


class AdminServer:
    def __init__(self, node: Node, host: str, port: int) -> None:
        from plumtree.metrics import make_registry

        self.node = node
        self.host = host
        self.port = port
        self.registry = make_registry(node)
        self.app = make_app(node, self)
        self.leave_task: asyncio.Task[None] | None = None
        self.runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )

    async def start(self) -> str:
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            raise AddressInUse(
                exc.errno,
                f"cannot bind admin API {format_addr(self.host, self.port)}: {os_reason(exc)}",
            ) from None
        host, port = self.runner.addresses[0][:2]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        return f"http://{format_addr(host, port)}"

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.runner.cleanup()
