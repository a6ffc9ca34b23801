"""Where output goes: JSON documents to stdout, humans' text via Rich, errors to stderr.

Consoles are built lazily (never at import) so that the width is read when printing and
so that importing the CLI stays cheap.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

_stdout: Console | None = None
_stderr: Console | None = None


def stdout() -> Console:
    global _stdout
    if _stdout is None:
        from rich.console import Console

        # piped output keeps whole lines (scripts grep them); a terminal wraps to its width
        width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 1000
        _stdout = Console(highlight=False, soft_wrap=False, width=width)
    return _stdout


def stderr() -> Console:
    global _stderr
    if _stderr is None:
        from rich.console import Console

        _stderr = Console(stderr=True, highlight=False)
    return _stderr


def reset_consoles() -> None:
    """Forget cached consoles (tests swap stdout/stderr between invocations)."""
    global _stdout, _stderr
    _stdout = _stderr = None


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``1 node``, ``3 nodes`` (``nouns`` for an irregular plural)."""
    return f"{n} {noun}" if n == 1 else f"{n} {nouns or noun + 's'}"


def emit_json(document: Any) -> None:
    """One stable JSON document on stdout (sorted keys), nothing else."""
    sys.stdout.write(json.dumps(document, sort_keys=True, default=_default) + "\n")
    sys.stdout.flush()


def emit_json_line(document: Any) -> None:
    """One compact JSON object per line, for streams."""
    sys.stdout.write(json.dumps(document, sort_keys=True, default=_default, separators=(",", ":")))
    sys.stdout.write("\n")
    sys.stdout.flush()


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def error(message: str) -> None:
    """One clear line on stderr."""
    sys.stderr.write(f"plumctl: error: {message}\n")
    sys.stderr.flush()


def warn(message: str) -> None:
    sys.stderr.write(f"plumctl: warning: {message}\n")
    sys.stderr.flush()


def fail(message: str, code: int) -> NoReturn:
    """Print one error line and exit with ``code``."""
    import typer

    error(message)
    raise typer.Exit(code)


def table(*columns: str, title: str | None = None) -> Table:
    """A plain, borderless table with upper-case headers (serf/kubectl style)."""
    from rich import box
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD, title=title, pad_edge=False, show_edge=False)
    for column in columns:
        t.add_column(column.upper(), overflow="fold")
    return t
