"""``plumctl members -o json`` and ``plumctl broadcast PAYLOAD`` without typer, rich or httpx.

Those imports were most of the 0.28 s an everyday command took (python itself starts in
10 ms). The command lines answered here are the plain ones: only options this module knows
(the global ``--node/--token/--timeout/-o`` before or after the command, the members
filters), plain ``http://IPv4:PORT`` nodes, no ``--cacert``. Anything else, and any
answer this module does not expect, goes to typer (:func:`run` returns None), which
then prints exactly what it always did: usage errors (exit 2), TLS, host names, error
statuses. A GET is harmless to repeat; a broadcast is not, so once its request may have
left, its errors are reported here, with the typer path's own words (the client's
functions read an ``httpx.Response`` built from the answer, importing httpx only then).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # mypy takes it as True: the fast path imports no typing module
if TYPE_CHECKING:
    from collections.abc import Container, Mapping, Sequence
    from typing import Any, NoReturn

#: the global options (plumctl/cli.py and options.with_global_options) and their envvars
GLOBALS = {"--node": "node", "--token": "token", "--cacert": "cacert", "--output": "output",
           "-o": "output", "--timeout": "timeout"}  # fmt: skip
ENVVARS = {"node": "PLUMCTL_NODE", "token": "PLUMCTL_TOKEN", "cacert": "PLUMCTL_CACERT"}
#: each command's own options taking a value -> the name it is kept under
OWN: dict[str, dict[str, str]] = {
    "members": {"--state": "state", "--status": "state", "--name": "name", "--tag": "tag"},
    "broadcast": {},
    "health": {},
}
DEFAULT_NODE = "http://127.0.0.1:7947"  # = plumctl.options.DEFAULT_NODE (a test checks)
OUTPUTS = ("table", "wide", "json")
UNREACHABLE = 3  # = exitcodes.UNREACHABLE
USAGE = 2


class Fallback(Exception):
    """Not a command line (or an answer) this module handles: typer answers."""


def run(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int | None:
    """Answer this command line and give the exit code, or None: let typer answer."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or not any(a in OWN for a in argv):
        return None  # (the common case costs nothing more)
    env = os.environ if env is None else env
    try:
        command, opts, args = parse(argv, env)
        if command == "broadcast":
            return broadcast(opts, args)
        if args or (command == "health" and (opts["tag"] or "state" in opts or "name" in opts)):
            raise Fallback  # "Got unexpected extra argument(s)"
        return members(opts) if command == "members" else health(opts)
    except Fallback:
        return None


def parse(argv: Sequence[str], env: Mapping[str, str]) -> tuple[str, dict[str, Any], list[str]]:
    """(command, options, positional arguments) as click would read them, or Fallback."""
    root: dict[str, Any] = {}
    own: dict[str, Any] = {"tag": []}
    args: list[str] = []
    command = None
    words = list(argv)
    while words:
        word = words.pop(0)
        if command is None and word in OWN:
            command = word
            continue
        if not word.startswith("-") or word == "-":
            if command is None:
                raise Fallback  # an unknown command
            args.append(word)
            continue
        name, eq, value = word.partition("=")
        if not eq and name.startswith("-o") and len(name) > 2 and not name.startswith("--"):
            name, eq, value = "-o", "=", name[2:]  # -ojson
        if name in GLOBALS:
            key = GLOBALS[name]
        elif command is not None and name in OWN[command]:
            key = OWN[command][name]
        else:
            raise Fallback  # --help, --wait, --file, a typo: typer's words
        if not eq:
            if not words:
                raise Fallback  # "requires an argument"
            value = words.pop(0)
        if key == "tag":
            own["tag"].append(value)
        elif command is None:
            root[key] = value
        else:
            own[key] = value  # after the command: wins over the root's and the env's
    if command is None:
        raise Fallback
    opts: dict[str, Any] = {}
    for key in ("node", "token", "cacert", "output", "timeout", "state", "name", "tag"):
        if key in own:
            opts[key] = own[key]
        elif key in root:
            opts[key] = root[key]
        elif key in ENVVARS and ENVVARS[key] in env:
            opts[key] = env[ENVVARS[key]]
    if opts.get("cacert") is not None or any(env.get(v) == "" for v in ENVVARS.values()):
        raise Fallback  # TLS with a CA file; an empty variable (click's reading of it)
    opts["node"] = str(opts.get("node", DEFAULT_NODE)).rstrip("/")
    opts["output"] = str(opts.get("output", "table")).lower()
    if opts["output"] not in OUTPUTS:
        raise Fallback
    opts["timeout"] = _timeout(opts.get("timeout"))
    return command, opts, args


