"""Event handlers: a shell command run per delivery or membership change, as serf's.

``--handler [FILTER=]CMD`` (or ``node.handlers``) names a command and the events it wants
(``delivery``, ``member-join``, ``member-leave``, ``member-failed``, ``member-update``,
``member-reap``; ``*`` or no filter: all). Each event becomes one run of
``/bin/sh -c CMD`` with the event's payload on stdin (a delivery's bytes; for a member
event one line ``name<TAB>addr<TAB>state<TAB>k=v,...``) and the event in ``PLUMTREE_*``
environment variables (``ENV_VARS`` lists them).

Invariants: the node's event loop never waits on a handler (``offer`` only appends to a
queue); each handler runs one command at a time, in event order, from its own bounded
queue (full: the event is dropped and counted); a run longer than the time limit has its
whole process group killed (the command runs in a session of its own) and counts as a
timeout; a non-zero exit counts as a failure. Failures and timeouts are logged at WARNING,
at most one line per handler per ``LOG_INTERVAL`` (with how many were not logged).
Output is read bounded (``OUTPUT_LIMIT``) so a chatty command cannot grow the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import time
from collections import deque
from dataclasses import dataclass, field

log = logging.getLogger("plumtree.handlers")

#: Event names a filter may use (serf's, plus ``delivery`` for a broadcast received).
EVENTS = (
    "delivery",
    "member-join",
    "member-leave",
    "member-failed",
    "member-update",
    "member-reap",
    "query",
)
#: Environment variables a handler gets (those of other events are unset).
ENV_VARS = {
    "PLUMTREE_EVENT": "the event: one of EVENTS",
    "PLUMTREE_SELF_NAME": "this node's name",
    "PLUMTREE_SELF_ADDR": "this node's gossip address",
    "PLUMTREE_TAG_<KEY>": "this node's tags (key upper-cased, - and . as _)",
    "PLUMTREE_ORIGIN": "delivery: the member that broadcast it",
    "PLUMTREE_MESSAGE_ID": "delivery: the message id (hex)",
    "PLUMTREE_CURSOR": "delivery: this node's delivery number (resume after it)",
    "PLUMTREE_SENDER": "delivery: the peer it came from",
    "PLUMTREE_HOPS": "delivery: hops from the origin",
    "PLUMTREE_MEMBER_NAME": "member-*: the member",
    "PLUMTREE_MEMBER_ADDR": "member-*: its gossip address (empty if forgotten)",
    "PLUMTREE_MEMBER_STATE": "member-*: alive, suspect, dead or left (empty once reaped)",
    "PLUMTREE_QUERY_NAME": "query: its name",
    "PLUMTREE_QUERY_ID": "query: its id (hex)",
    "PLUMTREE_QUERY_ORIGIN": "query: the member that asked",
}
#: Seconds a run may take unless configured (``node.handler_timeout``).
DEFAULT_TIMEOUT = 30.0
#: Events waiting per handler unless configured (``node.handler_queue``).
DEFAULT_QUEUE = 256
#: Bytes of a command's stdout (and stderr) kept; the rest is read and discarded.
OUTPUT_LIMIT = 1024
#: At most one WARNING line per handler per this many seconds.
LOG_INTERVAL = 10.0

# a filter is lower-case event names (``query:NAME`` too), commas and '*' before the
# first '=' (so that ``FOO=1 ./x.sh``, a command with an assignment, is a command)
_TOKEN = r"(?:[a-z*][a-z*-]*(?::[A-Za-z0-9_.-]+)?)"
_FILTER = re.compile(rf"{_TOKEN}(?:,{_TOKEN})*")
#: A query's name (``plumctl query NAME``).
QUERY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One ``--handler``: the events it wants (None: all) and its command."""

    events: frozenset[str] | None
    command: str

    def wants(self, event: str, query: str = "") -> bool:
        """``query``: the query's name (``query:NAME`` filters want only that one)."""
        events = self.events
        if events is None or event in events:
            return True
        return event == "query" and f"query:{query}" in events


