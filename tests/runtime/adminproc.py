"""One real ``plumctl node start`` process for admin API tests, stopped even on failure."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import ssl
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from plumctl.localcluster import node_command, wait_ready

TOKEN = "hardening-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class NodeProc:
    url: str
    pid: int
    log: Path
    popen: subprocess.Popen[bytes]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def node_process(
    tmp: Path, extra: Sequence[str] = (), node_table: str = "", nofile: int | None = None
) -> Iterator[NodeProc]:
    """One node (its own session), started with ``extra`` flags and a config file whose
    ``[node]`` table holds ``node_table``; killed at the end, even on failure."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "token").write_text(TOKEN + "\n")
    config = tmp / "node.toml"
    config.write_text(f'profile = "local"\n\n[node]\n{node_table}\n')
    ready = tmp / "ready.json"
    log = tmp / "node.log"
    cmd = node_command(
        "target",
        "127.0.0.1:0",
        "127.0.0.1:0",
        tmp / "data",
        (),
        ["--config", str(config), "--ready-file", str(ready), *extra],
    )

    def limit_fds() -> None:  # in the child, before exec
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with log.open("ab") as out:
        popen = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=limit_fds,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        info = wait_ready(popen, ready, log, 30.0)
        yield NodeProc(info["admin_url"], popen.pid, log, popen)
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(10)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(10)


def rejected(node: NodeProc, verify: ssl.SSLContext | bool = True) -> dict[str, float]:
    """``plumtree_admin_rejected_total`` by reason, and the open-connections gauge."""
    text = httpx.get(node.url + "/metrics", headers=AUTH, timeout=10.0, verify=verify).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("plumtree_admin_rejected_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("plumtree_admin_connections "):
            out["open"] = float(line.rsplit(" ", 1)[1])
    return out
