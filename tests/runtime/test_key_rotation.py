"""Live key rotation on real node processes under a steady broadcast load."""

from __future__ import annotations

import json
import re
import stat
import time
from pathlib import Path

import httpx

from plumtree.runtime.crypto import Keyring, decode_key
from plumtree.runtime.keys import write_keyring_file
from tests.ledger import Load, node_procs, run, settled, wait_until, write_config

_DECRYPT = re.compile(r"^plumtree_transport_decrypt_errors_total(?:\{[^}]*\})? (\S+)$", re.M)


def decrypt_errors(url: str) -> float:
    """Frames and datagrams this node could not open with any key (its own counter)."""
    text = httpx.get(url + "/metrics", timeout=5).text
    found = _DECRYPT.findall(text)
    assert found, "plumtree_transport_decrypt_errors_total not exported"
    return sum(float(v) for v in found)


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
            assert [(i["ok"], i["changed"], i["persisted"]) for i in doc["items"]] == [
                (True, True, True)
            ] * 4, doc
            time.sleep(2)  # the load flows through every step
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
        assert listing["keys"] == [{"key": new, "nodes": 4, "primary_on": 4, "of": 4}]

        # a restarted node reads its rotated file and is a member again
        c.terminate(3)
        c.restart(3)
        wait_until(lambda: c.json(3, "/v1/status")["members"]["alive"] == 4, 30)
        msg = httpx.post(node + "/v1/broadcast", content=b"after restart", timeout=5)
        wait_until(lambda: c.json(3, f"/v1/messages/{msg.json()['id']}")["delivered"], 30)
        assert decrypt_errors(c.urls[3]) == 0.0
