"""Where ``plumctl top`` gets its data: a :class:`ClusterSource` yields snapshots.

A snapshot is what one poll saw: the member table of one reachable node, then for every
alive or suspect member its ``/metrics`` scrape and ``/v1/health`` (and, optionally,
``/v1/peers``), fetched in parallel, each node bounded by a deadline, over ONE shared
``httpx.AsyncClient`` that lives as long as the source is open. A node that does not
answer becomes an error entry of the snapshot, never an exception; only "no node answers
the member table" raises (:class:`~plumctl.client.Unreachable`, exit code 3).

The source is injected into the app, so tests feed scripted snapshots (no network, no
wall clock) through the same :class:`ClusterSource` protocol.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlencode

import httpx

from plumctl.client import (
    METRICS_ACCEPT,
    AsyncClient,
    ClientError,
    Unreachable,
    _check_status,
    _http_settings,
    _parse_scrape,
    _unreachable,
    _verify,
    normalise_url,
)
from plumctl.promtext import Scrape
from plumctl.tui.keepalive import KeepAlivePool, handles, origin_of, request_head

__all__ = [
    "DASHBOARD_NAMES",
    "SCRAPE_NAMES",
    "ClusterSnapshot",
    "ClusterSource",
    "HttpSource",
    "Member",
    "NodeDetail",
    "NodeSample",
]

T = TypeVar("T")

#: Member states whose node is asked for metrics (a dead or left node is not: it would
#: only cost a timeout per poll).
POLLED_STATES = frozenset({"alive", "suspect"})
#: How many events the detail pane shows, and the least severe level (no deliveries).
DETAIL_EVENTS = 50
DETAIL_LEVEL = "info"
#: The node's /v1/health verdict as a state set in its scrape (``status`` label, value 1).
HEALTH_METRIC = "plumtree_health_status"
#: 1 on a node whose gossip is reachable and unauthenticated (``--insecure-gossip``).
INSECURE_METRIC = "plumtree_gossip_insecure"
#: The samples ``top`` reads: those of :func:`plumctl.scoring.key_queries` and
#: :func:`~plumctl.scoring.health_score`, and the health status. Asked for with
#: ``/metrics?name[]=...`` (a node that ignores the filter just sends everything), so
#: nodes render and the CLI parses about a third of the exposition.
SCRAPE_NAMES: tuple[str, ...] = (
    "plumtree_messages_delivered_total",
    "plumtree_messages_broadcast_total",
    "plumtree_messages_duplicate_total",
    "plumtree_graft_sent_total",
    "plumtree_graft_failed_total",
    "plumtree_graft_success_total",
    "plumtree_eager_peers",
    "plumtree_lazy_peers",
    "plumtree_total_peers",
    "plumtree_cache_size",
    "plumtree_cache_capacity",
    "plumtree_pending_grafts",
    "plumtree_graft_latency_seconds_bucket",
    "plumtree_message_hops_bucket",
    HEALTH_METRIC,
    INSECURE_METRIC,
)
#: What the dashboard reads (its table, the score, the detail pane): :data:`SCRAPE_NAMES`
#: without the histogram buckets, which only feed the quantiles of ``top -o json``
#: (Graft latency p99, hops p50/p99). A third of each scrape, and of its parsing.
DASHBOARD_NAMES: tuple[str, ...] = tuple(n for n in SCRAPE_NAMES if not n.endswith("_bucket"))


def health_from_scrape(scrape: Scrape) -> dict[str, Any] | None:
    """``{"status": ...}`` from :data:`HEALTH_METRIC`, or ``None`` if the node lacks it."""
    for labels, value in scrape.series(HEALTH_METRIC).items():
        if value == 1:
            status = dict(labels).get("status")
            if status:
                return {"status": status, "message": None}
    return None


@dataclass(frozen=True, slots=True)
class Member:
    """One row of the SWIM member table, as ``/v1/members`` gives it."""

    name: str
    state: str  # alive | suspect | dead | left
    admin_url: str | None = None
    addr: str | None = None
    incarnation: int | None = None

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> Member:
        admin = item.get("admin_url")
        inc = item.get("incarnation")
        return cls(
            name=str(item.get("name", "?")),
            state=str(item.get("state", "unknown")),
            admin_url=str(admin) if admin else None,
            addr=str(item["addr"]) if item.get("addr") else None,
            incarnation=inc if isinstance(inc, int) else None,
        )


@dataclass(frozen=True, slots=True)
class NodeSample:
    """What one node answered in one poll, or why it did not (``error``)."""

    name: str
    url: str | None
    scrape: Scrape | None = None
    health: Mapping[str, Any] | None = None  # the /v1/health body: status, message, components
    peers: Sequence[Mapping[str, Any]] | None = None  # /v1/peers items, when fetched
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.scrape is not None


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """One poll of the cluster. ``at`` is a monotonic clock reading (seconds)."""

    at: float
    via: str  # admin URL of the node whose member table this is
    members: Sequence[Member]
    nodes: Mapping[str, NodeSample] = field(default_factory=dict)  # by member name
    label: str = ""  # cluster label ("" when the cluster has none)


@dataclass(frozen=True, slots=True)
class NodeDetail:
    """The detail pane of one node: its peers, recent events and health report."""

    name: str
    url: str | None
    peers: Sequence[Mapping[str, Any]] | None = None
    events: Sequence[Mapping[str, Any]] | None = None
    health: Mapping[str, Any] | None = None
    errors: Sequence[str] = ()


@runtime_checkable
class ClusterSource(Protocol):
    """What the app needs from a data source. ``open``/``close`` may be called twice."""

    @property
    def describe(self) -> str:
        """Where the data comes from, for the header ("http://127.0.0.1:7947")."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def poll(self) -> ClusterSnapshot:
        """One snapshot; raises a ClientError only when no node answers at all."""
        ...

    async def detail(self, name: str) -> NodeDetail:
        """Peers, recent events and health of one member; failures go to ``errors``."""
        ...


