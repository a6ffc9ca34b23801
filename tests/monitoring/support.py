"""Helpers for the monitoring tests (fixtures live in conftest.py)."""

from __future__ import annotations

import subprocess


def promtool_ok(proc: subprocess.CompletedProcess[str]) -> None:
    """Assert promtool succeeded, showing everything it said if not."""
    assert proc.returncode == 0, (
        f"promtool exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
