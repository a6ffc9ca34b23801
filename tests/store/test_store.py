"""The durable node store: round trips, retention and floors, one node per directory,
kill -9 durability, concurrent reads, bad files, and the group-committing writer."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from functools import partial
from pathlib import Path

import pytest

from plumtree.core.state import NodeState, StreamState
from plumtree.store import (
    ROW_OVERHEAD,
    Batch,
    DeliveryRecord,
    NodeStore,
    Retention,
    StoreError,
    StoreWriter,
)
from plumtree.store.sqlite import PURGE_CHUNKS, Fsync

ROOT = Path(__file__).resolve().parents[2]
PLENTY = Retention(max_bytes=1 << 30, max_age=1e9, max_messages=1 << 20)


def rec(
    cursor: int, origin: str, seq: int, at: float, payload: bytes = b"p", epoch: int = 1
) -> DeliveryRecord:
    return DeliveryRecord(cursor, origin, epoch, seq, 1, "sender", at, payload)


def child(script: str, *args: str) -> subprocess.Popen[str]:
    """A python child running ``script`` with this checkout importable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def floors(state: NodeState) -> dict[tuple[str, int], int]:
    return {(s.origin, s.epoch): s.floor for s in state.streams}


def assert_no_payload_below_floor(state: NodeState) -> None:
    f = floors(state)
    for m in state.messages:
        assert m.seq >= f.get((m.origin, m.epoch), 1), m


def one_line_error(directory: Path | str, retention: Retention = PLENTY) -> str:
    with pytest.raises(StoreError) as info:
        NodeStore.open(directory, None, retention)
    text = str(info.value)
    assert "\n" not in text and text
    return text


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("fsync", ["normal", "full"])
def test_round_trip_restores_epoch_cursor_streams_messages_and_members(
    tmp_path: Path, fsync: Fsync
) -> None:
    store = NodeStore.open(tmp_path / "n", "n1", PLENTY, fsync=fsync)
    store.begin_epoch("n1", 5)
    first = [rec(1, "n1", 1, 1000.0, b"a"), rec(2, "o2", 3, 1001.0, b"bb"), rec(3, "n1", 2, 1002.5)]
    store.write(
        Batch(
            first,
            [StreamState("n1", 5, 2, 2, 1), StreamState("o2", 1, 0, 3, 1, ((3, 3),))],
            {"a": "10.0.0.1:7946", "b": "10.0.0.2:7946"},
        )
    )
    second = [rec(4, "o2", 1, 1003.0, b"ccc"), rec(5, "o2", 2, 1004.0, bytes(range(256)))]
    final_streams = [
        StreamState("n1", 5, 2, 2, 1),
        StreamState("o2", 1, 3, 9, 1, ((5, 6), (8, 8)), 2, ((4, 4),)),
    ]
    store.write(Batch(second, [final_streams[1]], {"a": None, "c": "10.0.0.3:7946"}))
    store.close()

    again = NodeStore.open(tmp_path / "n", "n1", PLENTY, fsync=fsync)
    state = again.load(now_wall=1010.0)
    assert state is not None
    assert (state.epoch, state.cursor) == (5, 5)
    assert sorted(state.streams, key=lambda s: s.origin) == final_streams
    records = first + second
    assert [(m.origin, m.epoch, m.seq, m.hops, m.payload) for m in state.messages] == [
        (r.origin, r.epoch, r.seq, r.hops, r.payload) for r in records
    ], "oldest first"
    assert [m.age for m in state.messages] == [10.0, 9.0, 7.5, 7.0, 6.0]
    assert again.members() == {"b": "10.0.0.2:7946", "c": "10.0.0.3:7946"}
    assert again.deliveries(0, 100) == records
    assert again.deliveries(2, 2) == records[2:4]
    assert again.oldest_cursor() == 1
    stats = again.stats()
    assert stats["rows"] == 5
    assert stats["bytes"] == sum(len(r.payload or b"") for r in records) + 5 * ROW_OVERHEAD
    again.close()
    again.close()  # idempotent


def test_a_fresh_store_loads_none_and_a_name_sticks_to_its_directory(tmp_path: Path) -> None:
    store = NodeStore.open(tmp_path / "d", None, PLENTY)
    assert store.name is None and store.load(0.0) is None
    assert store.oldest_cursor() is None and store.members() == {}
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o700
    store.begin_epoch("alpha", 1)
    assert store.name == "alpha"
    store.close()

    with pytest.raises(StoreError) as info:
        NodeStore.open(tmp_path / "d", "beta", PLENTY)
    assert str(info.value) == (
        f"{tmp_path / 'd'} holds the state of node 'alpha', not 'beta': "
        "use --name alpha or another --data-dir"
    )
    adopted = NodeStore.open(tmp_path / "d", None, PLENTY)
    assert adopted.name == "alpha"
    state = adopted.load(0.0)
    assert state is not None and state.epoch == 1 and state.cursor == 0
    adopted.close()


# ---------------------------------------------------------------- one node per directory


def test_a_second_open_in_the_same_process_is_refused_until_close(tmp_path: Path) -> None:
    store = NodeStore.open(tmp_path, "n", PLENTY)
    with pytest.raises(StoreError, match=rf"is in use by another node \(pid {os.getpid()}\)"):
        NodeStore.open(tmp_path, "n", PLENTY)
    store.close()
    NodeStore.open(tmp_path, "n", PLENTY).close()


HOLDER = """
import sys
from plumtree.store import NodeStore, Retention
store = NodeStore.open(sys.argv[1], "holder", Retention(1 << 20, 60.0, 1000))
print("ready", flush=True)
sys.stdin.readline()
store.close()
"""


