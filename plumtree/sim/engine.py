"""The event loop of the simulator: a calendar of timed messages, timers and actions.

Nodes are any objects with the core's sans-IO surface (``receive``, ``handle_timer``,
``next_deadline``, ``take_outgoing``, ``take_events``); the engine is the only clock.
A node may also offer ``take_all()`` (the last three in one call), which the engine
prefers.

Entries ``(time, key, dst, src, obj)`` are processed in ``(time, key)`` order. The key
says who scheduled the entry and when: ``key = k * span + i`` for the k-th entry node
``i`` scheduled (``i == n`` for the driver's actions), so ties break by the scheduler's
own history and never by how the run interleaves nodes. Together with the network's
per-sender random streams this makes a run splittable: ``plumtree.sim.parallel`` runs
the nodes in several processes and gets the very same entries in the very same order.

Entries live in a calendar queue: one small heap per time slot of ``slot_width`` seconds,
plus a heap of the numbers of the non-empty later slots. The order is exactly that of one
big heap, but each push and pop works on a heap of a few hundred entries that stays in
the CPU cache, where one heap of everything pending (a timer per node plus the messages
in flight) grows to tens of thousands of entries at 10k nodes and every pop becomes a
chain of cache misses.

A 10k-node run is millions of events, so the hot path (``_run`` and the closures
``_make_emitters`` builds) keeps what it touches in locals and closure cells rather than
attributes; what it computes is exactly what the plain version did (same random draws in
the same order, same entries, same reports).
"""

from __future__ import annotations

import gc
import heapq
import math
import sys
from bisect import insort
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from plumtree.core.events import Event
from plumtree.core.messages import Gossip
from plumtree.sim.network import Network

#: ``src`` of an entry that is not a message (messages carry the sender's index)
_TIMER, _ACTION = -1, -2

#: Default calendar slot: about the spread of a LAN hop, so that a slot holds a few
#: hundred entries at 10k nodes. Any width gives the same order; only speed changes.
SLOT_WIDTH = 0.001

#: ``(time, key, dst, src, obj)``: a message from node ``src`` to node ``dst``, a timer
#: of node ``dst`` (``src == _TIMER``), or an action (``src == _ACTION``, ``obj()``)
Entry = tuple[float, int, int, int, Any]


class SimNode(Protocol):
    name: str

    def receive(self, sender: str, message: Any, now: float) -> None: ...
    def handle_timer(self, now: float) -> None: ...
    def next_deadline(self) -> float | None: ...
    def take_outgoing(self) -> list[tuple[str, Any]]: ...
    def take_events(self) -> list[Event]: ...


EventSink = Callable[[int, Event], None]
Output = tuple[Sequence[tuple[str, Any]], Sequence[Event], float | None]


def _taker(node: SimNode) -> Callable[[], Output]:
    """``node.take_all`` if it has one (one call instead of three), else the three."""
    take_all: Callable[[], Output] | None = getattr(node, "take_all", None)
    if take_all is not None:
        return take_all

    def take() -> Output:
        return node.take_outgoing(), node.take_events(), node.next_deadline()

    return take


class CausalityError(RuntimeError):
    """A split run's parts would have to see a message before their window allows."""


def _idle() -> Output:
    """The taker of a node another part runs (never called: it gets no entries here)."""
    return (), (), None


