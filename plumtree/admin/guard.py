"""Connection hygiene for the admin API: deadlines, a connection cap, quiet bad requests.

aiohttp's ``RequestHandler`` already closes a connection that waits for a request head
longer than its keep-alive timeout, counted from the connection's opening or from the end
of the previous answer (partial head bytes do not restart it). :class:`GuardedHandler`
adds what it lacks:

- a deadline on sending each answer (``body_timeout``): a client that asks and never
  reads is cut off rather than holding a busy connection for ever;
- a first-head deadline (``header_timeout``) shorter than the keep-alive one, so a
  silent or slow-header (slowloris) connection is closed within seconds;
- the connection cap: :class:`Guard` admits each new connection and, when more than
  ``max_connections`` are open, closes the oldest one still waiting for a request head
  (never one that is being answered, e.g. a ``/v1/events`` stream); when all are busy,
  the newcomer is closed instead. An attacker's idle connections thus make room for a
  real request instead of starving it;
- a body that turns malformed while its handler reads it (a bad chunk size) fails that
  read at once: aiohttp's parser drops the body without telling its reader, which would
  otherwise wait for the rest until the body deadline;
- malformed requests (bad request line, oversized header, broken chunked body) get a
  JSON 4xx and one WARNING line each, at most ``LOG_BURST`` per ``LOG_WINDOW`` seconds
  (the suppressed ones are counted in the next line): no traceback, no log flood.

Every refusal is counted by reason in :attr:`Guard.rejected` (``/metrics`` exports it as
``plumtree_admin_rejected_total``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler, RequestPayloadError, _ErrInfo

from plumtree.admin.limits import REASONS, ApiLimits

if TYPE_CHECKING:
    from aiohttp.web_request import BaseRequest

log = logging.getLogger("plumtree.admin")

#: At most this many malformed-request warnings per window; the rest are counted.
LOG_BURST = 10
LOG_WINDOW = 60.0

#: Most header lines in a request head (aiohttp's default is 128): with aiohttp's 8 KiB
#: per line, it bounds what one unfinished head may buffer.
MAX_HEADERS = 32


class QuietLog:
    """WARNING lines, at most ``burst`` per ``window`` seconds; the next line after a
    window with suppressed ones says how many were not logged. ``clock`` is passed in."""

    def __init__(
        self,
        logger: logging.Logger,
        clock: Callable[[], float],
        burst: int = LOG_BURST,
        window: float = LOG_WINDOW,
    ) -> None:
        self.logger = logger
        self.clock = clock
        self.burst = burst
        self.window = window
        self._started = -window
        self._logged = 0
        self.suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        now = self.clock()
        if now - self._started >= self.window:
            if self.suppressed:
                self.logger.warning(
                    "%d more malformed admin requests in the last %gs were not logged",
                    self.suppressed,
                    self.window,
                )
            self._started, self._logged, self.suppressed = now, 0, 0
        if self._logged < self.burst:
            self._logged += 1
            self.logger.warning(message, *args)
        else:
            self.suppressed += 1


class Guard:
    """The admin server's open connections (oldest first), its limits and its refusals."""

    def __init__(self, limits: ApiLimits, loop: asyncio.AbstractEventLoop) -> None:
        self.limits = limits
        self.loop = loop
        self.open: dict[GuardedHandler, None] = {}  # insertion order: oldest first
        self.rejected: Counter[str] = Counter({reason: 0 for reason in REASONS})
        self.bad_requests = QuietLog(log, loop.time)

    def admit(self, handler: GuardedHandler) -> bool:
        """Take ``handler``'s new connection in; False if it was refused (at the cap with
        every other connection busy). May close the oldest idle connection instead."""
        self.open[handler] = None
        if len(self.open) <= self.limits.max_connections:
            return True
        self.rejected["connection_limit"] += 1
        victim = next((h for h in self.open if h is not handler and h.idle), handler)
        self.forget(victim)
        victim.cut()
        return victim is not handler

    def forget(self, handler: GuardedHandler) -> None:
        self.open.pop(handler, None)

    def bad_request(self, remote: str | None, status: int, reason: str) -> None:
        self.rejected["bad_request"] += 1
        self.bad_requests.warning(
            "admin API: malformed request from %s answered %d: %s", remote or "?", status, reason
        )


class GuardedHandler(RequestHandler):
    """aiohttp's connection protocol with a first-head deadline, the cap and quiet errors."""

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = manager.guard
        self._head_deadline: asyncio.TimerHandle | None = None

    @property
    def idle(self) -> bool:
        """Waiting for a request head (not answering one)."""
        return not self._request_in_progress and not self._force_close

    def cut(self) -> None:
        """Close now, dropping unsent bytes: ``force_close`` alone waits for a write buffer
        to drain, for ever if the client stopped reading."""
        if self.transport is not None:
            self.transport.abort()
        self.force_close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.guard.admit(self):
            self._head_deadline = self._loop.call_later(
                self.guard.limits.header_timeout, self._head_overdue
            )

    def connection_lost(self, exc: BaseException | None) -> None:
        self.guard.forget(self)
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        queued = len(self._messages)
        super().data_received(data)
        current = self._current_request
        if current is not None and len(self._messages) > queued:
            refused = self._messages[-1][0]
            if isinstance(refused, _ErrInfo):  # the parser gave up inside current's body
                current.content.set_exception(RequestPayloadError(refused.message))

    def _head_overdue(self) -> None:
        self._head_deadline = None
        # _request_count counts the request heads parsed on this connection so far
        if self._request_count == 0 and self.transport is not None:
            self.guard.rejected["header_timeout"] += 1
            self.cut()

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        """Send the answer, but wait at most ``body_timeout`` for a client to take it: one
        that asks and never reads would otherwise hold its connection (busy, so neither
        idle nor evictable) for ever."""
        try:
            async with asyncio.timeout(self.guard.limits.body_timeout):
                return await super().finish_response(request, resp, start_time)
        except TimeoutError:
            self.guard.rejected["write_timeout"] += 1
            self.cut()
            return resp, True

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answers what aiohttp's parser refused: JSON, one rate-limited WARNING line."""
        if status >= 500:
            return super().handle_error(request, status, exc, message)  # a bug: keep it loud
        from plumtree.admin.server import error

        reason = _one_line(getattr(exc, "message", None) or message or str(exc or status))
        self.guard.bad_request(request.remote, status, reason)
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had started: the connection is closed")
        answer = error(status, "bad request" if status == 400 else "request refused", reason)
        answer.force_close()
        return answer


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class GuardedServer(web.Server):
    """``web.Server`` whose connections are :class:`GuardedHandler` s sharing one Guard."""

    def __init__(self, handler: Any, *, guard: Guard, **kwargs: Any) -> None:
        limits = guard.limits
        kwargs.setdefault("keepalive_timeout", limits.idle_timeout)
        kwargs.setdefault("max_headers", MAX_HEADERS)
        super().__init__(handler, **kwargs)
        self.guard = guard

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, **self._kwargs)