def _timeout(text: str | None) -> float:
    if text is None:
        return 5.0
    import re

    if re.fullmatch(r"[0-9]{1,6}(\.[0-9]{1,6})?", text) is None or float(text) < 0.01:
        raise Fallback  # click's FloatRange says why
    return float(text)


def members(opts: dict[str, Any]) -> int:
    from plumctl.memberfilter import FilterError, member_filter, member_list

    if opts["output"] != "json":
        raise Fallback  # the table is Rich's
    try:
        keep = member_filter(opts.get("state"), opts.get("name"), opts["tag"])
    except FilterError:
        raise Fallback from None  # typer prints the same line, exit 2
    status, doc = request(opts, "GET", "/v1/members")
    if status != 200 or not isinstance(doc.get("items"), list):
        raise Fallback
    if not all(isinstance(m, dict) for m in doc["items"]):
        raise Fallback
    from plumctl.output import emit_json

    emit_json({"kind": "MemberList", "node": doc.get("node"), "items": member_list(doc, keep)})
    return 0


def broadcast(opts: dict[str, Any], args: list[str]) -> int:
    if len(args) != 1 or args[0] == "-" or opts["tag"]:
        raise Fallback  # stdin, nothing to send, extra arguments: typer's
    if any(k in opts for k in ("state", "name")):
        raise Fallback
    try:
        data = args[0].encode()
    except UnicodeEncodeError:
        raise Fallback from None
    _, sent = request(opts, "POST", "/v1/broadcast", data, required="id")
    msg_id = str(sent["id"])
    if opts["output"] != "json":
        sys.stdout.write(msg_id + "\n")
        sys.stdout.flush()
        return 0
    from plumctl.output import emit_json

    size = sent.get("size", len(data))
    emit_json({"kind": "Broadcast", "id": msg_id, "size": size, "node": opts["node"]})
    return 0


def health(opts: dict[str, Any]) -> int:
    """``plumctl health`` of one node (any output): /v1/members for its name (as the typer
    path asks), /v1/health once, the score from the rates the node keeps."""
    _, members = request(opts, "GET", "/v1/members")
    status, body = request(opts, "GET", "/v1/health", required="rates", ok=(200, 503, 500))
    if "status" not in body or not isinstance(body["rates"], dict):
        raise Fallback
    from plumctl.healthcheck import one_node_from_rates, render
    from plumctl.output import emit_json

    name = str(members.get("node", opts["node"]))
    result = one_node_from_rates(name, opts["node"], body, status)
    if opts["output"] == "json":
        emit_json(result.as_dict())
    else:
        render(result, opts["output"] == "wide")
    return result.exit_code


def _address(node: str) -> tuple[str, str, int]:
    """(base URL as the client normalises it, IPv4 host, port), or Fallback."""
    import re

    raw = node if "://" in node else "http://" + node
    found = re.fullmatch(r"http://((?:[0-9]{1,3}\.){3}[0-9]{1,3}):([0-9]{1,5})", raw)
    if found is None or not 0 < int(found[2]) < 65536:
        raise Fallback  # https, a host name, IPv6, a path...
    if any(int(part) > 255 for part in found[1].split(".")):
        raise Fallback
    return raw, found[1], int(found[2])


