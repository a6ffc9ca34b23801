"""The only HTTP client of plumctl: every admin endpoint, sync and async, one error model.

Every failure becomes a :class:`ClientError` with a one-line message and the exit code
to use (``plumctl/exitcodes.py``), so commands never print a traceback:

- :class:`Unreachable` (exit 3): connection refused, DNS, timeout, invalid URL, TLS,
  connection lost (:class:`StreamBroken` when it happens mid-stream);
- :class:`AuthFailed` (exit 1): HTTP 401/403;
- :class:`ApiError` (exit 1): any other 3xx/4xx/5xx, with the server's ``error``/``detail``;
- :class:`BadResponse` (exit 1): a 2xx whose body is not the JSON we expect.

:class:`Prometheus` is the one client of a Prometheus server's HTTP API (``plumctl
health --prometheus``), with the same errors: unreachable server exit 3, a refused query
or an error status exit 1, each one line naming the server.

Redirects are never followed (a ``/metrics`` that redirects is a broken node, and a
silent redirect could carry the bearer token elsewhere). Proxy environment variables are
ignored by default: admin APIs are loopback/internal and an ``HTTP_PROXY`` meant for the
internet would otherwise swallow ``127.0.0.1``. Only commands import this module, so
httpx is imported at the top.
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import ssl
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from plumctl import exitcodes

if TYPE_CHECKING:
    from plumctl.promtext import Scrape

__all__ = [
    "ApiError",
    "AsyncClient",
    "AuthFailed",
    "BadResponse",
    "Client",
    "ClientError",
    "PromSample",
    "Prometheus",
    "StreamBroken",
    "Unreachable",
    "exit_on_error",
    "fan_out",
    "fan_out_sync",
    "normalise_url",
]

T = TypeVar("T")

JSON_ACCEPT = "application/json"
METRICS_ACCEPT = "text/plain"  # never OpenMetrics: the text 0.0.4 parser reads this
HEALTH_CODES = frozenset({200, 503, 500})  # /v1/health answers with these, all with a body
_SNIPPET = 120


# -- errors ------------------------------------------------------------------------------


class ClientError(Exception):
    """A failed exchange with a node: ``str(err)`` is one line, ``exit_code`` what to exit."""

    exit_code: int = exitcodes.FAILED

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(_one_line(message, limit=400))
        self.url = url

    @property
    def message(self) -> str:
        return str(self)


class Unreachable(ClientError):
    """No usable connection to the node (refused, DNS, timeout, TLS, bad URL, cut)."""

    exit_code = exitcodes.UNREACHABLE


class StreamBroken(Unreachable):
    """The node went away in the middle of a stream (``/v1/events``)."""


class AuthFailed(ClientError):
    """HTTP 401/403: a missing or wrong ``--token``."""


class ApiError(ClientError):
    """The node answered with an error status; ``status``/``error``/``detail`` are its words."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error: str | None = None,
        detail: Any = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message, url=url)
        self.status = status
        self.error = error
        self.detail = detail


class BadResponse(ClientError):
    """A successful status with a body that is not what the admin API promises."""


def _one_line(text: str, limit: int = _SNIPPET) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _root_causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _transport_reason(exc: BaseException, timeout: float, peer: str = "the node") -> str:
    """Why a connection failed, in an operator's words (``peer``: who hung up)."""
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return f"timed out connecting after {timeout:g}s"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout:g}s"
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return f"invalid URL ({_one_line(str(exc))})"
    for cause in _root_causes(exc):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve host ({cause.strerror or cause})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS error ({_one_line(cause.reason or str(cause))})"
        if isinstance(cause, ConnectionResetError):
            return f"connection reset by {peer}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"connection closed by {peer} ({_one_line(str(exc))})"
    if isinstance(exc, httpx.ReadError | httpx.WriteError | httpx.CloseError):
        return f"connection lost ({_one_line(str(exc)) or type(exc).__name__})"
    return _one_line(str(exc)) or type(exc).__name__


def _unreachable(exc: BaseException, base_url: str, timeout: float) -> Unreachable:
    return Unreachable(
        f"cannot reach node at {base_url}: {_transport_reason(exc, timeout)}", url=base_url
    )


def _stream_broken(exc: BaseException, base_url: str, timeout: float) -> StreamBroken:
    return StreamBroken(
        f"lost the event stream from node at {base_url}: {_transport_reason(exc, timeout)}",
        url=base_url,
    )


# -- URLs, requests, responses (shared by the sync and async clients) --------------------


