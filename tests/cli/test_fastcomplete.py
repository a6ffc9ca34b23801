"""The typer-free completion fast path (bash, zsh, fish) answers exactly what typer
answers, or defers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer._completion_classes import completion_init

from plumctl import fastcomplete
from plumctl.completions_gen import generate_tree
from tests.cli.helpers import invoke

ROOT = Path(__file__).resolve().parents[2]
TREE = json.loads(Path(fastcomplete.TREE).read_text())


def test_checked_in_tree_matches_the_app() -> None:
    assert generate_tree() == Path(fastcomplete.TREE).read_text(), (
        "run: python -m plumctl.completions_gen (completions/tree.json is stale)"
    )


def _paths(node: dict[str, object], path: list[str]) -> Iterator[list[str]]:
    yield path
    for name, sub in node.get("commands", {}).items():  # type: ignore[attr-defined]
        yield from _paths(sub, [*path, name])


def _env(words: list[str], incomplete: str) -> dict[str, str]:
    return {
        "_PLUMCTL_COMPLETE": "complete_bash",
        "COMP_WORDS": " ".join(["plumctl", *words, incomplete]),
        "COMP_CWORD": str(len(words) + 1),
    }


def _typer(env: dict[str, str]) -> str:
    completion_init()  # plumctl.cli does this at import only when asked by a shell
    result = invoke(env=env)
    assert result.exit_code == 0
    return result.stdout


def test_same_answer_as_typer_or_none() -> None:
    checked = 0
    for path in _paths(TREE, []):
        for incomplete in ("", "-", "--", "--n", "--no", "-o", "m", "me", "c", "s", "x", "up"):
            env = _env(path, incomplete)
            fast = fastcomplete.answer(TREE, env)
            if fast is None:
                continue
            # same names; the order may differ (click lists -h/--help from a set, and
            # bash sorts what it shows anyway)
            assert sorted(fast.split("\n")) == sorted(_typer(env)[:-1].split("\n")), (
                path,
                incomplete,
            )
            checked += 1
    assert checked > 100


def _typer_env(shell: str, words: list[str], incomplete: str) -> dict[str, str]:
    return {
        "_PLUMCTL_COMPLETE": f"complete_{shell}",
        "_TYPER_COMPLETE_ARGS": " ".join(["plumctl", *words, incomplete]),
        "_TYPER_COMPLETE_FISH_ACTION": "get-args",
        "COLUMNS": "80",
    }


def _lines(shell: str, text: str) -> list[str]:
    """The completion lines of a zsh or fish answer, sorted (as the shells show them)."""
    text = text.rstrip("\n")
    if shell == "zsh" and text.startswith("_arguments"):
        text = text.removeprefix("_arguments '*: :((").removesuffix("))'")
    return sorted(text.split("\n"))


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_get_the_same_lines_as_from_typer(shell: str) -> None:
    checked = 0
    for path in _paths(TREE, []):
        for incomplete in ("", "-", "--", "--n", "--no", "-o", "m", "me", "c", "s", "x", "up"):
            env = _typer_env(shell, path, incomplete)
            fast = fastcomplete.answer(TREE, env)
            if fast is None:
                continue
            assert _lines(shell, fast) == _lines(shell, _typer(env)), (path, incomplete)
            checked += 1
    assert checked > 100


def test_a_help_text_wider_than_the_terminal_goes_to_typer() -> None:
    """rich wraps it to the terminal width, which the table cannot know in advance."""
    narrow = {**_typer_env("zsh", ["cluster", "up"], "--"), "COLUMNS": "30"}
    assert fastcomplete.answer(TREE, narrow) is None
    assert fastcomplete.answer(TREE, {**narrow, "COLUMNS": "120"}) is not None
    assert fastcomplete.answer(TREE, {**narrow, "TERMINAL_WIDTH": "30", "COLUMNS": "120"}) is None


def test_fish_is_args_answers_by_exit_status() -> None:
    def status(incomplete: str) -> int:
        env = {
            **_typer_env("fish", ["cluster"], incomplete),
            "_TYPER_COMPLETE_FISH_ACTION": "is-args",
        }
        with pytest.raises(SystemExit) as done:
            fastcomplete.complete(env)
        return int(done.value.code or 0)

    assert status("u") == 0  # "up": completions, no file names
    assert status("zz") == 1  # none: let fish offer files


@pytest.mark.parametrize(
    ("words", "incomplete"),
    [
        (["--node", "http://x"], "me"),  # an option given before the command
        (["broadcast"], ""),  # an argument: its type decides
        (["health", "--interval"], ""),  # an option's value
        (["members"], "--state="),
    ],
)
def test_defers_to_typer_when_the_words_are_not_just_commands(
    words: list[str], incomplete: str
) -> None:
    assert fastcomplete.answer(TREE, _env(words, incomplete)) is None


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_a_real_tab_never_imports_typer(shell: str) -> None:
    probe = (
        "import sys\n"
        "sys.argv = ['plumctl']\n"
        "from plumctl.__main__ import main\n"
        "main()\n"
        "assert 'typer' not in sys.modules, 'typer imported'\n"
    )
    request = _env([], "me") if shell == "bash" else _typer_env(shell, [], "me")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **request}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    if shell == "bash":
        names = done.stdout.split()
    else:
        names = [re.split(r'\t|":"', line)[0].strip('"') for line in _lines(shell, done.stdout)]
    assert names == ["members", "metrics"], done.stdout


def test_no_help_text_loses_words_to_rich_markup() -> None:
    """zsh and fish show help texts after rich renders them: ``[default: lan]`` read as a
    markup tag and vanished ("lan, wan, local or large ."). Defaults in parentheses."""
    from typer.main import get_command
    from typer.rich_utils import rich_render_text

    from plumctl.cli import app

    def commands(command: object) -> Iterator[object]:
        yield command
        for sub in getattr(command, "commands", {}).values():
            yield from commands(sub)

    lost = []
    for command in commands(get_command(app)):
        for param in getattr(command, "params", []):
            text = " ".join((getattr(param, "help", None) or "").split())
            if text and rich_render_text(text) != text:
                lost.append((getattr(command, "name", "?"), param.name, text))
    assert not lost


@pytest.mark.parametrize(
    ("words", "choices"),
    [
        (["node", "start", "--profile"], ["lan", "wan", "local", "large"]),
        (["cluster", "up", "--profile"], ["lan", "wan", "local", "large"]),
        (["sim", "--profile"], ["lan", "wan", "local", "large"]),
        (["sim", "--membership"], ["oracle", "swim"]),
        (["monitor", "--level"], ["debug", "info", "warn", "error"]),
        (["node", "start", "--log-level"], ["debug", "info", "warning", "error"]),
        (["node", "start", "--fsync"], ["normal", "full"]),
    ],
    ids=lambda v: (
        " ".join(v) if isinstance(v, list) and v[0] in ("node", "cluster", "sim", "monitor") else ""
    ),
)
def test_options_with_choices_complete_their_choices_not_files(
    words: list[str], choices: list[str]
) -> None:
    # nothing offered made bash fall back to file names (complete -o default)
    assert fastcomplete.answer(TREE, _env(words, "")) is None  # a value: typer answers
    assert _typer(_env(words, "")).split() == choices
    assert _typer(_env(words, choices[-1][:2])).split() == [
        c for c in choices if c.startswith(choices[-1][:2])
    ]


def test_the_profiles_offered_are_the_cores() -> None:
    from plumctl.options import PROFILES
    from plumtree.core.config import PROFILES as CORE

    assert tuple(PROFILES) == tuple(CORE)
