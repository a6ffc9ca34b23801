"""``/v1/keys``: the node's live gossip keyring; ``/v1/keys/cluster``: every live member's.

- ``GET /v1/keys/cluster`` (``?timeout=SECONDS``) and ``POST
  /v1/keys/cluster/install|use|remove`` with ``{"key": "<base64>", "timeout": 5}``: the
  same operations carried over gossip to every live member (``runtime/keyquery.py``);
  the answer lists each member's keyring after it (``nodes``: fingerprints, never
  keys), the live members that did not answer in time (``missing``) and the dead or
  left ones not asked (``skipped``). 409 when this node's gossip is not encrypted (a
  key is never sent in clear), 503 when too many queries are under way.

- ``GET /v1/keys``: every key (base64, primary first), the primary, the keyring file;
- ``POST /v1/keys/install|use|remove`` with ``{"key": "<base64>"}``: one change, saved
  to the keyring file before it takes effect (``runtime/keys.py``); the answer is the
  keyring after it, with ``changed`` (false: installing a present key, removing an
  absent one) and ``persisted`` (false: the node has no keyring file, memory only).

All of them need the admin token when one is set (the server checks it before routing),
the listing too: it holds the keys.
Errors: 400 malformed body or key (base64 of 16, 24 or 32 bytes, as memberlist); 409
gossip encryption is off (a node started without a keyring cannot turn it on live: its
peers would have to accept plaintext meanwhile), a key not installed (use), the primary
key (remove); 500 the keyring file could not be written (nothing changed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from plumtree.admin.server import _json, error, read_json_object
from plumtree.runtime.crypto import KeyringError, decode_key, encode_key, fingerprint
from plumtree.runtime.keyquery import DEFAULT_TIMEOUT, MAX_TIMEOUT, QueryRefused, publish_changed
from plumtree.runtime.keys import OPS, KeyConflict, KeyManager
from plumtree.runtime.transport import os_reason

if TYPE_CHECKING:
    from plumtree.admin.server import AdminServer, Handler
    from plumtree.runtime.node import Node

#: Largest request body a key change reads (a 32-byte key is 44 characters of base64).
BODY_MAX = 4096

ENCRYPTION_OFF = "gossip encryption is off"
ENCRYPTION_OFF_DETAIL = (
    "this node was started without --keyring; a keyring is given at start, then rotated live"
)


def _keyring(node: Node, keys: KeyManager, **extra: Any) -> dict[str, Any]:
    ring = keys.keyring.keys
    return {
        "kind": "Keyring",
        "node": node.name,
        "primary": encode_key(ring[0]),
        "keys": [encode_key(k) for k in ring],
        "fingerprints": [fingerprint(k) for k in ring],
        "file": keys.path,
        **extra,
    }


async def list_keys(admin: AdminServer, request: web.BaseRequest) -> web.Response:
    node = admin.node
    if node.keys is None:
        return error(409, ENCRYPTION_OFF, ENCRYPTION_OFF_DETAIL)
    return _json(_keyring(node, node.keys))


async def _read_key(request: web.BaseRequest) -> tuple[bytes, float] | web.Response:
    """The key (and optional ``timeout``) of a change's body, or the error answer."""
    doc = await read_json_object(request, BODY_MAX, '{"key": "<base64>"}')
    if isinstance(doc, web.Response):
        return doc
    text = doc.get("key")
    if not isinstance(text, str):
        return error(400, "bad request body", 'expected JSON {"key": "<base64>"}')
    try:
        key = decode_key(text)
    except KeyringError as exc:
        return error(400, "bad key", f"{exc}: expected base64 of 16, 24 or 32 bytes")
    timeout = doc.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        return error(400, "bad timeout", "a number of seconds above 0")
    return key, min(float(timeout), MAX_TIMEOUT)


async def _change(admin: AdminServer, request: web.BaseRequest, op: str) -> web.Response:
    node = admin.node
    parsed = await _read_key(request)
    if isinstance(parsed, web.Response):
        return parsed
    key, _ = parsed
    keys = node.keys
    if keys is None:
        return error(409, ENCRYPTION_OFF, ENCRYPTION_OFF_DETAIL)
    try:
        outcome = await keys.change(op, key)
    except KeyConflict as exc:
        return error(409, exc.error, exc.detail)
    except OSError as exc:
        return error(
            500, "keyring file not saved", f"{keys.path}: {os_reason(exc)}; nothing changed"
        )
    if outcome.changed:
        publish_changed(node, keys, op, key, by="admin")
    return _json(_keyring(node, keys, op=op, changed=outcome.changed, persisted=outcome.persisted))


async def _cluster(node: Node, op: str, key: bytes, timeout: float) -> web.Response:
    """``op`` carried to every live member over gossip (``runtime/keyquery.py``)."""
    if node.keys is None:
        return error(409, ENCRYPTION_OFF, ENCRYPTION_OFF_DETAIL)
    try:
        answer = await node.key_queries.ask(op, key, timeout)
    except QueryRefused as exc:
        return error(503, "keyring query refused", str(exc))
    doc: dict[str, Any] = {
        "kind": "KeyringCluster",
        "node": node.name,
        "op": op,
        "timeout": timeout,
        **answer.as_dict(),
    }
    if op != "list":
        doc["key"] = fingerprint(key)
    return _json(doc)


async def list_cluster(admin: AdminServer, request: web.BaseRequest) -> web.Response:
    node = admin.node
    try:
        timeout = float(request.query.get("timeout", DEFAULT_TIMEOUT))
    except ValueError:
        timeout = -1.0
    if not 0 < timeout < float("inf"):
        return error(400, "bad timeout", "a number of seconds above 0")
    return await _cluster(node, "list", b"", min(timeout, MAX_TIMEOUT))


async def _change_cluster(admin: AdminServer, request: web.BaseRequest, op: str) -> web.Response:
    node = admin.node
    parsed = await _read_key(request)
    if isinstance(parsed, web.Response):
        return parsed
    return await _cluster(node, op, *parsed)


def _handler(op: str, cluster: bool = False) -> Handler:
    async def handler(admin: AdminServer, request: web.BaseRequest) -> web.Response:
        return await (_change_cluster if cluster else _change)(admin, request, op)

    handler.__name__ = f"keys_{'cluster_' if cluster else ''}{op}"
    return handler


#: Registered by the admin server with its own routes.
ROUTES: dict[str, dict[str, Handler]] = {
    "/v1/keys": {"GET": list_keys},
    **{f"/v1/keys/{op}": {"POST": _handler(op)} for op in OPS},
    "/v1/keys/cluster": {"GET": list_cluster},
    **{f"/v1/keys/cluster/{op}": {"POST": _handler(op, cluster=True)} for op in OPS},
}
