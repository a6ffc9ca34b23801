"""Running plumctl in-process (CliRunner) the way a user would, with plain output."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
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
