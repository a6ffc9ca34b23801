"""Generate the completion scripts (``python -m plumctl.completions_gen``).

Typer's zsh template lacks click's ``loadautofunc`` branch, so when the file is installed
as ``_plumctl`` on ``$fpath`` the first TAB only defines the function; we add the branch
so the first TAB completes too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SHELLS = ("bash", "zsh", "fish")
HERE = Path(__file__).parent / "completions"

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
        out = out.strip("\n") + "\n" + _ZSH_FIRST_TAB
    return out


def generate_tree() -> str:
    """``completions/tree.json`` for :mod:`plumctl.fastcomplete`: per command path, what
    typer's bash completion offers for a subcommand name and for an option name."""
    import json

    from typer._completion_classes import BashComplete
    from typer.main import get_command

    from plumctl.cli import app

    cli = get_command(app)
    bash = BashComplete(cli, {}, "plumctl", "_PLUMCTL_COMPLETE")

    def names(path: list[str], incomplete: str) -> list[str]:
        return [item.value for item in bash.get_completions(list(path), incomplete)]

    def walk(path: list[str], command: object) -> dict[str, object]:
        # sorted: click lists the help option's names from a set, in an order that
        # changes from one process to the next (bash sorts what it shows anyway)
        node: dict[str, object] = {"options": sorted(names(path, "-"))}
        subcommands = getattr(command, "commands", None)
        if subcommands is not None:
            node["names"] = names(path, "")
            node["commands"] = {
                name: walk([*path, name], sub)
                for name, sub in subcommands.items()
                if not getattr(sub, "hidden", False)
            }
        return node

    return json.dumps(walk([], cli), indent=1, sort_keys=True) + "\n"


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for shell in SHELLS:
        (HERE / f"plumctl.{shell}").write_text(generate(shell))
        print(f"wrote {HERE / f'plumctl.{shell}'}")
    (HERE / "tree.json").write_text(generate_tree())
    print(f"wrote {HERE / 'tree.json'}")


if __name__ == "__main__":
    main()
