"""A frame replayed two minutes later is not delivered again (real processes).

The frame is built with the codec exactly as the origin's node sent it (no keyring: the
bytes a capture would hold), and pushed into every node's gossip port over TCP."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from plumtree.core import wire
from plumtree.core.ids import parse_id
from plumtree.core.messages import Gossip, Repair
from plumtree.runtime.addresses import parse_addr
from tests.ledger import delivery_log, node_procs, wait_until, write_config


def send_frame(addr: str, frame: bytes) -> None:
    host, port = parse_addr(addr, 7946)
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(len(frame).to_bytes(4, "big") + frame)
        time.sleep(0.2)


def test_a_frame_replayed_after_two_minutes_is_not_delivered_again(tmp_path: Path) -> None:
    """Before: a frame replayed 65 s later was delivered again on 4 of 4 nodes (dedup
    forgot an id after seen_ttl, 60 s)."""
    with node_procs(tmp_path / "c", 4, write_config(tmp_path)) as c:
        origin = c.procs[0].name
        answer = httpx.post(c.urls[0] + "/v1/broadcast", content=b"once", timeout=5).json()
        msg_id = answer["id"]
        wait_until(
            lambda: all(c.json(i, f"/v1/messages/{msg_id}")["delivered"] for i in range(4)), 10
        )
        # the delivery log shows a delivery once it is durable (a group commit later)
        wait_until(lambda: all(len(delivery_log(u)) == 1 for u in c.urls), 10)
        epoch = c.json(0, "/v1/status")["epoch"]
        frames = [
            wire.encode(
                wire.Envelope("", origin, [kind(parse_id(msg_id), 0, origin, epoch, b"once")])
            )
            for kind in (Gossip, Repair)
        ]
        time.sleep(120)
        for p in c.procs[1:]:
            for frame in frames:
                send_frame(p.gossip_addr, frame)
        time.sleep(2)
        after = [len(delivery_log(u)) for u in c.urls]
        assert after == [1, 1, 1, 1], "a replay is not news"
        for i in range(1, 4):
            metrics = c.get(i, "/metrics").text
            assert "plumtree_messages_duplicate_total 0.0" not in metrics
