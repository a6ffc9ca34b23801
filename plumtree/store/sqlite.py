"""The durable node store: one SQLite database in WAL mode per node directory.

A node that restarts (after a clean stop or a kill -9) resumes from here: its own epoch,
every stream's watermark and ranges, the payloads it delivered (so it can still repair
others), the delivery log behind its cursor, and the members it last knew.

The delivery log is stored in *chunks*: one row per write, holding that write's
deliveries (ascending cursors, not necessarily contiguous) msgpack-encoded in one blob.
A row per delivery cost SQLite a B-tree insert, a record and an index entry each; a
chunk costs one of each per commit, and msgspec encodes the records in C.

Invariants the core relies on:

* a write is one transaction: the rows, the streams and the cursor of a batch are all
  there after a crash, or none of them is;
* a saved floor never claims a payload that is gone: retention deletes rows oldest first
  and records the highest seq it deleted of each stream (``gone``, which raises the
  stream's floor wherever it is read) in the same transaction;
* one process per directory (an exclusive ``flock`` on ``DIR/LOCK``).

Invariants of the chunks: their cursor ranges ``[first, last]`` never overlap (so the
chunk holding a cursor is the one with the highest ``first`` not above it); the newest
chunk is never deleted, so the log's cursor is the ``last`` of the newest chunk.

Retention works on whole chunks: the oldest chunk goes once none of its rows fits any
more (its newest row is past a bound behind every newer row, or all of its rows are
older than the age horizon). A chunk only partly out of bounds stays until all of it is:
the store may hold up to one chunk's worth of rows beyond its bounds (``deliveries()``
and ``stats()`` count them), while ``load()`` returns exactly the newest rows that fit
and raises floors past the rest. With one delivery per write this is the row-by-row
retention of the in-memory store.

Deleting is logical first: the newest chunk records in ``start`` where the log starts
(the first cursor of its oldest live chunk), in the row a commit writes anyway; the
chunks below are dead: no read returns them (``load()`` counts them as rows left out).
They are removed from the file in batches (``PURGE_CHUNKS`` of them, or
``1/PURGE_FRACTION`` of the byte bound), recording in ``gone`` what they held. A delete
per commit cost SQLite several more pages per commit (the oldest leaf, its siblings
rebalanced, ``gone``) than the insert itself.

Threads: every write goes through one connection under a lock (so ``write()`` works
from the caller's thread and from :class:`~plumtree.store.writer.StoreWriter`'s);
reads of the log and the members go through a separate read-only connection, which WAL
lets run beside a commit.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import itertools
import json
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import msgspec

from plumtree.core.state import DeliveryRecord, KeptMessage, NodeState, StreamState
from plumtree.core.streams import Range

#: What a row costs besides its payload, as the in-memory store counts it
#: (``plumtree.core.payloads.ENTRY_OVERHEAD``): the byte bound holds for tiny payloads too.
ROW_OVERHEAD = 200
#: The schema this code writes; any other is refused, never guessed at.
SCHEMA_VERSION = 2
DB_NAME = "node.db"
#: Seconds between background WAL checkpoints (see Checkpointer).
CHECKPOINT_INTERVAL = 1.0
LOCK_NAME = "LOCK"
#: How long a connection waits for a lock held by a checkpoint before it gives up.
BUSY_TIMEOUT = 5.0
#: Dead chunks (see the module docstring) are removed once there are this many, or once
#: they hold ``1/PURGE_FRACTION`` of the byte bound.
PURGE_CHUNKS = 64
PURGE_FRACTION = 64

#: below every cursor (and one less still fits SQLite's 64 bits)
_LOWEST = -(1 << 62)

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
CREATE TABLE chunks(
    first INTEGER PRIMARY KEY, last INTEGER NOT NULL, count INTEGER NOT NULL,
    payload_bytes INTEGER NOT NULL, last_size INTEGER NOT NULL,
    oldest_at REAL NOT NULL, newest_at REAL NOT NULL, start INTEGER NOT NULL,
    data BLOB NOT NULL);
CREATE TABLE members(name TEXT PRIMARY KEY, addr TEXT NOT NULL);
"""
# ``gone`` keeps, per stream, the highest seq retention deleted: it raises the floor of a
# stream whose state is saved only after its rows were deleted. A chunk: its first and
# last cursor, its number of deliveries, their payload bytes, the payload size of its
# last (newest) delivery, the ``at`` of its first delivery and the highest ``at`` in it,
# where the log started when it was written (only the newest chunk's counts); ``data``
# (the msgpack list of its DeliveryRecords) is the last column so scans of the others
# never read its overflow pages.

