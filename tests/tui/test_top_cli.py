"""``plumctl top`` as a command: exit codes, ``-o json``, crash reports (no real cluster)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plumctl.commands import top as top_cmd
from plumctl.options import GlobalOptions
from plumctl.tui import crash
from tests.cli.helpers import invoke
from tests.tui.fakes import FakeSource


@pytest.fixture
def fake_source(monkeypatch: pytest.MonkeyPatch) -> FakeSource:
    source = FakeSource(["n1", "n2", "n3"])
    monkeypatch.setattr(top_cmd, "make_source", lambda opts, interval: source)
    return source


@pytest.fixture
def log_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "logs"
    monkeypatch.setattr(crash, "log_dir", lambda: where)
    return where


def test_unreachable_at_start_is_exit_3_and_one_line() -> None:
    result = invoke("top", "--node", "http://127.0.0.1:1", "--timeout", "1")
    assert result.exit_code == 3
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("plumctl: error: cannot reach node at http://127.0.0.1:1")


def test_malformed_node_is_exit_3() -> None:
    result = invoke("top", "--node", "http://", "-o", "json")
    assert result.exit_code == 3 and len(result.stderr.splitlines()) == 1


def test_json_prints_one_snapshot_with_rates(fake_source: FakeSource) -> None:
    fake_source.bump("n2", "plumtree_messages_delivered_total", 0)
    result = invoke("top", "-o", "json", "--interval", "0.1")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["kind"] == "ClusterTop"
    assert [i["name"] for i in doc["items"]] == ["n1", "n2", "n3"]
    assert all(i["rates"]["delivered_per_s"] == 0.0 for i in doc["items"])  # two polls
    assert fake_source.polls == 2 and fake_source.closed == 1
    assert result.stderr == ""


def test_json_when_nothing_answers(fake_source: FakeSource) -> None:
    fake_source.fail = "cannot reach node at http://fake:7947: connection refused"
    result = invoke("top", "-o", "json")
    assert result.exit_code == 3
    assert result.stderr.strip() == (
        "plumctl: error: cannot reach node at http://fake:7947: connection refused"
    )


def test_a_bug_at_startup_writes_a_report_and_prints_one_line(
    fake_source: FakeSource, log_dir: Path
) -> None:
    fake_source.crash = KeyError("token=abc")
    result = invoke("top", "--token", "tok-123456")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    (line,) = result.stderr.splitlines()
    assert "top crashed (KeyError" in line and "abc" not in line
    (report,) = log_dir.glob("top-crash-*.log")
    assert str(report) in line
    assert "Traceback" in report.read_text() and "abc" not in report.read_text()


async def test_a_bug_inside_the_dashboard_writes_a_report(
    log_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = FakeSource(["n1", "n2"])
    real_poll = source.poll

    async def poll_then_break() -> object:
        if source.polls >= 1:
            source.crash = RuntimeError("Bearer tok-123456 leaked into an error")
        return await real_poll()

    source.poll = poll_then_break  # type: ignore[method-assign]
    opts = GlobalOptions(token="tok-123456")
    code = await top_cmd._run_dashboard(source, 0.1, opts, headless=True)
    assert code == 1
    assert source.closed >= 1  # the app and the command both close it (idempotent)
    err = capsys.readouterr().err
    (line,) = err.splitlines()
    assert "top crashed (RuntimeError" in line and "tok-123456" not in line
    (report,) = log_dir.glob("top-crash-*.log")
    text = report.read_text()
    assert "RuntimeError" in text and "tok-123456" not in text and "polls: 1" in text


def test_the_dashboard_scrapes_less_and_json_asks_for_the_quantiles_too() -> None:
    from plumctl.options import Output
    from plumctl.tui.source import DASHBOARD_NAMES, SCRAPE_NAMES, HttpSource

    dashboard = top_cmd.make_source(GlobalOptions(), 1.0)
    as_json = top_cmd.make_source(GlobalOptions(output=Output.json), 1.0)
    assert isinstance(dashboard, HttpSource) and isinstance(as_json, HttpSource)
    assert dashboard.names == DASHBOARD_NAMES and as_json.names == SCRAPE_NAMES
    assert not any(n.endswith("_bucket") for n in DASHBOARD_NAMES)