def test_a_directory_held_by_another_process_is_refused_with_its_pid(tmp_path: Path) -> None:
    proc = child(HOLDER, str(tmp_path))
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError) as info:
            NodeStore.open(tmp_path, None, PLENTY)
        assert str(info.value) == f"{tmp_path} is in use by another node (pid {proc.pid})"
        proc.stdin.close()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    store = NodeStore.open(tmp_path, None, PLENTY)
    assert store.name is None, "the holder never began an epoch"
    store.close()


# ---------------------------------------------------------------- retention and floors


def write_each(store: NodeStore, records: list[DeliveryRecord], *streams: StreamState) -> None:
    """One write (one chunk) per record, the streams with the last: retention works on
    whole chunks, so a chunk per row deletes row by row."""
    for r in records[:-1]:
        store.write(Batch([r]))
    store.write(Batch(records[-1:], list(streams)))


def test_retention_by_count_deletes_oldest_first_and_raises_floors(tmp_path: Path) -> None:
    store = NodeStore.open(tmp_path, "n", Retention(1 << 30, 1e9, 5))
    store.begin_epoch("n", 1)
    write_each(
        store, [rec(i, "a", i, 100.0 + i) for i in range(1, 9)], StreamState("a", 1, 8, 8, 1)
    )
    assert [d.cursor for d in store.deliveries(0, 100)] == [4, 5, 6, 7, 8]
    assert store.oldest_cursor() == 4 and store.stats()["rows"] == 5
    # the core's floor lags the store's retention: an upsert never lowers the saved floor
    store.write(Batch(streams=[StreamState("a", 1, 8, 9, 1)]))
    state = store.load(200.0)
    assert state is not None and state.cursor == 8
    assert floors(state) == {("a", 1): 4}
    assert [m.seq for m in state.messages] == [4, 5, 6, 7, 8]
    assert state.streams[0].head == 9
    store.close()

    # a tighter retention at the next start: load returns the newest that fit, and
    # the floor says what was left out (the rows go at the next write)
    tight = NodeStore.open(tmp_path, "n", Retention(1 << 30, 1e9, 2))
    state = tight.load(200.0)
    assert state is not None
    assert [m.seq for m in state.messages] == [7, 8] and floors(state) == {("a", 1): 7}
    assert tight.stats()["rows"] == 5
    tight.write(Batch([rec(9, "a", 9, 109.0)], [StreamState("a", 1, 9, 9, 1)]))
    assert [d.cursor for d in tight.deliveries(0, 100)] == [8, 9]
    state = tight.load(200.0)
    assert state is not None and floors(state) == {("a", 1): 8}
    tight.close()


def test_retention_by_bytes_keeps_exact_floors_and_the_byte_total_across_reopen(
    tmp_path: Path,
) -> None:
    retention = Retention(max_bytes=3 * (100 + ROW_OVERHEAD), max_age=1e9, max_messages=100)
    store = NodeStore.open(tmp_path, "n", retention)
    store.begin_epoch("n", 1)
    # interleaved streams: A1 B1 A2 B2 A3 B3; three rows of 300 accounted bytes fit
    rows = [
        rec(c, o, s, 10.0 + c, bytes(100))
        for c, (o, s) in enumerate(
            [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3), ("b", 3)], start=1
        )
    ]
    write_each(store, rows, StreamState("a", 1, 3, 3, 1), StreamState("b", 1, 3, 3, 1))
    assert [d.cursor for d in store.deliveries(0, 10)] == [4, 5, 6]
    assert store.stats()["bytes"] == 900
    state = store.load(20.0)
    assert state is not None
    assert floors(state) == {("a", 1): 3, ("b", 1): 2}
    assert [(m.origin, m.seq) for m in state.messages] == [("b", 2), ("a", 3), ("b", 3)]
    store.close()

    store = NodeStore.open(tmp_path, "n", retention)
    assert store.stats()["bytes"] == 900 and store.stats()["rows"] == 3
    # a bigger payload pushes out two 300-byte rows: 300 + (300 + 200) = 800 <= 900
    store.write(Batch([rec(7, "a", 4, 17.0, bytes(300))], [StreamState("a", 1, 4, 4, 1)]))
    assert [d.cursor for d in store.deliveries(0, 10)] == [6, 7]
    assert store.stats()["bytes"] == 300 + 500
    state = store.load(20.0)
    assert state is not None
    assert floors(state) == {("a", 1): 4, ("b", 1): 3}
    assert [(m.origin, m.seq) for m in state.messages] == [("b", 3), ("a", 4)]
    assert_no_payload_below_floor(state)
    # one payload bigger than the whole bound is still kept (alone), as in memory
    store.write(Batch([rec(8, "b", 4, 18.0, bytes(5000))]))
    assert [d.cursor for d in store.deliveries(0, 10)] == [8]
    assert store.stats()["bytes"] == 5200
    store.close()
    store = NodeStore.open(tmp_path, "n", retention)
    assert store.stats()["bytes"] == 5200 and store.stats()["rows"] == 1
    store.close()


def test_retention_by_age_at_write_and_at_load(tmp_path: Path) -> None:
    store = NodeStore.open(tmp_path, "n", Retention(1 << 30, 3.5, 1000))
    store.begin_epoch("n", 1)
    write_each(
        store, [rec(i, "a", i, 1000.0 + i) for i in range(1, 11)], StreamState("a", 1, 10, 10, 1)
    )
    # relative to the newest row written (1010): rows at 1006.5 and later stay
    assert [d.cursor for d in store.deliveries(0, 100)] == [7, 8, 9, 10]
    assert store.stats()["oldest_at"] == 1007.0
    state = store.load(now_wall=1012.0)
    assert state is not None
    assert [(m.seq, m.age) for m in state.messages] == [(9, 3.0), (10, 2.0)]
    assert floors(state) == {("a", 1): 9}
    assert store.stats()["rows"] == 4, "load reads, it never deletes"
    store.close()


