"""``plumctl health``: per-node status and the seed's score, one verdict, one exit code."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from plumctl import exitcodes
from plumctl.options import GlobalOptions, with_global_options

EXAMPLES = """**Examples**

  plumctl health                     # the --node only

  plumctl health --all -o json       # every member; gate a deploy on the exit code

  plumctl health --all --watch       # re-evaluate every --interval seconds

**Verdict**: Healthy when every node is; Unhealthy when a majority of the nodes asked
(or the only one) is; Degraded otherwise (a minority unhealthy or degraded, a member
failed or not answering). The score is the monitoring guide's Cluster Health Score,
min over nodes: clamp((eager_peers/3) x (1 - graft_failed_rate/(graft_sent_rate+0.001))).
"""


def register(app: typer.Typer) -> None:
    app.command(
        "health",
        help="Health of one node or the whole cluster: status, score, verdict.",
        epilog=EXAMPLES + "\n" + exitcodes.EPILOG,
        rich_help_panel="Inspect",
    )(with_global_options(health))


def health(
    ctx: typer.Context,
    everyone: Annotated[
        bool, typer.Option("--all", "-a", help="Every member, not just --node.")
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.1, max=300.0, help="Seconds between the two /metrics scrapes.")
    ] = 1.0,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Re-evaluate every --interval until Ctrl-C.")
    ] = False,
) -> None:
    import asyncio

    from plumctl.client import exit_on_error
    from plumctl.output import emit_json, emit_json_line

    opts: GlobalOptions = ctx.obj
    while True:
        with exit_on_error():
            result = asyncio.run(_evaluate(opts, everyone, interval))
        if opts.json:
            (emit_json_line if watch else emit_json)(result.as_dict())
        else:
            _render(result, opts.wide, clear=watch)
        if not watch:
            raise typer.Exit(result.exit_code)


async def _evaluate(opts: GlobalOptions, everyone: bool, interval: float) -> Any:
    import asyncio

    from plumctl.healthcheck import collect, verdict
    from plumctl.targets import resolve

    targets, _ = await asyncio.to_thread(resolve, opts, everyone)
    items = await collect(targets, opts.token, opts.timeout, interval)
    result = verdict(items, single=not everyone)
    result.interval = interval
    return result


_COLOUR = {"Healthy": "green", "Degraded": "yellow", "Unhealthy": "red", "Left": "dim"}


def _render(result: Any, wide: bool, clear: bool) -> None:
    from plumctl.output import stdout, table

    console = stdout()
    if clear and console.is_terminal:
        console.clear()
    t = table(
        "node", "status", "score", "message", *(("score reasons", "admin url") if wide else ())
    )
    for n in result.items:
        colour = _COLOUR.get(n.status, "red")
        score = "-" if n.score is None else f"{n.score:.2f}"
        cells = [n.node, f"[{colour}]{n.status}[/]", score, n.message]
        if wide:
            cells += ["; ".join(n.score_reasons) or "-", n.admin_url or "-"]
        t.add_row(*cells)
    console.print(t)
    colour = _COLOUR.get(result.status, "red")
    score = "unknown" if result.score is None else f"{result.score:.2f}"
    at = f" (lowest: {', '.join(result.worst)})" if result.worst else ""
    console.print(
        f"cluster: [{colour}]{result.status}[/] · score {score}{at} · {len(result.items)} nodes"
    )
    for reason in result.reasons[: 10 if not wide else None]:
        console.print(f"  - {reason}", markup=False)
