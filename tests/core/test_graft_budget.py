"""Graft answers are bounded in bytes per peer per second (issue 18: 18 KB of forged
Grafts made a node send 60 MB, x3,295).

The guarantee: over any interval ``t``, the Gossip a node sends answering one peer's
Grafts carries at most ``graft_answer_burst_bytes + graft_answer_bytes_per_second * t``
payload bytes plus one message. With the defaults (512 KiB, 512 KiB/s) the issue's
18 KB burst of Grafts gets at most x32 back in bytes on the wire.
"""

from __future__ import annotations

import random

from plumtree.core.config import PlumtreeConfig
from plumtree.core.messages import Gossip, Graft
from plumtree.core.plumtree import Plumtree
from plumtree.core.wire import Envelope, encode

PAYLOAD = 1024
STATED_FACTOR = 32


def _node(n_messages: int) -> tuple[Plumtree, list[bytes]]:
    a = Plumtree("a", PlumtreeConfig(), random.Random(1))
    a.add_peer("b", 0.0)
    ids = [a.broadcast(bytes([i % 256]) * PAYLOAD, 0.0) for i in range(n_messages)]
    a.take_outgoing()
    return a, ids


def _wire(sender: str, messages: list[object]) -> int:
    return len(encode(Envelope("cluster", sender, messages)))  # type: ignore[arg-type]


def _answered(a: Plumtree) -> tuple[int, int]:
    """(bytes on the wire, payload bytes) of the Gossip answers queued."""
    wire = payload = 0
    for _, msg in a.take_outgoing():
        if type(msg) is Gossip:
            wire += _wire("a", [msg])
            payload += len(msg.payload)
    return wire, payload


def test_a_burst_of_forged_grafts_is_answered_within_the_stated_factor() -> None:
    a, ids = _node(512)
    cfg = a.config
    sent_in = 0
    grafts = 0
    while sent_in < 18_000:  # the 18 KB, all at once
        chunk = ids[(grafts * 256) % 512 :][:256]
        sent_in += _wire("b", [Graft(chunk)])
        a.receive("b", Graft(chunk), 0.0)
        grafts += 1
    wire, payload = _answered(a)
    assert payload <= cfg.graft_answer_burst_bytes + PAYLOAD
    assert wire / sent_in <= STATED_FACTOR, (wire, sent_in)
    assert a.counters.graft_answers_limited > 0


def test_a_sustained_graft_flood_gets_no_more_than_the_byte_rate() -> None:
    a, ids = _node(512)
    cfg = a.config
    payload = 0
    t = 0.0
    for step in range(200):  # 10 s at the Graft rate limit (20/s), 256 ids each
        t = step * 0.05
        a.receive("b", Graft(ids[(step * 256) % 512 :][:256]), t)
        payload += _answered(a)[1]
    bound = cfg.graft_answer_burst_bytes + cfg.graft_answer_bytes_per_second * t + PAYLOAD
    assert payload <= bound
    assert payload >= 0.9 * (bound - PAYLOAD)  # and the budget is used, not starved


def test_legitimate_grafts_are_not_throttled() -> None:
    """A lazy peer grafting every message of a 200/s stream of 1 KiB for 10 s (it lost
    its eager parent): far below the byte rate, nothing is held back."""
    a, ids = _node(2000)
    got = 0
    for step in range(200):  # its Grafts batch the ids missing per IHave timer: 10 per 50 ms
        a.receive("b", Graft(ids[step * 10 : step * 10 + 10]), step * 0.05)
        got += sum(1 for _, m in a.take_outgoing() if type(m) is Gossip)
    assert got == 2000 and a.counters.graft_answers_limited == 0
