"""``plumctl health``: per-node status and the monitoring guide's score, one verdict, one exit code."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from plumctl import exitcodes
from plumctl.options import GlobalOptions, duration, with_global_options

EXAMPLES = """Examples:

  plumctl health                     # the --node only

  plumctl health --all -o json       # every member; gate a deploy on the exit code

  plumctl health --all --watch       # re-evaluate every --interval seconds

  plumctl health --all --prometheus http://127.0.0.1:9090   # the same, through PromQL

--prometheus URL: no node is asked; Prometheus (scraping the nodes, see `plumctl
monitoring scrape-config`) is queried instead. Each target's status comes from the
nodes' own health model fed with PromQL: gauges as last scraped, counters as
increase(...[--window]) (default 5m, the node's own health window); the score is the
monitoring guide's PromQL as written (rates over [5m]). Nodes are named by their `node` target
label, else their instance; without --all only the target whose instance is the
--node's host:port. A target with up == 0 is unreachable. --interval only paces --watch.

Verdict: Healthy when every node is; Unhealthy when a majority of the nodes asked
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
        float,
        typer.Option(
            parser=duration(0.1, 300.0),
            metavar="DURATION",
            help="Seconds between the two /metrics scrapes (without --all or --watch: by "
            "default none, the node's own recent rates are used; with --prometheus: between "
            "--watch rounds).",
        ),
    ] = 1.0,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Re-evaluate every --interval until Ctrl-C.")
    ] = False,
    prometheus: Annotated[
        str | None,
        typer.Option(
            "--prometheus",
            metavar="URL",
            help="Compute statuses and score through this Prometheus server's query API "
            "instead of scraping the nodes.",
            show_default=False,
        ),
    ] = None,
    window: Annotated[
        str,
        typer.Option(
            "--window",
            metavar="DURATION",
            help="With --prometheus: range of the health model's counters (5m, 90s, 1m30s).",
        ),
    ] = "5m",
) -> None:
    import asyncio
    import time

    from plumctl.client import exit_on_error
    from plumctl.output import emit_json, emit_json_line, fail

    opts: GlobalOptions = ctx.obj
    if _given(ctx, "window") and prometheus is None:
        fail("--window: only with --prometheus (direct scrapes use --interval)", exitcodes.USAGE)
    if prometheus is not None:
        from plumctl.monitoring.scrape import is_duration
        from plumtree.core import durations

        try:  # the CLI's one duration grammar; in the queries as given, or in Prometheus'
            seconds = durations.seconds(window)  # own (90, 1.5m -> 1m30s)
        except ValueError as exc:
            fail(f"--window: {exc}", exitcodes.USAGE)
        if not is_duration(window):
            window = durations.prometheus(seconds)
        if window == "0s" or seconds <= 0:
            fail("--window: must be longer than 0s", exitcodes.USAGE)
    # one node, once, no --interval: the node's own recent rates, one request
    own_rates = not (everyone or watch or _given(ctx, "interval"))
    while True:
        started = time.monotonic()
        with exit_on_error():
            if prometheus is None:
                result = asyncio.run(_evaluate(opts, everyone, interval, own_rates))
            else:
                result = asyncio.run(_from_prometheus(opts, everyone, prometheus, window))
        if opts.json:
            (emit_json_line if watch else emit_json)(result.as_dict())
        else:
            from plumctl.healthcheck import render

            render(result, opts.wide, clear=watch)
        if not watch:
            raise typer.Exit(result.exit_code)
        if prometheus is not None:  # direct scrapes already spent --interval measuring
            time.sleep(max(0.0, interval - (time.monotonic() - started)))


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether ``--name`` was on the command line or in the environment."""
    source = ctx.get_parameter_source(name)  # typer's vendored click: compare by name
    return source is not None and source.name != "DEFAULT"


async def _evaluate(
    opts: GlobalOptions, everyone: bool, interval: float, own_rates: bool = False
) -> Any:
    import asyncio

    from plumctl.healthcheck import collect, collect_rates, verdict
    from plumctl.targets import resolve

    targets, _ = await asyncio.to_thread(resolve, opts, everyone)
    if own_rates:
        got = await collect_rates(targets, opts.token, opts.timeout)
        if got is not None:  # else an older node without rates: scrape twice
            result = verdict(got[0], single=not everyone)
            result.source = "node"  # (as healthcheck.one_node_from_rates says it)
            result.interval = got[1]
            return result
    items = await collect(targets, opts.token, opts.timeout, interval)
    result = verdict(items, single=not everyone)
    result.interval = interval
    return result


async def _from_prometheus(
    opts: GlobalOptions, everyone: bool, prometheus: str, window: str
) -> Any:
    from plumctl.client import Unreachable, normalise_url
    from plumctl.healthcheck import verdict
    from plumctl.monitoring.scrape import duration_seconds, target_of
    from plumctl.promhealth import collect

    only: str | None = None
    if not everyone:
        found = target_of(normalise_url(opts.node))
        if found is None:
            raise Unreachable(f"--node {opts.node}: no host:port to look for in Prometheus")
        only = found[0]
    seconds = duration_seconds(window)
    items = await collect(prometheus, opts.timeout, window, seconds, only)
    result = verdict(items, single=not everyone)
    result.source = "prometheus"
    result.interval = seconds
    return result
