"""The SWIM member table: one row per known member, plus O(1) sampling views.

Rows are mutated only through :meth:`MemberTable.set_state` (and the field updates the
state machine makes on the row itself), so the derived views stay exact:

* ``alive``: names in state alive (relays for indirect probes, push-pull partners);
* ``live``: alive or suspect (gossip targets, the Plumtree peer set);
* ``dead``: failed (not left) members still in the table (reconnect attempts);
* per-state counts, for the members-by-state gauges.

The local node has a row too (it is part of every push-pull), but is in no view.

A row learned second-hand (gossip, push-pull) starts *unconfirmed*: nobody has yet
shown that its address answers. It sits in ``unconfirmed`` only, in no view and no
count, so it is never a gossip, relay, push-pull or Plumtree target and does not scale
timeouts; :meth:`MemberTable.confirm` moves it into the views once a probe to its
address was acked (or a packet came from that address in its name).
Views are :class:`IndexedSet` (insertion order, never a hash-ordered ``set``), so a seeded
simulation makes the same choices on every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeGuard

from plumtree.core.messages import MemberState
from plumtree.core.peers import IndexedSet

ALIVE = 0
SUSPECT = 1
DEAD = 2
LEFT = 3
STATE_NAMES = ("alive", "suspect", "dead", "left")


def is_live(member: Member | None) -> TypeGuard[Member]:
    """A known member that is alive or only suspected: one we still talk to (probe,
    gossip with, exchange Plumtree messages with)."""
    return member is not None and member.state <= SUSPECT and member.confirmed


class Member:
    """A mutable row of the member table (internal; the public view is MemberRecord)."""

    __slots__ = (
        "_wire",
        "addr",
        "confirmed",
        "incarnation",
        "meta",
        "name",
        "state",
        "state_change",
        "tries",
    )

    def __init__(
        self,
        name: str,
        addr: str,
        incarnation: int,
        meta: dict[str, str],
        now: float,
        confirmed: bool = True,
    ) -> None:
        self.name = name
        self.addr = addr
        self.incarnation = incarnation
        self.meta = meta
        self.state = ALIVE
        self.state_change = now
        self._wire: MemberState | None = None
        #: its address answered a probe (or spoke for it): only then do we send it more
        self.confirmed = confirmed
        #: confirmation probes sent while unconfirmed
        self.tries = 0

    def wire(self) -> MemberState:
        """This row as a push-pull entry (cached until the row changes)."""
        w = self._wire
        if w is None:
            w = self._wire = MemberState(
                self.name, self.addr, self.incarnation, self.state, self.meta
            )
        return w

    def touch(self) -> None:
        """Invalidate the cached wire form after a field changed."""
        self._wire = None

    def record(self) -> MemberRecord:
        return MemberRecord(
            self.name,
            self.addr,
            STATE_NAMES[self.state],
            self.incarnation,
            dict(self.meta),
            self.state_change,
        )


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """One member as the application, the admin API and ``plumctl members`` see it."""

    name: str
    addr: str
    state: str
    incarnation: int
    meta: dict[str, str]
    state_change: float


class MemberTable:
    """All known members by name, with sampling views kept in step with their states."""

    __slots__ = ("alive", "by_name", "counts", "dead", "live", "local", "unconfirmed")

    def __init__(self, local: Member) -> None:
        self.local = local
        self.by_name: dict[str, Member] = {local.name: local}
        self.alive: IndexedSet[str] = IndexedSet()
        self.live: IndexedSet[str] = IndexedSet()
        self.dead: IndexedSet[str] = IndexedSet()
        self.unconfirmed: IndexedSet[str] = IndexedSet()
        self.counts = [0, 0, 0, 0]
        self.counts[local.state] += 1

    def __len__(self) -> int:
        return len(self.by_name)

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def get(self, name: str) -> Member | None:
        return self.by_name.get(name)

    def add(self, member: Member) -> None:
        """Insert a new row (its ``state`` decides the views it joins, if confirmed)."""
        self.by_name[member.name] = member
        if not member.confirmed:
            self.unconfirmed.add(member.name)
            return
        self.counts[member.state] += 1
        self._enter(member.name, member.state)

    def remove(self, name: str) -> Member | None:
        member = self.by_name.get(name)
        if member is None or member is self.local:
            return None
        del self.by_name[name]
        if not member.confirmed:
            self.unconfirmed.discard(name)
            return member
        self.counts[member.state] -= 1
        self._leave(name, member.state)
        return member

    def confirm(self, member: Member) -> None:
        """An unconfirmed row proved its address: it joins the views and counts."""
        if member.confirmed:
            return
        self.unconfirmed.discard(member.name)
        member.confirmed = True
        self.counts[member.state] += 1
        self._enter(member.name, member.state)

    def set_state(self, member: Member, state: int, now: float) -> None:
        old = member.state
        if not member.confirmed:
            member.state = state
            member.state_change = now
            member._wire = None
            return
        if old == state:
            return
        member.state = state
        member.state_change = now
        member._wire = None
        self.counts[old] -= 1
        self.counts[state] += 1
        if member is not self.local:
            self._leave(member.name, old)
            self._enter(member.name, state)

    def _enter(self, name: str, state: int) -> None:
        if name == self.local.name:
            return
        if state == ALIVE:
            self.alive.add(name)
            self.live.add(name)
        elif state == SUSPECT:
            self.live.add(name)
        elif state == DEAD:
            self.dead.add(name)

    def _leave(self, name: str, state: int) -> None:
        if state == ALIVE:
            self.alive.discard(name)
            self.live.discard(name)
        elif state == SUSPECT:
            self.live.discard(name)
        elif state == DEAD:
            self.dead.discard(name)

    def cluster_size(self) -> int:
        """Members not known to have left, the local node included (memberlist's N)."""
        c = self.counts
        return c[ALIVE] + c[SUSPECT] + c[DEAD]
