"""SWIM counters and gauges, kept as plain numbers (exported by the runtime at scrape time).

Same style as :mod:`plumtree.core.stats`: a slotted dataclass of monotonic counters, a
frozen snapshot of gauges, and a fixed-bucket histogram for probe round-trip times.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields


@dataclass(slots=True)
class SwimCounters:
    """Monotonic counters of one SWIM node."""

    # the headline counters
    probes_sent: int = 0
    probe_failures: int = 0
    indirect_probes: int = 0
    suspicions: int = 0
    refutations: int = 0
    pushpull_exchanges: int = 0
    # traffic
    packets_sent: int = 0
    streams_sent: int = 0
    gossip_packets_sent: int = 0
    updates_sent: int = 0
    updates_received: int = 0
    acks_received: int = 0
    nacks_received: int = 0
    nacks_sent: int = 0
    pings_received: int = 0
    pingreqs_received: int = 0
    # outcomes
    members_failed: int = 0
    members_left: int = 0
    members_reaped: int = 0
    partitions_suspected: int = 0
    # drops and hostile input: every one counted, none raises
    unknown_acks: int = 0
    unknown_nacks: int = 0
    misdirected_pings: int = 0
    relays_dropped: int = 0
    members_dropped: int = 0
    updates_dropped: int = 0
    addr_conflicts: int = 0
    ignored_messages: int = 0
    incarnation_overflows: int = 0
    # hardening (issue 18): what a stray or forged packet could not do
    incarnations_refused: int = 0  # an incarnation beyond the window (about us or others)
    incarnation_resets: int = 0  # a member's own word replaced an implausible view of it
    unconfirmed_refused: int = 0  # new members refused: unconfirmed table or stranger full
    unconfirmed_dropped: int = 0  # unconfirmed members whose address never answered
    members_confirmed: int = 0
    confirm_probes_sent: int = 0
    pingreqs_refused: int = 0  # relays refused: requester or target not a confirmed member
    accusers_answered: int = 0
    pushpull_replies_refused: int = 0  # requests from a host other than the one advertised  # our Alive sent straight back to who accused us

    def items(self) -> Iterator[tuple[str, int]]:
        for f in fields(self):
            yield f.name, getattr(self, f.name)


@dataclass(frozen=True, slots=True)
class SwimGauges:
    """Current values: members by state (the local node included), health, queues."""

    alive: int
    suspect: int
    dead: int
    left: int
    members: int
    health_score: int
    pending_updates: int
    pending_relays: int
    incarnation: int
    unconfirmed: int = 0
