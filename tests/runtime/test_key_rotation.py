"""Live key rotation on real node processes under a steady broadcast load, driven
through one node's admin API (the others are asked over gossip)."""

from __future__ import annotations

import json
import re
import stat
import time
from pathlib import Path

import httpx

from plumtree.runtime.crypto import Keyring, decode_key, fingerprint
from plumtree.runtime.keys import write_keyring_file
from tests.ledger import Load, node_procs, run, settled, wait_until, write_config


def counter(url: str, name: str) -> float:
    """A counter of this node's /metrics (summed over labels)."""
    text = httpx.get(url + "/metrics", timeout=5).text
    found = re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M)
    assert found, f"{name} not exported"
    return sum(float(v) for v in found)


def decrypt_errors(url: str) -> float:
    """Frames and datagrams this node could not open with any key (its own counter)."""
    return counter(url, "plumtree_transport_decrypt_errors_total")


def test_install_use_remove_under_load_rejects_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    old, new = Keyring.generate(), Keyring.generate()
    ring = tmp_path / "old.json"
    write_keyring_file(ring, [decode_key(old)])
    with node_procs(tmp_path / "c", 4, write_config(tmp_path), keyring=ring) as c:
        node = c.urls[0]
        load = Load(c.urls, rate=60).start()
        time.sleep(2)
        for op, key in (("install", new), ("use", new), ("remove", old)):
            result = run("--node", node, "keys", op, key, "-o", "json", timeout=30)
            assert result.returncode == 0, result.stderr
            doc = json.loads(result.stdout)
            assert doc["via"] == "gossip"
            assert [(i["ok"], i["changed"], i["persisted"]) for i in doc["items"]] == [
                (True, True, True)
            ] * 4, doc
            time.sleep(2)  # the load flows through every step
        # node-0 was the only admin API asked: the others applied what came over gossip
        # (install, use, remove: plumctl's checks before use and remove are lists too)
        answered = [counter(u, "plumtree_key_requests_answered_total") for u in c.urls]
        assert answered == [0.0, 5.0, 5.0, 5.0], answered
        acked = load.stop()
        books = settled(c, acked, timeout=60)
        assert len(acked) > 300 and load.refused == 0
        for book in books:
            assert not book.missing and not book.duplicates and book.cursors_ok, str(book)
        assert [decrypt_errors(u) for u in c.urls] == [0.0] * 4, "a frame was rejected"
        for i in range(4):
            path = c.keyring_file(i)
            assert json.loads(path.read_text()) == [new], path
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        listing = json.loads(run("--node", node, "keys", "list", "-o", "json").stdout)
        assert listing["keys"] == [
            {"key": fingerprint(decode_key(new)), "nodes": 4, "primary_on": 4, "of": 4}
        ]

        # a restarted node reads its rotated file and is a member again
        c.terminate(3)
        c.restart(3)
        wait_until(lambda: c.json(3, "/v1/status")["members"]["alive"] == 4, 30)
        msg = httpx.post(node + "/v1/broadcast", content=b"after restart", timeout=5)
        wait_until(lambda: c.json(3, f"/v1/messages/{msg.json()['id']}")["delivered"], 30)
        assert decrypt_errors(c.urls[3]) == 0.0


def test_a_frozen_member_is_no_answer_and_exit_1_then_confirms_once_thawed(
    tmp_path: Path,
) -> None:
    old, new = Keyring.generate(), Keyring.generate()
    ring = tmp_path / "old.json"
    write_keyring_file(ring, [decode_key(old)])
    with node_procs(tmp_path / "c", 3, write_config(tmp_path), keyring=ring) as c:
        node, frozen = c.urls[0], c.procs[2].name
        c.freeze(2)
        try:
            result = run("--node", node, "keys", "install", new, "-o", "json", "--timeout", "2")
        finally:
            c.thaw(2)
        assert result.returncode == 1, result.stderr
        assert result.stderr == (
            f"plumctl: error: not every live member confirmed: {frozen}: no answer in 2s\n"
        )
        doc = json.loads(result.stdout)
        assert doc["failed"] == [frozen]
        assert [(i["node"], i["ok"]) for i in doc["items"]] == [
            (p.name, p.name != frozen) for p in c.procs
        ]
        # thawed, it reads the request it was sent (and applies it); asked again, all confirm
        again = run("--node", node, "keys", "install", new, "-o", "json")
        assert again.returncode == 0, again.stderr
        assert json.loads(c.keyring_file(2).read_text()) == [old, new]
