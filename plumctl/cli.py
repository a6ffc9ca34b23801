"""The ``plumctl`` command tree (typer). Commands live in :mod:`plumctl.commands`."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from plumctl import exitcodes
from plumctl.options import DEFAULT_NODE, GlobalOptions, Output

HELP = """Operate plumtree clusters: start nodes and local clusters, broadcast, inspect
members and peers, score health from live metrics, watch it all with `top`.

[b]Examples[/b]

  plumctl cluster up -n 5            [dim]# a local 5-node cluster[/dim]

  plumctl broadcast 'hello' --wait    [dim]# until every live member delivered[/dim]

  plumctl members -o json             [dim]# machine-readable member table[/dim]

  plumctl health --all                [dim]# exit 0 healthy, 4 degraded, 1 unhealthy[/dim]

  plumctl sim --nodes 1000            [dim]# simulate 1,000 nodes in-process[/dim]
"""

app = typer.Typer(
    name="plumctl",
    help=HELP,
    epilog=exitcodes.EPILOG,
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main(
    ctx: typer.Context,
    node: Annotated[
        str,
        typer.Option(
            "--node",
            envvar="PLUMCTL_NODE",
            help="Admin URL of any reachable node.",
            show_default=True,
        ),
    ] = DEFAULT_NODE,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="PLUMCTL_TOKEN",
            help="Bearer token for mutating endpoints.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Output,
        typer.Option("--output", "-o", help="Output format.", case_sensitive=False),
    ] = Output.table,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=0.01, help="Seconds to wait for a node (and for --wait)."),
    ] = 5.0,
) -> None:
    ctx.obj = GlobalOptions(node=node.rstrip("/"), token=token, output=output, timeout=timeout)


def _register() -> None:
    from plumctl.commands import cluster, monitoring, node, sim, top, version

    node.register(app)
    cluster.register(app)
    sim.register(app)
    monitoring.register(app)
    top.register(app)
    version.register(app)


_register()

if os.environ.get("_PLUMCTL_DEBUG_IMPORTS"):  # pragma: no cover - diagnostics only
    import sys

    print(sorted(m for m in sys.modules if m.split(".")[0] in {"textual", "aiohttp"}))
