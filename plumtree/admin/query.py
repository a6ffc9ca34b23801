"""``POST /v1/query``: serf's query through this node (``runtime/query.py`` does the work).

Body: ``{"name": "uptime", "payload": "text", "timeout": 5, "node_filter": "web-.*",
"tags": {"role": "api"}}`` (all but ``name`` optional; filters are regexes matching the
whole name or tag value). The answer lists every targeted member (``nodes``: acked,
responded, the response as text), the live targets that never acked (``missing``) and
the dead or left ones not asked (``skipped``). 400 bad name, payload, timeout or regex;
503 too many queries under way. Needs the admin token when one is set.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from plumtree.admin.server import _json, error, read_json_object
from plumtree.core import limits
from plumtree.runtime.query import DEFAULT_TIMEOUT, MAX_TIMEOUT, QueryRefused, Targets

if TYPE_CHECKING:
    from plumtree.admin.server import AdminServer, Handler

#: A query's body: its payload (bounded) as JSON text, and the filters.
BODY_MAX = 4 * limits.MAX_QUERY_PAYLOAD + 4096
SHAPE = '{"name": "NAME", "payload": "text", "timeout": 5}'


def _regex(what: str, text: Any) -> re.Pattern[str] | web.Response:
    if not isinstance(text, str):
        return error(400, f"bad {what}", "expected a regular expression (a string)")
    try:
        return re.compile(text)
    except re.error as exc:
        return error(400, f"bad {what}", f"{text!r}: {exc}")


def _targets(doc: dict[str, Any]) -> Targets | web.Response:
    node_filter = None
    if doc.get("node_filter") is not None:
        parsed = _regex("node_filter", doc["node_filter"])
        if isinstance(parsed, web.Response):
            return parsed
        node_filter = parsed
    tags = doc.get("tags") or {}
    if not isinstance(tags, dict):
        return error(400, "bad tags", 'expected {"key": "regex"}')
    pairs = []
    for key, value in sorted(tags.items()):
        rx = _regex(f"tag {key}", value)
        if isinstance(rx, web.Response):
            return rx
        pairs.append((str(key), rx))
    return Targets(node_filter, tuple(pairs))


async def query(admin: AdminServer, request: web.BaseRequest) -> web.Response:
    doc = await read_json_object(request, BODY_MAX, SHAPE)
    if isinstance(doc, web.Response):
        return doc
    name, payload = doc.get("name"), doc.get("payload", "")
    if not isinstance(name, str) or not isinstance(payload, str):
        return error(400, "bad request body", f"expected JSON {SHAPE}")
    timeout = doc.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        return error(400, "bad timeout", "a number of seconds above 0")
    targets = _targets(doc)
    if isinstance(targets, web.Response):
        return targets
    try:
        answer = await admin.node.queries.ask(
            name, payload.encode(), targets, min(float(timeout), MAX_TIMEOUT)
        )
    except ValueError as exc:
        return error(400, "bad query", str(exc))
    except QueryRefused as exc:
        return error(503, "query refused", str(exc))
    return _json(answer)


#: Registered by the admin server with its own routes.
ROUTES: dict[str, dict[str, Handler]] = {"/v1/query": {"POST": query}}