def normalise_url(url: str) -> str:
    """``127.0.0.1:7947`` -> ``http://127.0.0.1:7947``; no trailing slash; else Unreachable.

    An invalid URL is reported as "cannot reach" (exit 3), like any other wrong address.
    """
    raw = url.strip()
    if "://" not in raw:
        raw = "http://" + raw
    raw = raw.rstrip("/")
    try:
        parsed = httpx.URL(raw)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise Unreachable(
            f"cannot reach node at {url}: invalid URL ({_one_line(str(exc))})", url=url
        ) from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise Unreachable(
            f"cannot reach node at {url}: invalid URL (need http://HOST:PORT)", url=url
        )
    return raw


def _default_tls() -> ssl.SSLContext:
    """The verifying context: the ``--cacert`` file's CAs, else httpx's default bundle."""
    from plumctl.options import ca_file

    return _tls_context(ca_file())


@functools.cache
def _tls_context(cafile: str | None) -> ssl.SSLContext:
    """Built once per CA file: loading the default CA bundle costs ~0.1 s."""
    if cafile is None:
        return httpx.create_ssl_context()
    return ssl.create_default_context(cafile=cafile)


def _verify(urls: Iterable[str], verify: ssl.SSLContext | bool) -> ssl.SSLContext | bool:
    """What to pass httpx as ``verify``; plain-http nodes never pay for a TLS context.

    Redirects are never followed, so a client whose nodes are all http:// never speaks TLS.
    """
    if verify is not True:
        return verify
    return _default_tls() if any(u.startswith("https://") for u in urls) else False


def _http_settings(
    urls: Iterable[str],
    timeout: float,
    verify: ssl.SSLContext | bool,
    trust_env: bool,
    transport: httpx.AsyncBaseTransport | httpx.BaseTransport | None,
) -> dict[str, Any]:
    """What every httpx client of plumctl is built with: one timeout for every phase,
    redirects never followed, TLS only for https nodes, the environment's proxies only
    when asked."""
    return {
        "timeout": httpx.Timeout(timeout),
        "follow_redirects": False,
        "verify": _verify(urls, verify),
        "trust_env": trust_env,
        "transport": transport,
    }


