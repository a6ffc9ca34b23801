"""Config validation, presets and TOML loading: every bad value names its field."""

from __future__ import annotations

from pathlib import Path

import pytest

from plumtree.core.config import (
    PROFILES,
    ConfigError,
    PlumtreeConfig,
    ProtocolConfig,
    SwimConfig,
    load_toml,
    parse_duration,
    protocol_config_from_mapping,
)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_preset_is_valid_and_named(profile: str) -> None:
    cfg = ProtocolConfig.from_profile(profile)
    assert cfg.profile == profile
    assert cfg.plumtree.retention_bytes >= 1024 and cfg.plumtree.retention_age > 0


def test_presets_follow_the_reference_values() -> None:
    wan, large = PlumtreeConfig.preset("wan"), PlumtreeConfig.preset("large")
    assert (wan.eager_fanout, wan.lazy_fanout, wan.graft_timeout) == (4, 8, 1.0)
    assert (large.eager_fanout, large.lazy_fanout, large.max_peers) == (5, 10, 64)
    # loopback clusters announce to 3 lazy peers (bench/loopback.py; see the preset)
    assert (
        PlumtreeConfig.preset("lan").lazy_fanout,
        PlumtreeConfig.preset("local").lazy_fanout,
    ) == (6, 3)
    lan, local = SwimConfig.preset("lan"), SwimConfig.preset("local")
    assert (lan.probe_interval, lan.probe_timeout, lan.suspicion_mult) == (1.0, 0.5, 4)
    assert (local.probe_timeout, local.indirect_checks, local.retransmit_mult) == (0.2, 1, 2)
    assert SwimConfig.preset("wan").probe_interval == 5.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"eager_fanout": 0}, "plumtree.eager_fanout: must be >= 1, got 0"),
        ({"graft_timeout": -1.0}, "plumtree.graft_timeout"),
        ({"graft_rate_limit_per_second": float("nan")}, "plumtree.graft_rate_limit_per_second"),
        ({"max_peers": 0}, "plumtree.max_peers"),
        ({"ihave_batch_size": 10_000}, "plumtree.ihave_batch_size: must be <= 256"),
        ({"repair_batch": 10_000}, "plumtree.repair_batch: must be <= 512"),
        ({"eager_fanout": True}, "plumtree.eager_fanout: must be an integer"),
    ],
)
def test_bad_plumtree_values_name_the_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        PlumtreeConfig(**changes)  # type: ignore[arg-type]


def test_bad_swim_values_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"swim.probe_timeout: must be <= probe_interval"):
        SwimConfig(probe_interval=1.0, probe_timeout=2.0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (0.5, 0.5),
        (2, 2.0),
        ("200ms", 0.2),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        (" 3 s", 3.0),
        ("1m30s", 90.0),
        ("1h2m3s4ms", 3723.004),
        ("1d", 86400.0),
        ("0.5", 0.5),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration("x", text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["fast", "1w", "", True, None, "-1s", "30s1m", "1s1s", [1]])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ConfigError, match="x: must be a duration"):
        parse_duration("x", bad)


def test_toml_overrides_a_profile(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        'profile = "wan"\n[plumtree]\ngraft_timeout = "250ms"\neager_fanout = 2\n'
        "[swim]\nprobe_interval = 6\n"
    )
    cfg = protocol_config_from_mapping(load_toml(path))
    assert cfg.profile == "wan"
    assert cfg.plumtree.graft_timeout == 0.25
    assert cfg.plumtree.eager_fanout == 2
    assert cfg.plumtree.lazy_fanout == 8, "untouched values come from the profile"
    assert cfg.swim.probe_interval == 6.0
    cli = protocol_config_from_mapping(load_toml(path), profile="local")
    assert cli.profile == "local" and cli.plumtree.graft_timeout == 0.25


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[plumtree]\nfanout = 3\n", "plumtree.fanout: unknown setting"),
        ("[plumtree]\neager_fanout = 'three'\n", "plumtree.eager_fanout: must be an integer"),
        ("profile = 'moon'\n", "profile: unknown profile 'moon'"),
        ("plumtree = 3\n", "plumtree: must be a table"),
        ("[swim]\nprobe_timeout = '10s'\n", "swim.probe_timeout: must be <= probe_interval"),
    ],
)
def test_bad_toml_values_are_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        protocol_config_from_mapping(load_toml(path))


def test_unreadable_files_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[plumtree\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_toml(bad)
    with pytest.raises(ConfigError, match="is a directory"):
        load_toml(tmp_path)
