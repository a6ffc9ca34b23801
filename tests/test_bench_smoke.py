"""The benchmarks that need no cluster still run: a change to the node (e.g. who counts
as a member) once broke bench/node.py without any test noticing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_node_runs_and_prints_every_case() -> None:
    done = subprocess.run(
        [sys.executable, "bench/node.py", "--deliveries", "200", "--repeats", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for case in ("1 message a frame, memory", "10 messages a frame, data dir"):
        assert case in done.stdout