# A stream's floor only ever rises: an upsert keeps the highest of the saved floor and
# the new one (the core's floor follows its own in-memory store, which may keep more than
# this one); what retention deleted raises it when read (``_STREAMS``): a deletion
# writes ``gone`` alone.
_UPSERT_STREAM = """
INSERT INTO streams VALUES (
    :origin, :epoch, :wm, :head, :floor, :above, :lost_total, :lost)
ON CONFLICT(origin, epoch) DO UPDATE SET
    wm = excluded.wm, head = excluded.head, floor = MAX(streams.floor, excluded.floor),
    above = excluded.above, lost_total = excluded.lost_total, lost = excluded.lost
"""
_INSERT_CHUNK = "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_CHUNK_HEADER = "first, last, count, payload_bytes, last_size, oldest_at, newest_at"
#: the next chunks' headers after ``first`` ``?``, oldest first (the retention window)
_NEXT_HEADERS = f"SELECT {_CHUNK_HEADER} FROM chunks WHERE first > ? ORDER BY first LIMIT 64"
#: the first cursor of the live log (the chunks below are dead)
_START = "(SELECT start FROM chunks ORDER BY first DESC LIMIT 1)"
#: from the chunk that may hold cursor ``?1`` on: ranges never overlap, so it is the one
#: with the highest first not above ``?1`` (a key lookup)
_HOLDER = "COALESCE((SELECT first FROM chunks WHERE first <= ?1 ORDER BY first DESC LIMIT 1), ?1)"
#: the live chunks that may hold a cursor above ``?1``, oldest first
_LIVE_AFTER = (
    f"SELECT last, data FROM chunks WHERE first >= MAX({_HOLDER}, COALESCE({_START}, ?1)) "
    "ORDER BY first"
)
#: every chunk, dead or live, that may hold a cursor above ``?1``, oldest first
_ALL_AFTER = f"SELECT last, data FROM chunks WHERE first >= {_HOLDER} ORDER BY first"
#: the ranges of the chunks that may hold a cursor in ``[?1, ?2]``
_SPANS = f"SELECT first, last FROM chunks WHERE first >= {_HOLDER} AND first <= ?2 ORDER BY first"
_STREAMS = """
SELECT s.origin, s.epoch, wm, head, MAX(floor, COALESCE(top + 1, 0)), above, lost_total, lost
FROM streams AS s LEFT JOIN gone AS g ON g.origin = s.origin AND g.epoch = s.epoch
"""
_RECORD_GONE = (
    "INSERT INTO gone VALUES (?, ?, ?) "
    "ON CONFLICT(origin, epoch) DO UPDATE SET top = MAX(top, excluded.top)"
)
_SET_META = "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"

_ENCODE = msgspec.msgpack.Encoder().encode
_DECODE_RECORDS = msgspec.msgpack.Decoder(list[DeliveryRecord]).decode


class _Head(msgspec.Struct, frozen=True, gc=False):
    """The fields of a DeliveryRecord that retention and replay need: decoding a chunk
    into these skips its payloads (msgspec ignores a map's other keys)."""

    cursor: int
    origin: str
    epoch: int
    seq: int


_DECODE_HEADS = msgspec.msgpack.Decoder(list[_Head]).decode


