"""One simulated run split across processes: the same run, on more cores.

Each part (a process) runs the nodes ``i`` with ``owner(i) == part`` and every driver
action (the actions only touch shared, deterministic state and the part's own nodes).
The parts advance in lock-step windows, conservatively: no message arrives sooner than
the network's lookahead after it was sent, so once every part knows the earliest pending
time ``T`` of the whole run, each may process everything before ``T + lookahead`` without
waiting for the others. At each window's end the parts swap the messages they produced
for each other's nodes, with each part's next pending time, and all compute the same
next ``T``. The engine's entry keys and the network's per-sender random streams make the
outcome independent of the split: a run in two parts is the run in one, entry for entry.

Parts talk over socket pairs, one per pair of parts, in msgpack (msgspec). Every part
sends as soon as its window is done and reads while it writes, so a window's exchange
can never deadlock however large it is.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import multiprocessing
import os
import pickle
import select
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

import msgspec

from plumtree.core.messages import PlumtreeMessage
from plumtree.sim.engine import Entry, Simulator

R = TypeVar("R")

#: One window's exchange: the sender's next pending time, the earliest arrival among
#: everything it sends this window (to any part), and the entries for the receiver.
_Batch = tuple[float, float, list[tuple[float, int, int, int, PlumtreeMessage]]]

#: how long a part polls for its peers' frames before it sleeps in select()
SPIN_SECONDS = 0.002
_LEN = struct.Struct("<Q")
_PR_SET_PDEATHSIG = 1
_CHUNK = 1 << 20

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Batch).decode


def weighted_owners(n: int, parts: int, shares: list[float] | None = None) -> list[int]:
    """The part of each node, interleaved (the overlay is random, so any even split cuts
    the same share of links), part p getting about ``shares[p]`` of the nodes."""
    owner = [0] * n
    _spread([[i] for i in range(n)], owner, parts, shares)
    return owner


def _spread(
    groups: list[list[int]], owner: list[int], parts: int, shares: list[float] | None
) -> None:
    """Each group in turn to the part furthest below its share (ties: the lower part)."""
    weights = shares or [1.0] * parts
    load = [0] * parts
    for members in groups:
        part = min(range(parts), key=lambda p: (load[p] / weights[p], p))
        load[part] += len(members)
        for i in members:
            owner[i] = part


def latency_partition(
    adj: list[dict[int, None]],
    latency: Callable[[int, int], float],
    parts: int,
    shares: list[float] | None = None,
) -> tuple[list[int], float]:
    """Split the nodes so that only slow links cross parts: ``(owner, lookahead)``.

    Links join nodes in order of latency (union-find) for as long as no group outgrows
    a share a part can hold; the groups then go to parts largest first, each to the
    one furthest below its share (``shares``: even by default). Every link between
    parts is then at least ``lookahead`` slow, which is how far the parts may run ahead
    of each other: the larger, the fewer windows.
    """
    n = len(adj)
    edges = sorted((latency(i, j), i, j) for i in range(n) for j in adj[i] if i < j)
    parent = list(range(n))
    size = [1] * n

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    smallest = min(shares) / sum(shares) if shares else 1.0 / parts
    cap = max(1, int(0.9 * n * smallest))
    lookahead = math.inf
    for lat, i, j in edges:
        a, b = root(i), root(j)
        if a == b:
            continue
        if size[a] + size[b] > cap:
            lookahead = lat
            break
        if size[a] < size[b]:
            a, b = b, a
        parent[b] = a
        size[a] += size[b]
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    owner = [0] * n
    _spread(sorted(groups.values(), key=len, reverse=True), owner, parts, shares)
    return owner, lookahead


class Mesh:
    """A part's connections to the other parts (``conns[part]`` is None)."""

    def __init__(self, part: int, conns: list[socket.socket | None]) -> None:
        self.part = part
        self.conns = conns
        self.windows = 0
        #: called while this part waits for the others, until it returns False: other
        #: work that fills the wait (one short step per call, so the wait ends on time)
        self.idle: Callable[[], bool] | None = None
        #: per peer: bytes received and not yet returned (the start of its next frame)
        self._unread: dict[socket.socket, bytearray] = {}
        for conn in conns:
            if conn is not None:
                conn.setblocking(False)
                self._unread[conn] = bytearray()

    def exchange(self, local_next: float, outbound: list[list[Entry]]) -> tuple[float, list[Entry]]:
        """Swap this window's entries with every other part.

        Returns the next pending time of the whole run (the same number in every part)
        and the entries for this part's nodes. Empties ``outbound`` in place.
        """
        self.windows += 1
        earliest = math.inf
        for bucket in outbound:
            for entry in bucket:
                if entry[0] < earliest:
                    earliest = entry[0]
        t_next = min(local_next, earliest)
        payloads: dict[int, bytes] = {}
        for other, conn in enumerate(self.conns):
            if conn is not None:
                payloads[other] = _encode((local_next, earliest, outbound[other]))
                outbound[other] = []
        inbound: list[Entry] = []
        for data in self._swap(payloads):
            their_next, their_earliest, entries = _decode(data)
            t_next = min(t_next, their_next, their_earliest)
            inbound.extend(entries)
        return t_next, inbound

    def _swap(self, payloads: dict[int, bytes]) -> list[bytes]:
        """Send each peer its payload and read each peer's frame, all at once.

        Every part sends as soon as its window is done (no turn taking, so a window costs
        one wake-up, not two), and reads while it writes, so two parts sending each other
        more than a socket buffer holds cannot block each other. A peer may already be a
        window ahead, so bytes past a frame are kept for the next call. Frames are an
        8-byte length, then the bytes.
        """
        sending: dict[socket.socket, memoryview] = {}
        order: list[socket.socket] = []
        for other, payload in payloads.items():
            conn = self.conns[other]
            assert conn is not None
            sending[conn] = memoryview(_LEN.pack(len(payload)) + payload)
            order.append(conn)
        done: dict[socket.socket, bytes] = {}
        for conn in order:
            _send_some(conn, sending)  # most windows fit the socket buffer whole
            self._take_frame(conn, done)
        # Spin a little before sleeping: the peer is usually busy on the other core and
        # about to answer, and waking a sleeping process costs more (tens of us on a VM)
        # than the wait itself.
        spin_until = time.perf_counter() + SPIN_SECONDS
        while not sending and len(done) < len(order):
            for conn in order:
                if conn not in done:
                    self._receive(conn, done)
            if len(done) == len(order):
                break
            if self.idle is not None:
                if self.idle():
                    continue
                self.idle = None
            if time.perf_counter() > spin_until:
                break
        by_fd = {conn.fileno(): conn for conn in order}
        while sending or len(done) < len(order):
            poller = select.poll()  # not select(): it fails on descriptors past 1023
            for conn in order:
                flags = (select.POLLIN if conn not in done else 0) | (
                    select.POLLOUT if conn in sending else 0
                )
                if flags:
                    poller.register(conn, flags)
            for fd, event in poller.poll():
                conn = by_fd[fd]
                if event & select.POLLOUT and conn in sending:
                    _send_some(conn, sending)
                if event & (select.POLLIN | select.POLLHUP | select.POLLERR) and conn not in done:
                    self._receive(conn, done)
        return [done[conn] for conn in order]

    def _receive(self, conn: socket.socket, done: dict[socket.socket, bytes]) -> None:
        """Read what ``conn`` has (without waiting); a completed frame goes to ``done``."""
        try:
            chunk = conn.recv(_CHUNK)
        except BlockingIOError:
            return
        if not chunk:
            raise EOFError("a simulation part closed its connection mid-run")
        self._unread[conn] += chunk
        self._take_frame(conn, done)

    def _take_frame(self, conn: socket.socket, done: dict[socket.socket, bytes]) -> None:
        """Move one whole frame, if ``conn``'s unread bytes hold one, into ``done``."""
        buf = self._unread[conn]
        if len(buf) < _LEN.size:
            return
        end = _LEN.unpack_from(buf)[0] + _LEN.size
        if len(buf) >= end:
            done[conn] = bytes(buf[_LEN.size : end])
            del buf[:end]