class HttpSource:
    """The real source: a node's admin API, over one shared ``httpx.AsyncClient``.

    ``timeout`` bounds every request and each node's whole poll (so one silent node
    costs at most ``timeout`` and never delays the others).

    One request per node and poll: ``/metrics`` restricted to ``names`` (default
    :data:`SCRAPE_NAMES`; the dashboard asks for :data:`DASHBOARD_NAMES`), whose
    :data:`HEALTH_METRIC` carries the node's health status (HTTP requests are most of the
    CLI's CPU per poll). ``health=True`` also asks ``/v1/health`` (for its message and
    components), as does a node whose scrape has no health status (an older node).
    ``peers=True`` also fetches ``/v1/peers`` (the table does not need it: eager and lazy
    counts are gauges; the detail pane fetches peers itself).
    """

    def __init__(
        self,
        node: str,
        token: str | None = None,
        timeout: float = 2.0,
        *,
        peers: bool = False,
        health: bool = False,
        limit: int = 64,
        names: Sequence[str] = SCRAPE_NAMES,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seed = normalise_url(node)
        self.token = token
        self.timeout = timeout
        self.fetch_peers = peers
        self.fetch_health = health
        self.limit = max(1, limit)
        self.names = tuple(names)
        self._transport = transport
        self._clock = clock
        self._http: httpx.AsyncClient | None = None
        self._clients: dict[str, _NodeClient] = {}
        self._via = self.seed
        self._fallbacks: list[str] = []  # admin URLs of members seen alive last time
        self._urls: dict[str, str] = {}  # member name -> admin URL, last seen
        self._labels: dict[str, str] = {}  # via URL -> cluster label
        self._gate: asyncio.Semaphore | None = None

    @property
    def describe(self) -> str:
        return self._via

    async def open(self) -> None:
        if self._http is not None:
            return
        _skip_sniffio_probe()
        verify = _verify([self.seed], True)
        transport = self._transport or PerNodeTransport(verify=verify)
        self._http = httpx.AsyncClient(
            **_http_settings([self.seed], self.timeout, verify, False, transport)
        )
        self._gate = asyncio.Semaphore(self.limit)

    async def close(self) -> None:
        http, self._http = self._http, None
        self._clients.clear()
        if http is not None:
            await http.aclose()

    async def __aenter__(self) -> HttpSource:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- polling ------------------------------------------------------------------------

    def _client(self, url: str) -> _NodeClient:
        client = self._clients.get(url)
        if client is None:
            if self._http is None:
                raise RuntimeError("HttpSource used before open()")
            transport = self._http._transport  # the one open() built, or the injected one
            plain = transport.plain if isinstance(transport, PerNodeTransport) else None
            client = _NodeClient(url, self.token, self.timeout, http=self._http, plain=plain)
            self._clients[url] = client
        return client

    async def _bounded(self, call: Awaitable[T], url: str) -> T:
        """``call`` within the per-node deadline; an overrun is Unreachable."""
        try:
            async with asyncio.timeout(self.timeout):
                return await call
        except TimeoutError:
            raise Unreachable(
                f"cannot reach node at {url}: no complete answer within {self.timeout:g}s",
                url=url,
            ) from None

    async def _members(self) -> tuple[str, list[dict[str, Any]]]:
        """The member table from the last good node, else the seed, else any member."""
        first = [self._via] if self._via == self.seed else [self._via, self.seed]
        errors: list[ClientError] = []
        for url in first:
            try:
                doc = await self._bounded(self._client(url).members(), url)
                return url, doc["items"]
            except ClientError as exc:
                errors.append(exc)
        # the node we were watching through went away: ask the others at once
        others = [u for u in self._fallbacks if u not in first][:8]
        if others:

            async def ask(url: str) -> tuple[str, list[dict[str, Any]]]:
                doc = await self._bounded(self._client(url).members(), url)
                return url, doc["items"]

            tasks = [asyncio.ensure_future(ask(u)) for u in others]
            try:
                for done in asyncio.as_completed(tasks):
                    try:
                        return await done
                    except ClientError as exc:
                        errors.append(exc)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        raise errors[0]

    async def _label(self, via: str) -> str:
        if via not in self._labels:
            try:
                status = await self._bounded(self._client(via).status(), via)
            except ClientError:
                return ""
            self._labels[via] = str(status.get("cluster_label") or "")
        return self._labels[via]

    async def _sample(self, member: Member) -> NodeSample:
        url = member.admin_url
        if url is None:
            return NodeSample(member.name, None, error="no admin URL advertised")
        assert self._gate is not None
        client = self._client(url)

        async def fetch() -> NodeSample:
            calls: list[Awaitable[Any]] = [client.scrape_names(self.names)]
            if self.fetch_health:
                calls.append(client.health())
            if self.fetch_peers:
                calls.append(client.peers())
            # the usual case is one request: no task for it
            results = [await calls[0]] if len(calls) == 1 else list(await asyncio.gather(*calls))
            scrape: Scrape = results.pop(0)
            health = results.pop(0)[0] if self.fetch_health else health_from_scrape(scrape)
            if health is None:  # a node without the health metric: ask it
                health, _code = await client.health()
            peers = results.pop(0)["items"] if self.fetch_peers else None
            return NodeSample(member.name, url, scrape=scrape, health=health, peers=peers)

        async with self._gate:
            try:
                return await self._bounded(fetch(), url)
            except ClientError as exc:
                return NodeSample(member.name, url, error=exc.message)

    async def poll(self) -> ClusterSnapshot:
        at = self._clock()
        via, items = await self._members()
        members = [Member.from_api(i) for i in items if isinstance(i, dict)]
        self._via = via
        polled = [m for m in members if m.state in POLLED_STATES]
        label, samples = await asyncio.gather(
            self._label(via), asyncio.gather(*(self._sample(m) for m in polled))
        )
        self._fallbacks = [m.admin_url for m in polled if m.admin_url]
        self._urls.update({m.name: m.admin_url for m in members if m.admin_url})
        return ClusterSnapshot(
            at=at,
            via=via,
            members=tuple(members),
            nodes=MappingProxyType({s.name: s for s in samples}),
            label=label,
        )

    # -- detail -------------------------------------------------------------------------

    async def detail(self, name: str) -> NodeDetail:
        url = self._urls.get(name)
        if url is None:
            return NodeDetail(name, None, errors=(f"{name}: no admin URL known",))
        client = self._client(url)

        async def health() -> dict[str, Any]:
            body, _code = await client.health()
            return body

        calls: dict[str, Awaitable[dict[str, Any]]] = {
            "peers": client.peers(),
            "events": client.recent_events(DETAIL_EVENTS, DETAIL_LEVEL),
            "health": health(),
        }
        keys = list(calls)
        results = await asyncio.gather(
            *(self._bounded(c, url) for c in calls.values()), return_exceptions=True
        )
        got: dict[str, Any] = {}
        errors: list[str] = []
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, ClientError):
                errors.append(f"{key}: {result.message}")
            elif isinstance(result, BaseException):
                raise result
            else:
                got[key] = result
        return NodeDetail(
            name,
            url,
            peers=got["peers"]["items"] if "peers" in got else None,
            events=got["events"]["items"] if "events" in got else None,
            health=got.get("health"),
            errors=tuple(errors),
        )


