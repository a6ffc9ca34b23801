"""Name conflicts: one member name claimed from two addresses (after memberlist's aliveNode).

A name is a member's identity on the wire, so it must be unique. As memberlist does, an
Alive (or a push-pull entry) that claims a name the table holds as *alive or suspect* at
another address is refused: the live holder keeps its name until it is dead or left
(then a claim from a new address is a member that came back elsewhere, and is
accepted). Refusing, not refuting: a refutation would bump the holder's incarnation and
start a war of Alives between the two claimants.

Both sides learn of it:

* every member that refuses a claim counts it (``swim_name_conflicts_total``) and
  reports each distinct conflict (name, holder's address, claimant's address) once, as
  a :class:`~plumtree.core.events.NameConflict` event (the node logs it as a WARNING);
* the claimant learns it from the reply to its join: a seed's member list that has the
  claimant's own name alive at another address means the name is taken
  (:func:`name_taken`); the joiner stops joining and reports
  :class:`~plumtree.core.events.NameTaken` (``plumctl node start`` exits 2).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeGuard

from plumtree.core import events as ev
from plumtree.core.members import ALIVE, Member, is_live
from plumtree.core.messages import MemberState

#: distinct conflicts remembered for "report once" (oldest forgotten first)
REPORTED_MAX = 256


def refused(holder: Member | None, addr: str) -> TypeGuard[Member]:
    """Whether a claim to ``holder``'s name from ``addr`` must be refused: the name is
    held by a live member at another address."""
    return is_live(holder) and holder.addr != addr


def name_taken(name: str, addr: str, remote: Iterable[MemberState]) -> MemberState | None:
    """The entry of a join reply that holds our ``name`` alive at another address."""
    for r in remote:
        if r.name == name and r.state == ALIVE and r.addr != addr:
            return r
    return None


class ConflictLog:
    """Which conflicts were reported already (bounded memory; the caller counts)."""

    __slots__ = ("_reported",)

    def __init__(self) -> None:
        self._reported: dict[tuple[str, str, str], None] = {}

    def refuse(self, holder: Member, claimed_addr: str) -> ev.NameConflict | None:
        """The event for a refused claim, the first time this conflict is seen."""
        key = (holder.name, holder.addr, claimed_addr)
        if key in self._reported:
            return None
        self._reported[key] = None
        if len(self._reported) > REPORTED_MAX:
            del self._reported[next(iter(self._reported))]
        return ev.NameConflict(holder.name, holder.addr, claimed_addr)
