"""A local cluster of node processes on loopback, described by a state directory.

``DIR/cluster.json`` lists the nodes (pid, addresses, log file). A node is only ever
signalled after checking that the pid still runs *our* ``plumctl node start`` for that
node name, so a recycled pid is never killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "cluster.json"


class ClusterError(Exception):
    """A local-cluster operation failed; the message is one line for the operator."""


@dataclass(slots=True)
class NodeProcess:
    name: str
    pid: int
    gossip_addr: str
    admin_url: str
    log_file: str

    def running(self) -> bool:
        return is_our_node(self.pid, self.name)


@dataclass(slots=True)
class ClusterState:
    dir: str
    profile: str
    created: float
    nodes: list[NodeProcess] = field(default_factory=list)
    #: the bearer token file every node was given (``cluster up --token-file``)
    token_file: str | None = None

    def token(self) -> str | None:
        """The nodes' bearer token, read from :attr:`token_file` (None: no token, or the
        file is gone: commands then fall back to ``--token``)."""
        if self.token_file is None:
            return None
        try:
            return Path(self.token_file).read_text().strip() or None
        except OSError:
            return None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def load(cls, directory: Path) -> ClusterState | None:
        path = directory / STATE_FILE
        try:
            data = json.loads(path.read_text())
            nodes = [NodeProcess(**n) for n in data["nodes"]]
            token_file = data.get("token_file")
            if token_file is not None and not isinstance(token_file, str):
                raise TypeError("token_file is not a path")
            return cls(data["dir"], data["profile"], data["created"], nodes, token_file)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ClusterError(f"{path}: unreadable cluster state ({exc})") from None

    def save(self) -> None:
        path = Path(self.dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=2, sort_keys=True))
        tmp.replace(path)


def default_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_state_dir("plumctl")) / "cluster"


def is_our_node(pid: int, name: str) -> bool:
    """True if ``pid`` is alive and is ``plumctl node start --name <name>``."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return False  # alive but we cannot prove it is ours: never touch it
    args = raw.decode(errors="replace").split("\0")
    return _is_node_start(args) and "--name" in args and name in args


def _is_node_start(args: list[str]) -> bool:
    """Whether a command line is ``... plumctl ... start ...`` (``spawn_node``'s)."""
    return "start" in args and any("plumctl" in a for a in args)


def orphans(directory: Path) -> list[NodeProcess]:
    """Our node processes whose ready file is under ``directory``: a cluster whose state
    file is gone (its directory removed while it ran) is still found, and stopped.

    Only processes of this user that run ``plumctl node start --ready-file DIR/run/...``
    (the command ``spawn_node`` builds) are returned; Linux only (``/proc``).
    """
    run = (directory / "run").resolve()
    found: list[NodeProcess] = []
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return found
    uid = os.getuid()
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            cwd = (entry / "cwd").resolve()
        except OSError:
            continue
        if not _is_node_start(args):
            continue
        name = _arg_after(args, "--name")
        ready = _arg_after(args, "--ready-file")
        if name is None or ready is None or (cwd / ready).parent.resolve() != run:
            continue
        found.append(NodeProcess(name, int(entry.name), "", "", ""))
    return found


def _arg_after(args: list[str], flag: str) -> str | None:
    try:
        return args[args.index(flag) + 1]
    except (ValueError, IndexError):
        return None


def node_command(
    name: str,
    bind: str,
    api: str,
    data_dir: Path,
    join: list[str] | tuple[str, ...] = (),
    extra: list[str] | None = None,
) -> list[str]:
    """The ``plumctl node start`` command line of one node (this interpreter's plumctl)."""
    return [
        sys.executable,
        "-m",
        "plumctl",
        "node",
        "start",
        "--name",
        name,
        "--bind",
        bind,
        "--api",
        api,
        "--data-dir",
        str(data_dir),
        *[arg for seed in join for arg in ("--join", seed)],
        *(extra or []),
    ]


def keyring_path(directory: Path, name: str) -> Path:
    """Where a local node keeps its own copy of the cluster's keyring (``--keyring``)."""
    return directory / "keys" / f"{name}.json"


def copy_keyring(source: Path, directory: Path, names: list[str]) -> None:
    """Give every node its own keyring file (mode 0600), read from ``source``: a node
    saves live key changes (``plumctl keys``) to its file, and reads it when restarted.
    Raises ClusterError for an unusable keyring."""
    from plumtree.runtime.crypto import Keyring, KeyringError
    from plumtree.runtime.keys import write_keyring_file

    try:
        keys = list(Keyring.load(source).keys)
    except KeyringError as exc:
        raise ClusterError(f"--keyring: {exc}") from None
    for name in names:
        path = keyring_path(directory, name)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_keyring_file(path, keys)


def spawn_node(
    directory: Path,
    name: str,
    profile: str,
    join: list[str],
    extra: list[str] | None = None,
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """Start ``plumctl node start`` in its own session, logging to DIR/logs/NAME.log and
    keeping its state in DIR/data/NAME (a restarted node resumes from it)."""
    logs = directory / "logs"
    run = directory / "run"
    logs.mkdir(parents=True, exist_ok=True)
    run.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    ready = run / f"{name}.json"
    ready.unlink(missing_ok=True)
    cmd = node_command(
        name,
        "127.0.0.1:0",
        "127.0.0.1:0",
        directory / "data" / name,
        join,
        ["--profile", profile, "--ready-file", str(ready), *(extra or [])],
    )
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal does not reach the nodes
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return proc, ready, log_path


def wait_ready(
    proc: subprocess.Popen[bytes], ready: Path, log_path: Path, timeout: float
) -> dict[str, Any]:
    """The node's ready file, or a ClusterError quoting the end of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists():
            try:
                data: dict[str, Any] = json.loads(ready.read_text())
                return data
            except ValueError:
                pass
        code = proc.poll()
        if code is not None:
            raise ClusterError(f"node exited with code {code} during start: {last_line(log_path)}")
        time.sleep(0.02)
    raise ClusterError(f"node did not become ready within {timeout:g}s: {last_line(log_path)}")


def last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1].strip() if lines else "(empty log)"


def stop_nodes(nodes: list[NodeProcess], grace: float) -> dict[str, str]:
    """SIGTERM our running nodes, wait up to ``grace``, then SIGKILL; outcome per node."""
    outcome: dict[str, str] = {}
    running = []
    for n in nodes:
        if n.running():
            try:
                os.kill(n.pid, signal.SIGTERM)
                running.append(n)
            except ProcessLookupError:
                outcome[n.name] = "not running"
        else:
            outcome[n.name] = "not running"
    deadline = time.monotonic() + grace
    while running and time.monotonic() < deadline:
        _reap_children()
        running = [n for n in running if n.running() and not _is_zombie(n.pid)]
        if running:
            time.sleep(0.05)
    for n in nodes:
        if n.name in outcome:
            continue
        if n in running:
            try:
                os.kill(n.pid, signal.SIGKILL)
                outcome[n.name] = "killed"
            except ProcessLookupError:
                outcome[n.name] = "stopped"
        else:
            outcome[n.name] = "stopped"
    _reap_children()
    return outcome


def terminate(procs: list[subprocess.Popen[bytes]], grace: float = 5.0) -> None:
    """Stop child processes we spawned (SIGTERM, then SIGKILL after ``grace``)."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _reap_children() -> None:
    """Collect exited children of this process (when ``up`` and ``down`` run in one process)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
