"""Faults at 1,000 simulated nodes on the node's own stack, with exact accounting: every
owed delivery happens exactly once, or is counted lost, or is known missing; never
silent. And a gap older than the retention is counted, exactly."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from plumtree.core.config import PlumtreeConfig
from plumtree.sim.scenario import SimParams, run
from tests.cli.helpers import invoke


@pytest.mark.parametrize("fault", ["freeze", "partition", "restart", "churn"])
def test_1000_nodes_deliver_everything_exactly_once_through(fault: str) -> None:
    d = run(
        SimParams(
            nodes=1000,
            membership="swim",
            fault=fault,
            fault_fraction=0.05,
            fault_duration=10.0,
            interval=0.5,
            flood=False,
            seed=3,
        )
    ).as_dict()
    assert d["converged"] and d["fault_nodes"] == 50
    assert d["owed_deliveries"] >= 0.95 * 1000 * d["messages"] > 0
    assert d["delivered_once"] == d["owed_deliveries"], d
    assert (d["duplicates_delivered"], d["lost"], d["missing"], d["undelivered"]) == (0, 0, 0, 0)
    assert d["history_redelivered"] == 0
    # churned nodes are back before most of what they missed settled; a frozen node
    # finds what was sent to it waiting in its queue when it wakes, so anti-entropy only
    # has what the tree left out to fill (at seed 3: 1 message before issue 18's SWIM
    # hardening shifted the timings, 0 since): neither is evidence either way
    if fault not in ("churn", "freeze"):
        assert d["repaired"] > 0, "the nodes the fault hit caught up by anti-entropy"


def test_a_freeze_longer_than_the_retention_is_counted_lost_exactly() -> None:
    short = replace(PlumtreeConfig.preset("lan"), retention_age=5.0, loss_timeout=2.0)
    d = run(
        SimParams(
            nodes=100,
            membership="swim",
            fault="freeze",
            fault_fraction=0.05,
            fault_duration=20.0,
            interval=0.25,
            flood=False,
            plumtree=short,
        )
    ).as_dict()
    assert d["lost"] > 0 and d["lost_owed"] == d["lost"], d
    assert d["delivered_once"] + d["lost_owed"] == d["owed_deliveries"]
    assert (d["duplicates_delivered"], d["missing"], d["undelivered"]) == (0, 0, 0)


def test_plumctl_sim_reports_the_accounting_as_json() -> None:
    result = invoke("-o", "json", "sim", "-n", "40", "--fault", "restart", "--fault-duration", "5")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    for key in ("duplicates_delivered", "lost", "missing", "undelivered", "owed_deliveries"):
        assert isinstance(doc[key], int), key
    assert doc["fault"] == "restart" and doc["undelivered"] == 0
    bad = invoke("sim", "--fault", "meteor")
    assert bad.exit_code == 2 and "--fault: expected one of" in bad.stderr
