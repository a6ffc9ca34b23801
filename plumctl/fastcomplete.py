"""Bash completion of command and option *names* without importing typer.

A TAB re-runs ``plumctl`` with ``_PLUMCTL_COMPLETE=complete_bash``. Answering through typer
imports typer and the whole command tree first (0.2 s on a small machine, 0.4 s with
typer 0.29, whose parameter coercion imports pydantic), before click even looks at the
words. Most TABs only ask which subcommand or which ``--option`` comes next, and those
answers are fixed by the command tree, so ``completions/tree.json`` holds them exactly as
typer gives them (``python -m plumctl.completions_gen`` writes it from the live app; a test
keeps it in step and checks every answer against typer's).

:func:`complete` answers when the words typed so far are only subcommand names and the
word being completed is a subcommand name (under a group) or an option name; anything
else (option values, arguments, files) returns None and the caller lets typer answer.
zsh and fish always go to typer: their answers carry help texts that typer wraps to the
terminal width.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TREE = Path(__file__).parent / "completions" / "tree.json"


def split_arg_string(string: str) -> list[str]:
    """click's ``split_arg_string``: shell-like split, an unfinished quote kept as is."""
    lex = shlex.shlex(string, posix=True)
    lex.whitespace_split = True
    lex.commenters = ""
    out: list[str] = []
    try:
        for token in lex:
            out.append(token)
    except ValueError:
        out.append(lex.token)
    return out


def _words(env: Mapping[str, str]) -> tuple[list[str], str] | None:
    """(complete words after the program name, the incomplete word), as typer reads them."""
    try:
        cwords = split_arg_string(env["COMP_WORDS"])
        cword = int(env["COMP_CWORD"])
    except (KeyError, ValueError):
        return None
    try:
        incomplete = cwords[cword]
    except IndexError:
        incomplete = ""
    return cwords[1:cword], incomplete


def answer(tree: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    """What typer would print for this bash completion request, or None: ask typer."""
    words = _words(env)
    if words is None:
        return None
    path, incomplete = words
    node = tree
    for word in path:
        sub = node.get("commands", {}).get(word)
        if sub is None:
            return None  # an option, a value or an argument: typer knows what it means
        node = sub
    if "=" in incomplete:
        return None
    if incomplete.startswith("-"):
        names = node["options"]
    elif "commands" in node:
        names = node["names"]
    else:
        return None  # an argument of a command: its type decides (files, choices, ...)
    return "\n".join(name for name in names if name.startswith(incomplete))


def complete(env: Mapping[str, str] | None = None) -> bool:
    """Answer the completion request in ``env`` if possible; True if it was answered."""
    env = os.environ if env is None else env
    if env.get("_PLUMCTL_COMPLETE") != "complete_bash":
        return False
    try:
        tree = json.loads(TREE.read_text())
    except (OSError, ValueError):
        return False
    output = answer(tree, env)
    if output is None:
        return False
    sys.stdout.write(output + "\n")  # as click's echo does
    sys.stdout.flush()
    return True
