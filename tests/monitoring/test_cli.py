"""``plumctl monitoring rules|dashboard|scrape-config`` through typer's CliRunner."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from plumctl.cli import app
from plumctl.commands import monitoring as command
from plumctl.monitoring.dashboard import render_json
from plumctl.monitoring.rules import render_yaml, rule_groups
from plumctl.output import reset_consoles

from .conftest import Promtool
from .support import promtool_ok

MEMBERS = [
    {"name": "n1", "admin_url": "http://127.0.0.1:7947", "state": "alive"},
    {"name": "n2", "admin_url": "http://127.0.0.1:7948", "state": "suspect"},
    {"name": "n3", "admin_url": "http://127.0.0.1:7949", "state": "left"},
]


def run(*args: str) -> Any:
    reset_consoles()
    return CliRunner().invoke(app, list(args), prog_name="plumctl")


def one_error_line(result: Any) -> str:
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("plumctl: error: ")
    return lines[0]


@pytest.fixture
def no_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(opts: Any) -> list[dict[str, Any]]:
        raise AssertionError("no node should be contacted")

    monkeypatch.setattr(command, "fetch_members", refuse)


@pytest.fixture
def fake_members(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the HTTP seam; records the --node it was asked."""
    asked: list[str] = []

    def fetch(opts: Any) -> list[dict[str, Any]]:
        asked.append(opts.node)
        return MEMBERS

    monkeypatch.setattr(command, "fetch_members", fetch)
    return asked


# ---- rules ---------------------------------------------------------------------------------


def test_rules_to_stdout() -> None:
    result = run("monitoring", "rules")
    assert result.exit_code == 0, result.output
    assert result.stdout == render_yaml()
    assert result.stderr == ""


def test_rules_as_json() -> None:
    result = run("-o", "json", "monitoring", "rules")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["kind"] == "PrometheusRules"
    assert document["groups"] == rule_groups()["groups"]


def test_rules_to_file(tmp_path: Path, promtool: Promtool) -> None:
    out = tmp_path / "rules.yml"
    result = run("monitoring", "rules", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_text() == render_yaml()
    assert result.stdout == ""
    assert result.stderr == f"plumctl: wrote {out}\n"
    promtool_ok(promtool("check", "rules", str(out)))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".plumctl-")]


