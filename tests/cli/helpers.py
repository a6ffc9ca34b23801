"""Running plumctl in-process (CliRunner) the way a user would, with plain output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from plumctl.cli import app
from plumctl.output import reset_consoles

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def invoke(
    *args: str, env: dict[str, str] | None = None, input: str | bytes | None = None
) -> Result:
    reset_consoles()
    return CliRunner().invoke(app, list(args), prog_name="plumctl", env=env, input=input)


def plain(text: str) -> str:
    """Strip ANSI and collapse whitespace, for help-text assertions."""
    return " ".join(_ANSI.sub("", text).split())


def json_out(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def wait_until(predicate: Callable[[], object], timeout: float, step: float = 0.1) -> None:
    """Poll ``predicate`` (wall clock) until true; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(step)


REPO = Path(__file__).resolve().parents[2]


def plumctl_env() -> dict[str, str]:
    """The environment of a real ``plumctl`` process of this checkout: no PLUMCTL_*
    settings of the caller, no colours, wide lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUMCTL_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "250"
    return env


def plumctl(*args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    """Run the real command line (``python -m plumctl``) of this checkout."""
    return subprocess.run(
        [sys.executable, "-m", "plumctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=plumctl_env(),
        check=False,
    )
