"""``plumctl top``: a live Textual dashboard of every member reachable through ``--node``.

Textual is imported inside the command only, so ``import plumctl.cli`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from plumctl import exitcodes
from plumctl.options import with_global_options

if TYPE_CHECKING:
    from plumctl.options import GlobalOptions
    from plumctl.tui.app import TopApp
    from plumctl.tui.source import ClusterSnapshot, ClusterSource

HELP = """Live dashboard of the cluster: every member, its eager/lazy peers, delivered/s, duplicate %, Grafts sent/s and failures/min, pending Grafts, cache use, health and the monitoring guide's health score, refreshed every --interval seconds. Cells turn warning/critical colour at the alert thresholds of the monitoring guide (docs/monitoring.md). Members that join appear; members that fail stay listed, marked dead.

Keys: q quit · ? help · p pause · r refresh now · +/- interval · / filter · s sort · enter node detail · esc back.

With -o json no dashboard opens: the cluster is polled twice, --interval apart (so rates are known), and the rows are printed as one JSON document ({"kind": "ClusterTop", "items": [...]}), for scripts.

A crash writes a redacted report under the user log directory and prints its path (exit 1).
"""

EXAMPLES = """Examples:

  plumctl top

  plumctl top --interval 1 --node http://10.0.0.5:7947

  plumctl top -o json --interval 1 | jq '.items[] | select(.state != "alive") | .name'
"""


def register(app: typer.Typer) -> None:
    app.command(
        "top", help=HELP, epilog=EXAMPLES + "\n" + exitcodes.EPILOG, rich_help_panel="Inspect"
    )(with_global_options(top))


def make_source(opts: GlobalOptions, interval: float) -> ClusterSource:
    """The data source for ``opts`` (the seam tests replace).

    Each node gets at most ``min(--timeout, max(2 s, interval))`` per poll, so one silent
    node cannot hold the dashboard back for long (its row goes unreachable instead).
    """
    from plumctl.tui.source import DASHBOARD_NAMES, SCRAPE_NAMES, HttpSource

    return HttpSource(
        opts.node,
        opts.token,
        timeout=min(opts.timeout, max(2.0, interval)),
        health=opts.json,  # -o json: the health messages too (one more request per node)
        names=SCRAPE_NAMES if opts.json else DASHBOARD_NAMES,  # -o json: the quantiles too
    )


def top(
    ctx: typer.Context,
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            "-i",
            min=0.1,
            max=3600.0,
            help="Seconds between polls (+/- change it live).",
        ),
    ] = 2.0,
) -> None:
    import asyncio

    from plumctl.client import ClientError
    from plumctl.output import emit_json, fail

    opts: GlobalOptions = ctx.obj
    try:
        source = make_source(opts, interval)
    except ClientError as exc:  # a malformed --node
        fail(exc.message, exc.exit_code)
    try:
        if opts.json:
            document = asyncio.run(_snapshot_json(source, interval))
            emit_json(document)
            return
        code = asyncio.run(_run_dashboard(source, interval, opts))
    except ClientError as exc:
        fail(exc.message, exc.exit_code)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:  # a bug outside the app: same treatment as one inside
        from plumctl.tui.crash import report_crash

        line = report_crash(exc, {"phase": "startup", "node": opts.node}, [opts.token])
        typer.echo(line, err=True)
        raise typer.Exit(exitcodes.FAILED) from None
    raise typer.Exit(code)


async def _snapshot_json(source: ClusterSource, interval: float) -> dict[str, object]:
    """Two polls ``interval`` apart, folded into the model, as one JSON document."""
    import asyncio

    from plumctl.tui.model import ClusterModel

    model = ClusterModel()
    await source.open()
    try:
        model.update(await source.poll())
        await asyncio.sleep(interval)
        model.update(await source.poll())
    finally:
        await source.close()
    return model.as_dict()


async def first_poll(source: ClusterSource) -> tuple[ClusterSnapshot, type[TopApp]]:
    """The first snapshot, then the app class.

    Polling first means an unreachable cluster fails fast (exit 3) without paying for
    the import of Textual. (Importing in a thread during the poll was measured with
    ``bench/tui.py`` and won nothing on 2 cores.)
    """
    first = await source.poll()
    from plumctl.tui.app import TopApp

    return first, TopApp


async def _run_dashboard(
    source: ClusterSource,
    interval: float,
    opts: GlobalOptions,
    *,
    headless: bool = False,
) -> int:
    """First poll before any screen (exit 3 if nothing answers), then the app.

    The source (and its one HTTP client) lives in this event loop for the app's life.
    """
    await source.open()
    try:
        first, app_class = await first_poll(source)  # ClientError -> one line, its code
        app = app_class(source, interval=interval, initial=first)
        await app.run_async(headless=headless)
    finally:
        await source.close()
    if app.crash is not None:
        from plumctl.tui.crash import report_crash

        line = report_crash(app.crash, app.crash_context(), [opts.token])
        typer.echo(line, err=True)
        return exitcodes.FAILED
    return app.return_code or exitcodes.OK
