"""``plumctl broadcast``: send a payload through any node; optionally wait for everyone."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from plumctl import exitcodes
from plumctl.options import GlobalOptions, with_global_options

EXAMPLES = """Examples:

  plumctl broadcast 'deploy 42 done'          # prints the message id

  plumctl broadcast --file release.json --wait --timeout 10

  echo hello | plumctl broadcast - -o json

--wait follows delivery on every live member (progress on stderr, counted as each
member delivers; per-node delivery times with -o json) and exits 0 once all delivered,
124 if --timeout passes first (naming the members that had not delivered; -o json lists
them under "missing"), 1 if a live member lost it (it gave up: no reachable member held
it any more; -o json lists them under "lost"). Ctrl-C prints the message id (the JSON
document with -o json) and exits 130.
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
    follow = Follow()  # from now on the message exists: Ctrl-C must still name it
    try:
        _wait(opts, msg_id, follow)
    except KeyboardInterrupt:
        # the message is sent whatever happens next: say which it is before leaving
        result = follow.result(interrupted=True)
        if opts.json:
            emit_json({**doc, **result})
        else:
            typer.echo(msg_id)
        fail(
            f"interrupted: delivered on {result['delivered']} of {result['members']} live"
            f" members so far (message {msg_id})",
            exitcodes.INTERRUPTED,
        )
    result = follow.result()
    if opts.json:
        emit_json({**doc, **result})
    else:
        typer.echo(msg_id)
        _summary(result)
    missing = ", ".join(result["missing"])
    if result["lost"]:
        fail(
            f"lost on {', '.join(result['lost'])} (no reachable member holds it any more); "
            f"delivered on {result['delivered']} of {result['members']} live members"
            + (f"; timed out after {opts.timeout:g}s waiting for {missing}" if missing else ""),
            exitcodes.FAILED,
        )
    if not result["complete"]:
        fail(
            f"timed out after {opts.timeout:g}s: delivered on {result['delivered']} of"
            f" {result['members']} live members; not on {missing}",
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


class Follow:
    """What ``--wait`` learnt so far, per member: kept outside the loop so that Ctrl-C
    can still report it."""

    def __init__(self) -> None:
        self.live: list[Any] = []  # targets, in the order the node listed them
        self.done: dict[str, dict[str, Any]] = {}
        self.lost: set[str] = set()  # gave it up: waiting longer would not bring it
        self.errors: dict[str, str] = {}
        self.sent = time.monotonic()  # when the node acknowledged the broadcast
        self.seen: dict[str, float] = {}  # seconds after ``sent`` plumctl saw each delivery

    def delivered(self, name: str, answer: dict[str, Any]) -> None:
        self.done[name] = answer
        self.seen[name] = time.monotonic() - self.sent

    def result(self, interrupted: bool = False) -> dict[str, Any]:
        done, lost = self.done, self.lost
        origin_at = min(
            (float(r["at"]) for r in done.values() if r.get("hops") == 0 and r.get("at")),
            default=None,
        )
        items = []
        for t in self.live:
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
                    "error": self.errors.get(t.name),
                    # when plumctl learnt it (after the send): a slow member delays no other
                    "seen_ms": None
                    if t.name not in self.seen
                    else round(1000 * self.seen[t.name], 1),
                }
            )
        result = {
            "members": len(self.live),
            "delivered": len(done),
            "complete": len(done) == len(self.live),
            "lost": [t.name for t in self.live if t.name in lost],
            # live members that neither delivered nor gave up: the ones a timeout waited for
            "missing": [t.name for t in self.live if t.name not in done and t.name not in lost],
            "items": items,
        }
        if interrupted:
            result["interrupted"] = True
        return result


def _wait(opts: GlobalOptions, msg_id: str, follow: Follow) -> None:
    """Follow delivery on every live member until all delivered or the timeout."""
    import asyncio

    from plumctl.client import exit_on_error
    from plumctl.targets import resolve

    with exit_on_error():
        targets, _ = resolve(opts, everyone=True)
    follow.live = [t for t in targets if t.live and t.url]
    asyncio.run(_follow(opts, msg_id, follow))


#: pause between two polls of one member that has not delivered yet
POLL = 0.05


async def _follow(opts: GlobalOptions, msg_id: str, follow: Follow) -> None:
    """One poller per member, side by side: a member that does not answer (stopped,
    overloaded) holds up only its own poller, never the count of the others."""
    import asyncio
    import time

    from plumctl.client import AsyncClient, ClientError, fan_out, normalise_url
    from plumctl.output import stderr

    deadline = time.monotonic() + opts.timeout
    names = {normalise_url(t.url): t.name for t in follow.live}
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
        task = progress.add_task("wait", total=len(follow.live))

    async def poll(client: AsyncClient) -> None:
        name = names[client.base_url]
        while (left := deadline - time.monotonic()) > 0:
            client.timeout = max(left, 0.05)  # one slow answer may take what is left
            try:
                r = await client.message(msg_id)
            except ClientError as exc:
                follow.errors[name] = str(exc)
            else:
                follow.errors.pop(name, None)
                if r.get("delivered"):
                    follow.delivered(name, r)
                    if progress is not None and task is not None:
                        progress.update(task, completed=len(follow.done))
                    return
                if r.get("lost"):
                    follow.lost.add(name)
                    return
            await asyncio.sleep(min(POLL, max(0.0, deadline - time.monotonic())))

    try:
        left = max(deadline - time.monotonic(), 0.05)
        results = await fan_out(list(names), poll, token=opts.token, timeout=left, deadline=left)
        for url, r in results.items():  # a poller cut off at the deadline: say why
            if isinstance(r, ClientError) and names.get(url) not in follow.done:
                follow.errors.setdefault(names.get(url, url), str(r))
    finally:
        if progress is not None:
            progress.stop()


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