class _Calendar:
    """Pending entries: the current slot's heap, and a heap per later slot.

    ``slot(t) = int(t * inv)`` never decreases as ``t`` grows, so every entry of a later
    slot comes after every entry of an earlier one; an entry for a slot that is already
    current (or past: an action scheduled in the past) joins the current heap, where it
    is ordered by time like everything else.
    """

    __slots__ = ("cur", "cur_slot", "future", "inv", "slots")

    def __init__(self, width: float) -> None:
        self.inv = 1.0 / width
        self.cur_slot = 0
        self.cur: list[Entry] = []
        self.future: dict[int, list[Entry]] = {}
        self.slots: list[int] = []

    def push(self, entry: Entry) -> None:
        when = entry[0]
        # an infinite time (a timer that never fires) goes to the last possible slot
        slot = int(when * self.inv) if when < math.inf else sys.maxsize
        if slot <= self.cur_slot:
            heapq.heappush(self.cur, entry)
            return
        bucket = self.future.get(slot)
        if bucket is None:
            self.future[slot] = [entry]
            heapq.heappush(self.slots, slot)
        else:
            heapq.heappush(bucket, entry)

    def advance(self) -> bool:
        """Make the next non-empty slot current (the current one must be empty)."""
        if not self.slots:
            return False
        slot = heapq.heappop(self.slots)
        self.cur = self.future.pop(slot)
        self.cur_slot = slot
        return True

    def __len__(self) -> int:
        return len(self.cur) + sum(len(b) for b in self.future.values())

    def entries(self) -> list[Entry]:
        """Every pending entry, in no particular order."""
        out = list(self.cur)
        for bucket in self.future.values():
            out.extend(bucket)
        return out

    def next_time(self) -> float:
        """Time of the earliest pending entry (inf: none)."""
        if self.cur:
            return self.cur[0][0]
        if self.slots:
            return self.future[self.slots[0]][0][0]
        return math.inf


