"""``plumctl [COMMAND ...] --help`` from a table, without importing typer.

Importing typer and building the command tree took most of ``plumctl --help``'s 0.23 s.
The plain help click prints is at most 78 columns wide on any terminal of 80 columns or
more, and depends on nothing else, so ``completions/help.json`` holds it per command path
(``python -m plumctl.completions_gen`` writes it; a test keeps it in step and checks it
against typer's output). Anything else (a narrower terminal, Rich help, other options or
arguments on the line) goes to typer.
"""

from __future__ import annotations

import json
import os
import sys

TYPE_CHECKING = False  # mypy takes it as True: a TAB or --help imports neither module
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

TABLE = os.path.join(os.path.dirname(__file__), "completions", "help.json")
HELP_FLAGS = ("--help", "-h")
#: click wraps help to min(terminal, 80) - 2 columns: from 80 up, the text is the same
MIN_COLUMNS = 80


def terminal_columns(env: Mapping[str, str]) -> int:
    """The width click reads (``shutil.get_terminal_size``): $COLUMNS, else stdout's."""
    columns = env.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    stdout = sys.__stdout__
    try:
        return os.get_terminal_size(stdout.fileno()).columns or MIN_COLUMNS  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):  # no stdout, or not a terminal
        return MIN_COLUMNS


def answer(table: Mapping[str, str], argv: Sequence[str], env: Mapping[str, str]) -> str | None:
    """The help typer would print for ``plumctl *argv``, or None: ask typer."""
    if not argv or argv[-1] not in HELP_FLAGS:
        return None
    if env.get("PLUMCTL_RICH_HELP") or env.get("TYPER_USE_RICH", "0") not in ("", "0"):
        return None  # Rich help: boxed, and as wide as the terminal
    if terminal_columns(env) < MIN_COLUMNS:
        return None
    return table.get(" ".join(argv[:-1]))  # None: not a command path


def show(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> bool:
    """Print the help for this command line if the table has it; True if it did."""
    argv = sys.argv[1:] if argv is None else argv
    env = os.environ if env is None else env
    if not argv or argv[-1] not in HELP_FLAGS:
        return False  # (the common case costs no file read)
    table = read_table(TABLE)
    text = None if table is None else answer(table, argv, env)
    return text is not None and emit(text)


def read_table(path: str) -> dict[str, Any] | None:
    """One of the tables in ``completions/``; None if it is missing or unreadable (then
    typer answers)."""
    try:
        with open(path, encoding="utf-8") as f:
            table: dict[str, Any] = json.load(f)
    except (OSError, ValueError):
        return None
    return table


def emit(text: str) -> bool:
    """Write ``text`` to stdout if its encoding can hold it; False (nothing written) if
    not, and typer answers instead (click replaces what the terminal cannot show, and
    copes with a closed stdout)."""
    if sys.stdout is None:  # started with stdout closed
        return False
    try:
        text.encode(sys.stdout.encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    sys.stdout.write(text)
    sys.stdout.flush()
    return True
