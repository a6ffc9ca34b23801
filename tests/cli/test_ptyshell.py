"""The pty harness of the completion tests: a shell that cannot start skips the test,
and the forked child never outlives a failed exec (issue 19, bug 1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.ptyshell import ShellUnavailable, interactive, require

ROOT = Path(__file__).resolve().parents[2]

# In a process of its own: with a child that returned from the failed exec, that child
# would run the rest of this script (and, inside pytest, the rest of the suite) too.
SCRIPT = """
import os, sys
from tests.cli.ptyshell import ShellUnavailable, interactive
try:
    interactive([sys.argv[1]], {"PATH": "/usr/bin:/bin"}, b"", b"x", timeout=10.0)
except ShellUnavailable as exc:
    print(f"{os.getpid()} unavailable: {exc}")
else:
    print(f"{os.getpid()} started")
"""


def test_a_failed_exec_ends_the_child_with_127_and_runs_nothing_else(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-zsh")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, missing],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout  # the parent alone reports
    assert f"unavailable: {missing} cannot start: exited 127 before its prompt" in lines[0]


def test_a_shell_that_ends_before_its_prompt_is_unavailable() -> None:
    with pytest.raises(ShellUnavailable, match=r"^sh cannot start: exited 3 before its prompt"):
        interactive(["sh", "-c", "exit 3"], {"PATH": "/usr/bin:/bin"}, b"", b"x", timeout=10.0)


def test_a_shell_not_on_path_skips_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.skip.Exception, match="zsh is not installed"):
        require("zsh")
