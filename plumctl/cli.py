"""The ``plumctl`` command tree (typer). Commands live in :mod:`plumctl.commands`."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from plumctl import exitcodes
from plumctl.options import (
    CACERT_HELP,
    DEFAULT_NODE,
    TOKEN_HELP,
    GlobalOptions,
    Output,
    use_ca_file,
)

HELP = """Operate plumtree clusters: start nodes and local clusters, broadcast, inspect
members and peers, score health from live metrics, watch it all with `top`.

Examples:

  plumctl cluster up -n 5            # a local 5-node cluster

  plumctl broadcast 'hello' --wait    # until every live member delivered

  plumctl members -o json             # machine-readable member table

  plumctl health --all                # exit 0 healthy, 4 degraded

  plumctl audit                       # exit 0: nothing behind, nothing lost

  plumctl sim --nodes 1000            # simulate 1,000 nodes in-process
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
            help=TOKEN_HELP,
            show_default=False,
        ),
    ] = None,
    cacert: Annotated[
        str | None,
        typer.Option(
            "--cacert",
            envvar="PLUMCTL_CACERT",
            metavar="FILE",
            help=CACERT_HELP,
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
    use_ca_file(cacert)
    ctx.obj = GlobalOptions(
        node=node.rstrip("/"), token=token, cacert=cacert, output=output, timeout=timeout
    )


def _register() -> None:
    from plumctl.commands import (
        audit,
        broadcast,
        cluster,
        completion,
        health,
        info,
        keys,
        members,
        membership,
        metrics,
        monitor,
        monitoring,
        node,
        peers,
        query,
        rtt,
        sim,
        tags,
        top,
        version,
    )

    for module in (
        node,
        cluster,
        broadcast,
        members,
        peers,
        info,
        rtt,
        health,
        audit,
        membership,
        query,
        tags,
        keys,
        metrics,
        monitor,
        top,
        sim,
        monitoring,
        completion,
        version,
    ):
        module.register(app)


_register()

if "_PLUMCTL_COMPLETE" in os.environ:
    # with add_completion=False typer never registers its shell classes; do it only when a
    # shell asks for completions, so ordinary runs don't pay for it
    from typer._completion_classes import completion_init

    completion_init()

if os.environ.get("_PLUMCTL_DEBUG_IMPORTS"):  # pragma: no cover - diagnostics only
    import sys

    print(sorted(m for m in sys.modules if m.split(".")[0] in {"textual", "aiohttp"}))
