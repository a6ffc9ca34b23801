"""The durable node store: round trips, retention and floors, one node per directory,
kill -9 durability, concurrent reads, bad files, and the group-committing writer."""

from __future__ import annotations

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
from plumtree.store.sqlite import Fsync

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


def test_retention_by_count_deletes_oldest_first_and_raises_floors(tmp_path: Path) -> None:
    store = NodeStore.open(tmp_path, "n", Retention(1 << 30, 1e9, 5))
    store.begin_epoch("n", 1)
    store.write(
        Batch(
            [rec(i, "a", i, 100.0 + i) for i in range(1, 9)],
            [StreamState("a", 1, 8, 8, 1)],
        )
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
    store.write(Batch(rows, [StreamState("a", 1, 3, 3, 1), StreamState("b", 1, 3, 3, 1)]))
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
    store.write(
        Batch([rec(i, "a", i, 1000.0 + i) for i in range(1, 11)], [StreamState("a", 1, 10, 10, 1)])
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
    assert state.replay == [("me", 5, 1), ("o", 1, 2)]
    assert [(s.origin, s.wm) for s in state.streams] == [("o", 1)]
