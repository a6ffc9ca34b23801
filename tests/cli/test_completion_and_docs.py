"""Shell completion for real (bash and zsh, first TAB), generated docs, cheap imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from plumctl.completions_gen import SHELLS, generate
from tests.cli.helpers import invoke, plain
from tests.cli.ptyshell import ShellUnavailable, interactive, require

ROOT = Path(__file__).resolve().parents[2]
BIN = str(Path(sys.executable).parent)


@pytest.mark.parametrize("shell", SHELLS)
def test_checked_in_scripts_match_what_the_app_generates(shell: str) -> None:
    checked_in = (ROOT / "completions" / f"plumctl.{shell}").read_text()
    assert generate(shell) == checked_in, (
        f"run: python -m plumctl.completions_gen ({shell} is stale)"
    )
    assert invoke("completion", shell).stdout == checked_in


def test_completion_rejects_an_unknown_shell() -> None:
    result = invoke("completion", "tcsh")
    assert result.exit_code == 2


def _shell(argv: list[str], env: dict[str, str], keys: bytes, expect: bytes) -> bytes:
    """:func:`interactive`, skipping (with the reason) when the shell cannot start."""
    try:
        return interactive(argv, env, keys, expect)
    except ShellUnavailable as exc:
        pytest.skip(str(exc))


def _env(home: Path) -> dict[str, str]:
    return {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(home),
        "TERM": "xterm",
        "PYTHONPATH": str(ROOT),
        "LANG": "C.UTF-8",
    }


@pytest.mark.parametrize(
    ("typed", "completed"),
    [(b"plumctl broa\t", b"broadcast"), (b"plumctl members --na\t", b"--name")],
    ids=["command", "option"],
)
def test_bash_completes_on_the_first_tab(tmp_path: Path, typed: bytes, completed: bytes) -> None:
    require("bash")
    rc = tmp_path / ".bashrc"
    rc.write_text(f"PS1='$ '\nsource {ROOT / 'completions' / 'plumctl.bash'}\n")
    out = _shell(
        ["bash", "--noprofile", "--rcfile", str(rc), "-i"], _env(tmp_path), typed, completed
    )
    assert completed in out, out.decode(errors="replace")


def test_zsh_completes_on_the_first_tab_from_fpath(tmp_path: Path) -> None:
    require("zsh")
    functions = tmp_path / "functions"
    functions.mkdir()
    (functions / "_plumctl").write_text((ROOT / "completions" / "plumctl.zsh").read_text())
    (tmp_path / ".zshrc").write_text(
        f"PS1='$ '\nfpath=({functions} $fpath)\nautoload -Uz compinit\ncompinit -u -d {tmp_path}/.zcompdump\n"
    )
    env = {**_env(tmp_path), "ZDOTDIR": str(tmp_path)}
    out = _shell(["zsh", "-i"], env, b"plumctl broa\t", b"broadcast")
    assert b"broadcast" in out, out.decode(errors="replace")


def test_docs_cli_md_is_generated_from_the_app() -> None:
    checked_in = (ROOT / "docs" / "cli.md").read_text()
    fresh = subprocess.run(
        [sys.executable, "-m", "plumctl.docs"], capture_output=True, text=True, check=True
    ).stdout
    assert fresh == checked_in, "docs/cli.md is stale: run `make docs`"
    for command in (
        "broadcast",
        "members",
        "peers",
        "health",
        "metrics",
        "monitor",
        "cluster up",
        "node start",
    ):
        assert f"`plumctl {command}`" in checked_in


def test_importing_the_cli_stays_light() -> None:
    code = (
        "import sys, plumctl.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'textual', 'aiohttp', 'prometheus_client', 'httpx', 'msgspec'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "command",
    [
        "broadcast",
        "members",
        "peers",
        "health",
        "metrics",
        "monitor",
        "cluster up",
        "node start",
        "sim",
        "completion",
    ],
)
def test_every_command_help_has_examples_and_exit_codes(command: str) -> None:
    result = invoke(*command.split(), "--help")
    text = plain(result.stdout)
    assert result.exit_code == 0
    assert "Exit codes" in text and "124" in text, command
    assert "Examples" in text or "Install" in text, command


def test_zsh_keeps_apostrophes_in_help_texts(tmp_path: Path) -> None:
    """typer writes ``'`` in a help text as ``''`` inside single quotes: zsh reads that as
    an apostrophe only with rc_quotes, which the script sets. Run the script's function
    in a real zsh, with ``_arguments`` replaced by a print of what it is given."""
    require("zsh")
    script = (
        "compdef() { : }\n"
        '_arguments() { print -r -- "$@" }\n'
        f"source {ROOT / 'completions' / 'plumctl.zsh'}\n"
        "words=(plumctl node start --ap); CURRENT=4\n"
        "_plumctl_completion\n"
    )
    proc = subprocess.run(
        ["zsh", "-f", "-c", script],
        env={**_env(tmp_path), "PATH": f"{BIN}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "'off' disables it" in proc.stdout, proc.stdout
