"""``plumctl completion bash|zsh|fish``: print the shell completion script.

The scripts are generated from the app (``_PLUMCTL_COMPLETE=source_<shell> plumctl``),
checked in under ``completions/`` and shipped in the package; a test regenerates them
and compares. They call back into ``plumctl`` on TAB, which is why importing the CLI
must stay cheap.
"""

from __future__ import annotations

from enum import StrEnum
from importlib import resources
from typing import Annotated

import typer

from plumctl import exitcodes
from plumctl.options import with_global_options

EXAMPLES = """Install:

  bash:  plumctl completion bash > /etc/bash_completion.d/plumctl   # or: source <(plumctl completion bash)

  zsh:   plumctl completion zsh > "${fpath[1]}/_plumctl"             # then restart zsh

  fish:  plumctl completion fish > ~/.config/fish/completions/plumctl.fish
"""


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


FILES = {Shell.bash: "plumctl.bash", Shell.zsh: "plumctl.zsh", Shell.fish: "plumctl.fish"}


def register(app: typer.Typer) -> None:
    app.command(
        "completion",
        help="Print the shell completion script for bash, zsh or fish.",
        epilog=EXAMPLES + "\n" + exitcodes.EPILOG,
        rich_help_panel="Setup",
    )(with_global_options(completion))


def script(shell: Shell) -> str:
    return (resources.files("plumctl") / "completions" / FILES[shell]).read_text()


def completion(
    ctx: typer.Context,
    shell: Annotated[Shell, typer.Argument(help="bash, zsh or fish.", case_sensitive=False)],
) -> None:
    typer.echo(script(shell), nl=False)
