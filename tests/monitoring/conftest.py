"""Shared fixtures for the monitoring artefacts: the real promtool, and a plain terminal."""

from __future__ import annotations

import os

# A plain, wide terminal for help output, set before typer is imported (as tests/ does).
os.environ.setdefault("TERMINAL_WIDTH", "200")
os.environ.setdefault("COLUMNS", "200")
os.environ.setdefault("_TYPER_FORCE_DISABLE_TERMINAL", "1")
os.environ.pop("FORCE_COLOR", None)
os.environ.pop("GITHUB_ACTIONS", None)

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

Promtool = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def promtool_path() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found on PATH: these tests check the generated rules and configs "
            "with the real promtool. Install Debian's `prometheus` package "
            "(apt-get install prometheus), which CI does.",
            pytrace=False,
        )
    return path


@pytest.fixture
def promtool(promtool_path: str, tmp_path: Path) -> Promtool:
    """Run ``promtool ARGS...`` in ``tmp_path``; returns the finished process."""

    def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [promtool_path, *args],
            cwd=cwd or tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run