def test_load_never_offers_a_payload_below_a_streams_floor(tmp_path: Path) -> None:
    store = NodeStore.open(tmp_path, "n", Retention(1 << 30, 1e9, 3))
    store.begin_epoch("n", 1)
    # the core's own store evicted up to 6 of "a": its saved floor says so
    store.write(Batch([rec(i, "a", i, 1.0) for i in range(1, 4)], [StreamState("a", 1, 3, 3, 7)]))
    state = store.load(2.0)
    assert state is not None and state.messages == [] and floors(state) == {("a", 1): 7}
    # out of order: seq 5 delivered before 3 and 4; deleting 5 puts 3 and 4 below the floor
    store.write(Batch([rec(4, "c", 5, 1.0), rec(5, "c", 3, 1.0), rec(6, "c", 4, 1.0)]))
    store.write(Batch([rec(7, "d", 1, 1.0)], [StreamState("c", 1, 5, 5, 1)]))
    state = store.load(2.0)
    assert state is not None
    assert floors(state)[("c", 1)] == 6
    assert [(m.origin, m.seq) for m in state.messages] == [("d", 1)]
    # "d"'s rows went before its state was ever saved: the first save gets the floor
    store.write(Batch([rec(8, "e", 1, 1.0), rec(9, "e", 2, 1.0), rec(10, "e", 3, 1.0)]))
    store.write(Batch(streams=[StreamState("d", 1, 1, 1, 1)]))
    state = store.load(2.0)
    assert state is not None
    assert floors(state)[("d", 1)] == 2
    assert [(m.origin, m.seq) for m in state.messages] == [("e", 1), ("e", 2), ("e", 3)]
    assert_no_payload_below_floor(state)
    store.close()


# ---------------------------------------------------------------- kill -9

KILLED = """
import sys
from plumtree.core.state import StreamState
from plumtree.store import Batch, DeliveryRecord, NodeStore, Retention, StoreWriter
store = NodeStore.open(sys.argv[1], "victim", Retention(1 << 30, 1e9, 1 << 20))
store.begin_epoch("victim", 7)
writer = StoreWriter(store)

def report(k):
    def done(future):
        if future.exception() is None:
            print(f"committed {k}", flush=True)
    return done

futures = []
for k in range(1, 1_000_000):
    batch = Batch(
        [DeliveryRecord(k, "victim", 7, k, 0, "victim", 1000.0 + k, b"x" * 200)],
        [StreamState("victim", 7, k, k, 1)],
        {f"m{k % 5}": f"127.0.0.1:{k}"},
    )
    future = writer.submit(batch)
    future.add_done_callback(report(k))
    futures.append(future)
    if k > 32:
        futures[k - 33].result()  # a window of commits in flight
"""


def test_every_batch_reported_committed_survives_kill_9(tmp_path: Path) -> None:
    proc = child(KILLED, str(tmp_path))
    committed = 0
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        while committed < 400 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            committed = int(line.split()[1])
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: the writer is committing
        proc.wait(10)
        for line in proc.stdout.read().splitlines(keepends=True):
            if line.endswith("\n"):  # a line cut by the kill proves nothing
                committed = int(line.split()[1])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert committed >= 400, "the child committed too little to test anything"

    store = NodeStore.open(tmp_path, None, PLENTY)
    assert store.name == "victim"
    state = store.load(0.0)
    assert state is not None and state.epoch == 7
    # each batch is all there or not at all: cursor, rows and stream agree
    assert state.cursor >= committed
    assert [s.wm for s in state.streams] == [state.cursor]
    assert [m.seq for m in state.messages] == list(range(1, state.cursor + 1))
    assert store.deliveries(state.cursor, 10) == []
    assert len(store.members()) == 5
    store.close()


# ---------------------------------------------------------------- concurrent reads


def test_deliveries_pages_from_other_threads_while_the_writer_commits(tmp_path: Path) -> None:
    store = NodeStore.open(tmp_path, "n", PLENTY)
    store.begin_epoch("n", 1)
    writer = StoreWriter(store)
    per_batch, batches = 10, 300
    total = per_batch * batches
    seen: dict[int, list[int]] = {}
    short_pages: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def page(reader: int) -> None:
        got: list[int] = []
        ends: list[int] = []
        after = 0
        deadline = time.monotonic() + 10
        try:
            while after < total and time.monotonic() < deadline:
                rows = store.deliveries(after, 64)
                if len(rows) < 64:
                    ends.append(rows[-1].cursor if rows else after)
                got.extend(r.cursor for r in rows)
                after = got[-1] if got else 0
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        seen[reader], short_pages[reader] = got, ends

    readers = [threading.Thread(target=page, args=(i,)) for i in range(2)]
    for t in readers:
        t.start()
    futures = []
    for b in range(batches):
        first = b * per_batch + 1
        batch = Batch(
            [rec(c, "a", c, float(c), bytes(50)) for c in range(first, first + per_batch)],
            [StreamState("a", 1, first + per_batch - 1, first + per_batch - 1, 1)],
        )
        futures.append(writer.submit(batch))
        if b % 10 == 0:
            time.sleep(0.001)  # let readers see the log grow
    for f in futures:
        f.result(10)
    for t in readers:
        t.join(15)
    writer.close()
    store.close()
    assert not errors
    for i in range(2):
        assert seen[i] == list(range(1, total + 1)), "ascending, no gap, no repeat"
        # a reader sees a committed prefix: it ends between batches, never inside one
        assert all(end % per_batch == 0 for end in short_pages[i])
    assert any(short_pages[i] for i in range(2)), "the readers never overlapped the writer"