class _Chunk(NamedTuple):
    """A chunk's columns but its data (see ``_SCHEMA``); a tuple: one is made per
    write."""

    first: int
    last: int
    rows: int
    payload_bytes: int
    last_size: int
    oldest_at: float
    newest_at: float


@dataclass(slots=True)
class _Totals:
    """The running totals retention works from; the store keeps the committed ones and
    a write works on a copy, adopted once its transaction committed. Counts are of the
    live log unless named dead."""

    rows: int = 0
    payload_bytes: int = 0
    chunks: int = 0
    #: the highest cursor in the log (the ``last`` of its newest chunk)
    cursor: int = 0
    #: the highest ``at`` written (age retention counts from it)
    newest_at: float | None = None
    #: where the live log starts (what the newest chunk's ``start`` says): the first
    #: cursor of the oldest live chunk, or any cursor between it and the dead ones
    start: int = 0
    #: the headers of the oldest live chunks, read ahead (``window[at:]`` are live); a
    #: write replaces the tuple, never changes it: a copy may roll back
    window: tuple[_Chunk, ...] = ()
    at: int = 0
    #: chunks below ``start`` still in the file, and their accounted bytes
    dead_chunks: int = 0
    dead_bytes: int = 0

    def copy(self) -> _Totals:
        return _Totals(
            self.rows,
            self.payload_bytes,
            self.chunks,
            self.cursor,
            self.newest_at,
            self.start,
            self.window,
            self.at,
            self.dead_chunks,
            self.dead_bytes,
        )

    def oldest(self, conn: sqlite3.Connection | None) -> _Chunk | None:
        """The oldest live chunk; reads the next ones ahead when the window is used up
        (``conn`` None: only what the window holds)."""
        if self.at < len(self.window):
            return self.window[self.at]
        if conn is None or self.rows == 0:
            return None
        after = self.window[-1].first if self.window else self.start - 1
        self.window = tuple(map(_Chunk._make, conn.execute(_NEXT_HEADERS, (after,))))
        self.at = 0
        return self.window[0] if self.window else None

    def add(self, chunk: _Chunk) -> None:
        """Count ``chunk``, written after every other."""
        if self.rows == 0:
            self.window, self.at, self.start = (chunk,), 0, chunk.first
        self.rows += chunk.rows
        self.payload_bytes += chunk.payload_bytes
        self.chunks += 1
        self.cursor = chunk.last
        if self.newest_at is None or chunk.newest_at > self.newest_at:
            self.newest_at = chunk.newest_at

    def kill_oldest(self, chunk: _Chunk) -> None:
        """``chunk``, the oldest live one, is dead from now on."""
        self.at += 1
        self.start = chunk.last + 1  # (no chunk starts in between: ranges never overlap)
        self.rows -= chunk.rows
        self.payload_bytes -= chunk.payload_bytes
        self.chunks -= 1
        self.dead_chunks += 1
        self.dead_bytes += chunk.payload_bytes + ROW_OVERHEAD * chunk.rows


class StoreError(Exception):
    """One line an operator can act on (the CLI prints it and exits 2)."""


