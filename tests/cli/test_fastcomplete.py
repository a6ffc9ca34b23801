"""The typer-free bash completion fast path answers exactly what typer answers, or defers."""

from __future__ import annotations

import json
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
TREE = json.loads(fastcomplete.TREE.read_text())


def test_checked_in_tree_matches_the_app() -> None:
    assert generate_tree() == fastcomplete.TREE.read_text(), (
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


def test_a_real_tab_never_imports_typer() -> None:
    probe = (
        "import sys\n"
        "sys.argv = ['plumctl']\n"
        "from plumctl.__main__ import main\n"
        "main()\n"
        "assert 'typer' not in sys.modules, 'typer imported'\n"
    )
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **_env([], "me")}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["members", "metrics"]
