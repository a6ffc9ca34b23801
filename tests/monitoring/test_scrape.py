"""The scrape configuration and the file_sd targets built from a member table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plumctl.monitoring.rules import render_yaml
from plumctl.monitoring.scrape import (
    file_sd_targets,
    is_duration,
    scrape_config,
    scrape_config_data,
    target_of,
)

from .conftest import Promtool
from .support import promtool_ok

MEMBERS = [
    {"name": "n2", "admin_url": "http://10.0.0.2:7947", "state": "suspect", "incarnation": 3},
    {"name": "n1", "admin_url": "http://10.0.0.1:7947", "state": "alive", "incarnation": 1},
    {"name": "n3", "admin_url": "http://10.0.0.3:7947", "state": "dead"},
    {"name": "n4", "admin_url": "http://10.0.0.4:7947", "state": "left"},
    {"name": "n5", "state": "alive"},
    {"name": "n6", "admin_url": "", "state": "alive"},
    {"name": "n7", "admin_url": None, "state": "alive"},
    {"name": "n8", "admin_url": "not a url", "state": "alive"},
]


def test_one_target_per_alive_suspect_or_dead_member_with_an_admin_url() -> None:
    # a dead member stays (its up == 0 is how Prometheus sees the crash); a member that
    # left gracefully does not
    assert file_sd_targets(MEMBERS) == [
        {"targets": ["10.0.0.1:7947"], "labels": {"node": "n1"}},
        {"targets": ["10.0.0.2:7947"], "labels": {"node": "n2"}},
        {"targets": ["10.0.0.3:7947"], "labels": {"node": "n3"}},
    ]


def test_no_members_no_targets() -> None:
    assert file_sd_targets([]) == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:7947", ("127.0.0.1:7947", {})),
        ("http://127.0.0.1:7947/", ("127.0.0.1:7947", {})),
        ("HTTP://Node-1.example:7947", ("node-1.example:7947", {})),
        ("http://host", ("host:80", {})),
        ("https://host", ("host:443", {"__scheme__": "https"})),
        ("http://[::1]:7947", ("[::1]:7947", {})),
        ("http://h:7947/admin/", ("h:7947", {"__metrics_path__": "/admin/metrics"})),
        ("tcp://h:7947", None),
        ("http://:7947", None),
        ("http://h:notaport", None),
        ("h:7947", None),
    ],
)
def test_target_of(url: str, expected: object) -> None:
    assert target_of(url) == expected


def test_duration() -> None:
    assert all(is_duration(d) for d in ("5s", "1m", "1m30s", "250ms", "1h"))
    assert not any(is_duration(d) for d in ("", "5", "5x", "s", "1.5s", "5s1m"))


def test_config_shape() -> None:
    data = scrape_config_data(job="gossip", file_sd_path="/t.json", interval="10s")
    assert "rule_files" not in data
    job = data["scrape_configs"][0]
    assert job["job_name"] == "gossip"
    assert job["scrape_interval"] == "10s"
    assert job["metrics_path"] == "/metrics"
    assert job["file_sd_configs"] == [{"files": ["/t.json"], "refresh_interval": "30s"}]
    assert scrape_config_data(rule_files=["r.yml"])["rule_files"] == ["r.yml"]
    with pytest.raises(ValueError, match="duration"):
        scrape_config_data(interval="often")


def test_promtool_accepts_config_targets_and_rules(promtool: Promtool, tmp_path: Path) -> None:
    members = [
        *MEMBERS,
        {"name": "n9", "admin_url": "https://[fe80::1]:8443/admin", "state": "alive"},
    ]
    (tmp_path / "targets.json").write_text(json.dumps(file_sd_targets(members)))
    (tmp_path / "rules.yml").write_text(render_yaml())
    (tmp_path / "prometheus.yml").write_text(
        scrape_config(file_sd_path="targets.json", rule_files=["rules.yml"])
    )
    proc = promtool("check", "config", "prometheus.yml")
    promtool_ok(proc)
    assert "WARNING" not in proc.stdout + proc.stderr  # the targets file was found and read
    assert "SUCCESS: 1 rule files found" in proc.stdout


def test_promtool_checks_the_targets_file(promtool: Promtool, tmp_path: Path) -> None:
    """promtool reads file_sd files: a broken one fails the check (so the test above is
    a real check of the targets)."""
    (tmp_path / "targets.json").write_text('[{"targets": ["bad host//"]}]')
    (tmp_path / "prometheus.yml").write_text(scrape_config(file_sd_path="targets.json"))
    assert promtool("check", "config", "prometheus.yml").returncode != 0


@pytest.mark.parametrize("interval", ["1s", "5s", "15s", "1m"])
def test_promtool_accepts_intervals(interval: str, promtool: Promtool, tmp_path: Path) -> None:
    (tmp_path / "targets.json").write_text("[]")
    (tmp_path / "p.yml").write_text(scrape_config(file_sd_path="targets.json", interval=interval))
    promtool_ok(promtool("check", "config", "p.yml"))


def test_a_token_file_and_a_ca_become_authorization_and_tls_config(
    promtool: Promtool, tmp_path: Path
) -> None:
    """The token is named by file (Prometheus reads it at each scrape), never copied."""
    (tmp_path / "token").write_text("secret-token\n")
    (tmp_path / "targets.json").write_text(json.dumps(file_sd_targets(MEMBERS)))
    data = scrape_config_data(file_sd_path="targets.json", credentials_file="token")
    job = data["scrape_configs"][0]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "token"}
    assert "tls_config" not in job
    assert "authorization" not in scrape_config_data()["scrape_configs"][0]
    text = scrape_config(file_sd_path="targets.json", credentials_file="token")
    assert "secret-token" not in text
    (tmp_path / "prometheus.yml").write_text(text)
    promtool_ok(promtool("check", "config", "prometheus.yml"))
    with_ca = scrape_config_data(credentials_file="token", ca_file="/etc/plumtree/ca.pem")
    assert with_ca["scrape_configs"][0]["tls_config"] == {"ca_file": "/etc/plumtree/ca.pem"}