@dataclass(frozen=True, slots=True)
class Retention:
    """How much the store keeps, like the in-memory payload store: the byte bound counts
    each payload plus ``ROW_OVERHEAD``; as there, the newest row is kept even when it
    alone exceeds a size bound (a node always holds its latest delivery). The store
    deletes whole chunks (see the module docstring); ``load()`` applies these exactly."""

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
        meta: dict[str, Any],
        name: str | None,
        fsync: Fsync = "normal",
    ) -> None:
        self.directory = directory
        self.path = directory / DB_NAME
        self.retention = retention
        self.name = name
        self.fsync: Fsync = fsync
        #: whether the previous process stopped cleanly (True for a brand-new store):
        #: ``mark_running`` clears the mark, ``close(clean=True)`` sets it
        self.clean: bool = meta.get("clean", 1) == 1
        log = meta.get("log")
        self._log_id: int | None = log if isinstance(log, int) else None
        self._lock = lock
        self._conn: sqlite3.Connection | None = conn
        self._reader: sqlite3.Connection | None = reader
        #: serialises every use of ``_conn`` (writes, load, begin_epoch)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        #: committed state only
        self._totals = _Totals()
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
                meta = cls._check_schema(db, conn)
                stored = meta.get("name")
                stored = stored if isinstance(stored, str) else None
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
                store = cls(path, retention, lock, conn, reader, meta, stored or name, fsync)
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
            # Debian builds SQLite with secure_delete on: zeroing every freed page wrote
            # each deleted payload to the WAL a second time (retention deletes at every
            # commit); freed pages are reused by the next chunks anyway
            conn.execute("PRAGMA secure_delete=OFF")
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _check_schema(db: Path, conn: sqlite3.Connection) -> dict[str, Any]:
        """Create the schema in an empty database, or check it; the stored meta."""
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
            return {"schema": SCHEMA_VERSION}
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
        if version < SCHEMA_VERSION:
            raise StoreError(
                f"{db} has schema version {version}, older than this plumtree reads "
                f"({SCHEMA_VERSION}): move {db.parent} aside (or use another --data-dir) "
                f"to start this node afresh; its peers repair its streams"
            )
        return meta

    def _count(self) -> None:
        """The running totals, once per open (a scan of the chunks' headers)."""
        conn = self._writer()
        newest = conn.execute("SELECT start FROM chunks ORDER BY first DESC LIMIT 1").fetchone()
        self._totals = _recount(conn, 0 if newest is None else int(newest[0]))

    # ------------------------------------------------------------------ helpers

    def _writer(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: the store is closed")
        return self._conn

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT under the write lock; any SQLite failure (or a
        chunk that does not decode) rolls back and becomes a StoreError naming the file."""
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
            except (sqlite3.Error, msgspec.DecodeError) as e:
                raise StoreError(f"{self.path}: {what} failed: {_one_line(e)}") from e

    # ------------------------------------------------------------------ the node's life

    @property
    def log_id(self) -> int | None:
        """The delivery log's identity: the first epoch this store began (None before
        it). Unlike the epoch it never changes, as the log and its cursors go on."""
        return self._log_id

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
                for o, e, wm, head, floor, above, lost_total, lost in conn.execute(_STREAMS)
            ]
            floors: dict[StreamKey, int] = {(s.origin, s.epoch): s.floor for s in streams}

            def raise_floor(key: StreamKey, seq: int) -> None:
                if floors.get(key, 1) <= seq:
                    floors[key] = seq + 1

            # saved floors already account for every chunk retention removed (``gone``)
            kept = self._newest_that_fit(conn, now_wall, raise_floor)
            # the streams are a checkpoint: deliveries committed after it replay on them
            checkpoint = int(meta.get("streams_cursor") or 0)
            replay = [(h.origin, h.epoch, h.seq) for h in _heads_after(conn, checkpoint)]
        streams = [
            s
            if floors[(s.origin, s.epoch)] == s.floor
            else replace(s, floor=floors[(s.origin, s.epoch)])
            for s in streams
        ]
        # a payload below its stream's floor is one the core must not offer: left out
        messages = [m for m in reversed(kept) if m.seq >= floors.get((m.origin, m.epoch), 1)]
        return NodeState(int(meta["epoch"]), self._totals.cursor, streams, messages, replay)

    def _newest_that_fit(
        self,
        conn: sqlite3.Connection,
        now_wall: float,
        raise_floor: RaiseFloor,
    ) -> list[KeptMessage]:
        """The retained rows, newest first; every row left out raises its stream's floor
        (those of dead chunks and of a chunk only partly within the bounds included)."""
        r = self.retention
        horizon = now_wall - r.max_age
        kept: list[KeptMessage] = []
        total = 0
        cut = False  # a row did not fit: it and every older one are left out
        for d in _records_newest_first(conn, self._totals.start):
            if cut or d.payload is None or d.at < horizon:
                raise_floor((d.origin, d.epoch), d.seq)
                continue
            size = len(d.payload) + ROW_OVERHEAD
            if kept and (len(kept) >= r.max_messages or total + size > r.max_bytes):
                cut = True
                raise_floor((d.origin, d.epoch), d.seq)
                continue
            total += size
            kept.append(
                KeptMessage(d.origin, d.epoch, d.seq, d.hops, max(0.0, now_wall - d.at), d.payload)
            )
        return kept

    def begin_epoch(self, name: str, epoch: int) -> None:
        """Record this node's name and the epoch it starts (first start, or a new one);
        the first epoch a store begins is its log's identity for good (``log_id``)."""
        with self._transaction("begin_epoch") as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'name'").fetchone()
            if row is not None and row[0] != name:
                raise StoreError(
                    f"{self.directory} holds the state of node {row[0]!r}, not {name!r}: "
                    f"use --name {row[0]} or another --data-dir"
                )
            conn.executemany(_SET_META, [("name", name), ("epoch", epoch)])
            conn.execute("INSERT INTO meta VALUES ('log', ?) ON CONFLICT(key) DO NOTHING", (epoch,))
            log = conn.execute("SELECT value FROM meta WHERE key = 'log'").fetchone()[0]
        self.name = name
        self._log_id = int(log)

    def mark_running(self) -> None:
        """Clear the clean-stop mark, durably even with fsync normal: once this returns,
        a crash of the process or of the machine reads as an unclean stop."""
        self._durable_meta("clean", 0, "mark_running")

    def _durable_meta(self, key: str, value: object, what: str) -> None:
        """Set one meta key in a commit of its own that is fsynced whatever ``fsync``
        says (synchronous FULL syncs the WAL at that commit), then restore the setting."""
        with self._write_lock:
            conn = self._writer()
            try:
                conn.execute("PRAGMA synchronous=FULL")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        conn.execute(_SET_META, (key, value))
                        conn.execute("COMMIT")
                    except BaseException:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                        raise
                finally:
                    conn.execute(f"PRAGMA synchronous={self.fsync.upper()}")
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: {what} failed: {_one_line(e)}") from e

    def write(self, batch: Batch) -> None:
        """Commit ``batch`` in one transaction, then enforce the retention in it too.

        The batch's deliveries become one chunk (or, if some lie below the log's
        cursor, a commit that failed and is retried, a few: see ``_insert_between``).
        Age is measured against the newest ``at`` ever written (not the clock): what a
        commit deletes depends only on the data, and a batch without deliveries deletes
        nothing. ``load()`` applies the age against its own ``now_wall``.
        """
        started = time.perf_counter()
        deliveries = batch.deliveries
        t = self._totals.copy()
        # the streams cover every delivery committed before this write, not necessarily
        # all of its own: StoreWriter merges batches, so deliveries may follow the
        # streams here (a restart replays them on the streams: replaying one is a no-op)
        covered = t.cursor
        with self._transaction("write") as conn:
            if batch.streams:
                conn.executemany(_UPSERT_STREAM, map(_stream_row, batch.streams))
                conn.execute(_SET_META, ("streams_cursor", covered))
            if deliveries:
                if deliveries[0].cursor > t.cursor and _ascending(deliveries):
                    self._append(conn, deliveries, t)
                else:
                    t = self._insert_below(conn, deliveries, t)
                if t.dead_chunks >= PURGE_CHUNKS or t.dead_bytes >= self._purge_bytes:
                    _purge(conn, t)
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
        # committed: only now do the running totals move
        self.deleted += self._totals.rows + len(deliveries) - t.rows
        self._totals = t
        self.commits += 1
        self.last_commit_seconds = time.perf_counter() - started

    def _append(
        self, conn: sqlite3.Connection, deliveries: Sequence[DeliveryRecord], t: _Totals
    ) -> None:
        """The usual write: one chunk after every other. Retention runs first, on the
        totals, so the new row carries where the log starts: the commit writes no other
        page of the log."""
        header, data = _chunk_row(deliveries)
        chunk = _Chunk._make(header)
        t.add(chunk)
        self._expire(conn, t)
        if t.oldest(conn) is None:
            # every chunk before it is dead: the new one, not in the table yet, is the
            # oldest live one
            t.window, t.at = (chunk,), 0
        t.start = t.window[t.at].first
        conn.execute(_INSERT_CHUNK, (*header, t.start, data))

    def _insert_below(
        self, conn: sqlite3.Connection, deliveries: Sequence[DeliveryRecord], t: _Totals
    ) -> _Totals:
        """A write with cursors below the log's: a commit that failed, retried after
        later ones committed (rare: the totals are read again from the table); the new
        totals."""
        _purge(conn, t)  # no dead chunk to merge into: what is in the table is live
        _insert_between(conn, sorted(deliveries, key=_by_cursor))
        fresh = _recount(conn, _LOWEST)
        fresh.newest_at = max(
            [d.at for d in deliveries] + ([] if t.newest_at is None else [t.newest_at])
        )
        self._expire(conn, fresh)
        oldest = fresh.oldest(conn)
        fresh.start = oldest.first if oldest is not None else 0
        conn.execute(
            "UPDATE chunks SET start = ? WHERE first = (SELECT MAX(first) FROM chunks)",
            (fresh.start,),
        )
        return fresh

    def _expire(self, conn: sqlite3.Connection, t: _Totals) -> None:
        """Kill the oldest live chunks none of whose rows fits any more (see the module
        docstring); ``write`` removes them from the file later, in a batch.

        Like the in-memory store, the walk stops at the first chunk that stays: chunks
        are in delivery order, so their ``at`` only goes back if the wall clock did.
        """
        # the usual commit: the oldest chunk is in the window and stays, no query
        while (chunk := t.oldest(conn)) is not None and self._expired(chunk, t):
            t.kill_oldest(chunk)

    @property
    def _purge_bytes(self) -> int:
        return self.retention.max_bytes // PURGE_FRACTION

    def _expired(self, chunk: _Chunk, t: _Totals) -> bool:
        """Whether no row of ``chunk``, the oldest of the totals ``t``, fits any more:
        all of them are older than the age horizon, or its newest row is beyond a bound
        behind every newer row (the rows that fit are the newest ones). The newest
        chunk always stays (it holds the log's cursor and the latest delivery)."""
        newer = t.rows - chunk.rows
        if newer <= 0:
            return False
        r = self.retention
        if t.newest_at is not None and chunk.newest_at < t.newest_at - r.max_age:
            return True
        rows = newer + 1
        size = t.payload_bytes - chunk.payload_bytes + chunk.last_size + ROW_OVERHEAD * rows
        return rows > r.max_messages or size > r.max_bytes

    # ------------------------------------------------------------------ reads (any thread)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The read connection under its lock; failures become a StoreError."""
        with self._read_lock:
            reader = self._reader
            if reader is None:
                raise StoreError(f"{self.path}: the store is closed")
            try:
                yield reader
            except (sqlite3.Error, msgspec.DecodeError) as e:
                raise StoreError(f"{self.path}: read failed: {_one_line(e)}") from e

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._reading() as reader:
            return reader.execute(sql, params).fetchall()

    def deliveries(self, after: int, limit: int) -> list[DeliveryRecord]:
        """The log after cursor ``after``, ascending, at most ``limit`` rows; safe from any
        thread while a commit runs (a committed prefix: never a torn batch). Finds the
        chunk holding ``after`` by its key and decodes only the chunks it returns from."""
        out: list[DeliveryRecord] = []
        if limit <= 0:
            return out
        with self._reading() as reader:
            rows = reader.execute(_LIVE_AFTER, (after,))
            try:
                for last, data in rows:  # one chunk at a time: the rest is never read
                    if last <= after:
                        continue
                    records = _DECODE_RECORDS(data)
                    start = bisect.bisect_right(records, after, key=_by_cursor)
                    out.extend(records[start : start + limit - len(out)])
                    if len(out) >= limit:
                        break
            finally:
                rows.close()  # ends the read transaction
        return out

    def oldest_cursor(self) -> int | None:
        """The lowest cursor still in the log (None: the log is empty)."""
        value = self._read(
            f"SELECT first FROM chunks WHERE first >= {_START} ORDER BY first LIMIT 1"
        )
        return int(value[0][0]) if value else None

    def members(self) -> dict[str, str]:
        return {str(n): str(a) for n, a in self._read("SELECT name, addr FROM members")}

    def stats(self) -> dict[str, float | int]:
        """Committed totals, per delivery (no query: cheap enough for every scrape)."""
        t = self._totals
        return {
            "rows": t.rows,
            "bytes": t.payload_bytes + ROW_OVERHEAD * t.rows,
            "payload_bytes": t.payload_bytes,
            "chunks": t.chunks,
            "oldest_at": oldest.oldest_at if (oldest := t.oldest(None)) is not None else 0.0,
            "cursor": t.cursor,
            "commits": self.commits,
            "deleted": self.deleted,
            "last_commit_seconds": self.last_commit_seconds,
        }

    def close(self, clean: bool = False) -> None:
        """Close both connections and release the directory (idempotent). ``clean``:
        this process stopped cleanly; marked last, in a commit of its own, so a stop
        that fails before it reads as unclean at the next open."""
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()
        with self._read_lock:
            reader, self._reader = self._reader, None
            if reader is not None:
                with contextlib.suppress(sqlite3.Error):
                    reader.close()
        if clean and self._conn is not None:
            # a failure leaves the mark unclean: the safe side (a new epoch next time)
            with contextlib.suppress(StoreError):
                self._durable_meta("clean", 1, "close")
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