def request(
    opts: dict[str, Any],
    method: str,
    path: str,
    body: bytes | None = None,
    required: str = "items",
    ok: Container[int] = range(200, 300),
) -> tuple[int, dict[str, Any]]:
    """(status, JSON object) of one request. A GET that goes wrong is a Fallback (typer
    asks again and words it), except a timeout (asking again would double the wait); a
    broadcast reports its own errors once it may have been sent.

    HTTP/1.1 over a plain socket, ``Connection: close``: ``http.client`` alone (through
    ``email``) cost 10-40 ms of imports."""
    import socket

    base, host, port = _address(opts["node"])
    timeout = opts["timeout"]
    head = _head(method, path, host, port, opts.get("token"), body)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        _unreachable(base, "connection refused")
    except TimeoutError:
        _unreachable(base, f"timed out connecting after {timeout:g}s")
    except OSError:
        raise Fallback from None
    try:
        with sock:
            sock.sendall(head + (body or b""))
            raw = _read_all(sock)
        status, headers, content = _parse(raw)
    except TimeoutError:
        _unreachable(base, f"no answer within {timeout:g}s")
    except (OSError, ValueError) as exc:
        if method == "GET":
            raise Fallback from None
        _unreachable(base, _lost(exc))
    import json

    try:
        doc = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if status in ok and isinstance(doc, dict) and required in doc:
        return status, doc
    if method == "GET":
        raise Fallback
    _client_error(base, method, path, status, headers, content)


#: the most of an answer read (a member table of thousands of nodes is a few MB)
MAX_ANSWER = 64 << 20


def _head(
    method: str, path: str, host: str, port: int, token: str | None, body: bytes | None
) -> bytes:
    """The request line and headers the client sends (Accept, User-Agent, token)."""
    from plumtree import __version__

    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Accept: application/json",
        f"User-Agent: plumctl/{__version__}",
        "Connection: close",
    ]
    if token:
        if any(c in token for c in "\r\n\0") or not token.isascii():
            raise Fallback  # httpx's words for a token no header can carry
        lines.append(f"Authorization: Bearer {token}")
    if body is not None:
        lines += ["Content-Type: application/octet-stream", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def _read_all(sock: Any) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_ANSWER:
            raise ValueError(f"answer larger than {MAX_ANSWER} bytes")
    return b"".join(chunks)


def _parse(raw: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) of a whole HTTP/1.1 answer; ValueError if it is not one."""
    if not raw:
        raise ConnectionError("Server disconnected without sending a response.")
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("incomplete answer")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, _, code = status_line.partition(" ")
    if not version.startswith("HTTP/1.") or not code[:3].isdigit():
        raise ValueError(f"not an HTTP answer: {status_line[:40]!r}")
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines)]
    fields = {k.lower(): v for k, v in headers}
    if fields.get("transfer-encoding", "").lower() == "chunked":
        return int(code[:3]), headers, _dechunk(rest)
    length = fields.get("content-length")
    if length is not None:
        if not length.isdigit() or len(rest) < int(length):
            raise ValueError("answer shorter than its Content-Length")
        rest = rest[: int(length)]
    return int(code[:3]), headers, rest


def _dechunk(data: bytes) -> bytes:
    out: list[bytes] = []
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"x", 16)  # ValueError if garbage
        if not sep or size < 0:
            raise ValueError("bad chunk")
        if size == 0:
            return b"".join(out)
        if len(data) < size + 2:
            raise ValueError("truncated chunk")
        out.append(data[:size])
        data = data[size + 2 :]


def _lost(exc: BaseException) -> str:
    """Why a sent request got no answer, as plumctl.client._transport_reason says it."""
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the node"
    if isinstance(exc, ConnectionError | ValueError):  # closed, or not HTTP
        return f"connection closed by the node ({' '.join(str(exc).split())})"
    return f"connection lost ({' '.join(str(exc).split()) or type(exc).__name__})"


def _unreachable(base: str, reason: str) -> NoReturn:
    """The typer path's line for an unreachable node; exit 3 (raised through run)."""
    from plumctl.output import error

    error(f"cannot reach node at {base}: {reason}")
    raise SystemExit(UNREACHABLE)


def _client_error(
    base: str,
    method: str,
    path: str,
    status: int,
    headers: list[tuple[str, str]],
    content: bytes,
) -> NoReturn:
    """The typer path's error for this answer, from the client's own functions."""
    import httpx

    from plumctl.client import ClientError, _check_status, _json_body
    from plumctl.output import error

    response = httpx.Response(
        status, headers=headers, content=content, request=httpx.Request(method, base + path)
    )
    try:
        _check_status(response, base)
        _json_body(response, base, ("id",))
    except ClientError as exc:
        error(exc.message)
        raise SystemExit(exc.exit_code) from None
    raise Fallback  # not reached: a 200 with an "id" was returned above
