"""serf's verbs over the admin API (``runtime/verbs.py`` does the work):

- ``POST /v1/tags`` ``{"set": {"k": "v"}, "unset": ["k"]}``: change this node's tags,
  gossiped to every member; the answer is the tags after it. 400: a reserved key
  (``admin``, ``insecure_gossip``), an empty key, tags that would not fit a datagram
  (the limit is in the detail).
- ``POST /v1/join`` ``{"addrs": ["host:port"], "timeout": 5}``: one push-pull with each
  address; the answer says which became members in time (``joined``: how many).
- ``POST /v1/force-leave`` ``{"name": "n3"}``: a dead or suspect member becomes *left*
  cluster-wide. 404 unknown name, 409 the member is alive.
- ``GET /v1/rtt?to=NAME``: this node's last measured SWIM probe round trip to NAME.

Every route needs the admin token when one is set (the server checks it before
routing, reads included). Bodies are bounded JSON objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from plumtree.admin.server import _json, error, read_json_object
from plumtree.runtime import verbs
from plumtree.runtime.verbs import VerbError

if TYPE_CHECKING:
    from plumtree.admin.server import AdminServer, Handler

#: Largest request body a verb reads (tags are bounded far below this by the core).
BODY_MAX = 16 * 1024
#: Longest a join may wait for its seeds.
JOIN_TIMEOUT_MAX = 60.0
JOIN_TIMEOUT_DEFAULT = 5.0


async def _body(admin: AdminServer, request: web.BaseRequest, shape: str) -> Any:
    """The request's JSON object, or the error answer (the server checked the token
    before routing)."""
    return await read_json_object(request, BODY_MAX, shape)


def _failed(exc: VerbError) -> web.Response:
    return error(exc.status, exc.error, exc.detail)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


async def tags(admin: AdminServer, request: web.BaseRequest) -> web.Response:
    node = admin.node
    shape = '{"set": {"key": "value"}, "unset": ["key"]}'
    doc = await _body(admin, request, shape)
    if isinstance(doc, web.Response):
        return doc
    assign = doc.get("set", {})
    unset = doc.get("unset", [])
    if (
        not isinstance(assign, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in assign.items())
        or not _strings(unset)
    ):
        return error(400, "bad request body", f"expected JSON {shape} (strings only)")
    try:
        now = verbs.set_tags(node, assign, unset)
    except VerbError as exc:
        return _failed(exc)
    return _json({"kind": "Tags", "node": node.name, "tags": now})


async def join(admin: AdminServer, request: web.BaseRequest) -> web.Response:
    node = admin.node
    shape = '{"addrs": ["host:port"], "timeout": 5}'
    doc = await _body(admin, request, shape)
    if isinstance(doc, web.Response):
        return doc
    addrs = doc.get("addrs")
    if not _strings(addrs) or not addrs:
        return error(400, "bad request body", f"expected JSON {shape}, one address at least")
    timeout = doc.get("timeout", JOIN_TIMEOUT_DEFAULT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        return error(400, "bad timeout", "a number of seconds above 0")
    try:
        result = await verbs.join(node, addrs, min(float(timeout), JOIN_TIMEOUT_MAX))
    except VerbError as exc:
        return _failed(exc)
    return _json(result)


async def force_leave(admin: AdminServer, request: web.BaseRequest) -> web.Response:
    node = admin.node
    doc = await _body(admin, request, '{"name": "member"}')
    if isinstance(doc, web.Response):
        return doc
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        return error(400, "bad request body", 'expected JSON {"name": "member"}')
    try:
        return _json(verbs.force_leave(node, name))
    except VerbError as exc:
        return _failed(exc)


async def rtt(admin: AdminServer, request: web.BaseRequest) -> web.Response:
    name = request.query.get("to")
    if not name:
        return error(400, "bad query", "expected ?to=MEMBER")
    try:
        return _json(verbs.rtt(admin.node, name))
    except VerbError as exc:
        return _failed(exc)


#: Registered by the admin server with its own routes.
ROUTES: dict[str, dict[str, Handler]] = {
    "/v1/tags": {"POST": tags},
    "/v1/join": {"POST": join},
    "/v1/force-leave": {"POST": force_leave},
    "/v1/rtt": {"GET": rtt},
}
