"""``plumctl monitor``: stream a node's protocol events (like ``serf monitor``), or with
``--deliveries`` its delivery log (``GET /v1/deliveries`` long polls, resumable by cursor)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from plumctl import exitcodes
from plumctl.options import GlobalOptions, completes, with_global_options

EXAMPLES = """Examples:

  plumctl monitor                     # joins, failures, promotions, Grafts, Prunes...

  plumctl monitor --level debug       # ...and every delivery

  plumctl monitor -o json | jq .      # one JSON object per line

  plumctl monitor --deliveries        # cursor id origin seq hops from

  plumctl monitor --deliveries --after 1041 --payload -o json

--deliveries reads the node's delivery log instead of its events: every delivery once,
in cursor order. Without --after it starts with the next delivery; --after CURSOR
resumes after the last cursor an application handled (above: 1041; 0 for all the log
still holds): nothing lost, nothing twice. A
warning on stderr says when deliveries can no longer be read (older than the node's
retention: `skipped`) and when the node restarted without its store (its log changed:
cursors started again at 1, and reading starts again from the first).

Runs until Ctrl-C (exit 0); exits 3 if the node goes away (with --deliveries: once it
has not answered for --timeout seconds).
"""

LEVELS = ("debug", "info", "warn", "error")
#: The node sends a heartbeat every 15 s; three missed ones mean it is gone.
SILENCE_LIMIT = 45.0


def register(app: typer.Typer) -> None:
    app.command(
        "monitor",
        help="Stream the node's events, or its delivery log (--deliveries), as lines or JSON lines.",
        epilog=EXAMPLES + "\n" + exitcodes.EPILOG,
        rich_help_panel="Inspect",
    )(with_global_options(monitor))


def monitor(
    ctx: typer.Context,
    level: Annotated[
        str,
        typer.Option(
            help="Least severe level shown: debug, info, warn, error.",
            autocompletion=completes(*LEVELS),
        ),
    ] = "info",
    since: Annotated[
        int | None, typer.Option(min=0, help="Replay buffered events after this sequence number.")
    ] = None,
    deliveries: Annotated[
        bool,
        typer.Option("--deliveries", help="Stream the node's delivery log instead of its events."),
    ] = False,
    after: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="CURSOR",
            help="With --deliveries: start after this cursor (0: all the log still holds).",
            show_default=False,
        ),
    ] = None,
    payload: Annotated[
        bool, typer.Option("--payload", help="With --deliveries: show each payload too.")
    ] = False,
) -> None:
    from plumctl.client import Client, StreamBroken, exit_on_error
    from plumctl.output import emit_json_line, fail

    opts: GlobalOptions = ctx.obj
    if not deliveries:
        for flag, value in (("--after", after is not None), ("--payload", payload)):
            if value:
                fail(f"{flag}: only with --deliveries", exitcodes.USAGE)
    else:
        for flag, given in (("--level", _given(ctx, "level")), ("--since", since is not None)):
            if given:
                fail(f"{flag}: not with --deliveries (it shows every delivery)", exitcodes.USAGE)
        try:
            _follow_deliveries(opts, after, payload)
        except KeyboardInterrupt:
            raise typer.Exit(exitcodes.OK) from None
        return
    if level not in LEVELS:
        fail(f"--level: expected one of {', '.join(LEVELS)}, got {level!r}", exitcodes.USAGE)
    try:
        with (
            exit_on_error(),
            Client(opts.node, opts.token, opts.timeout, stream_timeout=SILENCE_LIMIT) as client,
        ):
            for event in client.events(since=since, level=level):
                kind = event.get("kind")
                if kind == "heartbeat":
                    continue
                if kind == "stream_end":
                    fail(f"node at {opts.node} is shutting down", exitcodes.UNREACHABLE)
                if opts.json:
                    emit_json_line(event)
                else:
                    typer.echo(format_event(event))
            raise StreamBroken(f"node at {opts.node} closed the event stream", url=opts.node)
    except KeyboardInterrupt:
        raise typer.Exit(exitcodes.OK) from None


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)  # typer's vendored click: compare by name
    return source is not None and source.name != "DEFAULT"


#: Seconds one long poll of /v1/deliveries may wait for something new (the node allows
#: 60; deliveries after the cursor are answered at once). Short, because a node that
#: stops does not end the long polls it holds: they run out their wait, so a restart or
#: a node gone for good shows only when the poll in flight ends.
POLL_WAIT = 5.0
#: Deliveries asked for per poll.
POLL_LIMIT = 500


def _follow_deliveries(opts: GlobalOptions, after: int | None, payload: bool) -> None:
    """Poll ``/v1/deliveries`` after a cursor forever: print, warn, reconnect.

    A node that does not answer is asked again until it has been silent for --timeout
    seconds (a restart in between is survived, and its log change warned); then exit 3.
    """
    import time

    from plumctl.client import ApiError, Client, Unreachable, exit_on_error
    from plumctl.output import emit_json_line, plural, warn

    with exit_on_error(), Client(opts.node, opts.token, opts.timeout) as client:
        log: int | None = None
        cursor = after
        silent_since: float | None = None
        while True:
            try:
                if cursor is None:  # where the log ends now: one entry, no wait
                    page = client.deliveries(0, 1)
                else:
                    page = client.deliveries(cursor, POLL_LIMIT, POLL_WAIT, payload)
            except (Unreachable, ApiError) as exc:
                if isinstance(exc, ApiError) and exc.status != 503:
                    raise
                # not answering, or answering that it is shutting down (a restart)
                now = time.monotonic()
                silent_since = silent_since or now
                if now - silent_since >= opts.timeout:
                    raise
                time.sleep(min(0.25, opts.timeout))
                continue
            silent_since = None
            name = page.get("node", opts.node)
            if log is not None and page["log"] != log:
                warn(
                    f"{name}: the delivery log changed ({log} -> {page['log']}): the node "
                    "restarted without its store and its cursors started again at 1; "
                    "reading the new log from its start"
                )
                cursor = 0
                log = page["log"]
                continue
            log = page["log"]
            if cursor is None:  # no --after: start with the next delivery
                cursor = page["last"]
                continue
            if page["last"] < cursor:
                warn(
                    f"{name}: cursor {cursor} is past the last one of its delivery log "
                    f"({page['last']}): the node restarted without its store and its cursors "
                    "started again at 1; reading the log from its start"
                )
                cursor = 0
                continue
            if page["skipped"] > 0:
                warn(
                    f"{name}: {plural(page['skipped'], 'delivery', 'deliveries')} after cursor {cursor} can no "
                    f"longer be read (beyond the node's retention); continuing at cursor "
                    f"{page['first']}"
                )
                cursor = max(cursor, page["first"] - 1)
            if not page["items"] and page["last"] > cursor:
                time.sleep(0.5)  # the node says there is more but gives none: don't spin
            for item in page["items"]:
                if item["cursor"] <= cursor:
                    continue  # never twice
                cursor = item["cursor"]
                if opts.json:
                    emit_json_line(item)
                else:
                    typer.echo(format_delivery(item))


def format_delivery(item: dict[str, Any]) -> str:
    """``17 962e0ac6b1541f860000000000000003 node-0 3 1 node-2`` (+ the payload)."""
    line = (
        f"{item.get('cursor')} {item.get('id')} {item.get('origin')} {item.get('seq')} "
        f"{item.get('hops')} {item.get('from')}"
    )
    if "payload" in item:
        line += " " + _payload_text(item["payload"])
    return line


def _payload_text(encoded: Any) -> str:
    """A payload as one line: its text when it is UTF-8 (escaped), else hex."""
    import base64
    import binascii

    try:
        data = base64.b64decode(str(encoded), validate=True)
    except (binascii.Error, ValueError):
        return f"<bad base64 {str(encoded)[:40]!r}>"
    try:
        text = data.decode()
    except UnicodeDecodeError:
        shown = data[:64].hex()
        return f"0x{shown}" + ("…" if len(data) > 64 else "")
    return repr(text)


_SKIP = {"kind", "level", "at", "seq"}


def format_event(event: dict[str, Any]) -> str:
    """``12:00:01.234 INFO  member_failed  name=node-3 by=node-1``."""
    import time

    at = event.get("at")
    stamp = "--:--:--.---"
    if isinstance(at, int | float):
        stamp = time.strftime("%H:%M:%S", time.localtime(at)) + f".{int((at % 1) * 1000):03d}"
    fields = " ".join(f"{k}={_short(v)}" for k, v in event.items() if k not in _SKIP)
    return f"{stamp} {str(event.get('level', 'info')).upper():5} {event.get('kind', '?'):<18} {fields}".rstrip()


def _short(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value[:8]) + (",..." if len(value) > 8 else "")
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items()) or "{}"
    return str(value)