# ---------------------------------------------------------------- bad input


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "node.db").write_bytes(b"definitely not sqlite " * 200)
    text = one_line_error(tmp_path)
    assert str(tmp_path / "node.db") in text and "not a database" in text
    (tmp_path / "node.db").unlink()
    NodeStore.open(tmp_path, None, PLENTY).close()  # the failed open let go of the lock


def test_a_truncated_database_is_one_line(tmp_path: Path) -> None:
    store = NodeStore.open(tmp_path, "n", PLENTY)
    store.begin_epoch("n", 1)
    store.write(Batch([rec(i, "a", i, 1.0, bytes(1000)) for i in range(1, 501)]))
    store.close()
    db = tmp_path / "node.db"
    with db.open("r+b") as f:
        f.truncate(db.stat().st_size // 2)
    text = one_line_error(tmp_path)
    assert str(db) in text and "malformed" in text


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert one_line_error(tmp_path / "f") == f"{tmp_path / 'f'} is not a directory"
    text = one_line_error(tmp_path / "f" / "sub")
    assert str(tmp_path / "f" / "sub") in text


def test_a_node_db_that_is_a_directory_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "node.db").mkdir()
    assert one_line_error(tmp_path) == f"{tmp_path / 'node.db'} is not a file"


def test_another_sqlite_database_or_a_newer_schema_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    with sqlite3.connect(other / "node.db") as conn:
        conn.execute("CREATE TABLE t(x)")
    conn.close()
    assert "not a plumtree store" in one_line_error(other)

    NodeStore.open(tmp_path / "new", "n", PLENTY).close()
    with sqlite3.connect(tmp_path / "new" / "node.db") as conn:
        conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema'")
    conn.close()
    text = one_line_error(tmp_path / "new")
    assert "schema version 99" in text and "upgrade plumtree" in text


UNWRITABLE = """
import sys
from plumtree.store import NodeStore, Retention, StoreError
for directory in sys.argv[1:]:
    try:
        NodeStore.open(directory, None, Retention(1 << 20, 60.0, 1000)).close()
        print("opened")
    except StoreError as e:
        print(e)
"""


