"""``/v1/keys``: the node's live gossip keyring (``plumctl keys`` fans these out).

- ``GET /v1/keys``: every key (base64, primary first), the primary, the keyring file;
- ``POST /v1/keys/install|use|remove`` with ``{"key": "<base64>"}``: one change, saved
  to the keyring file before it takes effect (``runtime/keys.py``); the answer is the
  keyring after it, with ``changed`` (false: installing a present key, removing an
  absent one) and ``persisted`` (false: the node has no keyring file, memory only).

All of them need the admin token when one is set, the listing too: it holds the keys.
Errors: 400 malformed body or key (base64 of 16, 24 or 32 bytes, as memberlist); 409
gossip encryption is off (a node started without a keyring cannot turn it on live: its
peers would have to accept plaintext meanwhile), a key not installed (use), the primary
key (remove); 500 the keyring file could not be written (nothing changed).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from plumtree.admin.server import _authorized, _json, error
from plumtree.runtime.crypto import KeyringError, decode_key, encode_key, fingerprint
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
    denied = _authorized(node, request)
    if denied is not None:
        return denied
    if node.keys is None:
        return error(409, ENCRYPTION_OFF, ENCRYPTION_OFF_DETAIL)
    return _json(_keyring(node, node.keys))


async def _change(admin: AdminServer, request: web.BaseRequest, op: str) -> web.Response:
    node = admin.node
    denied = _authorized(node, request)
    if denied is not None:
        return denied
    if request.content_length is not None and request.content_length > BODY_MAX:
        return error(413, "payload too large", f"a key change is at most {BODY_MAX} bytes")
    body = await request.content.read(BODY_MAX + 1)
    if len(body) > BODY_MAX:
        return error(413, "payload too large", f"a key change is at most {BODY_MAX} bytes")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return error(400, "bad request body", 'expected JSON {"key": "<base64>"}')
    text = doc.get("key") if isinstance(doc, dict) else None
    if not isinstance(text, str):
        return error(400, "bad request body", 'expected JSON {"key": "<base64>"}')
    try:
        key = decode_key(text)
    except KeyringError as exc:
        return error(400, "bad key", f"{exc}: expected base64 of 16, 24 or 32 bytes")
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
        node.events.publish(
            {
                "kind": "keyring_changed",
                "at": time.time(),
                "node": node.name,
                "op": op,
                "key": fingerprint(key),
                "primary": fingerprint(keys.keyring.primary),
                "keys": len(keys.keyring.keys),
            }
        )
    return _json(_keyring(node, keys, op=op, changed=outcome.changed, persisted=outcome.persisted))


def _handler(op: str) -> Handler:
    async def handler(admin: AdminServer, request: web.BaseRequest) -> web.Response:
        return await _change(admin, request, op)

    handler.__name__ = f"keys_{op}"
    return handler


#: Registered by the admin server with its own routes.
ROUTES: dict[str, dict[str, Handler]] = {
    "/v1/keys": {"GET": list_keys},
    **{f"/v1/keys/{op}": {"POST": _handler(op)} for op in OPS},
}
