"""``plumctl broadcast --wait`` against real node processes with one member hung (SIGSTOP).

A stopped process still has its admin socket: connections are accepted by the kernel and
never answered. The wait must count every other member as it delivers, name the hung
one when it times out (exit 124), and on Ctrl-C print the id it sent and exit 130.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from plumctl import exitcodes
from tests.cli.helpers import REPO, plumctl_env
from tests.ledger import PLUMCTL, NodeProcs, delivery_log, node_procs, wait_until

N = 4
FROZEN = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcs]:
    with node_procs(tmp_path_factory.mktemp("wait"), N) as c:
        yield c


@pytest.fixture
def frozen(cluster: NodeProcs) -> Iterator[NodeProcs]:
    """The cluster with member FROZEN stopped, still listed alive or suspect."""
    wait_until(lambda: _live(cluster) == N, 60)
    cluster.freeze(FROZEN)
    try:
        yield cluster
    finally:
        cluster.thaw(FROZEN)
        wait_until(lambda: _live(cluster) == N, 60)


def _live(c: NodeProcs) -> int:
    doc = c.json(0, "/v1/members")
    return sum(1 for m in doc["items"] if m["state"] in ("alive", "suspect"))


def _broadcast(c: NodeProcs, payload: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PLUMCTL, "--node", c.urls[0], "broadcast", payload, "--wait", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=plumctl_env(),
    )


def _finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def test_the_count_goes_on_and_the_timeout_names_the_hung_member(frozen: NodeProcs) -> None:
    c = frozen
    timeout = 10.0
    code, out, err = _finish(
        _broadcast(c, "with one hung", "--timeout", str(timeout), "-o", "json"), 60
    )
    doc = json.loads(out)
    if doc["members"] < N:
        pytest.skip("the stopped member was declared dead before the wait began")
    assert code == exitcodes.TIMEOUT, err
    hung = c.procs[FROZEN].name
    assert doc["missing"] == [hung] and doc["delivered"] == N - 1
    items = {i["node"]: i for i in doc["items"]}
    # every other member was counted when it delivered, not when the hung one timed out
    for name, item in items.items():
        if name != hung:
            assert item["delivered"] and item["seen_ms"] < 1000 * timeout / 2, item
    assert items[hung]["seen_ms"] is None
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"delivered on {N - 1} of {N} live members; not on {hung}" in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("json_output", [True, False])
def test_ctrl_c_prints_the_id_and_exits_130(frozen: NodeProcs, json_output: bool) -> None:
    c = frozen
    payload = f"interrupted-{json_output}-{time.monotonic()}"
    proc = _broadcast(c, payload, "--timeout", "60", *(["-o", "json"] if json_output else []))
    try:
        # the broadcast is sent (node 0 delivered it) and the wait is under way
        sent: list[str] = []

        def delivered() -> bool:
            import base64

            for item in delivery_log(c.urls[0], payload=True):
                if base64.b64decode(item["payload"]).decode(errors="replace") == payload:
                    sent.append(item["id"])
                    return True
            return False

        wait_until(delivered, 30, 0.1)
        time.sleep(0.3)  # into the polling loop
        proc.send_signal(signal.SIGINT)
        code, out, err = _finish(proc, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == exitcodes.INTERRUPTED, err
    if json_output:
        doc = json.loads(out)
        assert doc["id"] == sent[0] and doc["interrupted"] is True
        assert doc["missing"] and c.procs[FROZEN].name in doc["missing"]
    else:
        assert out.strip() == sent[0]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("plumctl: error: interrupted"), err
