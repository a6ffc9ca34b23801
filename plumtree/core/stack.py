"""One node's whole protocol stack, sans-IO: SWIM membership driving Plumtree.

The runtime and the simulator both drive this object, so the simulator predicts the
runtime. It owns the glue that used to be written twice (and had drifted):

* membership events drive Plumtree's peer set (join/alive add a peer, failed/left/reaped
  remove it), and a periodic reconcile against the live member list repairs any drift;
* joining: push-pulls with the seeds, retried with exponential backoff until another
  member is known, and again whenever the node finds itself alone (every member it knew
  failed or left, say its seed restarted while the others were away);
* routing: Plumtree messages are taken from live members only, and sent to a member's
  advertised address (what cannot be routed is counted, never dropped silently).

Inputs carry ``now``; outputs are ``Outgoing`` datagrams and streams and events.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from plumtree.core import events as ev
from plumtree.core.config import ProtocolConfig
from plumtree.core.members import is_live
from plumtree.core.messages import PLUMTREE_TYPES, REQUEST_TYPES, PushPull
from plumtree.core.plumtree import Plumtree
from plumtree.core.state import NodeState
from plumtree.core.swim import Outgoing, Swim, host_of

#: Seconds between reconciles of Plumtree's peers with the member table (skipped when
#: the membership did not change, but never more than RECONCILE_FORCE passes in a row).
RECONCILE_INTERVAL = 5.0
RECONCILE_FORCE = 6
#: Join retries: the first after this many seconds, doubling up to ``join_retry_max``.
JOIN_RETRY_FIRST = 0.2
#: How often a node with seeds checks that it is not alone.
ISOLATION_CHECK_INTERVAL = 1.0

#: exact types (the messages are never subclassed except Repair, which is listed)
PLUMTREE_TYPE_SET = frozenset(PLUMTREE_TYPES)
KEY_TYPE_SET = frozenset(REQUEST_TYPES)  # keyring queries and serf's queries
_JOINED = ev.MemberJoined
_ALIVE = ev.MemberAlive
_GONE = (ev.MemberFailed, ev.MemberLeft, ev.MemberReaped)


class Stack:
    """SWIM + Plumtree for one node. ``join``, ``receive``, ``handle_timer``, then take."""

    def __init__(
        self,
        name: str,
        addr: str,
        config: ProtocolConfig,
        rng: random.Random,
        now: float,
        *,
        meta: dict[str, str] | None = None,
        label: str = "",
        epoch: int = 0,
        restored: NodeState | None = None,
        fresh: bool = False,
        join_retry_max: float = 10.0,
    ) -> None:
        self.name = name
        self.config = config
        self.swim = Swim(
            name, addr, config.swim, random.Random(rng.random()), now, meta, label=label
        )
        self.plumtree = Plumtree(
            name,
            config.plumtree,
            random.Random(rng.random()),
            now,
            epoch=epoch,
            restored=restored,
            fresh=fresh,
        )
        self.join_retry_max = join_retry_max
        self.seeds: list[str] = []
        #: Plumtree messages from non-members, and to members with no address
        self.unknown_senders = 0
        self.unroutable = 0
        #: keyring queries and serf's queries for the runtime (``runtime/keyquery.py``,
        #: ``runtime/query.py``), taken after each
        #: receive: (sender, the address it advertises, message); and those refused
        #: here (over UDP, or from a sender that is not a live member)
        self.key_inbox: list[tuple[str, str, Any]] = []
        self.key_refused = 0
        self._events: list[ev.Event] = []
        self._next_reconcile = now + RECONCILE_INTERVAL * (1.0 + rng.random())
        self._reconciled_version = -1
        self._reconcile_skips = 0
        #: join attempts: when the next one is due (None: not joining), and backoff
        self._next_join: float | None = None
        self._join_delay = JOIN_RETRY_FIRST
        self._join_attempt = 0
        self._next_isolation_check: float | None = None

    # ------------------------------------------------------------------ inputs

    def join(self, seeds: Sequence[str], now: float) -> None:
        """Join through ``seeds`` (addresses), retrying until another member is known."""
        self.seeds = [s for s in dict.fromkeys(seeds) if s]
        if not self.seeds:
            return
        self._join_delay = JOIN_RETRY_FIRST
        self._join_attempt = 0
        self._attempt_join(now)
        self._next_isolation_check = now + ISOLATION_CHECK_INTERVAL

    def leave(self, now: float) -> None:
        self._next_join = None
        self._next_isolation_check = None
        self.swim.leave(now)
        self._drain_swim(now)

    def set_meta(self, meta: dict[str, str], now: float) -> None:
        """New member metadata (tags), gossiped with a bumped incarnation."""
        self.swim.check_meta_fits(meta)
        self.swim.set_meta(meta, now)
        self._drain_swim(now)

    def force_leave(self, name: str, now: float) -> str:
        """Record failed member ``name`` as left, cluster-wide (``Swim.force_leave``)."""
        before = self.swim.force_leave(name, now)
        self._drain_swim(now)
        return before

    def broadcast(self, payload: bytes, now: float) -> bytes:
        return self.plumtree.broadcast(payload, now)

    def receive(
        self, source: str, sender: str, messages: Sequence[Any], reliable: bool, now: float
    ) -> None:
        """One envelope from ``sender`` (which arrived from ``source``): SWIM messages,
        Plumtree messages, or a push-pull over a stream."""
        if sender == self.name:
            return
        swim = self.swim
        table = swim.table
        # Plumtree takes messages from live members only; looked up once per envelope
        # (again after a push-pull, which may have taught us the sender)
        live = is_live(table.get(sender))
        receive = self.plumtree.receive
        swim_msgs: list[Any] = []
        for msg in messages:
            if type(msg) in PLUMTREE_TYPE_SET:
                if live:
                    receive(sender, msg, now)
                else:
                    self.unknown_senders += 1  # not (or no longer) a live member
            elif reliable and type(msg) is PushPull:
                # a stream's source port is ephemeral: answer at the address the sender
                # advertises for itself in its own state (or the one we know)
                reply = next((m.addr for m in msg.members if m.name == sender), None)
                if reply is None:
                    known = table.get(sender)
                    reply = known.addr if known is not None else source
                # a stream's source host cannot be forged: our table goes only back to
                # the host that asked (a forged state must not aim it at a third party)
                swim.receive_stream(reply, sender, msg, now, host_of(reply) == host_of(source))
                live = is_live(table.get(sender))
            elif type(msg) in KEY_TYPE_SET:
                self._key_message(sender, msg, reliable)
            else:
                swim_msgs.append(msg)
        if swim_msgs:
            swim.receive_packet(source, sender, swim_msgs, now)
        self._drain_swim(now)

    def _key_message(self, sender: str, msg: Any, reliable: bool) -> None:
        """A request (keyring query or query) is answered at the address the member advertises, never at
        the packet's source: only a live member's, and only over TCP (a datagram is
        easier to forge and reflect)."""
        member = self.swim.table.get(sender)
        if reliable and is_live(member) and member.addr:
            self.key_inbox.append((sender, member.addr, msg))
        else:
            self.key_refused += 1

    def take_key_messages(self) -> list[tuple[str, str, Any]]:
        inbox, self.key_inbox = self.key_inbox, []
        return inbox

    def handle_timer(self, now: float) -> None:
        swim = self.swim
        if swim.next_deadline() <= now:
            swim.handle_timer(now)
        self._drain_swim(now)
        if self._next_join is not None and now >= self._next_join:
            if swim.joined or swim.left:
                self._joined()
            else:
                self._attempt_join(now)
        check = self._next_isolation_check
        if check is not None and now >= check:
            self._next_isolation_check = now + ISOLATION_CHECK_INTERVAL
            if self._next_join is None and not swim.left and not swim.joined and self.seeds:
                self._events.append(ev.Isolated(list(self.seeds)))
                self._join_delay = JOIN_RETRY_FIRST
                self._join_attempt = 0
                self._attempt_join(now)
        if now >= self._next_reconcile:
            self._reconcile(now)
        plumtree = self.plumtree
        if plumtree.next_deadline() <= now:
            plumtree.handle_timer(now)

    def next_deadline(self) -> float:
        deadline = self.swim.next_deadline()
        other = self.plumtree.next_deadline()
        if other < deadline:
            deadline = other
        if self._next_reconcile < deadline:
            deadline = self._next_reconcile
        for t in (self._next_join, self._next_isolation_check):
            if t is not None and t < deadline:
                deadline = t
        return deadline

    # ------------------------------------------------------------------ outputs

    def take_outgoing(self) -> list[Outgoing]:
        """SWIM's datagrams and streams, then Plumtree's messages as one stream per peer
        (in order), addressed to where each member says it is."""
        out = self.swim.take_outgoing()
        messages = self.plumtree.take_outgoing()
        if not messages:
            return out
        by_peer: dict[str, list[Any]] = {}
        for peer, msg in messages:
            msgs = by_peer.get(peer)
            if msgs is None:
                by_peer[peer] = [msg]
            else:
                msgs.append(msg)
        get = self.swim.table.by_name.get
        for peer, msgs in by_peer.items():
            member = get(peer)
            if member is None or not is_live(member):
                self.unroutable += len(msgs)
                continue
            out.append(Outgoing(member.addr, msgs, True))
        return out

    def take_events(self) -> list[ev.Event]:
        """Membership and stack events, then Plumtree's (deliveries among them)."""
        out, self._events = self._events, []
        out.extend(self.plumtree.take_events())
        return out

    # ------------------------------------------------------------------ internals

    def _attempt_join(self, now: float) -> None:
        self._join_attempt += 1
        self.swim.join(self.seeds, now)
        self._drain_swim(now)
        retry_in = self._join_delay
        self._next_join = now + retry_in
        if self._join_attempt > 1:
            self._events.append(ev.JoinPending(list(self.seeds), self._join_attempt - 1, retry_in))
        self._join_delay = min(self._join_delay * 2, self.join_retry_max)

    def _joined(self) -> None:
        self._next_join = None
        if self.swim.joined and not self.swim.left:
            self._events.append(ev.Joined(self.swim.alive_count))

    def _reconcile(self, now: float) -> None:
        self._next_reconcile = now + RECONCILE_INTERVAL
        swim = self.swim
        if swim.version == self._reconciled_version and self._reconcile_skips < RECONCILE_FORCE:
            self._reconcile_skips += 1
            return
        self._reconcile_skips = 0
        self._reconciled_version = swim.version
        added, removed = self.plumtree.reconcile(swim.live_names(), now)
        if added or removed:
            self._events.append(ev.Reconciled(added, removed))

    def _drain_swim(self, now: float) -> None:
        """Membership events drive the Plumtree peer set (and go on to the caller)."""
        events = self.swim.take_events()
        if not events:
            return
        plumtree = self.plumtree
        name = self.name
        for event in events:
            kind = type(event)
            if kind is _JOINED or kind is _ALIVE:
                peer: str = event.name  # type: ignore[attr-defined]
                if peer != name:
                    plumtree.add_peer(peer, now)
            elif kind in _GONE:
                plumtree.remove_peer(event.name, now)  # type: ignore[attr-defined]
        self._events.extend(events)
