"""What a node's runtime adds to the core per delivery, without sockets.

    python bench/node.py              # 30,000 deliveries per case, 3 repeats
    python bench/node.py --deliveries 10000 --repeats 5

A real :class:`~plumtree.runtime.node.Node` (uvloop, no admin API) that knows 15 live
members takes frames as its TCP reader cuts them from the stream (``_Inbound``), each
with new Gossip from one member, and everything it sends is encoded into frames as the
peer links would, then dropped. So one delivery here is what it costs on a cluster
minus the system calls, the wake-ups and the other processes: the part of
``bench/loopback.py``'s CPU per delivery that Python code decides. Two cases: one
message per frame (a quiet cluster) and 10 (a busy one, whose reads find many); each
in memory and with a data dir (the durable store's cost: its writer thread's CPU is the
process's too, and the run ends once every delivery is committed).
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout

from bench.common import Report, add_costs, delivery_args, load_line
from plumtree.core import wire
from plumtree.core.config import ProtocolConfig
from plumtree.core.ids import message_id, stream_key
from plumtree.core.messages import Alive, Gossip
from plumtree.runtime.eventloop import run
from plumtree.runtime.node import Node, NodeConfig
from plumtree.runtime.transport import _LEN, _Inbound

PEERS = 15


class _Sink:
    """Stands in for the peer links: encodes what a link would send, then drops it."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def send_reliable(self, addr: str, messages: list[Any]) -> None:
        t = self.node.transport
        wire.encode(wire.Envelope(t.label, t.name, messages))

    def send_datagram(self, addr: str, messages: list[Any]) -> None:
        pass


class _NoSocket:
    def close(self) -> None:
        pass


async def one_run(deliveries: int, per_frame: int, seed: int, data_dir: str | None = None) -> float:
    """CPU seconds a node spends on ``deliveries`` new messages, ``per_frame`` a frame."""
    node = Node(
        NodeConfig(
            name="me",
            bind="127.0.0.1:0",
            api=None,
            protocol=ProtocolConfig.from_profile("local"),
            data_dir=data_dir,
        )
    )
    await node.start()
    try:
        sink = _Sink(node)
        node.transport.send_reliable = sink.send_reliable  # type: ignore[method-assign]
        node.transport.send_datagram = sink.send_datagram  # type: ignore[method-assign]
        peers = [f"p{i}" for i in range(PEERS)]
        for i, p in enumerate(peers):
            # each from its own address, in its name: confirmed members at once (what
            # others only vouch for waits for a probe)
            addr = f"127.0.0.1:{40000 + i}"
            node.stack.receive(addr, p, [Alive(p, 1, addr, {})], False, node._now())
        node._pump()  # membership events made the peers Plumtree's
        parent = next(iter(node.plumtree.peers.eager))
        rng = random.Random(seed)
        payload = bytes(1024)
        stream = bytearray()
        keys = {p: stream_key(p, 0) for p in peers}
        next_seq = dict.fromkeys(peers, 1)
        for _ in range(deliveries // per_frame):
            batch: list[Any] = []
            for _ in range(per_frame):
                origin = rng.choice(peers)
                seq = next_seq[origin]
                next_seq[origin] = seq + 1
                batch.append(Gossip(message_id(keys[origin], seq), 2, origin, 0, payload))
            frame = wire.encode(wire.Envelope(node.transport.label, parent, batch))
            stream += len(frame).to_bytes(_LEN, "big") + frame
        reader = _Inbound(node.transport)
        reader.transport = _NoSocket()  # type: ignore[assignment]
        reader.source = "127.0.0.1:40000"
        chunk = 64 * 1024
        started = time.process_time()
        for start in range(0, len(stream), chunk):
            reader.data_received(bytes(stream[start : start + chunk]))
            await asyncio.sleep(0)  # the loop's turn: timers (IHave flushes, maintenance)
        while data_dir is not None and node.log.last < node.plumtree.counters.messages_delivered:
            await asyncio.sleep(0.001)  # until the store committed every delivery
        seconds = time.process_time() - started
        delivered = node.plumtree.counters.messages_delivered
        assert delivered == deliveries // per_frame * per_frame, delivered
        return seconds
    finally:
        await node.stop(leave=False)


def main(argv: list[str] | None = None) -> int:
    args = delivery_args(__doc__, argv, deliveries=30_000, repeats=3)
    out = Report("bench/node.py: a node's runtime and core, per delivery, without sockets")

    async def measure() -> None:
        for per_frame in (1, 10):
            for durable in (False, True):
                costs = []
                for r in range(args.repeats):
                    with tempfile.TemporaryDirectory(prefix="plumtree-bench-") as tmp:
                        seconds = await one_run(
                            args.deliveries, per_frame, args.seed + r, tmp if durable else None
                        )
                    costs.append(1e6 * seconds / args.deliveries)
                case = f"{per_frame} message{'s' if per_frame > 1 else ''} a frame" + (
                    ", data dir" if durable else ", memory"
                )
                add_costs(out, case, costs)

    run(measure())
    out.note(f"{args.deliveries:,} deliveries per run; machine: {load_line()}")
    print(out.render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
