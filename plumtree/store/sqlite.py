"""The durable node store: one SQLite database in WAL mode per node directory.

A node that restarts (after a clean stop or a kill -9) resumes from here: its own epoch,
every stream's watermark and ranges, the payloads it delivered (so it can still repair
others), the delivery log behind its cursor, and the members it last knew.

Invariants the core relies on:

* a write is one transaction: the rows, the streams and the cursor of a batch are all
  there after a crash, or none of them is;
* a saved floor never claims a payload that is gone: retention deletes rows oldest first
  and raises the floor of their stream in the same transaction;
* one process per directory (an exclusive ``flock`` on ``DIR/LOCK``).

Threads: every write goes through one connection under a lock (so ``write()`` works
from the caller's thread and from :class:`~plumtree.store.writer.StoreWriter`'s);
reads of the log and the members go through a separate read-only connection, which WAL
lets run beside a commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import msgspec

from plumtree.core.state import DeliveryRecord, KeptMessage, NodeState, StreamState
from plumtree.core.streams import Range

#: What a row costs besides its payload, as the in-memory store counts it
#: (``plumtree.core.payloads.ENTRY_OVERHEAD``): the byte bound holds for tiny payloads too.
ROW_OVERHEAD = 200
#: The schema this code writes; a newer one is refused, never guessed at.
SCHEMA_VERSION = 1
DB_NAME = "node.db"
#: Seconds between background WAL checkpoints (see Checkpointer).
CHECKPOINT_INTERVAL = 1.0
LOCK_NAME = "LOCK"
#: How long a connection waits for a lock held by a checkpoint before it gives up.
BUSY_TIMEOUT = 5.0

Fsync = Literal["normal", "full"]
StreamKey = tuple[str, int]
RaiseFloor = Callable[[StreamKey, int], None]

_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value);
CREATE TABLE streams(
    origin TEXT NOT NULL, epoch INTEGER NOT NULL,
    wm INTEGER NOT NULL, head INTEGER NOT NULL, floor INTEGER NOT NULL,
    above TEXT NOT NULL, lost_total INTEGER NOT NULL, lost TEXT NOT NULL,
    PRIMARY KEY(origin, epoch));
CREATE TABLE gone(
    origin TEXT NOT NULL, epoch INTEGER NOT NULL, top INTEGER NOT NULL,
    PRIMARY KEY(origin, epoch));
CREATE TABLE messages(
    cursor INTEGER PRIMARY KEY, origin TEXT NOT NULL, epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL, hops INTEGER NOT NULL, sender TEXT NOT NULL, at REAL NOT NULL,
    payload BLOB);
CREATE TABLE members(name TEXT PRIMARY KEY, addr TEXT NOT NULL);
"""
# ``gone`` keeps, per stream, the highest seq retention deleted: it raises the floor of a
# stream whose state is saved only after its rows were deleted. ``payload`` is the last
# column so scans of the other columns never read a payload's overflow pages.

# A stream's floor only ever rises: an upsert keeps the highest of the saved floor, the
# new one and what retention deleted (the core's floor follows its own in-memory store,
# which may keep more than this one).
_UPSERT_STREAM = """
INSERT INTO streams VALUES (
    :origin, :epoch, :wm, :head,
    MAX(:floor, COALESCE(
        (SELECT top + 1 FROM gone WHERE origin = :origin AND epoch = :epoch), 0)),
    :above, :lost_total, :lost)
ON CONFLICT(origin, epoch) DO UPDATE SET
    wm = excluded.wm, head = excluded.head, floor = MAX(streams.floor, excluded.floor),
    above = excluded.above, lost_total = excluded.lost_total, lost = excluded.lost
"""
_INSERT_DELIVERY = "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_RAISE_FLOOR = "UPDATE streams SET floor = MAX(floor, ?) WHERE origin = ? AND epoch = ?"
_RECORD_GONE = (
    "INSERT INTO gone VALUES (?, ?, ?) "
    "ON CONFLICT(origin, epoch) DO UPDATE SET top = MAX(top, excluded.top)"
)
_SET_META = "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"