class PerNodeTransport(httpx.AsyncBaseTransport):
    """The shared client's transport: one small connection pool per node (origin).

    httpcore's pool looks at every pooled connection (a syscall or two each) whenever a
    request is queued or finished, so one pool for N nodes polled at once costs O(N²)
    per poll; one pool per node keeps it O(N). Same client, same timeouts, same errors.
    """

    def __init__(self, *, verify: ssl.SSLContext | bool, per_node: int = 4) -> None:
        self._verify = verify
        self._limits = httpx.Limits(max_connections=per_node, max_keepalive_connections=per_node)
        self._pools: dict[tuple[bytes, bytes, int | None], httpx.AsyncHTTPTransport] = {}
        #: the plain-http GETs (see :func:`handles`); ``top``'s scrapes use it directly
        self.plain = KeepAlivePool()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if handles(request):  # every request of a poll: httpcore is not even imported
            return await self.plain.handle(request)
        url = request.url
        key = (url.raw_scheme, url.raw_host, url.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = httpx.AsyncHTTPTransport(
                verify=self._verify, limits=self._limits, trust_env=False
            )
        return await pool.handle_async_request(request)

    async def aclose(self) -> None:
        await self.plain.aclose()
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()


class _NodeClient(AsyncClient):
    """:class:`~plumctl.client.AsyncClient` plus the two requests ``top`` adds.

    With ``plain`` (the shared transport's keep-alive pool), the per-poll scrape skips
    httpx's client layers (request building, header merging, auth and redirect
    handling, charset sniffing: half of a scrape's CPU) and sends a request head built
    once; answers and errors are read exactly as :meth:`_send` reads them.

    Candidates for ``plumctl/client.py`` itself; kept here to stay out of its way.
    """

    _parsed: dict[str, httpx.URL]

    def __init__(self, *args: Any, plain: KeepAlivePool | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plain = plain
        #: path -> (request, its head bytes, origin): built on first use
        self._prebuilt: dict[str, tuple[httpx.Request, bytes, tuple[str, int]]] = {}

    def _url(self, path: str) -> httpx.URL:  # type: ignore[override]
        """The request URL, parsed once per path (httpx re-validates a string every time,
        character by character: a tenth of a scrape's CPU with the long name[] query)."""
        try:
            cache = self._parsed
        except AttributeError:
            cache = self._parsed = {}
        url = cache.get(path)
        if url is None:
            url = cache[path] = httpx.URL(self.base_url + path)
        return url

    async def scrape_names(self, names: Sequence[str]) -> Scrape:
        """``GET /metrics?name[]=...``: only those samples, stamped like ``scrape()``."""
        key = tuple(names)
        query = _QUERIES.get(key)
        if query is None:
            query = _QUERIES[key] = urlencode([("name[]", n) for n in names])
        path = f"/metrics?{query}"
        at = time.monotonic()
        if self._plain is None or not self.base_url.startswith("http://"):
            response = await self._send("GET", path, accept=METRICS_ACCEPT)
            return _parse_scrape(response.text, at, self.base_url)
        return _parse_scrape(await self._get_plain(path), at, self.base_url)

    async def _get_plain(self, path: str) -> str:
        """The body of a plain-http GET through the keep-alive pool, as ``_send`` would
        have it (same headers, same error mapping; no redirects followed)."""
        assert self._plain is not None
        prebuilt = self._prebuilt.get(path)
        if prebuilt is None:
            request = self._http.build_request(
                "GET", self._url(path), headers={**self._headers, "Accept": METRICS_ACCEPT}
            )
            prebuilt = (request, request_head(request), origin_of(request.url))
            self._prebuilt[path] = prebuilt
        request, head, origin = prebuilt
        try:
            status, headers, body = await self._plain.get(origin, head)
        except httpx.HTTPError as exc:
            raise _unreachable(exc, self.base_url, self.timeout) from exc
        if not 200 <= status < 300:
            _check_status(
                httpx.Response(status, headers=headers, content=body, request=request),
                self.base_url,
            )
        return body.decode("utf-8", errors="replace")  # the text format is UTF-8

    async def recent_events(self, limit: int, level: str = "debug") -> dict[str, Any]:
        """``GET /v1/events?recent=N&level=L``: the node's last events as one JSON list.

        A node older than that endpoint streams instead; the caller's deadline cuts it.
        """
        return await self._get_json(f"/v1/events?recent={limit}&level={level}", ("items",))


_QUERIES: dict[tuple[str, ...], str] = {}


def _skip_sniffio_probe() -> None:
    """Record a missing ``sniffio`` as missing, once.

    httpcore runs ``import sniffio`` on every request to learn the async library; when
    sniffio is not installed each attempt searches ``sys.path`` again (about a tenth of
    the CLI's CPU per scrape, measured with ``bench/tui.py``). ``None`` in ``sys.modules``
    makes that import fail at once, exactly as it would anyway.
    """
    import importlib.util
    import sys

    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]
