"""What the durable store costs per commit and per delivery, by group size and fsync.

    python bench/store.py              # ~3 s per case, 14 cases (under a minute)
    python bench/store.py --quick      # ~0.3 s per case
    python bench/store.py --dir /var/lib/x   # measure that file system instead of /tmp

Each case opens a fresh store and has one caller submit batches to a
:class:`~plumtree.store.StoreWriter`, one at a time (the next once the previous is
committed), so every commit holds exactly the group size: 1, 16 or 256 deliveries of
100 B or 4 KiB, plus their stream's state, as the runtime writes them. Retention keeps
64 MiB, so the big cases run with retention deleting as much as they insert.
The ``pipelined`` cases submit single deliveries without waiting (a window of 1024),
and show what group commit makes of that.

Reported: commits/s and deliveries/s; CPU microseconds per delivery, of the submitting
thread (``time.thread_time``: what the event loop would pay) and of the whole process
(``time.process_time``: the writer thread's SQLite work included); and commit latency,
submit to future done, median and p99.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout

from bench.common import Report, load_line, median, quantile
from plumtree.core.state import StreamState
from plumtree.store import Batch, DeliveryRecord, NodeStore, Retention, StoreWriter
from plumtree.store.sqlite import Fsync

RETENTION = Retention(max_bytes=64 * 1024 * 1024, max_age=1e9, max_messages=1 << 20)
FSYNCS: tuple[Fsync, ...] = ("normal", "full")
GROUPS = (1, 16, 256)
PAYLOADS = (100, 4096)
WINDOW = 1024  # batches in flight in the pipelined cases


@dataclass
class Result:
    commits: int
    deliveries: int
    wall: float
    caller_cpu: float
    process_cpu: float
    latencies: list[float]


class Source:
    """Deliveries of one origin, numbered as the runtime numbers them."""

    def __init__(self, payload_size: int) -> None:
        self.payload = os.urandom(payload_size)
        self.cursor = 0

    def batch(self, size: int) -> Batch:
        first = self.cursor + 1
        self.cursor += size
        now = time.time()
        deliveries = [
            DeliveryRecord(c, "origin", 1, c, 2, "parent", now, self.payload)
            for c in range(first, self.cursor + 1)
        ]
        stream = StreamState("origin", 1, self.cursor, self.cursor, 1)
        return Batch(deliveries, [stream])


def run_closed(store: NodeStore, group: int, payload: int, seconds: float) -> Result:
    """One batch of ``group`` deliveries at a time: each commit holds exactly that."""
    writer = StoreWriter(store)
    source = Source(payload)
    latencies: list[float] = []
    caller = 0.0
    cpu0 = time.process_time()
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        t0 = time.thread_time()
        sent = time.perf_counter()
        future = writer.submit(source.batch(group))
        caller += time.thread_time() - t0
        future.result()
        latencies.append(time.perf_counter() - sent)
    wall = time.perf_counter() - started
    process = time.process_time() - cpu0
    writer.close()
    return Result(writer.commits, writer.rows_written, wall, caller, process, latencies)


def run_pipelined(store: NodeStore, payload: int, seconds: float) -> Result:
    """Single deliveries submitted without waiting: group commit sets the group size."""
    writer = StoreWriter(store)
    source = Source(payload)
    window: deque[tuple[float, Future[None]]] = deque()
    latencies: list[float] = []
    caller = 0.0
    cpu0 = time.process_time()
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        t0 = time.thread_time()
        window.append((time.perf_counter(), writer.submit(source.batch(1))))
        caller += time.thread_time() - t0
        if len(window) >= WINDOW:
            sent, future = window.popleft()
            future.result()
            latencies.append(time.perf_counter() - sent)
    for sent, future in window:
        future.result()
        latencies.append(time.perf_counter() - sent)
    wall = time.perf_counter() - started
    process = time.process_time() - cpu0
    writer.close()
    return Result(writer.commits, writer.rows_written, wall, caller, process, latencies)


def report_case(out: Report, case: str, r: Result) -> None:
    per = max(1, r.deliveries)
    out.add(
        case,
        "commits/s / deliveries/s",
        f"{r.commits / r.wall:,.0f} / {r.deliveries / r.wall:,.0f}",
    )
    if r.commits and r.deliveries != r.commits:
        out.add(case, "  deliveries per commit", f"{r.deliveries / r.commits:,.1f}")
    out.add(
        case,
        "CPU per delivery: caller / process",
        f"{1e6 * r.caller_cpu / per:.1f} / {1e6 * r.process_cpu / per:.1f} us",
    )
    out.add(
        case,
        "commit latency median / p99",
        f"{1e3 * median(r.latencies):.2f} / {1e3 * quantile(r.latencies, 0.99):.2f} ms",
    )


def file_system(path: Path) -> str:
    """The mount type under ``path`` (a tmpfs makes fsync free)."""
    best, kind = "", "?"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            point = fields[1]
            if str(path).startswith(point) and len(point) > len(best):
                best, kind = point, fields[2]
    except OSError:
        pass
    return f"{kind} at {best or '?'}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="about 0.3 s per case")
    ap.add_argument("--seconds", type=float, default=None, help="per case (default 3)")
    ap.add_argument("--dir", default=None, help="where the stores go (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write the table as JSON here")
    args = ap.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (0.3 if args.quick else 3.0)

    out = Report("bench/store.py: the durable store (SQLite WAL) per commit and per delivery")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="plumtree-bench-") as top:
        base = Path(top)
        n = 0
        for fsync in FSYNCS:
            for payload in PAYLOADS:
                size = f"{payload} B" if payload < 1024 else f"{payload // 1024} KiB"
                groups: list[int | None] = [*GROUPS, None] if payload == PAYLOADS[0] else [*GROUPS]
                for group in groups:
                    n += 1
                    store = NodeStore.open(base / str(n), "bench", RETENTION, fsync=fsync)
                    store.begin_epoch("bench", 1)
                    if group is None:
                        case = f"{fsync}, {size}, pipelined"
                        result = run_pipelined(store, payload, seconds)
                    else:
                        case = f"{fsync}, {size}, {group}/commit"
                        result = run_closed(store, group, payload, seconds)
                    store.close()
                    report_case(out, case, result)
        out.note(f"stores on {file_system(base.resolve())}; SQLite {sqlite3.sqlite_version}")
    out.note(f"{seconds:g} s per case; retention {RETENTION.max_bytes >> 20} MiB")
    out.note(f"machine: {load_line()}")
    out.emit(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
