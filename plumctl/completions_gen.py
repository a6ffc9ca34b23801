"""Generate the completion scripts (``python -m plumctl.completions_gen``).

Typer's zsh template lacks click's ``loadautofunc`` branch, so when the file is installed
as ``_plumctl`` on ``$fpath`` the first TAB only defines the function; we add the branch
so the first TAB completes too. And typer writes an apostrophe in a help text as ``''``
inside single quotes, which zsh reads as one only with ``rc_quotes``: the function sets
it (locally), or "'off' disables it" shows as "off disables it".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SHELLS = ("bash", "zsh", "fish")
HERE = Path(__file__).parent / "completions"
ROOT = Path(__file__).resolve().parent.parent  # the checkout: typer_help runs its code

_ZSH_EVAL = "  eval $(env _TYPER_COMPLETE_ARGS="
_ZSH_RC_QUOTES = "  setopt local_options rc_quotes  # typer writes ' in help texts as ''\n"

_ZSH_FIRST_TAB = """
# first TAB when autoloaded from $fpath (click's loadautofunc branch, missing in typer's)
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _plumctl_completion "$@"
fi
"""


def generate(shell: str) -> str:
    env = {**os.environ, "_PLUMCTL_COMPLETE": f"source_{shell}", "TERM": "dumb"}
    out = subprocess.run(
        [sys.executable, "-m", "plumctl"], env=env, capture_output=True, text=True, check=True
    ).stdout
    if shell == "zsh":
        # compinit only autoloads files whose *first* line is "#compdef"
        if out.count(_ZSH_EVAL) != 1:
            raise RuntimeError("typer's zsh template changed: check the rc_quotes fix")
        out = out.replace(_ZSH_EVAL, _ZSH_RC_QUOTES + _ZSH_EVAL)
        out = out.strip("\n") + "\n" + _ZSH_FIRST_TAB
    return out


def generate_tree() -> str:
    """``completions/tree.json`` for :mod:`plumctl.fastcomplete`: per command path, what
    typer's completion offers for a subcommand name and for an option name: the names
    (bash), and each name's line as typer's zsh and fish completions print it, with the
    width its help text needs (rich wraps a longer one to the terminal)."""
    import json

    import typer.rich_utils
    from typer._click.shell_completion import CompletionItem
    from typer._completion_classes import BashComplete, FishComplete, ZshComplete
    from typer.main import get_command

    from plumctl.cli import app

    cli = get_command(app)
    bash = BashComplete(cli, {}, "plumctl", "_PLUMCTL_COMPLETE")
    zsh = ZshComplete(cli, {}, "plumctl", "_PLUMCTL_COMPLETE")
    fish = FishComplete(cli, {}, "plumctl", "_PLUMCTL_COMPLETE")

    def items(path: list[str], incomplete: str) -> list[CompletionItem]:
        return bash.get_completions(list(path), incomplete)

    def lines(node: dict[str, object], found: list[CompletionItem]) -> None:
        for item in found:
            z, f = zsh.format_completion(item), fish.format_completion(item)
            node.setdefault("zsh", {})[item.value] = z  # type: ignore[index]
            node.setdefault("fish", {})[item.value] = f  # type: ignore[index]
            help_width = len(f) - len(item.value) - 1 if item.help else 0
            node.setdefault("help_width", {})[item.value] = help_width  # type: ignore[index]

    def walk(path: list[str], command: object) -> dict[str, object]:
        # sorted: click lists the help option's names from a set, in an order that
        # changes from one process to the next (bash sorts what it shows anyway)
        options = items(path, "-")
        node: dict[str, object] = {"options": sorted(item.value for item in options)}
        lines(node, options)
        subcommands = getattr(command, "commands", None)
        if subcommands is not None:
            names = items(path, "")
            node["names"] = [item.value for item in names]
            lines(node, names)
            node["commands"] = {
                name: walk([*path, name], sub) for name, sub in visible_subcommands(command)
            }
        return node

    # help texts unwrapped: the fast path answers only when they fit the terminal
    saved, typer.rich_utils.MAX_WIDTH = typer.rich_utils.MAX_WIDTH, 100_000
    try:
        tree = walk([], cli)
    finally:
        typer.rich_utils.MAX_WIDTH = saved
    return json.dumps(tree, indent=1, sort_keys=True) + "\n"


def generate_help() -> str:
    """``completions/help.json`` for :mod:`plumctl.fasthelp`: the plain help of every
    command path, as ``plumctl`` prints it on a terminal of 80 columns (the same from 80
    up). Run as a real process: click's test runner wraps some texts differently."""
    import json

    from typer.main import get_command

    from plumctl.cli import app
    from plumctl.fasthelp import MIN_COLUMNS

    def paths(command: object, path: list[str]) -> list[list[str]]:
        found = [path]
        for name, sub in visible_subcommands(command):
            found += paths(sub, [*path, name])
        return found

    table = {
        " ".join(path): typer_help([*path, "--help"], MIN_COLUMNS)
        for path in paths(get_command(app), [])
    }
    return json.dumps(table, indent=1, sort_keys=True) + "\n"


def visible_subcommands(command: object) -> list[tuple[str, object]]:
    """A group's subcommands as users see them (hidden ones left out); none for a command."""
    subcommands: dict[str, object] = getattr(command, "commands", {})
    return [(n, sub) for n, sub in subcommands.items() if not getattr(sub, "hidden", False)]


def typer_help(args: list[str], columns: int) -> str:
    """What typer prints for ``plumctl *args`` (never the table) on a terminal ``columns``
    wide, as a real process of this checkout: click's test runner wraps some texts
    differently. Rich help switches in our own environment are left out."""
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "dumb", "PYTHONPATH": str(ROOT)}
    env.pop("PLUMCTL_RICH_HELP", None)
    env.pop("TYPER_USE_RICH", None)
    typer_only = "from plumctl.cli import app; app(prog_name='plumctl')"
    done = subprocess.run(
        [sys.executable, "-c", typer_only, *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for shell in SHELLS:
        (HERE / f"plumctl.{shell}").write_text(generate(shell))
        print(f"wrote {HERE / f'plumctl.{shell}'}")
    (HERE / "tree.json").write_text(generate_tree())
    print(f"wrote {HERE / 'tree.json'}")
    (HERE / "help.json").write_text(generate_help())
    print(f"wrote {HERE / 'help.json'}")


if __name__ == "__main__":
    main()
