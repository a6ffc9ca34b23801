"""The YAML emitter: what it writes is what go-yaml (Prometheus) reads back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plumctl.monitoring.yamlout import Quoted, dump, plain_ok, scalar

from .conftest import Promtool
from .support import promtool_ok

TRICKY = [
    "plain words",
    "yes",
    "No",
    "on",
    "OFF",
    "y",
    "null",
    "~",
    "",
    "0.5",
    "1e3",
    "0x1F",
    "0o17",
    "012",
    "1_000",
    "1:30",
    "2024-01-01",
    ".inf",
    "-.inf",
    ".NaN",
    "5m",
    "1h30m",
    "../up",
    ".5",
    "+5",
    "-.5",
    "250ms",
    "- dash",
    "-dash",
    "a: b",
    "a:b",
    "ends with colon:",
    "a #b",
    "a#b",
    "#comment",
    "[x]",
    "{x}",
    "x [5m] y",
    "?q",
    "!tag",
    "&anchor",
    "*alias",
    "|pipe",
    ">fold",
    "'single'",
    '"double"',
    'say "hi"',
    "back\\slash",
    "%percent",
    "@at",
    "`tick`",
    " leading",
    "trailing ",
    "tab\there",
    "two\nlines",
    "trailing newline\n",
    "\nleading newline",
    "three\n\nlines with a gap",
    "  indented\nblock",
    "=",
    "<<",
    "caf\u00e9",
    "rate(x[5m]) / rate(y[5m]) > 0.5\nand rate(y[5m]) > 0",
]


@pytest.mark.parametrize("text", ["5m", "1h30m", "plumtree_eager_peers < 1", "a-b", "x [1]"])
def test_plain_when_safe(text: str) -> None:
    assert plain_ok(text)
    assert scalar(text) == text


@pytest.mark.parametrize("text", ["yes", "0.5", "a: b", "#x", "", " x", "1:30", "caf\u00e9"])
def test_quoted_when_not(text: str) -> None:
    assert not plain_ok(text)
    assert scalar(text) == json.dumps(text)


def test_quoted_strings_are_always_quoted() -> None:
    assert scalar(Quoted("plain")) == '"plain"'
    assert dump({"a": Quoted("x\ny")}) == 'a: "x\\ny"\n'


def test_shapes() -> None:
    assert dump({"a": [], "b": {}, "c": None, "d": True, "e": 3, "f": 0.25}) == (
        "a: []\nb: {}\nc: null\nd: true\ne: 3\nf: 0.25\n"
    )
    assert dump({"l": [{"x": 1, "y": [1, 2]}, "s"]}) == ('l:\n- x: 1\n  "y":\n  - 1\n  - 2\n- s\n')
    assert dump({"m": "one\ntwo"}) == "m: |-\n  one\n  two\n"


def test_go_yaml_reads_back_every_tricky_string(promtool: Promtool, tmp_path: Path) -> None:
    """Round trip through Prometheus itself: tricky strings as annotations of an alert that
    always fires, expected back verbatim by ``promtool test rules``."""
    annotations = {f"a{i}": text for i, text in enumerate(TRICKY)}
    rules = {
        "groups": [
            {
                "name": "roundtrip",
                "rules": [
                    {
                        "alert": "Roundtrip",
                        "expr": "vector(1)",
                        "labels": {"tricky": "yes", "multi": "a\nb"},
                        "annotations": annotations,
                    }
                ],
            }
        ]
    }
    (tmp_path / "rules.yml").write_text(dump(rules))
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [],
                "alert_rule_test": [
                    {
                        "eval_time": "0m",
                        "alertname": "Roundtrip",
                        "exp_alerts": [
                            {
                                "exp_labels": {"tricky": "yes", "multi": "a\nb"},
                                "exp_annotations": annotations,
                            }
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "tests.yml").write_text(json.dumps(tests))
    promtool_ok(promtool("test", "rules", "tests.yml"))