def parse_handler(text: str) -> HandlerSpec:
    """``[EVENT,EVENT...=]CMD`` into a spec; ValueError names what is wrong."""
    head, sep, rest = text.partition("=")
    if sep and _FILTER.fullmatch(head):
        names = [n for n in head.split(",") if n]
        unknown = [n for n in names if n != "*" and n not in EVENTS and not n.startswith("query:")]
        if unknown:
            raise ValueError(
                f"--handler {text!r}: unknown event {unknown[0]!r} (known: {', '.join(EVENTS)}, *)"
            )
        command = rest.strip()
        events = None if "*" in names or not names else frozenset(names)
    else:
        command, events = text.strip(), None
    if not command:
        raise ValueError(f"--handler {text!r}: no command")
    return HandlerSpec(events, command)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended: a query's response is ``output`` when ``ok``."""

    ok: bool
    output: bytes
    error: str = ""


@dataclass(slots=True)
class Job:
    event: str
    env: dict[str, str]
    payload: bytes
    #: a query's: told how the run ended (whatever happened to it)
    reply: asyncio.Future[Outcome] | None = None


@dataclass(slots=True)
class Stats:
    """Totals over every handler of the node (the ``plumtree_handler_*`` counters)."""

    runs: int = 0
    failures: int = 0
    timeouts: int = 0
    dropped: int = 0


@dataclass(slots=True)
class _Runner:
    spec: HandlerSpec
    queue: deque[Job] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    pgid: int | None = None
    unlogged: int = 0
    logged_at: float = float("-inf")


class Handlers:
    """The node's handlers: ``offer`` an event, each interested handler runs it in turn."""

    def __init__(
        self,
        specs: list[HandlerSpec],
        timeout: float = DEFAULT_TIMEOUT,
        queue_limit: int = DEFAULT_QUEUE,
    ) -> None:
        self._runners = [_Runner(s) for s in specs]
        self.timeout = timeout
        self.queue_limit = queue_limit
        self.stats = Stats()
        self._closed = False

    def __bool__(self) -> bool:
        return bool(self._runners)

    def wants(self, event: str, query: str = "") -> bool:
        return any(r.spec.wants(event, query) for r in self._runners)

    def offer(
        self, event: str, env: dict[str, str], payload: bytes, query: str = ""
    ) -> asyncio.Future[Outcome] | None:
        """Queue ``event`` for every handler that wants it (never waits). For a query:
        a future of the first such handler's outcome (None: no handler wants it)."""
        if self._closed:
            return None
        reply: asyncio.Future[Outcome] | None = None
        for runner in self._runners:
            if not runner.spec.wants(event, query):
                continue
            job = Job(event, env, payload)
            if event == "query" and reply is None:
                reply = job.reply = asyncio.get_running_loop().create_future()
            if len(runner.queue) >= self.queue_limit:
                self.stats.dropped += 1
                self._warn(runner, f"queue full ({self.queue_limit} events): dropped a {event}")
                _settle(job, Outcome(False, b"", "handler queue full: dropped"))
                continue
            runner.queue.append(job)
            if runner.task is None:
                runner.task = asyncio.get_running_loop().create_task(self._work(runner))
            runner.wake.set()
        return reply

    async def close(self) -> None:
        """Stop every handler: the running commands' process groups are killed."""
        self._closed = True
        tasks = []
        for runner in self._runners:
            for job in runner.queue:
                _settle(job, Outcome(False, b"", "node stopping"))
            runner.queue.clear()
            _kill(runner.pgid)
            if runner.task is not None:
                runner.task.cancel()
                tasks.append(runner.task)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _work(self, runner: _Runner) -> None:
        while True:
            while not runner.queue:
                runner.wake.clear()
                await runner.wake.wait()
            job = runner.queue.popleft()
            try:
                _settle(job, await self._run(runner, job))
            except asyncio.CancelledError:
                _settle(job, Outcome(False, b"", "node stopping"))
                raise
            except Exception as exc:  # (a fork that failed: too many processes, ...)
                self.stats.failures += 1
                self._warn(runner, f"{job.event}: could not run: {exc}")
                _settle(job, Outcome(False, b"", f"could not run: {exc}"))

    async def _run(self, runner: _Runner, job: Job) -> Outcome:
        env = {**os.environ, **job.env, "PLUMTREE_EVENT": job.event}
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            runner.spec.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # its own process group: a timeout kills all of it
        )
        runner.pgid = proc.pid
        self.stats.runs += 1
        try:
            out, err, code = await asyncio.wait_for(_converse(proc, job.payload), self.timeout)
        except TimeoutError:
            _kill(proc.pid)
            await proc.wait()
            self.stats.timeouts += 1
            self._warn(runner, f"{job.event}: killed after {self.timeout:g}s")
            return Outcome(False, b"", f"handler killed after {self.timeout:g}s")
        except asyncio.CancelledError:
            _kill(proc.pid)
            await proc.wait()  # (reaped, its pipes closed: nothing left to the loop's end)
            raise
        finally:
            runner.pgid = None
        if code != 0:
            self.stats.failures += 1
            detail = err.decode("utf-8", "replace").strip().splitlines()
            why = f"exit {code}" + (f": {detail[-1][:200]}" if detail else "")
            self._warn(runner, f"{job.event}: {why}")
            return Outcome(False, out, f"handler {why}")
        if out:
            log.debug("handler %r: %s", runner.spec.command, out[:200])
        return Outcome(True, out)

    def _warn(self, runner: _Runner, what: str) -> None:
        """One WARNING per handler per LOG_INTERVAL; the others are counted in it."""
        now = time.monotonic()
        if now - runner.logged_at < LOG_INTERVAL:
            runner.unlogged += 1
            return
        more = (
            f" ({runner.unlogged} more problems since the last report)" if runner.unlogged else ""
        )
        log.warning(
            "handler %r: %s%s",
            runner.spec.command,
            what,
            more,
            extra={"fields": {"handler": runner.spec.command, "suppressed": runner.unlogged}},
        )
        runner.unlogged = 0
        runner.logged_at = now