def test_an_unwritable_directory_is_one_line(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.geteuid() != 0:
            lines = [one_line_error(locked), one_line_error(locked / "sub")]
        else:
            # root writes anywhere: a child without the DAC capabilities sees the modes
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("running as root and setpriv is missing to drop CAP_DAC_OVERRIDE")
            done = subprocess.run(
                [
                    *(setpriv, "--bounding-set", "-dac_override,-dac_read_search"),
                    *(sys.executable, "-c", UNWRITABLE, str(locked), str(locked / "sub")),
                ],
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                capture_output=True,
                text=True,
                timeout=30,
            )
            if done.returncode != 0:
                pytest.skip(
                    f"running as root and setpriv cannot drop capabilities here: "
                    f"{done.stderr.strip()[-200:]}"
                )
            lines = done.stdout.splitlines()
        assert lines == [
            f"{locked} is not writable by this user",
            f"cannot create {locked / 'sub'}: Permission denied",
        ]
    finally:
        locked.chmod(0o700)


# ---------------------------------------------------------------- the writer thread


class GatedStore(NodeStore):
    """Commits only once the test opens the gate: batches pile up meanwhile."""

    gate: threading.Event

    def write(self, batch: Batch) -> None:
        assert self.gate.wait(10)
        super().write(batch)


def gated(tmp_path: Path) -> GatedStore:
    store = GatedStore.open(tmp_path, "n", PLENTY)
    assert isinstance(store, GatedStore)
    store.gate = threading.Event()
    store.begin_epoch("n", 1)
    return store


def test_batches_submitted_during_a_commit_share_the_next_one_in_order(tmp_path: Path) -> None:
    store = gated(tmp_path)
    writer = StoreWriter(store)
    order: list[int] = []
    futures: list[Future[None]] = []
    submits = 50

    def done(i: int, _future: Future[None]) -> None:
        order.append(i)

    for i in range(1, submits + 1):
        member = None if i == submits else f"10.0.0.{i}:7946"
        f = writer.submit(
            Batch([rec(i, "a", i, float(i))], [StreamState("a", 1, i, i, 1)], {"m": member})
        )
        f.add_done_callback(partial(done, i))
        futures.append(f)
    assert writer.pending >= submits - 1, "one group at most is in the blocked commit"
    store.gate.set()
    for f in futures:
        assert f.result(10) is None
    assert order == list(range(1, submits + 1)), "futures complete in submit order"
    assert 1 <= writer.commits <= 2 < submits
    assert writer.rows_written == submits and writer.pending_bytes == 0
    assert [d.cursor for d in store.deliveries(0, 100)] == list(range(1, submits + 1))
    state = store.load(0.0)
    assert state is not None
    assert state.streams == [StreamState("a", 1, submits, submits, 1)], "the last state wins"
    assert store.members() == {}, "the last member change wins"
    writer.close()
    store.close()


def test_a_full_backlog_rejects_at_once_and_counts(tmp_path: Path) -> None:
    store = gated(tmp_path)
    size = 4000 + ROW_OVERHEAD
    writer = StoreWriter(store, max_pending_bytes=2 * size + 100)
    accepted = [writer.submit(Batch([rec(i, "a", i, 1.0, bytes(4000))])) for i in (1, 2)]
    refused = writer.submit(Batch([rec(3, "a", 3, 1.0, bytes(4000))]))
    assert refused.done()
    with pytest.raises(StoreError, match="store writer backlog full"):
        refused.result()
    assert writer.rejected == 1 and writer.pending_bytes == 2 * size
    store.gate.set()
    for f in accepted:
        f.result(10)
    assert writer.pending_bytes == 0
    writer.submit(Batch([rec(3, "a", 3, 1.0, bytes(4000))])).result(10)
    assert [d.cursor for d in store.deliveries(0, 10)] == [1, 2, 3]
    writer.close()
    store.close()


def test_a_failed_commit_fails_its_group_and_the_writer_carries_on(tmp_path: Path) -> None:
    store = NodeStore.open(tmp_path, "n", PLENTY)
    store.begin_epoch("n", 1)
    writer = StoreWriter(store)
    writer.submit(Batch([rec(1, "a", 1, 1.0)])).result(10)
    duplicate = writer.submit(Batch([rec(1, "a", 9, 1.0)]))  # cursor 1 is taken
    with pytest.raises(StoreError, match="write failed"):
        duplicate.result(10)
    assert writer.last_error is not None and "UNIQUE" in writer.last_error
    writer.submit(Batch([rec(2, "a", 2, 1.0)])).result(10)
    assert [(d.cursor, d.seq) for d in store.deliveries(0, 10)] == [(1, 1), (2, 2)]
    assert store.stats()["rows"] == 2, "the running totals ignore a rolled back write"
    writer.close()
    store.close()


def test_close_commits_what_is_queued_then_refuses(tmp_path: Path) -> None:
    store = gated(tmp_path)
    writer = StoreWriter(store)
    futures = [writer.submit(Batch([rec(i, "a", i, 1.0)])) for i in range(1, 6)]
    threading.Timer(0.05, store.gate.set).start()
    writer.close(timeout=10)
    assert all(f.done() and f.exception() is None for f in futures)
    late = writer.submit(Batch([rec(6, "a", 6, 1.0)]))
    with pytest.raises(StoreError, match="closed"):
        late.result()
    assert writer.rejected == 1
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.write(Batch())


def test_deliveries_after_the_last_stream_checkpoint_are_replayed_at_load(
    tmp_path: Path,
) -> None:
    """An acknowledgement's commit carries the deliveries alone; a restart replays the
    ones committed after the streams were last saved."""
    retention = Retention(1 << 30, 3600.0, 1_000_000)
    with NodeStore.open(tmp_path / "d", "me", retention) as store:
        store.begin_epoch("me", 5)
        store.write(
            Batch(
                deliveries=[DeliveryRecord(1, "o", 1, 1, 1, "p", 1000.0, b"a")],
                streams=[StreamState("o", 1, 1, 1, 1)],
            )
        )
        store.write(Batch(deliveries=[DeliveryRecord(2, "me", 5, 1, 0, "me", 1001.0, b"b")]))
        store.write(Batch(deliveries=[DeliveryRecord(3, "o", 1, 2, 1, "p", 1002.0, b"c")]))
    with NodeStore.open(tmp_path / "d", "me", retention) as store:
        state = store.load(1003.0)
    assert state is not None
    # the streams cover what was committed before their write; that write's own
    # deliveries replay too (a no-op for the core: the stream has them)
    assert state.replay == [("o", 1, 1), ("me", 5, 1), ("o", 1, 2)]
    assert [(s.origin, s.wm) for s in state.streams] == [("o", 1)]


def test_deliveries_merged_after_a_checkpoint_batch_are_replayed(tmp_path: Path) -> None:
    """StoreWriter merges the batches submitted during a commit: a checkpoint's streams
    and an acknowledgement's deliveries gathered after them share one write. Counting
    those deliveries as covered by the streams lost them at a restart (the node took
    them for missing and delivered them again when a peer repaired them)."""
    store = gated(tmp_path)
    writer = StoreWriter(store)
    blocked = writer.submit(Batch(members={"m": "10.0.0.1:7946"}))
    deadline = time.monotonic() + 10
    while writer.pending and time.monotonic() < deadline:
        time.sleep(0.001)  # until the thread took it and waits at the gate
    checkpoint = writer.submit(Batch([rec(1, "o", 1, 1.0)], [StreamState("o", 1, 1, 1, 1)]))
    ack = writer.submit(Batch([rec(2, "o", 2, 2.0), rec(3, "n", 1, 3.0)]))
    assert writer.pending == 2
    store.gate.set()
    for f in (blocked, checkpoint, ack):
        f.result(10)
    assert writer.commits == 2, "the checkpoint and the acknowledgement in one write"
    writer.close()
    state = store.load(5.0)
    assert state is not None and state.streams == [StreamState("o", 1, 1, 1, 1)]
    assert ("o", 1, 2) in state.replay and ("n", 1, 1) in state.replay
    store.close()


# ---------------------------------------------------------------- chunks


def cursors(records: list[DeliveryRecord]) -> list[int]:
    return [r.cursor for r in records]


def gappy_store(tmp_path: Path, retention: Retention = PLENTY) -> NodeStore:
    """Three chunks with gaps between and inside them (a crash leaves gaps)."""
    store = NodeStore.open(tmp_path, "n", retention)
    store.begin_epoch("n", 1)
    for batch in ([1, 2, 5], [9], [10, 20, 21]):
        store.write(Batch([rec(c, "a", c, float(c), bytes([c])) for c in batch]))
    return store


def test_chunks_with_gaps_round_trip_in_cursor_order(tmp_path: Path) -> None:
    store = gappy_store(tmp_path)
    assert store.stats()["rows"] == 7 and store.stats()["chunks"] == 3
    store.close()
    store = NodeStore.open(tmp_path, "n", PLENTY)
    every = store.deliveries(0, 100)
    assert cursors(every) == [1, 2, 5, 9, 10, 20, 21]
    assert [r.payload for r in every] == [bytes([c]) for c in cursors(every)]
    assert every[0] == rec(1, "a", 1, 1.0, b"\x01"), "every field survives"
    assert store.oldest_cursor() == 1
    stats = store.stats()
    assert (stats["rows"], stats["chunks"], stats["cursor"]) == (7, 3, 21)
    assert stats["payload_bytes"] == 7 and stats["oldest_at"] == 1.0
    state = store.load(30.0)
    assert state is not None and state.cursor == 21
    assert [m.seq for m in state.messages] == [1, 2, 5, 9, 10, 20, 21]
    assert [q for _, _, q in state.replay] == [1, 2, 5, 9, 10, 20, 21], "no checkpoint yet"
    store.close()


@pytest.mark.parametrize(
    ("after", "limit", "expected"),
    [
        (0, 100, [1, 2, 5, 9, 10, 20, 21]),  # before the oldest
        (-5, 2, [1, 2]),
        (1, 1, [2]),  # inside a chunk
        (2, 100, [5, 9, 10, 20, 21]),
        (3, 2, [5, 9]),  # in a gap inside a chunk, the page crossing into the next one
        (5, 2, [9, 10]),  # at a chunk's end
        (7, 1, [9]),  # in a gap between chunks
        (9, 100, [10, 20, 21]),  # a one-row chunk
        (10, 1, [20]),
        (20, 5, [21]),
        (21, 5, []),  # the newest
        (1000, 5, []),  # beyond the newest
        (0, 0, []),
    ],
)
def test_deliveries_from_any_cursor(
    tmp_path: Path, after: int, limit: int, expected: list[int]
) -> None:
    store = gappy_store(tmp_path)
    assert cursors(store.deliveries(after, limit)) == expected
    store.close()


def test_deliveries_before_the_oldest_start_at_the_oldest_left(tmp_path: Path) -> None:
    store = gappy_store(tmp_path, Retention(1 << 30, 1e9, 4))
    # 7 rows, 4 kept at most: the first chunk has no row that fits and goes whole
    assert cursors(store.deliveries(0, 100)) == [9, 10, 20, 21]
    assert cursors(store.deliveries(3, 2)) == [9, 10]
    assert store.oldest_cursor() == 9
    store.close()


def test_a_retried_batch_below_the_cursor_fills_its_gaps_and_never_a_taken_cursor(
    tmp_path: Path,
) -> None:
    """A failed commit is retried after later ones committed, with what came since: its
    cursors lie below, between and inside the chunks already there."""
    store = gappy_store(tmp_path)
    retry = [rec(c, "b", c + 1, 50.0) for c in (0, 3, 4, 7, 8, 15, 22, 23)]
    store.write(Batch(retry, [StreamState("b", 1, 23, 23, 1)]))
    every = [1, 2, 5, 9, 10, 20, 21]
    assert cursors(store.deliveries(-1, 100)) == sorted(every + cursors(retry))
    assert cursors(store.deliveries(4, 3)) == [5, 7, 8]
    assert store.stats()["rows"] == 15 and store.stats()["cursor"] == 23
    assert store.oldest_cursor() == 0
    store.close()
    store = NodeStore.open(tmp_path, "n", PLENTY)
    assert store.stats()["rows"] == 15 and store.stats()["cursor"] == 23
    state = store.load(60.0)
    assert state is not None and state.cursor == 23
    assert state.replay == [("b", 1, 23), ("b", 1, 24)], "what came after the cursor 21"
    assert len(state.messages) == 15
    # a cursor already in the log fails the write whole, inside a chunk or between
    for taken in ([4], [11, 20], [6, 22]):
        with pytest.raises(StoreError, match="write failed: UNIQUE constraint failed"):
            store.write(Batch([rec(c, "c", c, 70.0) for c in taken]))
    with pytest.raises(StoreError, match="UNIQUE"):
        store.write(Batch([rec(30, "c", 1, 70.0), rec(30, "c", 2, 70.0)]))
    assert store.stats()["rows"] == 15
    assert cursors(store.deliveries(-1, 100)) == sorted(every + cursors(retry))
    store.close()


# ---------------------------------------------------------------- whole-chunk retention


def chunk_of(first: int, last: int, origin: str, at: float, size: int = 100) -> Batch:
    return Batch([rec(c, origin, c, at + c, bytes(size)) for c in range(first, last + 1)])


def test_retention_by_count_deletes_whole_chunks_and_load_returns_what_fits(
    tmp_path: Path,
) -> None:
    store = NodeStore.open(tmp_path, "n", Retention(1 << 30, 1e9, 5))
    store.begin_epoch("n", 1)
    store.write(chunk_of(1, 8, "a", 100.0))
    # one chunk: it holds the newest row, so it stays whole though 8 > 5
    assert cursors(store.deliveries(0, 100)) == list(range(1, 9))
    store.write(chunk_of(9, 11, "a", 100.0))
    store.write(chunk_of(12, 13, "b", 100.0))
    # 13 rows: the first chunk has no row among the newest 5 and went; the second has
    # 11 (with 12 and 13 behind it) and stays whole
    assert cursors(store.deliveries(0, 100)) == [9, 10, 11, 12, 13]
    store.write(chunk_of(14, 15, "b", 100.0))
    assert cursors(store.deliveries(0, 100)) == [9, 10, 11, 12, 13, 14, 15]
    assert store.stats()["rows"] == 7 and store.stats()["deleted"] == 8
    store.write(Batch(streams=[StreamState("a", 1, 11, 11, 1), StreamState("b", 1, 15, 15, 1)]))
    state = store.load(200.0)
    assert state is not None
    assert [(m.origin, m.seq) for m in state.messages] == [("a", 11)] + [
        ("b", s) for s in range(12, 16)
    ]
    # "a": 1-8 deleted (gone), 9 and 10 stored but left out: the floor is past both
    assert floors(state) == {("a", 1): 11, ("b", 1): 1}
    assert_no_payload_below_floor(state)
    store.close()


def test_retention_by_bytes_deletes_whole_chunks_and_the_gone_floor_holds(
    tmp_path: Path,
) -> None:
    retention = Retention(max_bytes=4 * (100 + ROW_OVERHEAD), max_age=1e9, max_messages=100)
    store = NodeStore.open(tmp_path, "n", retention)
    store.begin_epoch("n", 1)
    store.write(chunk_of(1, 3, "a", 10.0))
    store.write(chunk_of(4, 5, "b", 10.0))
    store.write(chunk_of(6, 7, "b", 10.0))
    # 7 rows of 300 accounted bytes, 4 fit: rows 4-7 are two whole chunks
    assert cursors(store.deliveries(0, 100)) == [4, 5, 6, 7]
    assert store.stats()["bytes"] == 1200 and store.oldest_cursor() == 4
    # "a" is saved only now: its floor comes from what retention deleted
    store.write(Batch(streams=[StreamState("a", 1, 3, 3, 1)]))
    state = store.load(20.0)
    assert state is not None
    assert floors(state) == {("a", 1): 4}
    assert [(m.origin, m.seq) for m in state.messages] == [("b", s) for s in range(4, 8)]
    # rows 5-8 fit, so the chunk 4-5 keeps a row that fits and stays whole
    store.write(Batch([rec(8, "b", 8, 18.0, bytes(100))], [StreamState("b", 1, 8, 8, 1)]))
    assert cursors(store.deliveries(0, 100)) == [4, 5, 6, 7, 8]
    assert store.stats()["bytes"] == 1500, "over the bound by part of one chunk"
    state = store.load(20.0)
    assert state is not None
    assert [m.seq for m in state.messages] == [5, 6, 7, 8]
    assert floors(state) == {("a", 1): 4, ("b", 1): 5}, "row 4 is stored, not returned"
    store.close()
    store = NodeStore.open(tmp_path, "n", retention)
    assert store.stats()["bytes"] == 1500 and store.stats()["rows"] == 5
    # a bigger row: 9, 8, 7 fit (500 + 300 + 300), 6 no longer: the chunk 4-5 goes,
    # the chunk 6-7 keeps its row 7 and stays
    store.write(Batch([rec(9, "b", 9, 19.0, bytes(300))]))
    assert cursors(store.deliveries(0, 100)) == [6, 7, 8, 9]
    assert store.stats()["bytes"] == 3 * 300 + 500
    state = store.load(20.0)
    assert state is not None
    assert [m.seq for m in state.messages] == [7, 8, 9]
    assert floors(state) == {("a", 1): 4, ("b", 1): 7}
    assert_no_payload_below_floor(state)
    store.close()


def test_retention_by_age_deletes_a_chunk_once_all_of_it_is_old(tmp_path: Path) -> None:
    store = NodeStore.open(tmp_path, "n", Retention(1 << 30, 10.0, 1000))
    store.begin_epoch("n", 1)
    store.write(Batch([rec(c, "a", c, 1000.0 + c) for c in (1, 2, 3)]))
    store.write(Batch([rec(c, "a", c, 1000.0 + 3 * c) for c in (4, 5)]))
    # newest at 1015: horizon 1005; the first chunk (newest row at 1003) is all old
    assert cursors(store.deliveries(0, 100)) == [4, 5]
    assert store.stats()["oldest_at"] == 1012.0
    store.write(Batch([rec(6, "a", 6, 1023.0)]))
    # horizon 1013: the chunk 4-5 has 1015 in it, so it stays (4 at 1012 with it)
    assert cursors(store.deliveries(0, 100)) == [4, 5, 6]
    state = store.load(now_wall=1023.0)
    assert state is not None
    assert [m.seq for m in state.messages] == [5, 6]
    # no checkpoint yet: every row replays, those of the dead chunk still in the file too
    assert state.replay == [("a", 1, k) for k in range(1, 7)]
    store.write(Batch(streams=[StreamState("a", 1, 6, 6, 1)]))
    state = store.load(now_wall=1023.0)
    assert state is not None and floors(state) == {("a", 1): 5}
    store.close()


def chunks_in_file(directory: Path) -> int:
    with contextlib.closing(sqlite3.connect(directory / "node.db")) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])


