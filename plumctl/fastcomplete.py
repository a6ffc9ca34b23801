"""Completion of command and option *names* without importing typer (bash, zsh, fish).

A TAB re-runs ``plumctl`` with ``_PLUMCTL_COMPLETE=complete_<shell>``. Answering through typer
imports typer and the whole command tree first (0.2 s on a small machine, 0.4 s with
typer 0.29, whose parameter coercion imports pydantic), before click even looks at the
words. Most TABs only ask which subcommand or which ``--option`` comes next, and those
answers are fixed by the command tree, so ``completions/tree.json`` holds them exactly as
typer gives them (``python -m plumctl.completions_gen`` writes it from the live app; a test
keeps it in step and checks every answer against typer's).

:func:`complete` answers when the words typed so far are only subcommand names and the
word being completed is a subcommand name (under a group) or an option name; anything
else (option values, arguments, files) returns None and the caller lets typer answer.
zsh and fish answers carry help texts, which typer (through rich) wraps to the terminal
width: the table holds them unwrapped, and a help text wider than the terminal goes to
typer too.
"""

from __future__ import annotations

import os
import shlex
import sys

TYPE_CHECKING = False  # mypy takes it as True; importing typing and pathlib cost a TAB 15 ms
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

TREE = os.path.join(os.path.dirname(__file__), "completions", "tree.json")
#: the completion requests answered here (powershell always goes to typer)
FAST_SHELLS = ("complete_bash", "complete_zsh", "complete_fish")


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
    """(complete words after the program name, the incomplete word), as typer reads them
    from bash."""
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


def _typer_words(env: Mapping[str, str]) -> tuple[list[str], str]:
    """The same from zsh and fish, which pass the command line in ``_TYPER_COMPLETE_ARGS``."""
    line = env.get("_TYPER_COMPLETE_ARGS", "")
    args = split_arg_string(line)[1:]
    if args and not line.endswith(" "):
        return args[:-1], args[-1]
    return args, ""


def _choices(
    tree: Mapping[str, Any], path: list[str], incomplete: str
) -> tuple[Mapping[str, Any], list[str]] | None:
    """The table node at ``path`` and the names that complete ``incomplete`` there."""
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
    return node, [name for name in names if name.startswith(incomplete)]


def terminal_width(env: Mapping[str, str]) -> int:
    """The width rich wraps typer's help texts to (as rich's Console decides it)."""
    for key in ("TERMINAL_WIDTH", "COLUMNS"):  # typer's override, then the shell's
        value = env.get(key, "")
        if value.isdigit():
            return int(value)
    for fd in (0, 1, 2):
        try:
            return os.get_terminal_size(fd).columns or 80
        except (OSError, ValueError):
            continue
    return 80


def answer(tree: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    """What typer would print for this completion request, or None: ask typer."""
    shell = env.get("_PLUMCTL_COMPLETE", "complete_bash").removeprefix("complete_")
    if shell == "bash":
        words = _words(env)
        if words is None:
            return None
    elif shell in ("zsh", "fish"):
        words = _typer_words(env)
    else:
        return None
    found = _choices(tree, *words)
    if found is None:
        return None
    node, names = found
    if shell == "bash":
        return "\n".join(names)
    width = min(terminal_width(env), 80)  # (a dumb terminal is 80 wide whatever it says)
    if any(node["help_width"][name] >= width for name in names):
        return None  # rich would wrap it: typer knows how
    lines = [node[shell][name] for name in names]
    if shell == "zsh":
        return "_arguments '*: :((" + "\n".join(lines) + "))'" if lines else "_files"
    return "\n".join(lines)


def complete(env: Mapping[str, str] | None = None) -> bool:
    """Answer the completion request in ``env`` if possible; True if it was answered.

    fish asks twice per TAB: ``is-args`` (exit status 0: there are completions, so no
    file names) and ``get-args`` (the completions).
    """
    env = os.environ if env is None else env
    if env.get("_PLUMCTL_COMPLETE") not in FAST_SHELLS:
        return False
    from plumctl.fasthelp import emit, read_table

    tree = read_table(TREE)
    output = None if tree is None else answer(tree, env)
    if output is None:
        return False
    if env["_PLUMCTL_COMPLETE"] == "complete_fish":
        action = env.get("_TYPER_COMPLETE_FISH_ACTION", "")
        if action == "is-args":
            sys.exit(0 if output else 1)
        if action != "get-args":
            output = ""
    return emit(output + "\n")  # (the newline as click's echo adds it)