async def _converse(proc: asyncio.subprocess.Process, payload: bytes) -> tuple[bytes, bytes, int]:
    """Feed ``payload`` to stdin, read stdout and stderr bounded, wait for the exit."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None

    async def feed() -> None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(payload)
            await proc.stdin.drain()
        proc.stdin.close()

    out, err, _ = await asyncio.gather(_bounded(proc.stdout), _bounded(proc.stderr), feed())
    code = await proc.wait()
    return out, err, code


async def _bounded(stream: asyncio.StreamReader) -> bytes:
    kept = b""
    while chunk := await stream.read(65536):
        if len(kept) < OUTPUT_LIMIT:
            kept += chunk[: OUTPUT_LIMIT - len(kept)]
    return kept


def _settle(job: Job, outcome: Outcome) -> None:
    if job.reply is not None and not job.reply.done():
        job.reply.set_result(outcome)


def _kill(pgid: int | None) -> None:
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def tag_env(tags: dict[str, str]) -> dict[str, str]:
    """``PLUMTREE_TAG_<KEY>`` for each tag (serf's SERF_TAG_*)."""
    return {"PLUMTREE_TAG_" + re.sub(r"[^A-Z0-9_]", "_", k.upper()): v for k, v in tags.items()}


def member_line(name: str, addr: str, state: str, tags: dict[str, str]) -> bytes:
    """A member event's stdin: ``name<TAB>addr<TAB>state<TAB>k=v,k=v`` and a newline."""
    pairs = ",".join(f"{k}={v}" for k, v in sorted(tags.items()))
    return f"{name}\t{addr}\t{state}\t{pairs}\n".encode()