def test_dead_chunks_leave_the_file_in_a_batch_and_their_floors_stay(tmp_path: Path) -> None:
    """Retention kills chunks at once (no read returns them) and removes them from the
    file PURGE_CHUNKS at a time, recording their streams' highest seqs in ``gone``."""
    store = NodeStore.open(tmp_path, "n", Retention(1 << 30, 1e9, 4))
    store.begin_epoch("n", 1)
    last = 4 + PURGE_CHUNKS - 1
    for c in range(1, last + 1):
        store.write(Batch([rec(c, "a" if c % 2 else "b", c, float(c))]))
    live = list(range(last - 3, last + 1))

    def check(in_file: int) -> None:
        assert cursors(store.deliveries(0, 1000)) == live and store.oldest_cursor() == live[0]
        assert store.stats()["rows"] == 4 and store.stats()["chunks"] == 4
        assert chunks_in_file(tmp_path) == in_file
        state = store.load(1000.0)
        assert state is not None and [m.seq for m in state.messages] == live
        dead = range(1, live[0])
        assert floors(state) == {
            ("a", 1): max(c for c in dead if c % 2) + 1,
            ("b", 1): max(c for c in dead if not c % 2) + 1,
        }

    store.write(Batch(streams=[StreamState("a", 1, 0, 0, 1), StreamState("b", 1, 0, 0, 1)]))
    check(in_file=last)  # 63 dead chunks still in the file
    assert store.stats()["deleted"] == last - 4
    last += 1
    store.write(Batch([rec(last, "b", last, float(last))]))
    live = [*live[1:], last]
    check(in_file=4)  # the 64th dead one: all of them went
    store.close()
    store = NodeStore.open(tmp_path, "n", Retention(1 << 30, 1e9, 4))
    check(in_file=4)
    store.close()


