"""``plumctl ... --help`` from the table: exactly what typer prints, or typer itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from plumctl import fasthelp
from plumctl.completions_gen import generate_help, typer_help

ROOT = Path(__file__).resolve().parents[2]
TABLE = json.loads(Path(fasthelp.TABLE).read_text())


def _plumctl(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """The real entry point (fast path included), in a fresh process."""
    full = _clean_env()
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "plumctl", *args], env=full, capture_output=True, text=True
    )


def _clean_env() -> dict[str, str]:
    """This environment as a shell would hand it over (importing plumctl here set
    TYPER_USE_RICH=0 in it)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "dumb"}
    for key in ("PLUMCTL_RICH_HELP", "TYPER_USE_RICH", "COLUMNS"):
        env.pop(key, None)
    return env


def test_checked_in_table_matches_the_app() -> None:
    assert generate_help() == Path(fasthelp.TABLE).read_text(), (
        "run: python -m plumctl.completions_gen (completions/help.json is stale)"
    )


@pytest.mark.parametrize("columns", [80, 200])
def test_every_command_help_is_what_typer_prints(columns: int) -> None:
    env = {"COLUMNS": str(columns)}
    for path in TABLE:
        args = [*path.split(), "--help"] if path else ["--help"]
        assert fasthelp.answer(TABLE, args, env) == typer_help(args, columns), path
    assert len(TABLE) > 15


def test_goes_to_typer_when_the_table_cannot_know() -> None:
    wide = {"COLUMNS": "120"}
    assert fasthelp.answer(TABLE, ["cluster", "up", "-h"], wide) is not None
    assert fasthelp.answer(TABLE, ["cluster", "up", "--help"], {"COLUMNS": "60"}) is None
    assert fasthelp.answer(TABLE, ["--help"], {**wide, "PLUMCTL_RICH_HELP": "1"}) is None
    assert fasthelp.answer(TABLE, ["--help"], {**wide, "TYPER_USE_RICH": "1"}) is None
    assert fasthelp.answer(TABLE, ["-o", "json", "members", "--help"], wide) is None
    assert fasthelp.answer(TABLE, ["members", "--state", "alive", "--help"], wide) is None
    assert fasthelp.answer(TABLE, ["nosuch", "--help"], wide) is None
    assert fasthelp.answer(TABLE, ["members"], wide) is None


def test_a_real_help_never_imports_typer() -> None:
    probe = (
        "import sys\n"
        "sys.argv = ['plumctl', 'cluster', 'up', '--help']\n"
        "from plumctl.__main__ import main\n"
        "main()\n"
        "assert 'typer' not in sys.modules, 'typer imported'\n"
    )
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "100"}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == TABLE["cluster up"]


def test_narrow_terminals_and_rich_help_still_work() -> None:
    narrow = _plumctl(["cluster", "up", "--help"], COLUMNS="60")
    assert narrow.returncode == 0 and "Usage: plumctl cluster up" in narrow.stdout
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 60
    rich = _plumctl(["--help"], COLUMNS="100", PLUMCTL_RICH_HELP="1")
    assert rich.returncode == 0 and "╭" in rich.stdout  # Rich's boxes


def test_an_output_encoding_without_the_help_s_characters_goes_to_typer() -> None:
    """The epilog has a '·': an ASCII stdout made the table's write fail."""
    done = _plumctl(["--help"], COLUMNS="100", PYTHONIOENCODING="ascii")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and "Exit codes:" in done.stdout


def test_a_closed_stdout_goes_to_typer() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "plumctl", "--help"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**_clean_env(), "COLUMNS": "100"},
        preexec_fn=lambda: os.close(1),
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
