"""``plumctl broadcast``: send a payload through any node; optionally wait for everyone."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from plumctl import exitcodes
from plumctl.options import GlobalOptions, with_global_options

EXAMPLES = """Examples:

  plumctl broadcast 'deploy 42 done'          # prints the message id

  plumctl broadcast --file release.json --wait --timeout 10

  echo hello | plumctl broadcast - -o json

--wait follows delivery on every live member (progress on stderr; per-node delivery
times with -o json) and exits 0 once all delivered, 124 if --timeout passes first, 1
if a live member lost it (it gave up: no reachable member held it any more; -o json
lists them under "lost").
"""


def register(app: typer.Typer) -> None:
    app.command(
        "broadcast",
        help="Broadcast a payload to the whole cluster.",
        epilog=EXAMPLES + "\n" + exitcodes.EPILOG,
        rich_help_panel="Use",
    )(with_global_options(broadcast))


def broadcast(
    ctx: typer.Context,
    payload: Annotated[
        str | None, typer.Argument(help="Text to send, or '-' to read stdin.", show_default=False)
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Send this file's bytes.")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until every live member delivered it.")
    ] = False,
) -> None:
    from plumctl.client import Client, exit_on_error
    from plumctl.output import emit_json, fail

    opts: GlobalOptions = ctx.obj
    data = _payload(payload, file)
    with exit_on_error(), Client(opts.node, opts.token, opts.timeout) as client:
        sent = client.broadcast(data)
    msg_id = str(sent["id"])
    doc = {
        "kind": "Broadcast",
        "id": msg_id,
        "size": sent.get("size", len(data)),
        "node": opts.node,
    }
    if not wait:
        if opts.json:
            emit_json(doc)
        else:
            typer.echo(msg_id)
        return
    result = _wait(opts, msg_id)
    if opts.json:
        emit_json({**doc, **result})
    else:
        typer.echo(msg_id)
        _summary(result)
    if result["lost"]:
        waiting = result["members"] - result["delivered"] - len(result["lost"])
        fail(
            f"lost on {', '.join(result['lost'])} (no reachable member holds it any more); "
            f"delivered on {result['delivered']} of {result['members']} live members"
            + (
                f"; timed out after {opts.timeout:g}s waiting for {waiting} more" if waiting else ""
            ),
            exitcodes.FAILED,
        )
    if not result["complete"]:
        fail(
            f"timed out after {opts.timeout:g}s: delivered on {result['delivered']} of {result['members']} live members",
            exitcodes.TIMEOUT,
        )


def _payload(payload: str | None, file: Path | None) -> bytes:
    from plumctl.output import fail

    if file is not None and payload is not None:
        fail("give either PAYLOAD or --file, not both", exitcodes.USAGE)
    if file is not None:
        try:
            return file.read_bytes()
        except OSError as exc:
            fail(f"--file: {file}: {exc.strerror}", exitcodes.USAGE)
    if payload is None:
        fail("nothing to send: give PAYLOAD, --file F, or '-' for stdin", exitcodes.USAGE)
    if payload == "-":
        return sys.stdin.buffer.read()
    return payload.encode()


def _wait(opts: GlobalOptions, msg_id: str) -> dict[str, Any]:
    """Poll /v1/messages/{id} on every live member until all delivered or the timeout."""
    import asyncio

    from plumctl.client import exit_on_error
    from plumctl.targets import resolve

    with exit_on_error():
        targets, _ = resolve(opts, everyone=True)
    live = [t for t in targets if t.live and t.url]
    return asyncio.run(_follow(opts, msg_id, live))


async def _follow(opts: GlobalOptions, msg_id: str, live: list[Any]) -> dict[str, Any]:
    import asyncio
    import time

    from plumctl.client import AsyncClient, ClientError, fan_out, normalise_url
    from plumctl.output import stderr

    deadline = time.monotonic() + opts.timeout
    done: dict[str, dict[str, Any]] = {}
    lost: set[str] = set()  # gave it up: waiting longer would not bring it
    errors: dict[str, str] = {}

    async def ask(client: AsyncClient) -> dict[str, Any]:
        return await client.message(msg_id)

    progress = None
    task = None
    if not opts.json:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        progress = Progress(
            TextColumn("delivered on"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=stderr(),
            transient=True,
        )
        progress.start()
        task = progress.add_task("wait", total=len(live))
    try:
        while True:
            pending = [t for t in live if t.name not in done and t.name not in lost]
            left = deadline - time.monotonic()
            if not pending or left <= 0:
                break
            urls = [t.url for t in pending]
            results = await fan_out(
                urls, ask, token=opts.token, timeout=min(opts.timeout, max(left, 0.05))
            )
            for t in pending:
                r = results.get(normalise_url(t.url))
                if isinstance(r, ClientError):
                    errors[t.name] = str(r)
                elif r is not None and r.get("delivered"):
                    done[t.name] = r
                    errors.pop(t.name, None)
                elif r is not None and r.get("lost"):
                    lost.add(t.name)
                    errors.pop(t.name, None)
            if progress is not None and task is not None:
                progress.update(task, completed=len(done))
            if len(done) + len(lost) < len(live):
                await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    finally:
        if progress is not None:
            progress.stop()
    origin_at = min(
        (float(r["at"]) for r in done.values() if r.get("hops") == 0 and r.get("at")), default=None
    )
    items = []
    for t in live:
        r = done.get(t.name)
        at = None if r is None else r.get("at")
        items.append(
            {
                "node": t.name,
                "delivered": r is not None,
                "at": at,
                "latency_ms": None
                if at is None or origin_at is None
                else round(1000 * (float(at) - origin_at), 3),
                "hops": None if r is None else r.get("hops"),
                "from": None if r is None else r.get("from"),
                "lost": t.name in lost,
                "error": errors.get(t.name),
            }
        )
    return {
        "members": len(live),
        "delivered": len(done),
        "complete": len(done) == len(live),
        "lost": [t.name for t in live if t.name in lost],
        "items": items,
    }


def _summary(result: dict[str, Any]) -> None:
    from plumctl.output import plural, stderr

    lat = [i["latency_ms"] for i in result["items"] if i["latency_ms"] is not None]
    hops = [i["hops"] for i in result["items"] if i["hops"] is not None]
    if result["complete"]:
        stderr().print(
            f"delivered on all {plural(result['members'], 'live member')}"
            + (f" · last after {max(lat):.1f} ms" if lat else "")
            + (f" · max {plural(max(hops), 'hop')}" if hops else "")
        )
