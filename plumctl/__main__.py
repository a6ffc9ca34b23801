"""``python -m plumctl`` and the ``plumctl`` console script."""

from __future__ import annotations


def main() -> None:
    import os

    if os.environ.get("_PLUMCTL_COMPLETE", "").startswith("complete_"):
        # a TAB: command and option names come from a table, without importing typer
        from plumctl.fastcomplete import complete

        if complete():
            return
    else:
        # --help: the plain help text comes from a table too
        from plumctl.fasthelp import show

        if show():
            return
    from plumctl.cli import app

    app(prog_name="plumctl")


if __name__ == "__main__":
    main()
