"""What the sans-IO Plumtree core costs per delivery, and what it leaves the collector.

    python bench/core.py              # 100,000 deliveries, 5 repeats
    python bench/core.py --deliveries 20000 --repeats 3

One core with the ``local`` profile's settings and 15 peers (3 eager, 12 lazy) receives
new Gossip from its eager parent, one every simulated millisecond, and runs its timers
(IHave flushes, maintenance) every 10 messages, as a node's loop would. No sockets and no
event loop: this is the protocol's share of a delivery, the floor under what
``bench/loopback.py`` measures per delivery on a real cluster.

Reported: CPU microseconds per delivery (median of the repeats), and, with the seen set
and the payload cache full, how many objects the garbage collector tracks and how long a
full collection takes (a pause of the node's whole event loop).
"""

from __future__ import annotations

import gc
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout

from bench.common import Report, add_costs, delivery_args, load_line, median
from plumtree.core.config import PlumtreeConfig
from plumtree.core.ids import message_id, stream_key
from plumtree.core.messages import Gossip
from plumtree.core.plumtree import Plumtree

PEERS = 15
TIMER_EVERY = 10  # messages between two handle_timer calls


def one_run(deliveries: int, seed: int) -> tuple[float, Plumtree]:
    """CPU seconds for ``deliveries`` new messages, and the core afterwards."""
    core = Plumtree("me", PlumtreeConfig.preset("local"), random.Random(seed), 0.0)
    for i in range(PEERS):
        core.add_peer(f"p{i}", 0.0)
    core.take_outgoing()
    core.take_events()
    parent = next(iter(core.peers.eager))
    rng = random.Random(seed + 1)
    payload = bytes(1024)
    origins = [f"p{i}" for i in range(PEERS)]
    keys = [stream_key(origin, 0) for origin in origins]
    next_seq = [1] * PEERS
    messages = []
    for _ in range(deliveries):
        o = rng.randrange(PEERS)
        messages.append(Gossip(message_id(keys[o], next_seq[o]), 2, origins[o], 0, payload))
        next_seq[o] += 1
    now = 1.0
    started = time.process_time()
    for k, message in enumerate(messages):
        now += 0.001
        core.receive(parent, message, now)
        if k % TIMER_EVERY == 0:
            core.handle_timer(now)
            core.take_outgoing()
            core.take_events()
    return time.process_time() - started, core


def main(argv: list[str] | None = None) -> int:
    args = delivery_args(__doc__, argv, deliveries=100_000, repeats=5)

    out = Report("bench/core.py: the Plumtree core alone, per delivery")
    costs = []
    core: Plumtree | None = None
    for r in range(args.repeats):
        seconds, core = one_run(args.deliveries, args.seed + r)
        costs.append(1e6 * seconds / args.deliveries)
    assert core is not None
    case = f"{args.deliveries:,} deliveries"
    add_costs(out, case, costs)
    out.add(case, "  eager / lazy peers", f"{len(core.peers.eager)} / {len(core.peers.lazy)}")
    out.add(case, "seen ids / kept payloads", f"{len(core.seen):,} / {len(core.store):,}")
    gc.collect()
    out.add(case, "objects tracked by the collector", f"{len(gc.get_objects()):,}")
    pauses = []
    for _ in range(5):
        started = time.perf_counter()
        gc.collect()
        pauses.append(1000 * (time.perf_counter() - started))
    out.add(case, "full collection (median of 5)", f"{median(pauses):.1f} ms")
    out.note(f"machine: {load_line()}")
    print(out.render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