class StoreError(Exception):
    """One line an operator can act on (the CLI prints it and exits 2)."""


@dataclass(frozen=True, slots=True)
class Retention:
    """How much the store keeps, like the in-memory payload store: the byte bound counts
    each payload plus ``ROW_OVERHEAD``; as there, the newest row is kept even when it
    alone exceeds a size bound (a node always holds its latest delivery)."""

    max_bytes: int
    max_age: float
    max_messages: int

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_age <= 0 or self.max_messages <= 0:
            raise ValueError(f"retention bounds must be positive: {self}")


@dataclass(slots=True)
class Batch:
    """Everything one group commit writes."""

    deliveries: list[DeliveryRecord] = field(default_factory=list)
    #: upserted by (origin, epoch); the last one of a key wins, its floor never drops
    streams: list[StreamState] = field(default_factory=list)
    #: name -> "host:port" of a live member; None: forget it
    members: dict[str, str | None] = field(default_factory=dict)


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())


def _ranges(text: str) -> tuple[Range, ...]:
    return tuple((int(lo), int(hi)) for lo, hi in json.loads(text))


def _ranges_json(ranges: Iterable[Range]) -> str:
    """Compact JSON of ``[[lo, hi], ...]`` (msgspec: a stream is saved at each commit
    that changed it, and json.dumps was most of a small commit's cost)."""
    if not ranges:
        return "[]"
    return _JSON.encode([[lo, hi] for lo, hi in ranges]).decode()


_JSON = msgspec.json.Encoder()


def _size(payload: bytes | None) -> int:
    return len(payload) if payload is not None else 0