def _send_some(conn: socket.socket, sending: dict[socket.socket, memoryview]) -> None:
    view = sending[conn]
    try:
        sent = conn.send(view)
    except BlockingIOError:
        return
    if sent == len(view):
        del sending[conn]
    else:
        sending[conn] = view[sent:]


def run_windows(sim: Simulator, mesh: Mesh, t_end: float) -> None:
    """``sim.run_until(t_end)`` for one part of a split run.

    Every part runs the same windows, ``[T, T + sim.lookahead)`` from the first pending time
    ``T`` of the whole run, so that they do equal shares of work between two exchanges.
    (Letting a part whose peers are idle run further ahead, as far as is safe, was
    measured slower: the parts then wait for each other longer than the windows save.)
    """
    lookahead = sim.lookahead
    paused = gc.isenabled()
    gc.disable()  # as Simulator.run_until: the loop makes no reference cycles
    try:
        while True:
            t_next, inbound = mesh.exchange(sim.next_time(), sim.outbound)
            sim.insert(inbound)
            if t_next > t_end:
                break
            # nothing another part sends from now on can arrive before t_next + lookahead
            sim.run_window(min(math.nextafter(t_next + lookahead, -math.inf), t_end))
    finally:
        if paused:
            gc.enable()
    if t_end > sim.now:
        sim.now = t_end


