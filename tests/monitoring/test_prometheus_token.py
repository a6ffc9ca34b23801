"""A real Prometheus scrapes a node that wants its bearer token on ``/metrics``, using only
what ``plumctl monitoring scrape-config --token-file`` wrote (its ``authorization`` names
the token file). Every process started here is stopped in a ``finally``, by its handle."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.cli.helpers import invoke
from tests.ports import free_port
from tests.runtime.adminproc import node_process, rejected

pytestmark = pytest.mark.slow


def test_prometheus_scrapes_a_token_node_through_the_generated_config(tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("prometheus not found on PATH (Debian's `prometheus` package)", pytrace=False)
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    node_dir = tmp_path / "node"
    with node_process(node_dir, ["--token-file", str(node_dir / "token")]) as node:
        generated = invoke(
            "--node", node.url, "monitoring", "scrape-config",
            "--token-file", str(node_dir / "token"),
            "--targets-file", str(prom_dir / "targets.json"),
            "--interval", "1s", "--out", str(prom_dir / "prometheus.yml"),
        )  # fmt: skip
        assert generated.exit_code == 0, generated.output
        config = (prom_dir / "prometheus.yml").read_text()
        assert f"credentials_file: {node_dir / 'token'}" in config, config
        port = free_port()
        with (prom_dir / "prometheus.log").open("wb") as log:
            proc = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={prom_dir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={prom_dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=prom_dir,
            )
        try:
            targets = _wait_healthy_target(f"http://127.0.0.1:{port}", proc, prom_dir)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(15)
        assert targets[0]["labels"]["node"] == "target"
        assert rejected(node)["unauthorized"] == 0, "every scrape carried the token"


def _wait_healthy_target(url: str, proc: subprocess.Popen[bytes], prom_dir: Path) -> list[dict]:  # type: ignore[type-arg]
    last: object = None
    deadline = time.monotonic() + 60.0
    with httpx.Client(timeout=5.0, trust_env=False) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail("prometheus exited:\n" + (prom_dir / "prometheus.log").read_text())
            try:
                active = http.get(f"{url}/api/v1/targets").json()["data"]["activeTargets"]
                last = active
                if active and all(t["health"] == "up" for t in active):
                    return list(active)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                last = exc
            time.sleep(0.3)
    pytest.fail(f"no healthy target within 60 s; last seen: {json.dumps(last, default=str)[:2000]}")
