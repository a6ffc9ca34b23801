"""``plumctl sim`` and ``plumctl version`` through the real command line parser."""

from __future__ import annotations

from tests.cli.helpers import invoke, json_out, plain

REQUIRED = {
    "nodes",
    "broadcasts",
    "reliability",
    "rmr",
    "ldh",
    "latency_p50_ms",
    "latency_p99_ms",
    "duplicates_delivered",
    "flood_rmr",
    "flood_ldh",
}


def test_sim_json_has_the_stable_keys_and_nothing_else_on_stdout() -> None:
    doc = json_out(invoke("-o", "json", "sim", "-n", "40", "-b", "10", "--warmup", "3"))
    assert set(doc) >= REQUIRED
    assert doc["kind"] == "SimReport"
    assert doc["nodes"] == 40 and doc["broadcasts"] == 10
    assert 0.0 <= doc["reliability"] <= 1.0


def test_sim_workers_splits_the_run_and_changes_no_number() -> None:
    args = ("-o", "json", "sim", "-n", "60", "-b", "8", "--warmup", "3", "--loss", "0.02")
    whole = json_out(invoke(*args, "--workers", "1"))
    split = json_out(invoke(*args, "--workers", "2"))
    assert (whole["workers"], split["workers"]) == (1, 2)
    varies = {"wall_seconds", "events_per_second", "workers"}
    assert {k: v for k, v in split.items() if k not in varies} == {
        k: v for k, v in whole.items() if k not in varies
    }


def test_sim_table_shows_plumtree_beside_flooding() -> None:
    result = invoke("sim", "-n", "30", "-b", "5", "--warmup", "2")
    assert result.exit_code == 0, result.output
    text = plain(result.stdout)
    assert "PLUMTREE" in text and "FLOOD" in text and "RMR" in text


def test_sim_rejects_an_unknown_profile_with_a_usage_error() -> None:
    result = invoke("sim", "--profile", "moon")
    assert result.exit_code == 2
    assert "unknown profile 'moon'" in result.stderr
    assert "Traceback" not in result.output


def test_version_in_both_formats() -> None:
    assert "plumctl 0.1.0" in invoke("version").stdout
    doc = json_out(invoke("-o", "json", "version"))
    assert doc["kind"] == "Version" and doc["wire_version"] == 2


def test_help_lists_exit_codes_and_examples() -> None:
    text = plain(invoke("--help").stdout)
    assert "Exit codes" in text and "124 wait timed out" in text
    assert "plumctl cluster up -n 5" in text
