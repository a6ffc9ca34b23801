"""``plumctl node start --config``: every wrong type is one line naming the key, exit 2.

The keys are read from the typed structure the loader decodes into
(plumtree/runtime/configfile.py), so a setting added there is covered here at once.
"""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import msgspec
import pytest

from plumctl.options import duration
from plumtree.core import durations
from plumtree.runtime import configfile
from tests.cli.helpers import REPO, invoke, plumctl_env


def _keys() -> list[tuple[str, ...]]:
    """(section, key) for every setting of every table, (key,) for top-level ones."""
    keys: list[tuple[str, ...]] = []
    hints = typing.get_type_hints(configfile.ConfigFile)
    for name in configfile.ConfigFile.__struct_fields__:
        table = hints[name]
        if isinstance(table, type) and issubclass(table, msgspec.Struct):
            keys += [(name, key) for key in table.__struct_fields__]
        else:
            keys.append((name,))
    return keys


KEYS = _keys()


def _toml(path: tuple[str, ...], value: str) -> str:
    if len(path) == 1:
        return f"{path[0]} = {value}\n"
    return f"[{path[0]}]\n{path[1]} = {value}\n"


def _wrong_values(path: tuple[str, ...]) -> list[str]:
    """TOML literals of a type the key does not take."""
    kind = configfile.field_type(list(path))
    first = '"yes"' if kind is bool else "true"
    return [first, "[1]", "{ x = 1 }" if typing.get_origin(kind) is not dict else "[]"]


def test_every_table_is_covered() -> None:
    # the table-driven test below iterates the structure: make sure it sees all tables
    sections = {p[0] for p in KEYS if len(p) == 2}
    assert sections == {"node", "plumtree", "swim", "transport"}
    assert ("node", "join") in KEYS and ("plumtree", "graft_timeout") in KEYS
    assert len(KEYS) > 60


@pytest.mark.parametrize("path", KEYS, ids=".".join)
def test_a_wrong_type_for_any_key_is_one_line_naming_it(
    path: tuple[str, ...], tmp_path: Path
) -> None:
    key = ".".join(path)
    for value in _wrong_values(path):
        config = tmp_path / "node.toml"
        config.write_text(_toml(path, value))
        result = invoke("node", "start", "--config", str(config), "--api", "off")
        assert result.exit_code == 2, (key, value, result.output)
        lines = result.stderr.splitlines()
        assert len(lines) == 1, (key, value, result.stderr)
        assert lines[0].startswith(f"plumctl: error: {key}: "), (value, lines[0])
        assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("name = 42", "node.name: expected a string, got an integer 42"),
        ("advertise = 5", "node.advertise: expected a string, got an integer 5"),
        ("join = [7946]", "node.join: expected an array of strings, got an array [7946]"),
        (
            'join = "127.0.0.1:7946"',
            "node.join: expected an array of strings, got a string '127.0.0.1:7946'",
        ),
        ("tags = { rack = 1 }", "node.tags: expected a table of strings"),
        ('fsync = "often"', "node.fsync: expected one of normal, full, got a string 'often'"),
        ("colour = 1", "node.colour: unknown setting (known: "),
        ('join = ["127.0.0.1:notaport"]', "node.join: "),
    ],
)
def test_reported_cases_in_a_real_process(line: str, message: str, tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nbind = "127.0.0.1:0"\napi = "off"\n{line}\n')
    done = subprocess.run(
        [sys.executable, "-m", "plumctl", "node", "start", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=plumctl_env(),
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"plumctl: error: {message}"), done.stderr
    assert done.stdout == ""


GRAMMAR = [("5", 5.0), ("250ms", 0.25), ("1.5s", 1.5), ("1m30s", 90.0), ("2h", 7200.0)]


@pytest.mark.parametrize(("text", "seconds"), GRAMMAR)
def test_one_duration_grammar_for_the_file_and_the_command_line(text: str, seconds: float) -> None:
    decoded = configfile.decode({"plumtree": {"graft_timeout": text}})
    assert configfile.given(decoded.plumtree) == {"graft_timeout": pytest.approx(seconds)}
    assert duration()(text) == pytest.approx(seconds)
    assert durations.seconds(text) == pytest.approx(seconds)


def test_durations_reach_the_node_config(tmp_path: Path) -> None:
    from plumctl.commands.node import _settings

    config = tmp_path / "node.toml"
    config.write_text(
        '[plumtree]\ngraft_timeout = "1m30s"\n[swim]\nprobe_interval = "1.5s"\n'
        '[transport]\nidle_timeout = "2m"\n[node]\njoin = ["127.0.0.1:7946"]\n'
    )
    args = [None] * 6 + [config] + [None] * 5
    cfg = _settings(*args, insecure_gossip=True)
    assert cfg.protocol.plumtree.graft_timeout == 90.0
    assert cfg.protocol.swim.probe_interval == 1.5
    assert cfg.tcp_limits.idle_timeout == 120.0
    assert cfg.join == ["127.0.0.1:7946"]


@pytest.mark.parametrize("bad", ["1m30x", "fast", "30s1m", "-1s"])
def test_a_bad_duration_is_refused_alike(bad: str, tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(f'[plumtree]\ngraft_timeout = "{bad}"\n')
    result = invoke("node", "start", "--config", str(config))
    assert result.exit_code == 2
    assert result.stderr.startswith("plumctl: error: plumtree.graft_timeout: ")
    cli = invoke("members", "--timeout", bad, "--node", "http://127.0.0.1:1")
    assert cli.exit_code == 2
    assert "--timeout" in cli.stderr and "Traceback" not in cli.output


def test_cli_options_take_the_grammar() -> None:
    # a node nobody listens on: the option parses (exit 3, unreachable), it is not usage
    for args in (["--timeout", "1m30s"], ["--timeout", "250ms"]):
        result = invoke("members", *args, "--node", "http://127.0.0.1:1")
        assert result.exit_code == 3, result.output
    result = invoke("health", "--interval", "1m", "--window", "1m30s")
    assert result.exit_code == 2 and "--window: only with --prometheus" in result.stderr


def test_the_readme_example_is_a_valid_config() -> None:
    text = (REPO / "README.md").read_text()
    start = text.index("```toml\n", text.index("A TOML file (`--config`)")) + len("```toml\n")
    example = text[start : text.index("```", start)]
    import tomllib

    decoded = configfile.decode(tomllib.loads(example))
    assert configfile.given(decoded.plumtree)["retention_age"] == 5400.0
    assert configfile.given(decoded.transport)["idle_timeout"] == 150.0


def test_cluster_up_checks_the_config_before_starting_any_node(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('[node]\njoin = "127.0.0.1:7946"\n')
    result = invoke(
        "cluster", "up", "-n", "2", "--dir", str(tmp_path / "c"), "--config", str(config)
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        "plumctl: error: node.join: expected an array of strings, got a string '127.0.0.1:7946'"
    ]
    assert not (tmp_path / "c" / "logs").exists()  # no node was started


def test_every_node_setting_the_code_reads_has_a_type() -> None:
    """Settings added elsewhere (the admin API's limits, handlers) must be typed here too:
    an untyped key would be refused as unknown."""
    from plumtree.admin import limits
    from plumtree.runtime.configfile import NodeTable

    fields = set(NodeTable.__struct_fields__)
    assert set(limits.CONFIG_KEYS) <= fields
    assert {"handlers", "handler_timeout", "handler_queue", "public_metrics"} <= fields
    assert {"api_cert", "api_key", "insecure_gossip"} <= fields
