"""``plumctl version``."""

from __future__ import annotations

import platform

import typer

from plumctl.options import GlobalOptions, with_global_options


def register(app: typer.Typer) -> None:
    app.command("version", help="Print the version of plumctl and the plumtree library.")(
        with_global_options(version)
    )


def version(ctx: typer.Context) -> None:
    from plumtree import __version__
    from plumtree.core.wire import VERSION

    opts: GlobalOptions = ctx.obj
    info = {
        "version": __version__,
        "wire_version": VERSION,
        "python": platform.python_version(),
    }
    if opts.json:
        from plumctl.output import emit_json

        emit_json({"kind": "Version", **info})
    else:
        typer.echo(f"plumctl {__version__} (wire v{VERSION}, Python {info['python']})")