def _headers(token: str | None) -> dict[str, str]:
    from plumtree import __version__

    headers = {"User-Agent": f"plumctl/{__version__}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _error_text(response: httpx.Response) -> tuple[str, str | None, Any]:
    """(one-line text, error, detail) from an error response, JSON or not."""
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        error: str = body["error"]
        detail = body.get("detail")
        if detail in (None, "", [], {}):
            return _one_line(error, 300), error, detail
        shown = detail if isinstance(detail, str) else json.dumps(detail, sort_keys=True)
        return _one_line(f"{error}: {shown}", 300), error, detail
    snippet = _one_line(response.text) if response.content else "empty body"
    return f"HTTP {response.status_code} {response.reason_phrase} ({snippet})", None, None


def _check_status(response: httpx.Response, base_url: str) -> None:
    """Raise the right :class:`ClientError` for a non-2xx answer (body must be read)."""
    code = response.status_code
    if 200 <= code < 300:
        return
    what = f"{response.request.method} {response.request.url.path}"
    if code in (401, 403):
        raise AuthFailed("authentication failed: the node requires a valid --token", url=base_url)
    if 300 <= code < 400:
        location = response.headers.get("location", "?")
        raise ApiError(
            f"{what} on {base_url} answered a redirect (HTTP {code} to {location}); "
            "not following it",
            status=code,
            url=base_url,
        )
    text, error, detail = _error_text(response)
    raise ApiError(
        f"{text} (HTTP {code} from {base_url}, {what})",
        status=code,
        error=error,
        detail=detail,
        url=base_url,
    )


def _json_body(
    response: httpx.Response, base_url: str, required: tuple[str, ...]
) -> dict[str, Any]:
    """The JSON object of a response, with the keys the admin API promises, or BadResponse."""
    what = f"{response.request.method} {response.request.url.path}"
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        kind = response.headers.get("content-type", "no content-type")
        snippet = _one_line(response.text) if response.content else "empty body"
        raise BadResponse(
            f"node at {base_url} answered {what} with a body that is not JSON ({kind}: {snippet})",
            url=base_url,
        ) from None
    if not isinstance(body, dict):
        raise BadResponse(
            f"node at {base_url} answered {what} with JSON that is not an object", url=base_url
        )
    missing = [k for k in required if k not in body]
    if missing:
        raise BadResponse(
            f"node at {base_url} answered {what} without {', '.join(map(repr, missing))}; "
            "is it a plumtree node of a compatible version?",
            url=base_url,
        )
    if "items" in required and not isinstance(body["items"], list):
        raise BadResponse(
            f"node at {base_url} answered {what}: 'items' is not a list", url=base_url
        )
    return body


def _event(line: str, base_url: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        raise BadResponse(
            f"node at {base_url} sent an event that is not JSON: {_one_line(line)}", url=base_url
        ) from None
    if not isinstance(event, dict):
        raise BadResponse(f"node at {base_url} sent an event that is not an object", url=base_url)
    return event


def _parse_scrape(text: str, at: float, base_url: str) -> Scrape:
    from plumctl.promtext import ExpositionError, parse

    try:
        return parse(text, at)
    except ExpositionError as exc:
        raise BadResponse(
            f"node at {base_url} served unreadable metrics: {exc}", url=base_url
        ) from exc


def _events_params(since: float | str | None, level: str | None = None) -> dict[str, str]:
    params = {} if since is None else {"since": str(since)}
    if level is not None:
        params["level"] = level
    return params


def _message_path(message_id: str) -> str:
    # quote so an odd id can only ever address /v1/messages/<something>, never another path
    from urllib.parse import quote

    return f"/v1/messages/{quote(message_id, safe='')}"


#: ``GET /v1/deliveries``: the longest long poll the node accepts, and the largest page
DELIVERIES_WAIT_MAX = 60.0
DELIVERIES_LIMIT_MAX = 1000


def _deliveries_params(after: int, limit: int, wait: float, payload: bool) -> dict[str, str]:
    if after < 0 or not 1 <= limit <= DELIVERIES_LIMIT_MAX or not 0 <= wait <= DELIVERIES_WAIT_MAX:
        raise ValueError(
            f"deliveries: after >= 0, limit 1-{DELIVERIES_LIMIT_MAX}, "
            f"wait 0-{DELIVERIES_WAIT_MAX:g} s (got {after}, {limit}, {wait:g})"
        )
    params = {"after": str(after), "limit": str(limit), "wait": f"{wait:g}"}
    if payload:
        params["payload"] = "1"
    return params


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ranges_ok(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(r, list) and len(r) == 2 and _is_int(r[0]) and _is_int(r[1]) for r in value
    )


def _shape_error(base_url: str, what: str, problem: str) -> BadResponse:
    return BadResponse(
        f"node at {base_url} answered {what} {problem}; "
        "is it a plumtree node of a compatible version?",
        url=base_url,
    )


def _vector_body(response: httpx.Response, base_url: str) -> dict[str, Any]:
    """``/v1/vector``: every stream with the fields ``plumctl audit`` computes with."""
    body = _json_body(response, base_url, _VECTOR_KEYS)
    what = "GET /v1/vector"
    streams = body["streams"]
    if not isinstance(streams, list):
        raise _shape_error(base_url, what, "with 'streams' not a list")
    for s in streams:
        if not isinstance(s, dict):
            raise _shape_error(base_url, what, "with a stream that is not an object")
        if not isinstance(s.get("origin"), str) or not all(
            _is_int(s.get(k)) for k in ("epoch", "delivered", "head")
        ):
            raise _shape_error(base_url, what, "with a stream lacking origin/epoch/delivered/head")
        if not _ranges_ok(s.get("above", [])):
            raise _shape_error(base_url, what, "with a stream whose 'above' is not [lo, hi] pairs")
        if s.get("acked") is not None and not _is_int(s["acked"]):
            raise _shape_error(base_url, what, "with a stream whose 'acked' is not a number")
    return body


def _deliveries_body(response: httpx.Response, base_url: str) -> dict[str, Any]:
    """``/v1/deliveries``: numbered deliveries, ascending cursors."""
    body = _json_body(response, base_url, _DELIVERIES_KEYS)
    what = "GET /v1/deliveries"
    if not all(_is_int(body.get(k)) for k in ("log", "last", "first", "skipped")):
        raise _shape_error(base_url, what, "without numeric log/first/last/skipped")
    for item in body["items"]:
        if not isinstance(item, dict) or not _is_int(item.get("cursor")):
            raise _shape_error(base_url, what, "with an item that has no cursor")
    return body


def _keyring_body(response: httpx.Response, base_url: str) -> dict[str, Any]:
    """``/v1/keys``: base64 keys, primary first."""
    body = _json_body(response, base_url, _KEYRING_KEYS)
    keys = body["keys"]
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise _shape_error(base_url, response.request.url.path, "with 'keys' not a list of keys")
    if body["primary"] != keys[0]:
        raise _shape_error(base_url, response.request.url.path, "with a primary not listed first")
    return body


_STATUS_KEYS = ("name", "version")
_KEYRING_KEYS = ("node", "primary", "keys")
_LIST_KEYS = ("items",)
_HEALTH_KEYS = ("status",)
_BROADCAST_KEYS = ("id",)
_MESSAGE_KEYS = ("id", "delivered")
_LEAVE_KEYS = ("left",)
_VECTOR_KEYS = ("node", "streams")
_DELIVERIES_KEYS = ("log", "first", "last", "skipped", "items")


# -- sync client -------------------------------------------------------------------------


class Client:
    """Synchronous client of one node's admin API (one-shot commands).

    ``stream_timeout`` bounds the silence between two events on ``/v1/events``
    (``None``: wait forever, as a node with no events sends nothing).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 5.0,
        *,
        stream_timeout: float | None = None,
        verify: ssl.SSLContext | bool = True,
        trust_env: bool = False,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = normalise_url(base_url)
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=_headers(token),
            **_http_settings([self.base_url], timeout, verify, trust_env, transport),
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(
        self,
        method: str,
        path: str,
        *,
        accept: str = JSON_ACCEPT,
        content: bytes | None = None,
        ok: frozenset[int] = frozenset(),
        params: dict[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        json_body: bool = False,
    ) -> httpx.Response:
        headers = {"Accept": accept}
        if content is not None:
            headers["Content-Type"] = (
                "application/json" if json_body else "application/octet-stream"
            )
        try:
            response = self._http.request(
                method,
                path,
                content=content,
                headers=headers,
                params=params,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
            raise _unreachable(exc, self.base_url, self.timeout) from exc
        if response.status_code not in ok:
            _check_status(response, self.base_url)
        return response

    def _get_json(self, path: str, required: tuple[str, ...]) -> dict[str, Any]:
        return _json_body(self._send("GET", path), self.base_url, required)

    def status(self) -> dict[str, Any]:
        """``GET /v1/status``: name, version, addresses, uptime, profile, config."""
        return self._get_json("/v1/status", _STATUS_KEYS)

    def members(self) -> dict[str, Any]:
        """``GET /v1/members``: the SWIM table (``items``)."""
        return self._get_json("/v1/members", _LIST_KEYS)

    def peers(self) -> dict[str, Any]:
        """``GET /v1/peers``: the Plumtree eager/lazy view (``items``)."""
        return self._get_json("/v1/peers", _LIST_KEYS)

    def health(self) -> tuple[dict[str, Any], int]:
        """``GET /v1/health``: (body, HTTP code). 503 and 500 are answers, not errors."""
        response = self._send("GET", "/v1/health", ok=HEALTH_CODES)
        if response.status_code != 200:
            try:
                return _json_body(response, self.base_url, _HEALTH_KEYS), response.status_code
            except BadResponse:
                _check_status(response, self.base_url)  # a crash page, not a health answer
        return _json_body(response, self.base_url, _HEALTH_KEYS), response.status_code

    def broadcast(self, payload: bytes) -> dict[str, Any]:
        """``POST /v1/broadcast``: ``{"id", "size"}``; 413 and 401 become errors."""
        response = self._send("POST", "/v1/broadcast", content=bytes(payload))
        return _json_body(response, self.base_url, _BROADCAST_KEYS)

    def message(self, message_id: str) -> dict[str, Any]:
        """``GET /v1/messages/{id}``: delivered here? when, hops, from whom."""
        return self._get_json(_message_path(message_id), _MESSAGE_KEYS)

    def vector(self) -> dict[str, Any]:
        """``GET /v1/vector``: per origin stream, what the node delivered, lacks, lost."""
        return _vector_body(self._send("GET", "/v1/vector"), self.base_url)

    def deliveries(
        self, after: int = 0, limit: int = 100, wait: float = 0.0, payload: bool = False
    ) -> dict[str, Any]:
        """``GET /v1/deliveries``: the delivery log after cursor ``after`` (at most
        ``limit``); with ``wait`` the node holds the request up to that many seconds
        while nothing is after ``after`` (a long poll: the read timeout grows by it)."""
        response = self._send(
            "GET",
            "/v1/deliveries",
            params=_deliveries_params(after, limit, wait, payload),
            timeout=httpx.Timeout(self.timeout, read=self.timeout + wait),
        )
        return _deliveries_body(response, self.base_url)

    def leave(self) -> dict[str, Any]:
        """``POST /v1/leave``: graceful leave, then the node shuts down."""
        return _json_body(self._send("POST", "/v1/leave"), self.base_url, _LEAVE_KEYS)

    def _post_json(
        self, path: str, body: dict[str, Any], required: tuple[str, ...], read: float = 0.0
    ) -> dict[str, Any]:
        timeout = httpx.Timeout(self.timeout, read=self.timeout + read) if read else None
        response = self._send(
            "POST", path, content=json.dumps(body).encode(), json_body=True, timeout=timeout
        )
        return _json_body(response, self.base_url, required)

    def set_tags(self, assign: dict[str, str], unset: list[str]) -> dict[str, Any]:
        """``POST /v1/tags``: this node's tags after the change (gossiped to all)."""
        return self._post_json("/v1/tags", {"set": assign, "unset": unset}, ("node", "tags"))

    def join(self, addrs: list[str], wait: float) -> dict[str, Any]:
        """``POST /v1/join``: one push-pull per address; which became members in ``wait``."""
        body = {"addrs": addrs, "timeout": wait}
        return self._post_json("/v1/join", body, ("node", "joined", "seeds"), read=wait)

    def force_leave(self, name: str) -> dict[str, Any]:
        """``POST /v1/force-leave``: a failed member becomes left cluster-wide."""
        return self._post_json("/v1/force-leave", {"name": name}, ("node", "member", "was"))

    def query(
        self,
        name: str,
        payload: str,
        wait: float,
        node_filter: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/query``: serf's query; who acked and answered within ``wait``."""
        body = {
            "name": name,
            "payload": payload,
            "timeout": wait,
            "node_filter": node_filter,
            "tags": tags or {},
        }
        return self._post_json("/v1/query", body, ("name", "nodes", "missing"), read=wait)

    def rtt(self, to: str) -> dict[str, Any]:
        """``GET /v1/rtt?to=NAME``: the node's last SWIM probe round trip to NAME."""
        response = self._send("GET", "/v1/rtt", params={"to": to})
        return _json_body(response, self.base_url, ("from", "to", "rtt_ms", "source"))

    def metrics_text(self) -> str:
        """``GET /metrics`` as text (exposition format 0.0.4)."""
        return self._send("GET", "/metrics", accept=METRICS_ACCEPT).text

    def scrape(self) -> Scrape:
        """``GET /metrics`` parsed, stamped with the monotonic time the request started."""
        at = time.monotonic()
        return _parse_scrape(self.metrics_text(), at, self.base_url)

    def events(
        self, since: float | str | None = None, level: str | None = None
    ) -> Generator[dict[str, Any], None, None]:
        """``GET /v1/events``: one dict per event until the node ends the stream.

        A connection lost mid-stream raises :class:`StreamBroken` (exit 3).
        """
        timeout = httpx.Timeout(self.timeout, read=self.stream_timeout)
        started = False
        try:
            with self._http.stream(
                "GET",
                "/v1/events",
                params=_events_params(since, level),
                headers={"Accept": "application/x-ndjson"},
                timeout=timeout,
            ) as response:
                if not 200 <= response.status_code < 300:
                    response.read()
                    _check_status(response, self.base_url)
                started = True
                for line in response.iter_lines():
                    if line.strip():
                        yield _event(line, self.base_url)
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
            if started:
                raise _stream_broken(exc, self.base_url, self.stream_timeout or 0.0) from exc
            raise _unreachable(exc, self.base_url, self.timeout) from exc


# -- async client ------------------------------------------------------------------------


class AsyncClient:
    """Asynchronous client of one node (``top``, ``health --all``, any fan-out).

    Pass ``http`` to share one connection pool between many nodes (see :func:`fan_out`);
    a shared pool is not closed by :meth:`aclose`. Create it inside the running loop.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 5.0,
        *,
        stream_timeout: float | None = None,
        verify: ssl.SSLContext | bool = True,
        trust_env: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = normalise_url(base_url)
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self._headers = _headers(token)
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            **_http_settings([self.base_url], timeout, verify, trust_env, transport)
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    def _url(self, path: str) -> str:
        return self.base_url + path

    async def _send(
        self,
        method: str,
        path: str,
        *,
        accept: str = JSON_ACCEPT,
        content: bytes | None = None,
        ok: frozenset[int] = frozenset(),
        params: dict[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        content_type: str = "application/octet-stream",
    ) -> httpx.Response:
        headers = {**self._headers, "Accept": accept}
        if content is not None:
            headers["Content-Type"] = content_type
        try:
            response = await self._http.request(
                method,
                self._url(path),
                content=content,
                headers=headers,
                params=params,
                timeout=httpx.Timeout(self.timeout) if timeout is None else timeout,
                follow_redirects=False,
            )
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
            raise _unreachable(exc, self.base_url, self.timeout) from exc
        if response.status_code not in ok:
            _check_status(response, self.base_url)
        return response

    async def _get_json(self, path: str, required: tuple[str, ...]) -> dict[str, Any]:
        return _json_body(await self._send("GET", path), self.base_url, required)

    async def status(self) -> dict[str, Any]:
        """``GET /v1/status``."""
        return await self._get_json("/v1/status", _STATUS_KEYS)

    async def members(self) -> dict[str, Any]:
        """``GET /v1/members``."""
        return await self._get_json("/v1/members", _LIST_KEYS)

    async def peers(self) -> dict[str, Any]:
        """``GET /v1/peers``."""
        return await self._get_json("/v1/peers", _LIST_KEYS)

    async def health(self) -> tuple[dict[str, Any], int]:
        """``GET /v1/health``: (body, HTTP code); 503/500 with a health body are answers."""
        response = await self._send("GET", "/v1/health", ok=HEALTH_CODES)
        if response.status_code != 200:
            try:
                return _json_body(response, self.base_url, _HEALTH_KEYS), response.status_code
            except BadResponse:
                _check_status(response, self.base_url)
        return _json_body(response, self.base_url, _HEALTH_KEYS), response.status_code

    async def broadcast(self, payload: bytes) -> dict[str, Any]:
        """``POST /v1/broadcast``."""
        response = await self._send("POST", "/v1/broadcast", content=bytes(payload))
        return _json_body(response, self.base_url, _BROADCAST_KEYS)

    async def message(self, message_id: str) -> dict[str, Any]:
        """``GET /v1/messages/{id}``."""
        return await self._get_json(_message_path(message_id), _MESSAGE_KEYS)

    async def vector(self) -> dict[str, Any]:
        """``GET /v1/vector``."""
        return _vector_body(await self._send("GET", "/v1/vector"), self.base_url)

    async def deliveries(
        self, after: int = 0, limit: int = 100, wait: float = 0.0, payload: bool = False
    ) -> dict[str, Any]:
        """``GET /v1/deliveries`` (see :meth:`Client.deliveries`)."""
        response = await self._send(
            "GET",
            "/v1/deliveries",
            params=_deliveries_params(after, limit, wait, payload),
            timeout=httpx.Timeout(self.timeout, read=self.timeout + wait),
        )
        return _deliveries_body(response, self.base_url)

    async def keys(self) -> dict[str, Any]:
        """``GET /v1/keys``: the node's gossip keyring (409 when encryption is off)."""
        return _keyring_body(await self._send("GET", "/v1/keys"), self.base_url)

    async def change_keys(self, op: str, key: str) -> dict[str, Any]:
        """``POST /v1/keys/{install|use|remove}``: the keyring after the change."""
        response = await self._send(
            "POST",
            f"/v1/keys/{op}",
            content=json.dumps({"key": key}).encode(),
            content_type="application/json",
        )
        return _keyring_body(response, self.base_url)

    async def cluster_keys(self, op: str | None, key: str, wait: float) -> dict[str, Any]:
        """``GET /v1/keys/cluster`` (``op`` None) or ``POST /v1/keys/cluster/{op}``: the node
        carries it to every live member over gossip and waits ``wait`` seconds at most
        for their answers (so the request may take that long)."""
        timeout = httpx.Timeout(self.timeout, read=self.timeout + wait)
        if op is None:
            params = {"timeout": str(wait)}
            response = await self._send("GET", "/v1/keys/cluster", params=params, timeout=timeout)
        else:
            response = await self._send(
                "POST",
                f"/v1/keys/cluster/{op}",
                content=json.dumps({"key": key, "timeout": wait}).encode(),
                content_type="application/json",
                timeout=timeout,
            )
        body = _json_body(response, self.base_url, ("node", "nodes", "missing", "skipped"))
        lists = (body["nodes"], body["missing"], body["skipped"])
        if not all(isinstance(x, list) and all(isinstance(i, dict) for i in x) for x in lists):
            raise _shape_error(self.base_url, response.request.url.path, "with malformed lists")
        return body

    async def leave(self) -> dict[str, Any]:
        """``POST /v1/leave``."""
        return _json_body(await self._send("POST", "/v1/leave"), self.base_url, _LEAVE_KEYS)

    async def metrics_text(self) -> str:
        """``GET /metrics`` as text."""
        return (await self._send("GET", "/metrics", accept=METRICS_ACCEPT)).text

    async def scrape(self) -> Scrape:
        """``GET /metrics`` parsed, stamped with the monotonic time the request started."""
        at = time.monotonic()
        return _parse_scrape(await self.metrics_text(), at, self.base_url)

    async def events(
        self, since: float | str | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """``GET /v1/events`` as an async iterator (close it with ``contextlib.aclosing``)."""
        timeout = httpx.Timeout(self.timeout, read=self.stream_timeout)
        started = False
        try:
            async with self._http.stream(
                "GET",
                self._url("/v1/events"),
                params=_events_params(since),
                headers={**self._headers, "Accept": "application/x-ndjson"},
                timeout=timeout,
                follow_redirects=False,
            ) as response:
                if not 200 <= response.status_code < 300:
                    await response.aread()
                    _check_status(response, self.base_url)
                started = True
                async for line in response.aiter_lines():
                    if line.strip():
                        yield _event(line, self.base_url)
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
            if started:
                raise _stream_broken(exc, self.base_url, self.stream_timeout or 0.0) from exc
            raise _unreachable(exc, self.base_url, self.timeout) from exc


# -- Prometheus HTTP API -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PromSample:
    """One element of an instant vector: its labels, its value and when it was evaluated."""

    labels: dict[str, str]
    value: float
    at: float


class Prometheus:
    """Asynchronous client of a Prometheus server's HTTP API (``/api/v1/...``).

    Only what ``plumctl`` needs: instant queries (:meth:`query`) and the active scrape
    targets (:meth:`targets`). Errors are :class:`ClientError` like the node client's,
    naming the server: :class:`Unreachable` (exit 3) when there is no usable connection;
    :class:`ApiError` (exit 1) when Prometheus refuses a query (bad PromQL, timeout) or
    answers an error status (e.g. 404 from something that is not Prometheus);
    :class:`BadResponse` (exit 1) for a body that is not the API's JSON. No token is
    sent (``--token`` is the nodes'), redirects are not followed and proxy variables are
    ignored by default, as for nodes. ``base_url`` may carry a path prefix
    (``http://host/prometheus``).
    """

    def __init__(
        self,
        base_url: str,
        timeout: float = 5.0,
        *,
        verify: ssl.SSLContext | bool = True,
        trust_env: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        try:
            self.base_url = normalise_url(base_url)
        except Unreachable as exc:
            reason = str(exc).split(": ", 1)[-1]
            raise Unreachable(
                f"cannot reach Prometheus at {base_url}: {reason}", url=base_url
            ) from None
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            headers=_headers(None),
            **_http_settings([self.base_url], timeout, verify, trust_env, transport),
        )

    async def __aenter__(self) -> Prometheus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str, params: dict[str, str], what: str) -> Any:
        """The ``data`` of a successful API answer, or the right ClientError."""
        try:
            response = await self._http.get(
                self.base_url + path, params=params, headers={"Accept": JSON_ACCEPT}
            )
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
            reason = _transport_reason(exc, self.timeout, peer="Prometheus")
            raise Unreachable(
                f"cannot reach Prometheus at {self.base_url}: {reason}", url=self.base_url
            ) from exc
        code = response.status_code
        try:
            body = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict) and body.get("status") == "error":
            kind = str(body.get("errorType") or "error")
            text = _one_line(str(body.get("error") or "no reason given"), 300)
            raise ApiError(
                f"Prometheus at {self.base_url} refused {what}: {kind}: {text} (HTTP {code})",
                status=code,
                error=kind,
                detail=body.get("error"),
                url=self.base_url,
            )
        if code in (401, 403):
            raise AuthFailed(
                f"Prometheus at {self.base_url} requires authentication (HTTP {code}); "
                "plumctl sends none",
                url=self.base_url,
            )
        if 300 <= code < 400:
            location = response.headers.get("location", "?")
            raise ApiError(
                f"Prometheus at {self.base_url} answered {path} with a redirect "
                f"(HTTP {code} to {location}); not following it",
                status=code,
                url=self.base_url,
            )
        if not 200 <= code < 300:
            snippet = _one_line(response.text) if response.content else "empty body"
            raise ApiError(
                f"HTTP {code} {response.reason_phrase} from {self.base_url}{path} ({snippet}); "
                f"is {self.base_url} a Prometheus server?",
                status=code,
                url=self.base_url,
            )
        if not isinstance(body, dict) or body.get("status") != "success" or "data" not in body:
            raise BadResponse(
                f"{self.base_url}{path} did not answer with the Prometheus API's JSON; "
                f"is {self.base_url} a Prometheus server?",
                url=self.base_url,
            )
        return body["data"]

    async def query(self, expr: str, at: float | None = None) -> list[PromSample]:
        """``GET /api/v1/query``: the instant vector ``expr`` evaluates to (at ``at``)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = repr(at)
        what = f"the query {_one_line(expr, 160)!r}"
        data = await self._get("/api/v1/query", params, what)
        if not isinstance(data, dict) or not isinstance(data.get("result"), list):
            raise BadResponse(
                f"Prometheus at {self.base_url} answered {what} without a result list",
                url=self.base_url,
            )
        if data.get("resultType") != "vector":
            raise BadResponse(
                f"Prometheus at {self.base_url} answered {what} with a "
                f"{data.get('resultType')!r}, not an instant vector",
                url=self.base_url,
            )
        samples: list[PromSample] = []
        for item in data["result"]:
            try:
                labels = {str(k): str(v) for k, v in item["metric"].items()}
                stamp, value = item["value"]
                samples.append(PromSample(labels, float(value), float(stamp)))
            except (KeyError, TypeError, ValueError, AttributeError):
                raise BadResponse(
                    f"Prometheus at {self.base_url} answered {what} with a malformed sample: "
                    f"{_one_line(json.dumps(item, default=str))}",
                    url=self.base_url,
                ) from None
        return samples

    async def targets(self) -> list[dict[str, Any]]:
        """``GET /api/v1/targets?state=active``: the active scrape targets, as given."""
        data = await self._get("/api/v1/targets", {"state": "active"}, "the target list")
        active = data.get("activeTargets") if isinstance(data, dict) else None
        if not isinstance(active, list):
            raise BadResponse(
                f"Prometheus at {self.base_url} answered /api/v1/targets without activeTargets",
                url=self.base_url,
            )
        return [t for t in active if isinstance(t, dict)]


# -- fan-out -----------------------------------------------------------------------------


async def fan_out(
    urls: Iterable[str],
    fn: Callable[[AsyncClient], Awaitable[T]],
    *,
    token: str | None = None,
    timeout: float = 5.0,
    limit: int = 64,
    deadline: float | None = None,
    verify: ssl.SSLContext | bool = True,
    trust_env: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, T | ClientError]:
    """Run ``fn(client)`` against every node concurrently; a result or a ClientError each.

    One connection pool for all nodes, at most ``limit`` in flight, every request bounded
    by ``timeout`` and, when given, each node's whole ``fn`` by ``deadline`` seconds (an
    overrun is :class:`Unreachable`). One dead node never fails the others. The answer
    is keyed by normalised URL, in the order given; a bad URL is an Unreachable entry.
    Exceptions other than ClientError are bugs and propagate.
    """
    targets: dict[str, str | ClientError] = {}
    for url in urls:
        try:
            normal = normalise_url(url)
        except ClientError as exc:
            targets.setdefault(url, exc)
        else:
            targets.setdefault(normal, normal)
    results: dict[str, T | ClientError] = {}
    gate = asyncio.Semaphore(max(1, limit))
    limits = httpx.Limits(max_connections=max(1, limit), max_keepalive_connections=max(1, limit))
    nodes = [t for t in targets.values() if isinstance(t, str)]
    async with httpx.AsyncClient(
        limits=limits, **_http_settings(nodes, timeout, verify, trust_env, transport)
    ) as http:

        async def one(url: str) -> T | ClientError:
            node = AsyncClient(url, token, timeout, http=http)
            async with gate:
                try:
                    if deadline is None:
                        return await fn(node)
                    async with asyncio.timeout(deadline):
                        return await fn(node)
                except ClientError as exc:
                    return exc
                except TimeoutError:
                    return Unreachable(
                        f"cannot reach node at {url}: no complete answer within {deadline:g}s",
                        url=url,
                    )

        pending = {
            u: asyncio.ensure_future(one(u)) for u, t in targets.items() if isinstance(t, str)
        }
        try:
            await asyncio.gather(*pending.values())
        finally:
            for task in pending.values():
                task.cancel()
        for url, target in targets.items():
            results[url] = target if isinstance(target, ClientError) else pending[url].result()
    return results


def fan_out_sync(
    urls: Iterable[str],
    fn: Callable[[AsyncClient], Awaitable[T]],
    **kwargs: Any,
) -> dict[str, T | ClientError]:
    """:func:`fan_out` from synchronous code (a typer command): runs its own event loop."""
    return asyncio.run(fan_out(urls, fn, **kwargs))


@contextmanager
def exit_on_error() -> Iterator[None]:
    """In a command: turn any :class:`ClientError` into one stderr line and its exit code."""
    try:
        yield
    except ClientError as exc:
        from plumctl.output import fail

        fail(exc.message, exc.exit_code)