def _by_cursor(record: DeliveryRecord) -> int:
    return record.cursor


_by_seq = operator.attrgetter("seq")


def _ascending(records: Sequence[DeliveryRecord]) -> bool:
    """Whether the cursors of ``records`` strictly ascend."""
    if len(records) == 1:
        return True
    cursors = [d.cursor for d in records]
    return all(map(operator.lt, cursors, itertools.islice(cursors, 1, None)))


def _chunk_row(records: Sequence[DeliveryRecord]) -> tuple[tuple[Any, ...], bytes]:
    """The header (``_Chunk``'s fields) and the data of ``records`` (ascending)."""
    last = records[-1]
    header = (
        records[0].cursor,
        last.cursor,
        len(records),
        sum([len(p) for d in records if (p := d.payload) is not None]),
        _size(last.payload),
        records[0].at,
        max([d.at for d in records]),
    )
    return header, _ENCODE(records)


def _insert_between(conn: sqlite3.Connection, records: list[DeliveryRecord]) -> None:
    """Insert ``records`` (ascending) some of which lie below the log's cursor, into a
    table without dead chunks. Records between chunks become new chunks; records inside
    a chunk's range (in a gap of it) are merged into it, so ranges never overlap. A
    cursor already in the log fails the write. (The caller sets the newest ``start``.)"""
    for a, b in itertools.pairwise(records):
        if a.cursor == b.cursor:
            raise sqlite3.IntegrityError(f"UNIQUE constraint failed: cursor {a.cursor} twice")
    lo, hi = records[0].cursor, records[-1].cursor
    spans = [(f, la) for f, la in conn.execute(_SPANS, (lo, hi)) if la >= lo]
    firsts = [first for first, _ in spans]

    def place(d: DeliveryRecord) -> tuple[bool, int]:
        """(inside chunk i, i) or (False, i): before chunk i (or after the last one)."""
        i = bisect.bisect_right(firsts, d.cursor) - 1
        if i >= 0 and d.cursor <= spans[i][1]:
            return True, i
        return False, i + 1

    for (inside, i), group in itertools.groupby(records, key=place):
        new = list(group)
        if inside:
            (data,) = conn.execute(
                "DELETE FROM chunks WHERE first = ? RETURNING data", (spans[i][0],)
            ).fetchone()
            new = sorted([*_DECODE_RECORDS(data), *new], key=_by_cursor)
            for a, b in itertools.pairwise(new):
                if a.cursor == b.cursor:
                    raise sqlite3.IntegrityError(
                        f"UNIQUE constraint failed: cursor {a.cursor} is already in the log"
                    )
        header, data = _chunk_row(new)
        conn.execute(_INSERT_CHUNK, (*header, 0, data))


