"""Crash reports: redacted, no locals, the newest ten kept, one line printed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from plumctl.tui import crash


def boom(token: str) -> None:
    hidden_local = "hunter2-local-value"  # noqa: F841 - must never reach a report
    raise ValueError(f"bad answer for Authorization: Bearer {token}")


def caught() -> ValueError:
    try:
        boom("s3cr3t-token")
    except ValueError as exc:
        return exc
    raise AssertionError("unreachable")


def test_redact() -> None:
    text = (
        "Authorization: Bearer abc.def token=xyz&x=1 http://alice:pw@host:1/ "
        "password=p4ss my-own-secret"
    )
    out = crash.redact(text, ["my-own-secret", None, ""])
    for secret in ("abc.def", "xyz", "alice", ":pw@", "p4ss", "my-own-secret"):
        assert secret not in out
    assert "x=1" in out and "host:1" in out


def test_report_has_frames_but_no_locals_and_no_secrets() -> None:
    report = crash.build_report(caught(), {"via": "http://n:1"}, ["s3cr3t-token"])
    assert "boom" in report and "ValueError" in report  # the frames are there
    assert "hunter2-local-value" not in report  # locals are not
    assert "s3cr3t-token" not in report
    assert "via: http://n:1" in report and "textual:" in report


def test_worker_failed_is_unwrapped() -> None:
    class WorkerFailed(Exception):
        def __init__(self, error: BaseException) -> None:
            super().__init__("worker failed")
            self.error = error

    inner = caught()
    wrapped = WorkerFailed(inner)
    assert crash.root_cause(wrapped) is inner
    report = crash.build_report(wrapped)
    assert "=== TRACEBACK ===" in report and "=== RAISED AS ===" in report


def test_write_keeps_the_newest_ten_private(tmp_path: Path) -> None:
    paths = [crash.write_report(f"report {i}", tmp_path) for i in range(12)]
    assert all(p is not None for p in paths)
    left = sorted(tmp_path.glob(f"{crash.PREFIX}*.log"))
    assert len(left) == crash.KEEP
    assert left[-1] == paths[-1] and paths[0] not in left
    assert stat.S_IMODE(os.stat(left[-1]).st_mode) == 0o600


def test_report_crash_is_one_redacted_line(tmp_path: Path) -> None:
    line = crash.report_crash(caught(), {}, ["s3cr3t-token"], directory=tmp_path)
    assert "\n" not in line and line.startswith("plumctl: error: top crashed (ValueError")
    assert "s3cr3t-token" not in line
    path = Path(line.rsplit("crash report: ", 1)[1])
    assert path.parent == tmp_path and path.read_text().count("ValueError") >= 1


def test_unwritable_directory_still_gives_a_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    line = crash.report_crash(caught(), directory=blocker / "sub")
    assert "could not write a crash report" in line


def test_log_dir_is_the_user_log_dir() -> None:
    assert "plumctl" in str(crash.log_dir())