class _Lock:
    """The exclusive ``flock`` that makes a directory one node's: the kernel drops it
    when the process dies, so a kill -9 never leaves a stale lock behind."""

    def __init__(self, directory: Path) -> None:
        path = directory / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise StoreError(f"cannot open {path}: {e.strerror or _one_line(e)}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(f"{directory} is in use by another node (pid {holder})") from e
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            os.close(fd)
            raise StoreError(f"cannot write {path}: {e.strerror or _one_line(e)}") from e
        self.fd: int | None = fd

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor releases the flock


def _prepare_directory(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError as e:  # exist_ok covers directories only
        raise StoreError(f"{directory} is not a directory") from e
    except OSError as e:
        raise StoreError(f"cannot create {directory}: {e.strerror or _one_line(e)}") from e
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(f"{directory} is not writable by this user")


class NodeStore:
    """One node's durable state; see the module docstring for the invariants."""

    def __init__(
        self,
        directory: Path,
        retention: Retention,
        lock: _Lock,
        conn: sqlite3.Connection,
        reader: sqlite3.Connection,
        name: str | None,
    ) -> None:
        self.directory = directory
        self.path = directory / DB_NAME
        self.retention = retention
        self.name = name
        self._lock = lock
        self._conn: sqlite3.Connection | None = conn
        self._reader: sqlite3.Connection | None = reader
        #: serialises every use of ``_conn`` (writes, load, begin_epoch)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        # the running totals retention works from, committed state only
        self._rows = 0
        self._payload_bytes = 0
        self._cursor = 0
        self._oldest_at: float | None = None
        self._newest_at: float | None = None
        self.commits = 0
        self.last_commit_seconds = 0.0
        self.deleted = 0
        self._checkpointer: Checkpointer | None = Checkpointer(self.path)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        directory: str | Path,
        name: str | None,
        retention: Retention,
        fsync: Fsync = "normal",
    ) -> NodeStore:
        """Open (or create) the store of ``directory``; every failure is a StoreError."""
        if fsync not in ("normal", "full"):
            raise StoreError(f"fsync must be 'normal' or 'full', not {fsync!r}")
        path = Path(directory)
        _prepare_directory(path)
        lock = _Lock(path)
        conn: sqlite3.Connection | None = None
        reader: sqlite3.Connection | None = None
        db = path / DB_NAME
        try:
            try:
                conn = cls._connect_writer(db, fsync)
                stored = cls._check_schema(db, conn)
                if stored is not None and name is not None and stored != name:
                    raise StoreError(
                        f"{path} holds the state of node {stored!r}, not {name!r}: "
                        f"use --name {stored} or another --data-dir"
                    )
                reader = sqlite3.connect(
                    f"{db.resolve().as_uri()}?mode=ro",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                    timeout=BUSY_TIMEOUT,
                )
                store = cls(path, retention, lock, conn, reader, stored or name)
                store._count()
            except sqlite3.Error as e:
                raise StoreError(f"cannot open {db}: {_one_line(e)}") from e
            except OSError as e:
                raise StoreError(f"cannot open {db}: {e.strerror or _one_line(e)}") from e
        except BaseException:
            for c in (reader, conn):
                if c is not None:
                    with contextlib.suppress(sqlite3.Error):
                        c.close()
            lock.release()
            raise
        return store

    @staticmethod
    def _connect_writer(db: Path, fsync: Fsync) -> sqlite3.Connection:
        if db.exists() and not db.is_file():
            raise StoreError(f"{db} is not a file")
        conn = sqlite3.connect(
            db, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT
        )
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{db}: the file system does not allow WAL mode ({mode})")
            # NORMAL in WAL: a commit is in the OS once COMMIT returns (survives kill -9);
            # FULL also fsyncs it (survives power loss)
            conn.execute(f"PRAGMA synchronous={fsync.upper()}")
            conn.execute("PRAGMA journal_size_limit=67108864")
            # checkpoints (copying the WAL into the database, and its fsync) run on a
            # thread of their own (Checkpointer), never inside a commit: an automatic
            # one blocked the committing event loop for tens of milliseconds
            conn.execute("PRAGMA wal_autocheckpoint=0")
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _check_schema(db: Path, conn: sqlite3.Connection) -> str | None:
        """Create the schema in an empty database, or check it; the stored node name."""
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(_SET_META, ("schema", SCHEMA_VERSION))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return None
        if "meta" not in tables:
            raise StoreError(f"{db} is an SQLite database but not a plumtree store")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        version = meta.get("schema")
        if not isinstance(version, int) or version < 1:
            raise StoreError(
                f"{db} has no valid schema version ({version!r}): not a plumtree store"
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{db} has schema version {version}, newer than this plumtree reads "
                f"({SCHEMA_VERSION}): upgrade plumtree"
            )
        stored = meta.get("name")
        return stored if isinstance(stored, str) else None

    def _count(self) -> None:
        """The running totals, once per open (the only full scan of the log)."""
        conn = self._writer()
        rows, payload = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages"
        ).fetchone()
        self._rows, self._payload_bytes = int(rows), int(payload)
        oldest = conn.execute("SELECT at FROM messages ORDER BY cursor LIMIT 1").fetchone()
        newest = conn.execute("SELECT at FROM messages ORDER BY cursor DESC LIMIT 1").fetchone()
        self._oldest_at = None if oldest is None else float(oldest[0])
        self._newest_at = None if newest is None else float(newest[0])
        cursor = conn.execute("SELECT value FROM meta WHERE key = 'cursor'").fetchone()
        self._cursor = int(cursor[0]) if cursor is not None else 0

    # ------------------------------------------------------------------ helpers

    def _writer(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: the store is closed")
        return self._conn

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT under the write lock; any SQLite failure rolls
        back and becomes a StoreError naming the file."""
        with self._write_lock:
            conn = self._writer()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: {what} failed: {_one_line(e)}") from e

    # ------------------------------------------------------------------ the node's life

    def load(self, now_wall: float) -> NodeState | None:
        """What a restarted node resumes from; None before its first epoch.

        Messages are the newest rows that fit the retention (and are younger than
        ``max_age`` at ``now_wall``), oldest first. A stream's floor is raised past every
        row it had that is not returned, and no returned payload lies below its floor.
        """
        with self._transaction("load") as conn:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("epoch") is None:
                return None
            streams = [
                StreamState(o, e, wm, head, floor, _ranges(above), lost_total, _ranges(lost))
                for o, e, wm, head, floor, above, lost_total, lost in conn.execute(
                    "SELECT origin, epoch, wm, head, floor, above, lost_total, lost FROM streams"
                )
            ]
            floors: dict[StreamKey, int] = {(s.origin, s.epoch): s.floor for s in streams}

            def raise_floor(key: StreamKey, seq: int) -> None:
                if floors.get(key, 1) <= seq:
                    floors[key] = seq + 1

            # saved floors already account for every row retention deleted
            kept = self._newest_that_fit(conn, now_wall, raise_floor)
            cursor = int(meta.get("cursor") or 0)
            # the streams are a checkpoint: deliveries committed after it replay on them
            checkpoint = int(meta.get("streams_cursor") or 0)
            replay = [
                (o, e, q)
                for o, e, q in conn.execute(
                    "SELECT origin, epoch, seq FROM messages WHERE cursor > ? ORDER BY cursor",
                    (checkpoint,),
                )
            ]
        streams = [
            s
            if floors[(s.origin, s.epoch)] == s.floor
            else replace(s, floor=floors[(s.origin, s.epoch)])
            for s in streams
        ]
        # a payload below its stream's floor is one the core must not offer: left out
        messages = [m for m in reversed(kept) if m.seq >= floors.get((m.origin, m.epoch), 1)]
        return NodeState(int(meta["epoch"]), cursor, streams, messages, replay)

    def _newest_that_fit(
        self,
        conn: sqlite3.Connection,
        now_wall: float,
        raise_floor: RaiseFloor,
    ) -> list[KeptMessage]:
        """The retained rows, newest first; every row left out raises its stream's floor."""
        r = self.retention
        horizon = now_wall - r.max_age
        kept: list[KeptMessage] = []
        total = 0
        cut: int | None = None
        rows = conn.execute(
            "SELECT cursor, origin, epoch, seq, hops, at, payload FROM messages "
            "ORDER BY cursor DESC"
        )
        for cursor, origin, epoch, seq, hops, at, payload in rows:
            if payload is None or at < horizon:
                raise_floor((origin, epoch), seq)
                continue
            size = len(payload) + ROW_OVERHEAD
            if kept and (len(kept) >= r.max_messages or total + size > r.max_bytes):
                cut = cursor  # this row and every older one are left out
                break
            total += size
            kept.append(KeptMessage(origin, epoch, seq, hops, max(0.0, now_wall - at), payload))
        rows.close()
        if cut is not None:
            for origin, epoch, top in conn.execute(
                "SELECT origin, epoch, MAX(seq) FROM messages WHERE cursor <= ? "
                "GROUP BY origin, epoch",
                (cut,),
            ):
                raise_floor((origin, epoch), top)
        return kept

    def begin_epoch(self, name: str, epoch: int) -> None:
        """Record this node's name and the epoch it starts (first start, or a new one)."""
        with self._transaction("begin_epoch") as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'name'").fetchone()
            if row is not None and row[0] != name:
                raise StoreError(
                    f"{self.directory} holds the state of node {row[0]!r}, not {name!r}: "
                    f"use --name {row[0]} or another --data-dir"
                )
            conn.executemany(_SET_META, [("name", name), ("epoch", epoch)])
        self.name = name

    def write(self, batch: Batch) -> None:
        """Commit ``batch`` in one transaction, then enforce the retention in it too.

        Age is measured against the newest ``at`` ever written (not the clock): what a
        commit deletes depends only on the data, and a batch without deliveries deletes
        nothing. ``load()`` applies the age against its own ``now_wall``.
        """
        started = time.perf_counter()
        deliveries = batch.deliveries
        with self._transaction("write") as conn:
            if batch.streams:
                conn.executemany(_UPSERT_STREAM, map(_stream_row, batch.streams))
            rows = self._rows
            payload_bytes = self._payload_bytes
            cursor = self._cursor
            oldest_at, newest_at = self._oldest_at, self._newest_at
            if deliveries:
                conn.executemany(
                    _INSERT_DELIVERY,
                    [
                        (d.cursor, d.origin, d.epoch, d.seq, d.hops, d.sender, d.at, d.payload)
                        for d in deliveries
                    ],
                )
                rows += len(deliveries)
                payload_bytes += sum(_size(d.payload) for d in deliveries)
                top = max(d.cursor for d in deliveries)
                if top > cursor:
                    cursor = top
                    conn.execute(_SET_META, ("cursor", cursor))
                latest = max(d.at for d in deliveries)
                if newest_at is None or latest > newest_at:
                    newest_at = latest
                if oldest_at is None:
                    oldest_at = min(deliveries, key=lambda d: d.cursor).at
            if batch.members:
                conn.executemany(
                    "INSERT INTO members VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET addr = excluded.addr",
                    [(n, a) for n, a in batch.members.items() if a is not None],
                )
                conn.executemany(
                    "DELETE FROM members WHERE name = ?",
                    [(n,) for n, a in batch.members.items() if a is None],
                )
            if batch.streams:
                # the streams now cover every delivery committed so far (the caller saves
                # their state as it was when it gathered this batch's last delivery)
                conn.execute(_SET_META, ("streams_cursor", cursor))
            if deliveries:
                rows, payload_bytes, oldest_at = self._enforce(
                    conn, rows, payload_bytes, oldest_at, newest_at
                )
        # committed: only now do the running totals move
        deleted = self._rows + len(deliveries) - rows
        self._rows, self._payload_bytes, self._cursor = rows, payload_bytes, cursor
        self._oldest_at, self._newest_at = oldest_at, newest_at
        self.deleted += deleted
        self.commits += 1
        self.last_commit_seconds = time.perf_counter() - started

    def _enforce(
        self,
        conn: sqlite3.Connection,
        rows: int,
        payload_bytes: int,
        oldest_at: float | None,
        newest_at: float | None,
    ) -> tuple[int, int, float | None]:
        """Delete the oldest rows (by cursor) beyond the bounds; raise their floors.

        Like the in-memory store, the age walk stops at the first young-enough row: rows
        are in delivery order, so their ``at`` only goes back if the wall clock did.
        """
        r = self.retention
        horizon = -float("inf") if newest_at is None else newest_at - r.max_age

        def over(rows: int, payload_bytes: int) -> bool:
            return rows > 1 and (
                rows > r.max_messages or payload_bytes + ROW_OVERHEAD * rows > r.max_bytes
            )

        if not over(rows, payload_bytes) and (oldest_at is None or oldest_at >= horizon):
            return rows, payload_bytes, oldest_at
        tops: dict[StreamKey, int] = {}
        last: int | None = None
        oldest_at = None
        with contextlib.closing(_oldest_first(conn)) as scan:  # closed before the DELETE
            for cursor, origin, epoch, seq, at, size in scan:
                if not (over(rows, payload_bytes) or at < horizon):
                    oldest_at = at
                    break
                last = cursor
                rows -= 1
                payload_bytes -= size or 0
                key = (origin, epoch)
                if tops.get(key, 0) < seq:
                    tops[key] = seq
        if last is not None:
            # the deleted rows are a prefix of the log: one range delete
            conn.execute("DELETE FROM messages WHERE cursor <= ?", (last,))
            conn.executemany(_RAISE_FLOOR, [(top + 1, o, e) for (o, e), top in tops.items()])
            conn.executemany(_RECORD_GONE, [(o, e, top) for (o, e), top in tops.items()])
        return rows, payload_bytes, oldest_at

    # ------------------------------------------------------------------ reads (any thread)

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._read_lock:
            reader = self._reader
            if reader is None:
                raise StoreError(f"{self.path}: the store is closed")
            try:
                return reader.execute(sql, params).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: read failed: {_one_line(e)}") from e

    def deliveries(self, after: int, limit: int) -> list[DeliveryRecord]:
        """The log after cursor ``after``, ascending, at most ``limit`` rows; safe from any
        thread while a commit runs (a committed prefix: never a torn batch)."""
        rows = self._read(
            "SELECT cursor, origin, epoch, seq, hops, sender, at, payload FROM messages "
            "WHERE cursor > ? ORDER BY cursor LIMIT ?",
            (after, limit),
        )
        return [DeliveryRecord(*row) for row in rows]

    def oldest_cursor(self) -> int | None:
        """The lowest cursor still in the log (None: the log is empty)."""
        value = self._read("SELECT MIN(cursor) FROM messages")[0][0]
        return None if value is None else int(value)

    def members(self) -> dict[str, str]:
        return {str(n): str(a) for n, a in self._read("SELECT name, addr FROM members")}

    def stats(self) -> dict[str, float | int]:
        """Committed totals (no query: cheap enough for every metrics scrape)."""
        return {
            "rows": self._rows,
            "bytes": self._payload_bytes + ROW_OVERHEAD * self._rows,
            "payload_bytes": self._payload_bytes,
            "oldest_at": self._oldest_at if self._oldest_at is not None else 0.0,
            "cursor": self._cursor,
            "commits": self.commits,
            "deleted": self.deleted,
            "last_commit_seconds": self.last_commit_seconds,
        }

    def close(self) -> None:
        """Close both connections and release the directory (idempotent)."""
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()
        with self._read_lock:
            reader, self._reader = self._reader, None
            if reader is not None:
                with contextlib.suppress(sqlite3.Error):
                    reader.close()
        with self._write_lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()  # the last connection checkpoints and removes the WAL
        self._lock.release()

    def __enter__(self) -> NodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _oldest_first(conn: sqlite3.Connection) -> Generator[tuple[Any, ...], None, None]:
    """The log's rows without payloads, oldest first, read in growing chunks: most
    commits delete about as many rows as they add, so the first chunk is small."""
    scan = conn.execute(
        "SELECT cursor, origin, epoch, seq, at, LENGTH(payload) FROM messages ORDER BY cursor"
    )
    step = 8
    try:
        while chunk := scan.fetchmany(step):
            yield from chunk
            step = min(2 * step, 1024)
    finally:
        scan.close()


def _stream_row(s: StreamState) -> dict[str, object]:
    return {
        "origin": s.origin,
        "epoch": s.epoch,
        "wm": s.wm,
        "head": s.head,
        "floor": s.floor,
        "above": _ranges_json(s.above),
        "lost_total": s.lost_total,
        "lost": _ranges_json(s.lost),
    }


def stored_name(directory: str | Path) -> str | None:
    """The node name a data dir belongs to (None: no store there yet), read without
    opening the store for writing or taking its lock: what a CLI uses as the default
    ``--name`` when it is given ``--data-dir`` alone."""
    db = Path(directory) / DB_NAME
    if not db.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'name'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise StoreError(f"cannot read {db}: {_one_line(e)}") from e
    return row[0] if row is not None and isinstance(row[0], str) else None


class Checkpointer:
    """Copies the WAL into the database file from a thread and connection of its own,
    every ``CHECKPOINT_INTERVAL`` seconds. In WAL mode a passive checkpoint runs beside
    the writer (it takes no lock a commit needs), so the committer never waits for the
    copy or its fsync; the WAL stays as long as a few seconds of commits."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.checkpoints = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="plumtree-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.db, isolation_level=None, timeout=BUSY_TIMEOUT)
        except sqlite3.Error:
            return  # the store reports its own errors; without this, SQLite's default
        try:
            while not self._stop.wait(CHECKPOINT_INTERVAL):
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    self.checkpoints += 1
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(BUSY_TIMEOUT + 1.0)
