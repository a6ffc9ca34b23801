"""Print docs/cli.md: the command reference, generated from the app (``make docs``)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def render() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cli.md"
        env = {**os.environ, "TERMINAL_WIDTH": "100", "COLUMNS": "100"}
        subprocess.run(
            [
                sys.executable,
                "-m",
                "typer",
                "plumctl.cli",
                "utils",
                "docs",
                "--name",
                "plumctl",
                "--output",
                str(out),
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        return out.read_text()


if __name__ == "__main__":
    sys.stdout.write(render())
