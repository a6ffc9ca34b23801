"""``plumctl monitor``: stream a node's protocol events (like ``serf monitor``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from plumctl import exitcodes
from plumctl.options import GlobalOptions, with_global_options

EXAMPLES = """Examples:

  plumctl monitor                     # joins, failures, promotions, Grafts, Prunes...

  plumctl monitor --level debug       # ...and every delivery

  plumctl monitor -o json | jq .      # one JSON object per line

Runs until Ctrl-C (exit 0); exits 3 if the node goes away.
"""

LEVELS = ("debug", "info", "warn", "error")
#: The node sends a heartbeat every 15 s; three missed ones mean it is gone.
SILENCE_LIMIT = 45.0


def register(app: typer.Typer) -> None:
    app.command(
        "monitor",
        help="Stream the node's events as readable lines or JSON lines.",
        epilog=EXAMPLES + "\n" + exitcodes.EPILOG,
        rich_help_panel="Inspect",
    )(with_global_options(monitor))


def monitor(
    ctx: typer.Context,
    level: Annotated[
        str, typer.Option(help="Least severe level shown: debug, info, warn, error.")
    ] = "info",
    since: Annotated[
        int | None, typer.Option(min=0, help="Replay buffered events after this sequence number.")
    ] = None,
) -> None:
    from plumctl.client import Client, StreamBroken, exit_on_error
    from plumctl.output import emit_json_line, fail

    opts: GlobalOptions = ctx.obj
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