# ---------------------------------------------------------------- log identity, clean stop


def test_the_log_id_is_the_first_epoch_and_outlives_the_next(tmp_path: Path) -> None:
    store = NodeStore.open(tmp_path, None, PLENTY)
    assert store.log_id is None
    store.begin_epoch("n", 5)
    assert store.log_id == 5
    store.write(Batch([rec(1, "n", 1, 1.0)]))
    store.begin_epoch("n", 9)  # an unclean restart begins a new epoch; the log goes on
    assert store.log_id == 5
    store.close()
    store = NodeStore.open(tmp_path, None, PLENTY)
    assert store.log_id == 5
    state = store.load(2.0)
    assert state is not None and state.epoch == 9 and state.cursor == 1
    store.close()


def test_the_clean_mark_says_how_the_last_process_stopped(tmp_path: Path) -> None:
    store = NodeStore.open(tmp_path, "n", PLENTY)
    assert store.clean, "a brand-new store"
    store.begin_epoch("n", 1)
    store.mark_running()
    assert store.clean, "read at open: this process has not stopped yet"
    store.close()  # not clean: a stop that did not flush everything, or a failure
    store = NodeStore.open(tmp_path, "n", PLENTY)
    assert not store.clean
    store.mark_running()
    store.write(Batch([rec(1, "n", 1, 1.0)]))
    store.close(clean=True)
    store = NodeStore.open(tmp_path, "n", PLENTY)
    assert store.clean
    store.close()  # the previous run's mark stays as long as no run marks itself
    assert NodeStore.open(tmp_path, "n", PLENTY).clean is True


