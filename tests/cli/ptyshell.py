"""Interactive shells on a pty, for the completion tests.

The child of ``pty.fork()`` is a copy of the pytest process: if it returned from a failed
exec it would go on running tests as a second pytest and report results twice. So the
child either becomes the shell or ends with ``os._exit(127)`` (the shell's "command not
found"), and a shell that ends before its prompt is :class:`ShellUnavailable`: the test
skips, naming why.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import shutil
import time

import pytest

#: what the child exits with when the exec fails (as a shell does for "command not found")
EXEC_FAILED = 127


class ShellUnavailable(Exception):
    """The shell is not installed, or ended before it showed its prompt."""


def require(shell: str) -> None:
    """Skip the calling test, with the reason, when ``shell`` is not on PATH."""
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed (on PATH)")


def _spawn(argv: list[str], env: dict[str, str]) -> tuple[int, int]:
    pid, fd = pty.fork()
    if pid == 0:  # child: become the shell, or end here; never return into the caller
        try:
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(EXEC_FAILED)
    return pid, fd


def _ended(pid: int) -> int | None:
    """The child's exit status if it has ended (reaped), else None."""
    done, status = os.waitpid(pid, os.WNOHANG)
    if done == 0:
        return None
    return os.waitstatus_to_exitcode(status)


def interactive(
    argv: list[str], env: dict[str, str], keys: bytes, expect: bytes, timeout: float = 20.0
) -> bytes:
    """Run an interactive shell on a pty, type ``keys``, read until ``expect`` shows up.

    Raises :class:`ShellUnavailable` when the shell ends before its prompt (``$ ``).
    """
    pid, fd = _spawn(argv, env)
    status: int | None = None
    out = b""
    try:
        deadline = time.monotonic() + timeout
        while b"$ " not in out and time.monotonic() < deadline:  # wait for the prompt
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                with contextlib.suppress(OSError):  # the pty closed: the shell is gone
                    out += os.read(fd, 4096)
            if b"$ " not in out and (status := _ended(pid)) is not None:
                raise ShellUnavailable(
                    f"{argv[0]} cannot start: exited {status} before its prompt"
                    + (f" (output: {out.decode(errors='replace').strip()[:200]})" if out else "")
                )
        os.write(fd, keys)
        out = b""
        while expect not in out and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    break
        return out
    finally:
        if status is None:
            with contextlib.suppress(ChildProcessError):
                os.kill(pid, 9)
                os.waitpid(pid, 0)
        os.close(fd)
