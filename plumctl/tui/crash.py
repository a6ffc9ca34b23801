"""Crash reports of ``plumctl top``: a redacted file in the user log directory, one line out.

Textual renders an unhandled exception as a traceback *with locals*, which would put the
bearer token, admin URLs with credentials and whole scrapes on the operator's terminal.
``top`` never lets that happen: the app records the error instead (see
``TopApp._handle_exception``), and the command writes a plain-text report here (frames,
no locals, every known secret masked), keeps the newest :data:`KEEP` reports and prints
one line naming the file. Headless on purpose: no Textual import, nothing that can fail
while reporting a failure.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import traceback
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

KEEP = 10
PREFIX = "top-crash-"
MASK = "***"

_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s'\"]+")
_USERINFO = re.compile(r"(?i)\b(https?://)[^/\s:@]+:[^/\s@]+@")
_SECRET_PARAM = re.compile(r"(?i)\b(token|password|passwd|secret|api[_-]?key)=([^&\s'\"]+)")


def log_dir() -> Path:
    """Where reports go: ``platformdirs.user_log_path("plumctl")`` (a log, not a cache)."""
    import platformdirs

    return Path(platformdirs.user_log_path("plumctl", appauthor=False))


def root_cause(error: BaseException) -> BaseException:
    """The error itself, unwrapping Textual's ``WorkerFailed`` (by attribute, headless)."""
    inner = getattr(error, "error", None)
    return inner if isinstance(inner, BaseException) else error


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Mask bearer tokens, URL credentials, ``token=`` style parameters and given secrets."""
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    text = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}={MASK}", text)


def build_report(
    error: BaseException,
    context: Mapping[str, Any] | None = None,
    secrets: Iterable[str | None] = (),
) -> str:
    """The report as plain text: header, environment, context, traceback (no locals)."""
    cause = root_cause(error)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    sections = [
        f"plumctl top crash report, written {now}\n\n"
        f"Please review this file before sharing it; known secrets are masked as {MASK}.\n"
        "Attach it when you report the bug.\n",
        _section("ENVIRONMENT", _lines(_environment())),
        _section("CONTEXT", _lines(dict(context or {}))),
        _section("TRACEBACK", _traceback(cause)),
    ]
    if cause is not error:
        sections.append(_section("RAISED AS", _traceback(error)))
    return redact("\n".join(sections), secrets)


def write_report(report: str, directory: Path | None = None) -> Path | None:
    """Write a report (mode 0600) and keep the newest :data:`KEEP`; ``None`` if unwritable.

    Never raises: it runs in a handler that must not fail.
    """
    where = directory if directory is not None else log_dir()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    path = where / f"{PREFIX}{stamp}-{os.getpid()}.log"
    try:
        where.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as fh:
            fh.write(report)
    except OSError:
        return None
    prune(where)
    return path


def prune(directory: Path, keep: int = KEEP) -> None:
    """Delete all but the newest ``keep`` reports (names sort by time)."""
    try:
        reports = sorted(directory.glob(f"{PREFIX}*.log"), key=lambda p: p.name, reverse=True)
        for old in reports[keep:]:
            old.unlink(missing_ok=True)
    except OSError:
        pass


def report_crash(
    error: BaseException,
    context: Mapping[str, Any] | None = None,
    secrets: Iterable[str | None] = (),
    directory: Path | None = None,
) -> str:
    """Write the report and return the one line to print (already redacted)."""
    secrets = list(secrets)
    try:
        report = build_report(error, context, secrets)
    except Exception:  # a report that cannot be built still gets a line
        report = redact(f"crash report could not be built; error: {error!r}\n", secrets)
    path = write_report(report, directory)
    cause = root_cause(error)
    what = redact(_one_line(f"{type(cause).__name__}: {cause}"), secrets)
    if path is None:
        return f"plumctl: error: top crashed ({what}); could not write a crash report"
    return f"plumctl: error: top crashed ({what}); crash report: {path}"


def _environment() -> dict[str, str]:
    from importlib import metadata

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    from plumtree import __version__

    return {
        "plumctl": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "textual": version("textual"),
        "rich": version("rich"),
        "httpx": version("httpx"),
        "TERM": os.environ.get("TERM", ""),
    }


def _section(title: str, body: str) -> str:
    rule = "=" * 72
    return f"\n{rule}\n=== {title} ===\n{rule}\n\n{body.rstrip()}\n"


def _lines(facts: Mapping[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in facts.items())


def _traceback(error: BaseException) -> str:
    """Frames only: ``traceback.format_exception`` never includes locals."""
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