def _recount(conn: sqlite3.Connection, start: int) -> _Totals:
    """The totals of the table, the chunks below ``start`` dead (a scan of headers)."""
    chunks, rows, payload, newest_at = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(count), 0), COALESCE(SUM(payload_bytes), 0), "
        "MAX(newest_at) FROM chunks WHERE first >= ?",
        (start,),
    ).fetchone()
    dead, dead_rows, dead_payload = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(count), 0), COALESCE(SUM(payload_bytes), 0) "
        "FROM chunks WHERE first < ?",
        (start,),
    ).fetchone()
    newest = conn.execute("SELECT last FROM chunks ORDER BY first DESC LIMIT 1").fetchone()
    t = _Totals(
        rows=int(rows),
        payload_bytes=int(payload),
        chunks=int(chunks),
        cursor=0 if newest is None else int(newest[0]),
        newest_at=None if newest_at is None else float(newest_at),
        start=start,
        dead_chunks=int(dead),
        dead_bytes=int(dead_payload) + ROW_OVERHEAD * int(dead_rows),
    )
    oldest = t.oldest(conn) if rows else None
    t.start = oldest.first if oldest is not None else start
    return t


def _purge(conn: sqlite3.Connection, t: _Totals) -> None:
    """Remove the dead chunks from the file and record in ``gone`` the highest seq of
    each stream they held (which raises its floor)."""
    if not t.dead_chunks:
        return
    blobs = conn.execute("DELETE FROM chunks WHERE first < ? RETURNING data", (t.start,))
    tops = _tops(data for (data,) in blobs.fetchall())
    conn.executemany(_RECORD_GONE, [(o, e, top) for (o, e), top in tops.items()])
    t.dead_chunks = t.dead_bytes = 0


