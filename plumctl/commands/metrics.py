"""``plumctl metrics``: the monitoring guide's key queries, from two live scrapes."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from plumctl import exitcodes
from plumctl.options import GlobalOptions, duration, with_global_options

EXAMPLES = """Examples:

  plumctl metrics                  # key queries of --node over a 1 s window

  plumctl metrics --all --interval 5 -o json

  plumctl metrics --raw            # the Prometheus exposition text of --node
"""


def register(app: typer.Typer) -> None:
    app.command(
        "metrics",
        help="Delivery rate, duplicate %, Graft success %, P99 Graft latency, hops, cache use.",
        epilog=EXAMPLES + "\n" + exitcodes.EPILOG,
        rich_help_panel="Inspect",
    )(with_global_options(metrics))


def metrics(
    ctx: typer.Context,
    raw: Annotated[
        bool, typer.Option("--raw", help="Print the exposition text of --node.")
    ] = False,
    everyone: Annotated[
        bool, typer.Option("--all", "-a", help="Every member, not just --node.")
    ] = False,
    interval: Annotated[
        float,
        typer.Option(
            parser=duration(0.1, 300.0),
            metavar="DURATION",
            help="Seconds between the two scrapes (1, 500ms, 1m).",
        ),
    ] = 1.0,
) -> None:
    import asyncio

    from plumctl.client import Client, exit_on_error
    from plumctl.output import emit_json

    opts: GlobalOptions = ctx.obj
    if raw:
        with exit_on_error(), Client(opts.node, opts.token, opts.timeout) as client:
            text = client.metrics_text()
        if opts.json:
            emit_json({"kind": "MetricsText", "node": opts.node, "text": text})
        else:
            typer.echo(text, nl=not text.endswith("\n"))
        return
    with exit_on_error():
        rows = asyncio.run(_collect(opts, everyone, interval))
    if not any(r["reachable"] for r in rows):
        from plumctl.output import fail

        fail("no node answered: " + "; ".join(str(r["error"]) for r in rows), exitcodes.UNREACHABLE)
    if opts.json:
        emit_json({"kind": "KeyQueries", "interval_s": interval, "items": rows})
        return
    _render(rows, opts.wide)


async def _collect(opts: GlobalOptions, everyone: bool, interval: float) -> list[dict[str, Any]]:
    import asyncio
    import time

    from plumctl.client import AsyncClient, ClientError, fan_out, normalise_url
    from plumctl.promtext import Scrape
    from plumctl.scoring import key_queries
    from plumctl.targets import resolve

    targets, _ = await asyncio.to_thread(resolve, opts, everyone)
    live = [t for t in targets if t.live and t.url]

    async def scrape(client: AsyncClient) -> Scrape:
        return await client.scrape()

    urls = [t.url for t in live if t.url]
    started = time.monotonic()
    first = await fan_out(urls, scrape, token=opts.token, timeout=opts.timeout)
    await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
    second = await fan_out(urls, scrape, token=opts.token, timeout=opts.timeout)
    rows: list[dict[str, Any]] = []
    for t in live:
        key = normalise_url(t.url or "")
        a, b = first.get(key), second.get(key)
        if isinstance(a, ClientError) or isinstance(b, ClientError) or a is None or b is None:
            err = a if isinstance(a, ClientError) else b
            rows.append({"node": t.name, "admin_url": t.url, "reachable": False, "error": str(err)})
            continue
        rows.append(
            {
                "node": t.name,
                "admin_url": t.url,
                "reachable": True,
                "error": None,
                **key_queries(a, b).as_dict(),
            }
        )
    return rows


def _fmt(value: Any, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _render(rows: list[dict[str, Any]], wide: bool) -> None:
    from plumctl.output import stdout, table, warn

    columns = [
        "node",
        "delivered/s",
        "dup %",
        "graft ok %",
        "p99 graft",
        "hops p50",
        "hops p99",
        "cache",
    ]
    if wide:
        columns += ["grafts/s", "graft fail/min", "pending", "eager", "lazy"]
    t = table(*columns)
    for r in rows:
        if not r["reachable"]:
            warn(f"{r['node']}: {r['error']}")
            continue
        cache = r["cache_utilisation"]
        cells = [
            r["node"],
            _fmt(r["delivered_per_s"], ".2f"),
            _fmt(r["duplicate_pct"], ".1f"),
            _fmt(r["graft_success_pct"], ".1f"),
            _fmt(None if r["graft_p99_s"] is None else 1000 * r["graft_p99_s"], ".0f", " ms"),
            _fmt(r["hops_p50"], ".1f"),
            _fmt(r["hops_p99"], ".1f"),
            _fmt(None if cache is None else 100 * cache, ".1f", "%"),
        ]
        if wide:
            cells += [
                _fmt(r["graft_sent_per_s"], ".2f"),
                _fmt(r["graft_failed_per_min"], ".1f"),
                _fmt(r["pending_grafts"], ".0f"),
                _fmt(r["eager_peers"], ".0f"),
                _fmt(r["lazy_peers"], ".0f"),
            ]
        t.add_row(*cells)
    stdout().print(t)