class Simulator:
    """Runs nodes over a :class:`Network`; ``on_event(node_index, event)`` sees everything.

    ``owner``/``part`` make it one part of a run split across processes (see
    ``plumtree.sim.parallel``): it then runs only the nodes with ``owner[i] == part`` and
    collects each message for another part's node in ``outbound[owner[dst]]`` instead of
    its calendar. Without them it runs every node.
    """

    def __init__(
        self,
        nodes: Sequence[SimNode | None],
        network: Network,
        on_event: EventSink,
        slot_width: float = SLOT_WIDTH,
        owner: Sequence[int] | None = None,
        part: int = 0,
        names: Sequence[str] | None = None,
        lookahead: float = 0.0,
        parts: int = 1,
    ) -> None:
        self.nodes = nodes
        self.network = network
        self.on_event = on_event
        n = len(nodes)
        self.names = (
            list(names) if names is not None else [node.name for node in nodes]  # type: ignore[union-attr]
        )
        self.index = {name: i for i, name in enumerate(self.names)}
        self.now = 0.0
        self._calendar = _Calendar(slot_width)
        #: key of the next entry each node (and, at index n, the driver) schedules
        self._span = n + 1
        self._keys = list(range(n + 1))
        self.owner = list(owner) if owner is not None else [part] * n
        self.part = part
        #: the least latency of any message between parts, which the split relies on
        self.lookahead = lookahead
        self.local = [self.owner[i] == part and nodes[i] is not None for i in range(n)]
        #: per part: entries for its nodes, sent at the end of each window
        parts = max(parts, max(self.owner, default=0) + 1, part + 1)
        self.outbound: list[list[Entry]] = [[] for _ in range(parts)]
        #: times of every timer entry still pending per node (a few at most), sorted:
        #: entries leave the calendar in time order, so a node's next one is always [0]
        self._timers: list[list[float]] = [[] for _ in nodes]
        self._sent_by_class: defaultdict[type, int] = defaultdict(int)
        self.gossip_by_id: dict[bytes, int] = {}
        self._takers = [_taker(node) if node is not None else _idle for node in nodes]
        #: None where another part runs the node (it never gets an entry here)
        self._receivers: list[Any] = [node.receive if node is not None else None for node in nodes]
        self._tickers: list[Any] = [
            node.handle_timer if node is not None else None for node in nodes
        ]
        self._emit, self._arm = self._make_emitters()

    # ---------------------------------------------------------------- scheduling

    def at(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` at simulated time ``when``."""
        self._calendar.push((when, self._next_key(len(self.nodes)), -1, _ACTION, action))

    def call(self, i: int, fn: Callable[[Any], None]) -> None:
        """Call ``fn(node)`` now (if the node is up and runs here), then collect what it
        produced."""
        if i in self.network.crashed or not self.local[i]:
            return
        fn(self.nodes[i])
        self.flush(i)

    def flush(self, i: int) -> None:
        """Collect node ``i``'s outgoing messages, events and next deadline."""
        out, events, deadline = self._takers[i]()
        if out or events:
            self._emit(i, self.now, out, events)
        if deadline is not None:
            pending = self._timers[i]
            if not pending or pending[0] > deadline:
                self._arm(i, deadline, self.now)

    def arm_all(self) -> None:
        for i in range(len(self.nodes)):
            if self.local[i]:
                self.flush(i)

    def _next_key(self, i: int) -> int:
        key = self._keys[i]
        self._keys[i] = key + self._span
        return key

    def counts(self) -> tuple[int, int]:
        """Entries processed so far: ``(by nodes, actions)``. Summed over the parts of a
        split run (actions once: every part runs them all) they are the whole run's."""
        span = self._span
        n = len(self.nodes)
        scheduled = sum((key - i) // span for i, key in enumerate(self._keys[:n]) if self.local[i])
        actions = (self._keys[n] - n) // span
        entries = self._calendar.entries()
        pending_actions = sum(1 for e in entries if e[3] == _ACTION)
        sent_away = sum(len(bucket) for bucket in self.outbound)
        processed = scheduled - (len(entries) - pending_actions) - sent_away
        return processed, actions - pending_actions

    @property
    def processed(self) -> int:
        """Entries processed so far (including messages dropped at a crashed node)."""
        by_nodes, actions = self.counts()
        return by_nodes + actions

    @property
    def pending(self) -> int:
        """Entries (messages in flight, timers, actions) not processed yet."""
        return len(self._calendar)

    @property
    def sent_by_type(self) -> dict[str, int]:
        """Messages handed to the network so far, by message type name."""
        return {cls.__name__: n for cls, n in self._sent_by_class.items()}

    def next_time(self) -> float:
        """Time of the next pending entry (inf: none)."""
        return self._calendar.next_time()

    def insert(self, entries: Iterable[Entry]) -> None:
        """Add entries another part sent (messages for this part's nodes)."""
        push = self._calendar.push
        for entry in entries:
            push(entry)

    def _make_emitters(
        self,
    ) -> tuple[
        Callable[[int, float, Sequence[tuple[str, Any]], Sequence[Event]], None],
        Callable[[int, float, float], None],
    ]:
        """``emit(i, now, out, events)`` sends node i's messages and passes its events on;
        ``arm(i, deadline, now)`` schedules its next timer. Both bind what they need in
        closure cells."""
        net = self.network
        delivery_time = net.delivery_time
        link_of = net.link
        stream = net.stream
        jitter = net.jitter
        log = math.log
        index_get = self.index.get
        cal = self._calendar
        inv = cal.inv
        future = cal.future
        future_get = future.get
        slots = cal.slots
        keys = self._keys
        span = self._span
        counts = self._sent_by_class
        gossip = self.gossip_by_id
        gossip_get = gossip.get
        timers = self._timers
        owner = self.owner
        part = self.part
        outbound = self.outbound
        lookahead = self.lookahead
        #: per sender: destination name -> (index, link state, part or -1 for this one),
        #: filled on first use
        routes: list[dict[str, tuple[int, list[float], int]]] = [{} for _ in self.nodes]
        # not ``self``: the simulator holds these closures, and a cycle through them
        # would keep every node alive until a full garbage collection
        sink = self.on_event
        push = heapq.heappush

        def emit(
            i: int, now: float, out: Sequence[tuple[str, Any]], events: Sequence[Event]
        ) -> None:
            if out:
                crashed = net.crashed
                loss = net.loss
                plain = net.plain
                random_ = stream(i)
                links = routes[i]
                cur_slot = cal.cur_slot
                cur = cal.cur
                key = keys[i]
                sent = dropped = 0
                for dest, msg in out:
                    cls = type(msg)
                    if cls is Gossip:
                        gossip[msg.id] = gossip_get(msg.id, 0) + 1
                    counts[cls] += 1
                    route = links.get(dest)
                    if route is None:
                        j = index_get(dest)
                        if j is None:
                            continue  # not a simulated node
                        w = owner[j]
                        route = links[dest] = (j, link_of(i, j), -1 if w == part else w)
                    j, link, away = route
                    if plain:
                        # Network.delivery_time, inlined (same checks, same draws)
                        sent += 1
                        if crashed and (j in crashed or i in crashed):
                            dropped += 1
                            continue
                        if loss and random_() < loss:
                            dropped += 1
                            continue
                        arrive = now + link[0] - jitter * log(1.0 - random_())
                        last = link[1]
                        if arrive < last:
                            arrive = last
                        link[1] = arrive
                    else:
                        maybe = delivery_time(i, j, now)
                        if maybe is None:
                            continue
                        arrive = maybe
                    entry = (arrive, key, j, i, msg)
                    key += span
                    if away >= 0:
                        if arrive < now + lookahead:  # rounds as the window's end does
                            raise CausalityError(
                                f"{msg!r} from node {i} to node {j} (another part) would "
                                f"arrive {arrive - now:.6f}s after it was sent, sooner than "
                                f"the split's lookahead of {lookahead:.6f}s"
                            )
                        outbound[away].append(entry)
                        continue
                    # _Calendar.push, inlined
                    slot = int(arrive * inv)
                    if slot <= cur_slot:
                        push(cur, entry)
                    else:
                        bucket = future_get(slot)
                        if bucket is None:
                            future[slot] = [entry]
                            push(slots, slot)
                        else:
                            push(bucket, entry)
                keys[i] = key
                if sent:
                    net.sent += sent
                    net.dropped += dropped
            if events:
                for event in events:
                    sink(i, event)

        def arm(i: int, deadline: float, now: float) -> None:
            # called only when no pending timer entry of node i is at or before the
            # deadline: one that is already wakes the node (waking early is harmless,
            # handle_timer only runs what is due), so it saves an entry
            when = deadline if deadline > now else now
            insort(timers[i], when)
            key = keys[i]
            keys[i] = key + span
            cal.push((when, key, i, _TIMER, None))

        return emit, arm

    # ---------------------------------------------------------------- running

    def run_until(self, t_end: float) -> None:
        """Process every entry due at or before ``t_end``."""
        # The loop allocates millions of short-lived, acyclic objects (entries, messages,
        # events); with ten thousand live nodes each automatic collection of the old
        # generation walks all of them, which cost a third of the run time at 10k nodes.
        # Nothing here makes reference cycles, so the collector waits until the end.
        paused = gc.isenabled()
        gc.disable()
        try:
            self._run(t_end)
        finally:
            if paused:
                gc.enable()
        if t_end > self.now:
            self.now = t_end

    def step(self, t_end: float, span: float = 0.0) -> bool:
        """Process the entries due within ``span`` of the next pending time (and at or
        before ``t_end``); False when there is none. For running a simulation in small
        steps between other work; the caller manages the garbage collector."""
        when = self._calendar.next_time()
        if when > t_end:
            return False
        self._run(min(when + span, t_end))
        return True

    def run_window(self, t_end: float) -> None:
        """Process every entry due at or before ``t_end`` (one window of a split run;
        the caller manages the garbage collector)."""
        self._run(t_end)

    def _run(self, t_end: float) -> None:
        cal = self._calendar
        advance = cal.advance
        pop = heapq.heappop
        crashed = self.network.crashed
        names = self.names
        receivers = self._receivers
        tickers = self._tickers
        takers = self._takers
        timers = self._timers
        emit = self._emit
        arm = self._arm
        frozen = self.network.frozen
        cur = cal.cur  # the current slot's heap; a new list only when advance() moves on
        while True:
            if not cur:
                if not advance():
                    break
                cur = cal.cur
            if cur[0][0] > t_end:
                break
            when, key, dst, src, obj = pop(cur)
            if frozen and src != _ACTION and dst in frozen and when < frozen[dst]:
                # a frozen process: what arrives waits in its socket buffers, its timers
                # fire late; all of it is handled, in order, the moment it wakes
                until = frozen[dst]
                if src == _TIMER:
                    del timers[dst][0]
                    arm(dst, until, when)
                else:
                    cal.push((until, key, dst, src, obj))
                cur = cal.cur
                continue
            if src >= 0:
                if crashed and dst in crashed:
                    continue
                self.now = when
                receivers[dst](names[src], obj, when)
            elif src == _TIMER:
                del timers[dst][0]
                if crashed and dst in crashed:
                    continue
                self.now = when
                tickers[dst](when)
            else:
                self.now = when
                obj()
                continue
            # flush(dst), inlined; most messages (IHaves of known ids) produce nothing
            out, events, deadline = takers[dst]()
            if out or events:
                emit(dst, when, out, events)
            if deadline is not None:
                pending = timers[dst]
                if not pending or pending[0] > deadline:
                    arm(dst, deadline, when)