def test_rules_to_file_as_json_describes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "rules.yml"
    result = run("-o", "json", "monitoring", "rules", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_text() == render_yaml()  # the file stays loadable YAML
    assert json.loads(result.stdout) == {
        "kind": "MonitoringFiles",
        "items": [{"artifact": "rules", "path": str(out)}],
    }


def test_out_dash_is_stdout() -> None:
    result = run("monitoring", "rules", "--out", "-")
    assert result.exit_code == 0
    assert result.stdout == render_yaml()


def test_overwrites_keeping_the_mode(tmp_path: Path) -> None:
    out = tmp_path / "rules.yml"
    out.write_text("old")
    out.chmod(0o600)
    assert run("monitoring", "rules", "--out", str(out)).exit_code == 0
    assert out.read_text() == render_yaml()
    assert out.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("command_name", ["rules", "dashboard"])
def test_unwritable_out_is_one_error_line(command_name: str, tmp_path: Path) -> None:
    result = run("monitoring", command_name, "--out", str(tmp_path / "missing" / "f"))
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "cannot write" in line and "No such file or directory" in line
    assert result.stdout == ""


def test_out_to_a_directory_is_one_error_line(tmp_path: Path) -> None:
    result = run("monitoring", "rules", "--out", str(tmp_path))
    assert result.exit_code == 1
    assert "is a directory" in one_error_line(result)


def test_out_below_a_file_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = run("monitoring", "rules", "--out", str(tmp_path / "file" / "r.yml"))
    assert result.exit_code == 1
    assert "Not a directory" in one_error_line(result)


def test_unwritable_directory_is_one_error_line(tmp_path: Path) -> None:
    # sysfs refuses new files even to root, so this holds whoever runs the suite
    target = tmp_path / "ro" / "r.yml"
    if os.geteuid() == 0:
        target = Path("/sys/plumctl-rules.yml")
    else:
        target.parent.mkdir()
        target.parent.chmod(0o500)
    try:
        result = run("monitoring", "rules", "--out", str(target))
    finally:
        if target.parent != Path("/sys"):
            target.parent.chmod(0o700)
    assert result.exit_code == 1
    assert "Permission denied" in one_error_line(result)


# ---- dashboard -----------------------------------------------------------------------------


@pytest.mark.parametrize("output", [[], ["-o", "json"]])
def test_dashboard_to_stdout(output: list[str]) -> None:
    result = run(*output, "monitoring", "dashboard")
    assert result.exit_code == 0, result.output
    assert result.stdout == render_json()
    assert json.loads(result.stdout)["uid"] == "plumtree-overview"


def test_dashboard_to_file(tmp_path: Path) -> None:
    out = tmp_path / "dash.json"
    result = run("monitoring", "dashboard", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["title"] == "Plumtree Overview"
    assert result.stderr == f"plumctl: wrote {out}\n"


# ---- scrape-config -------------------------------------------------------------------------


def test_scrape_config_without_targets_contacts_no_node(no_fetch: None) -> None:
    result = run("monitoring", "scrape-config")
    assert result.exit_code == 0, result.output
    assert "job_name: plumtree" in result.stdout
    assert "    - plumtree-targets.json\n" in result.stdout
    assert result.stderr == ""


def test_scrape_config_options(no_fetch: None, tmp_path: Path) -> None:
    result = run(
        "monitoring",
        "scrape-config",
        "--job",
        "gossip",
        "--interval",
        "15s",
        "--rules-file",
        str(tmp_path / "rules.yml"),
    )
    assert result.exit_code == 0, result.output
    assert "job_name: gossip" in result.stdout
    assert "scrape_interval: 15s" in result.stdout
    assert f"- {tmp_path / 'rules.yml'}\n" in result.stdout


def test_scrape_config_writes_live_targets_and_config(
    fake_members: list[str], tmp_path: Path, promtool: Promtool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf").mkdir()
    (tmp_path / "sd").mkdir()
    (tmp_path / "conf" / "rules.yml").write_text(render_yaml())
    result = run(
        "--node",
        "http://127.0.0.1:7947",
        "monitoring",
        "scrape-config",
        "--targets-file",
        "sd/targets.json",
        "--rules-file",
        "conf/rules.yml",
        "--out",
        "conf/prometheus.yml",
    )
    assert result.exit_code == 0, result.output
    assert fake_members == ["http://127.0.0.1:7947"]
    targets = tmp_path / "sd" / "targets.json"
    config = tmp_path / "conf" / "prometheus.yml"
    assert json.loads(targets.read_text()) == [
        {"targets": ["127.0.0.1:7947"], "labels": {"node": "n1"}},
        {"targets": ["127.0.0.1:7948"], "labels": {"node": "n2"}},
    ]
    assert result.stderr.splitlines() == [
        f"plumctl: wrote 2 scrape target(s) to {targets}",
        f"plumctl: wrote {config}",
    ]
    # Relative paths are rewritten relative to the config's directory, which is how
    # Prometheus resolves them.
    assert "    - ../sd/targets.json\n" in config.read_text()
    assert "- rules.yml\n" in config.read_text()
    proc = promtool("check", "config", str(config), cwd=tmp_path / "sd")
    promtool_ok(proc)
    assert "WARNING" not in proc.stdout + proc.stderr  # found and read the targets
    assert "SUCCESS: 1 rule files found" in proc.stdout


def test_scrape_config_keeps_absolute_paths(fake_members: list[str], tmp_path: Path) -> None:
    targets = tmp_path / "targets.json"
    result = run(
        "monitoring",
        "scrape-config",
        "--targets-file",
        str(targets),
        "--out",
        str(tmp_path / "conf.yml"),
    )
    assert result.exit_code == 0, result.output
    assert f"    - {targets}\n" in (tmp_path / "conf.yml").read_text()


def test_scrape_config_on_stdout_names_the_targets_file_absolutely(
    fake_members: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("monitoring", "scrape-config", "--targets-file", "t.json")
    assert result.exit_code == 0, result.output
    assert f"    - {tmp_path / 't.json'}\n" in result.stdout
    assert (tmp_path / "t.json").exists()


def test_scrape_config_as_json(fake_members: list[str], tmp_path: Path) -> None:
    result = run(
        "-o", "json", "monitoring", "scrape-config", "--targets-file", str(tmp_path / "t.json")
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["kind"] == "PrometheusConfig"
    assert document["config"]["scrape_configs"][0]["file_sd_configs"][0]["files"] == [
        str(tmp_path / "t.json")
    ]
    assert [g["labels"]["node"] for g in document["targets"]] == ["n1", "n2"]


def test_scrape_config_warns_when_no_member_is_scrapable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(command, "fetch_members", lambda opts: [MEMBERS[2]])
    result = run("monitoring", "scrape-config", "--targets-file", str(tmp_path / "t.json"))
    assert result.exit_code == 0
    assert "plumctl: warning: no alive, suspect or dead member" in result.stderr
    assert json.loads((tmp_path / "t.json").read_text()) == []


def test_scrape_config_bad_interval_is_a_usage_error(no_fetch: None) -> None:
    result = run("monitoring", "scrape-config", "--interval", "often")
    assert result.exit_code == 2
    assert "--interval" in one_error_line(result)


def test_scrape_config_unwritable_targets_file(fake_members: list[str], tmp_path: Path) -> None:
    result = run(
        "monitoring", "scrape-config", "--targets-file", str(tmp_path / "missing" / "t.json")
    )
    assert result.exit_code == 1
    assert "cannot write" in one_error_line(result)


# ---- the seam to plumctl.client (the interface the client module provides) ------------------


class ClientError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fake_client_module(monkeypatch: pytest.MonkeyPatch, members: Any) -> list[tuple]:
    calls: list[tuple] = []

    class Client:
        def __init__(self, base_url: str, token: str | None, timeout: float) -> None:
            calls.append((base_url, token, timeout))

        def members(self) -> Any:
            if isinstance(members, Exception):
                raise members
            return members

    module = types.ModuleType("plumctl.client")
    module.Client = Client  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "plumctl.client", module)
    return calls


def test_fetch_members_uses_the_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = fake_client_module(monkeypatch, {"kind": "MemberList", "items": MEMBERS})
    result = run(
        "--node",
        "http://10.1.1.1:7947/",
        "--token",
        "s3cret",
        "--timeout",
        "2.5",
        "monitoring",
        "scrape-config",
        "--targets-file",
        str(tmp_path / "t.json"),
    )
    assert result.exit_code == 0, result.output
    assert calls == [("http://10.1.1.1:7947", "s3cret", 2.5)]
    assert len(json.loads((tmp_path / "t.json").read_text())) == 2


def test_client_errors_keep_their_exit_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_client_module(monkeypatch, ClientError("connection refused", exit_code=3))
    result = run("monitoring", "scrape-config", "--targets-file", str(tmp_path / "t.json"))
    assert result.exit_code == 3
    assert "connection refused" in one_error_line(result)
    assert not (tmp_path / "t.json").exists()


def test_unexpected_member_list_is_one_error_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_client_module(monkeypatch, {"kind": "MemberList"})
    result = run("monitoring", "scrape-config", "--targets-file", str(tmp_path / "t.json"))
    assert result.exit_code == 1
    assert "/v1/members" in one_error_line(result)


# ---- help ----------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [[], ["rules"], ["dashboard"], ["scrape-config"]])
def test_help_has_examples(args: list[str]) -> None:
    result = run("monitoring", *args, "--help")
    assert result.exit_code == 0
    assert "Examples" in result.stdout
    assert "plumctl monitoring" in result.stdout


def test_listed_in_the_root_help() -> None:
    result = run("--help")
    assert result.exit_code == 0
    assert "monitoring" in result.stdout