def run_split(parts: int, job: Callable[[int, Mesh | None], R]) -> list[R]:
    """Run ``job(part, mesh)`` in ``parts`` forked processes; their results, in order.

    ``parts == 1`` runs ``job(0, None)`` here. Otherwise every part is a child: ``job``
    needs no pickling (only its result does), and the millions of objects a part builds
    die with it at exit instead of costing this process a garbage collection and a
    teardown. If a part fails, its error is raised here with its traceback (the parts
    it leaves waiting see the connection close and end too). Parts are plain forks (not
    multiprocessing children, which a daemon process may not have) and die with this
    process.
    """
    if parts <= 1:
        return [job(0, None)]
    links: dict[tuple[int, int], tuple[socket.socket, socket.socket]] = {
        (a, b): socket.socketpair() for a in range(parts) for b in range(a + 1, parts)
    }

    def mesh_of(part: int) -> Mesh:
        conns: list[socket.socket | None] = [None] * parts
        for (a, b), (end_a, end_b) in links.items():
            if a == part:
                conns[b] = end_a
            elif b == part:
                conns[a] = end_b
        return Mesh(part, conns)

    every: list[Any] = [end for pair in links.values() for end in pair]
    pids: list[int] = []
    results: list[Connection] = []  # each part's result, pickled
    parent = os.getpid()
    try:
        for part in range(parts):
            receiver, sender = multiprocessing.Pipe(duplex=False)
            results.append(receiver)
            try:
                pid = os.fork()
            except BaseException:
                sender.close()
                raise
            if pid == 0:  # the part
                code = 1
                try:
                    _die_with(parent)
                    code = _child(job, part, mesh_of(part), sender, every + results)
                finally:
                    os._exit(code)  # never back into the caller's stack (a forked copy)
            sender.close()
            pids.append(pid)
        for end in every:
            end.close()  # the parts hold the only ends, so one that dies shows as EOF
        outcomes: list[tuple[bool, Any]] = []
        for receiver in results:
            try:
                outcomes.append(receiver.recv())
            except EOFError:
                outcomes.append((False, "died without a result"))
        failed = [(part, why) for part, (ok, why) in enumerate(outcomes) if not ok]
        if failed:
            # a part's own error, rather than the lost connection it left the others
            part, why = next(((p, w) for p, w in failed if not _lost_peer(w)), failed[0])
            raise RuntimeError(f"simulation part {part} failed:\n{why}")
        return [value for _ok, value in outcomes]
    finally:
        for end in [*every, *results]:
            end.close()
        _reap(pids)


def _reap(pids: list[int], grace: float = 2.0) -> None:
    """Wait for the parts to exit (they do once their peers are gone); kill stragglers."""
    deadline = time.monotonic() + grace
    waiting = list(pids)
    while waiting:
        for pid in list(waiting):
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                waiting.remove(pid)
        if waiting and time.monotonic() > deadline:
            for pid in waiting:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid in waiting:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
            return
        if waiting:
            time.sleep(0.01)


def _die_with(parent: int) -> None:
    """Make this forked part end when the process that forked it does (Linux), so an
    interrupted run never leaves parts simulating on their own."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def _lost_peer(why: str) -> bool:
    """Whether a part's traceback says only that another part went away."""
    last = why.strip().splitlines()[-1] if why.strip() else ""
    return last.startswith(("EOFError", "ConnectionResetError", "BrokenPipeError"))


def _child(
    job: Callable[[int, Mesh | None], Any],
    part: int,
    mesh: Mesh,
    out: Connection,
    inherited: list[Any],
) -> int:
    """Run one part in the forked process; its exit code."""
    for conn in inherited:
        if conn is not out and conn not in mesh.conns:
            conn.close()
    try:
        try:
            data = pickle.dumps((True, job(part, mesh)))
        except BaseException:  # reported to the parent, which raises it
            data = pickle.dumps((False, traceback.format_exc()))
        out.send_bytes(data)
        return 0
    finally:
        out.close()
        for conn in mesh.conns:
            if conn is not None:
                conn.close()
        sys.stdout.flush()
        sys.stderr.flush()


def default_parts(nodes: int) -> int:
    """Processes worth using for a run of ``nodes`` nodes: the split pays for its window
    exchanges from a few thousand nodes on, and never beyond the cores there are."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, 2)) if nodes >= 2000 else 1