def _tops(blobs: Iterable[bytes]) -> dict[StreamKey, int]:
    """The highest seq per stream in the chunks ``blobs``."""
    heads = [h for data in blobs for h in _DECODE_HEADS(data)]
    heads.sort(key=_by_seq)  # the last of a stream's is its highest
    return {(h.origin, h.epoch): h.seq for h in heads}


def _records_newest_first(conn: sqlite3.Connection, start: int) -> Iterator[DeliveryRecord]:
    """Every row in the table, newest first, one chunk decoded at a time; those of dead
    chunks (below ``start``) with no payload (they count as left out)."""
    for first, data in conn.execute("SELECT first, data FROM chunks ORDER BY first DESC"):
        if first >= start:
            yield from reversed(_DECODE_RECORDS(data))
        else:
            for h in reversed(_DECODE_HEADS(data)):
                yield DeliveryRecord(h.cursor, h.origin, h.epoch, h.seq, 0, "", 0.0, None)


def _heads_after(conn: sqlite3.Connection, after: int) -> list[_Head]:
    """The rows with a cursor above ``after``, dead or live, ascending, without their
    payloads."""
    heads: list[_Head] = []
    for last, data in conn.execute(_ALL_AFTER, (after,)).fetchall():
        if last > after:
            heads.extend(h for h in _DECODE_HEADS(data) if h.cursor > after)
    return heads


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