def test_mark_running_commits_with_a_full_sync_and_restores_the_setting(
    tmp_path: Path,
) -> None:
    """A test cannot pull the power: it checks the commit ran under synchronous=FULL
    (SQLite then syncs the WAL at that commit) and that normal commits are back."""
    store = NodeStore.open(tmp_path, "n", PLENTY, fsync="normal")
    conn = store._conn
    assert conn is not None
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    store.mark_running()
    conn.set_trace_callback(None)
    full = statements.index("PRAGMA synchronous=FULL")
    commit = statements.index("COMMIT")
    assert full < commit < statements.index("PRAGMA synchronous=NORMAL")
    assert any("clean" in s for s in statements[full:commit])
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1, "NORMAL again"
    store.close()


MARKED = """
import os, signal, sys
from plumtree.store import Batch, DeliveryRecord, NodeStore, Retention
store = NodeStore.open(sys.argv[1], "victim", Retention(1 << 30, 1e9, 1 << 20))
print(store.clean, flush=True)
if store.log_id is None:
    store.begin_epoch("victim", 3)
store.mark_running()
store.write(Batch([DeliveryRecord(1 + store.stats()["cursor"], "o", 1, 1, 0, "p", 1.0, b"x")]))
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
store.close(clean=sys.argv[2] == "clean")
"""


@pytest.mark.parametrize("ending", ["kill", "close", "clean"])
def test_a_killed_process_reads_as_unclean_at_the_next_open(tmp_path: Path, ending: str) -> None:
    first = child(MARKED, str(tmp_path), "clean")
    assert first.communicate(timeout=30)[0] == "True\n" and first.returncode == 0
    proc = child(MARKED, str(tmp_path), ending)
    out, _ = proc.communicate(timeout=30)
    assert out == "True\n", "the first run stopped cleanly"
    assert proc.returncode == (-signal.SIGKILL if ending == "kill" else 0)
    store = NodeStore.open(tmp_path, None, PLENTY)
    assert store.clean is (ending == "clean")
    assert store.log_id == 3 and store.stats()["cursor"] == 2
    store.close()


# ---------------------------------------------------------------- schema


def test_a_version_1_store_is_refused_with_what_to_do(tmp_path: Path) -> None:
    NodeStore.open(tmp_path / "old", "n", PLENTY).close()
    with sqlite3.connect(tmp_path / "old" / "node.db") as conn:
        conn.execute("UPDATE meta SET value = 1 WHERE key = 'schema'")
    conn.close()
    text = one_line_error(tmp_path / "old")
    assert text == (
        f"{tmp_path / 'old' / 'node.db'} has schema version 1, older than this plumtree "
        f"reads (2): move {tmp_path / 'old'} aside (or use another --data-dir) to start "
        "this node afresh; its peers repair its streams"
    )


def test_a_chunk_that_does_not_decode_is_one_line(tmp_path: Path) -> None:
    store = gappy_store(tmp_path)
    store.close()
    with sqlite3.connect(tmp_path / "node.db") as conn:
        conn.execute("UPDATE chunks SET data = x'c1c1' WHERE first = 9")
    conn.close()
    store = NodeStore.open(tmp_path, "n", PLENTY)
    assert cursors(store.deliveries(0, 3)) == [1, 2, 5], "the chunks before it read"
    for failing in (partial(store.deliveries, 0, 10), partial(store.load, 30.0)):
        with pytest.raises(StoreError) as info:
            failing()
        assert str(tmp_path / "node.db") in str(info.value) and "\n" not in str(info.value)
    store.close()
