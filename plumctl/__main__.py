"""``python -m plumctl`` and the ``plumctl`` console script."""

from __future__ import annotations

import errno

#: the disk or the device behind our output failed: an error, said in one line
_WRITE_ERRORS = (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG)


def main() -> None:
    try:
        _run()
    except OSError as exc:
        if exc.errno == errno.EPIPE:  # ``plumctl ... | head``: the reader went away
            _quit(1)  # as click exits on a broken pipe: quietly, 1
        if exc.errno in _WRITE_ERRORS:
            import os
            import sys

            print(f"plumctl: error: {os.strerror(exc.errno)}", file=sys.stderr)
            _quit(1)
        raise  # anything else is a bug, shown as one


def _run() -> None:
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
        # members -o json, broadcast PAYLOAD: answered without typer, rich or httpx
        from plumctl.fastcmd import run

        code = run()
        if code is not None:
            import sys

            sys.exit(code)
    from plumctl.cli import app

    app(prog_name="plumctl")


def _quit(code: int) -> None:
    """Exit without Python flushing what is still buffered for stdout at shutdown (it
    would fail the same way and print "Exception ignored ...")."""
    import os
    import sys

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    sys.exit(code)


if __name__ == "__main__":
    main()
