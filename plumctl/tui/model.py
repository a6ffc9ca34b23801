"""What ``plumctl top`` shows, computed from successive snapshots (pure: no I/O, no clock).

:class:`ClusterModel` folds each :class:`~plumctl.tui.source.ClusterSnapshot` into one
:class:`NodeRow` per member ever seen. Rates, quantiles, scores and threshold levels all
come from :mod:`plumctl.scoring` (``rates_and_score``, i.e. ``key_queries`` and
``health_score`` over the node's previous and current scrape, then ``cluster_score`` and
``classify_rates``): the same numbers as ``plumctl health`` and ``plumctl metrics``, no
second implementation.

Rows are never dropped: a member that fails stays, marked dead (or "gone" when it left
the member table without being declared dead); a node that does not answer keeps its
last values and is marked unreachable. Histories for the sparklines are bounded deques.

Each row's status and the cluster's verdict are :mod:`plumctl.healthcheck`'s
(``unasked`` for what the member table alone says, ``verdict`` for the cluster): a dead
member is Failed and the cluster Degraded, as ``plumctl health --all`` says, never the
Healthy a crashed node last reported.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from plumctl.healthcheck import FAILED, LEFT, UNREACHABLE, NodeHealth, Verdict, unasked, verdict
from plumctl.promtext import Scrape
from plumctl.scoring import (
    ClusterScore,
    Level,
    NodeRates,
    Score,
    classify_rates,
    cluster_score,
    rates_and_score,
)
from plumctl.tui.source import INSECURE_METRIC, ClusterSnapshot, NodeSample
from plumtree.core.health import Status

#: Samples kept per sparkline: 2 minutes at the default 1 s interval, 4 at 2 s.
HISTORY = 120
#: Blocks of a text sparkline, lowest first.
BLOCKS = "▁▂▃▄▅▆▇█"

#: Display states of a row, most alarming first (the "state" sort order).
STATE_ORDER = ("dead", "gone", "unreachable", "suspect", "left", "alive")
STATE_LEVEL = {
    "alive": Level.OK,
    "suspect": Level.WARNING,
    "unreachable": Level.WARNING,
    "dead": Level.CRITICAL,
    "gone": Level.CRITICAL,
    "left": Level.UNKNOWN,
}
STATUS_LEVEL = {
    Status.HEALTHY.value: Level.OK,
    Status.DEGRADED.value: Level.WARNING,
    Status.UNHEALTHY.value: Level.CRITICAL,
    FAILED: Level.CRITICAL,
    UNREACHABLE: Level.WARNING,
    LEFT: Level.UNKNOWN,
}
_LEVEL_RANK = {Level.OK: 0, Level.UNKNOWN: 0, Level.WARNING: 1, Level.CRITICAL: 2}


def status_level(status: str | None) -> Level:
    """Level of a status: a node's /v1/health ("Healthy" ok, "Degraded" warning,
    "Unhealthy" critical) or what ``plumctl health`` says of a member ("Failed" critical,
    "Unreachable" warning, "Left" unknown)."""
    return STATUS_LEVEL.get(status or "", Level.UNKNOWN)


@dataclass(slots=True)
class NodeRow:
    """Everything ``top`` knows about one member, across polls."""

    name: str
    member_state: str = "alive"  # as the member table says: alive|suspect|dead|left|gone
    admin_url: str | None = None
    polled: bool = False  # asked for metrics in the last poll (alive or suspect)
    error: str | None = None  # why the last poll of this node failed
    prev: Scrape | None = None
    cur: Scrape | None = None
    rates: NodeRates | None = None
    levels: dict[str, Level] = field(default_factory=dict)
    score: Score | None = None
    health: Mapping[str, Any] | None = None
    last_ok: float | None = None  # snapshot time of the last good scrape
    eager_hist: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    lazy_hist: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    graft_hist: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))

    @property
    def state(self) -> str:
        """What the STATE column says: the member state, or "unreachable" when SWIM
        says alive/suspect but the node's admin API did not answer."""
        if self.polled and self.error is not None:
            return "unreachable"
        return self.member_state

    @property
    def live(self) -> bool:
        """Whether the row's numbers are from the last poll (else they are the last known)."""
        return self.polled and self.error is None and self.cur is not None

    @property
    def insecure(self) -> bool:
        """The node says its gossip is reachable and unauthenticated (--insecure-gossip)."""
        return self.cur is not None and self.cur.value(INSECURE_METRIC) == 1

    @property
    def health_status(self) -> str | None:
        status = self.health.get("status") if self.health else None
        return str(status) if status else None

    @property
    def health_message(self) -> str | None:
        msg = self.health.get("message") if self.health else None
        return str(msg) if msg else None

    @property
    def current(self) -> bool:
        """Still a member that answers for itself (alive or suspect): its last report and
        score stand; a dead, gone or left member's do not."""
        return self.member_state in ("alive", "suspect")

    def node_health(self) -> NodeHealth:
        """The row as ``plumctl health --all`` judges the member (the same rules)."""
        state = "dead" if self.member_state == "gone" else self.member_state
        known = unasked(self.name, self.admin_url, state)
        if known is not None:
            return known
        if not self.live or not self.health_status:
            why = self.error or ("no health report yet" if self.live else "not polled yet")
            return NodeHealth(self.name, self.admin_url, UNREACHABLE, why, state)
        return NodeHealth(
            self.name,
            self.admin_url,
            self.health_status,
            self.health_message or "",
            state,
            score=self.score.value if self.score else None,
            score_reasons=list(self.score.reasons) if self.score else [],
        )

    def as_dict(self) -> dict[str, Any]:
        """The row for ``plumctl top -o json`` (a stable schema)."""
        return {
            "name": self.name,
            "state": self.state,
            "member_state": self.member_state,
            "admin_url": self.admin_url,
            "reachable": self.live if self.polled else None,
            "error": self.error,
            "health": self.node_health().status,
            "insecure_gossip": self.insecure,
            "health_message": self.health_message,
            "score": self.score.value if self.score and self.current else None,
            "score_reasons": list(self.score.reasons) if self.score and self.current else [],
            "rates": self.rates.as_dict() if self.rates else None,
            "levels": {k: v.value for k, v in sorted(self.levels.items())},
        }


class ClusterModel:
    """Successive snapshots folded into rows, cluster totals and sparkline histories."""

    def __init__(self, history: int = HISTORY) -> None:
        self.history = history
        self.rows: dict[str, NodeRow] = {}
        self.polls = 0
        self.via: str | None = None
        self.label = ""
        self.last_ok: float | None = None  # time of the last successful poll
        self.failed_at: float | None = None  # time of the last failed poll, while failing
        self.error: str | None = None  # why the last poll failed (None: it worked)
        self.joined: list[str] = []  # members new in the last poll (after the first one)
        self.failed: list[str] = []  # members that turned dead/gone in the last poll
        self.delivered_hist: deque[float] = deque(maxlen=history)
        self.duplicate_hist: deque[float] = deque(maxlen=history)
        self.delivered_per_s: float | None = None
        self.duplicate_pct: float | None = None
        self.cluster: ClusterScore = ClusterScore(None, (), ())

    # -- folding snapshots --------------------------------------------------------------

    def update(self, snap: ClusterSnapshot) -> None:
        """Fold one successful poll in."""
        first = self.polls == 0
        self.polls += 1
        self.via = snap.via
        self.label = snap.label
        self.last_ok = snap.at
        self.failed_at = None
        self.error = None
        self.joined = []
        self.failed = []
        listed: set[str] = set()
        for member in snap.members:
            listed.add(member.name)
            row = self.rows.get(member.name)
            if row is None:
                row = self.rows[member.name] = self._new_row(member.name)
                if not first:
                    self.joined.append(member.name)
            was = row.member_state
            row.member_state = member.state
            row.admin_url = member.admin_url or row.admin_url
            self._fold(row, snap.nodes.get(member.name), snap.at)
            if member.state == "dead" and was != "dead" and not first:
                self.failed.append(member.name)
        for name, row in self.rows.items():
            if name not in listed and row.member_state not in ("dead", "left", "gone"):
                row.member_state = "gone"  # left the table without being declared dead
                row.polled = False
                self.failed.append(name)
            elif name not in listed:
                row.polled = False
        self._cluster_totals()

    def fail(self, at: float, error: str) -> None:
        """A poll that got nothing at all (no node answered): rows keep their values."""
        self.error = error
        if self.failed_at is None:
            self.failed_at = at
        self.joined = []
        self.failed = []

    def _new_row(self, name: str) -> NodeRow:
        return NodeRow(
            name,
            eager_hist=deque(maxlen=self.history),
            lazy_hist=deque(maxlen=self.history),
            graft_hist=deque(maxlen=self.history),
        )

    def _fold(self, row: NodeRow, sample: NodeSample | None, at: float) -> None:
        if sample is None:  # dead, left, or no admin URL: not asked this time
            row.polled = False
            row.error = None
            return
        row.polled = True
        if sample.url:
            row.admin_url = sample.url
        if not sample.ok or sample.scrape is None:
            row.error = sample.error or "no answer"
            return
        row.error = None
        row.prev, row.cur = row.cur, sample.scrape
        row.rates, row.score = rates_and_score(row.prev, row.cur)
        row.levels = classify_rates(row.rates)
        row.health = sample.health
        row.last_ok = at
        rates = row.rates
        if rates.eager_peers is not None:
            row.eager_hist.append(rates.eager_peers)
        if rates.lazy_peers is not None:
            row.lazy_hist.append(rates.lazy_peers)
        if rates.graft_sent_per_s is not None:
            row.graft_hist.append(rates.graft_sent_per_s)

    def _cluster_totals(self) -> None:
        live = [r for r in self.rows.values() if r.live]
        self.cluster = cluster_score({r.name: r.score for r in live if r.score is not None})
        delivered = [r.rates.delivered_per_s for r in live if r.rates]
        duplicates = [r.rates.duplicate_per_s for r in live if r.rates]
        known = [d for d in delivered if d is not None]
        self.delivered_per_s = math.fsum(known) if known else None
        dups = [d for d in duplicates if d is not None]
        self.duplicate_pct = (
            100.0 * math.fsum(dups) / self.delivered_per_s
            if dups and self.delivered_per_s
            else None
        )
        if self.delivered_per_s is not None:
            self.delivered_hist.append(self.delivered_per_s)
        if self.duplicate_pct is not None:
            self.duplicate_hist.append(self.duplicate_pct)

    # -- what the header shows ----------------------------------------------------------

    def stale_for(self, now: float) -> float | None:
        """Seconds since the last good poll while polls fail; ``None`` when fresh."""
        if self.error is None:
            return None
        since = self.last_ok if self.last_ok is not None else self.failed_at
        return max(0.0, now - since) if since is not None else 0.0

    def counts(self) -> dict[str, int]:
        """Members by state as the member table says (gone counts as dead)."""
        out = {"alive": 0, "suspect": 0, "dead": 0, "left": 0}
        for row in self.rows.values():
            key = "dead" if row.member_state == "gone" else row.member_state
            out[key] = out.get(key, 0) + 1
        return out

    def verdict(self) -> Verdict | None:
        """The cluster's status and reasons as ``plumctl health --all`` gives them (None
        before the first poll)."""
        if not self.rows:
            return None
        return verdict([r.node_health() for _, r in sorted(self.rows.items())], single=False)

    def status(self) -> str | None:
        """The cluster's status (Healthy, Degraded, Unhealthy, Unreachable), or None."""
        judged = self.verdict()
        return judged.status if judged is not None else None

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        """The whole model for ``plumctl top -o json``."""
        return {
            "kind": "ClusterTop",
            "via": self.via,
            "label": self.label,
            "members": self.counts(),
            "score": self.cluster.value,
            "score_worst": list(self.cluster.worst),
            "score_reasons": list(self.cluster.reasons),
            "status": self.status(),
            "status_reasons": (judged.reasons if (judged := self.verdict()) else []),
            "delivered_per_s": self.delivered_per_s,
            "duplicate_pct": self.duplicate_pct,
            "stale_s": self.stale_for(now) if now is not None else None,
            "error": self.error,
            "items": [r.as_dict() for _, r in sorted(self.rows.items())],
        }


# -- table cells ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    width: int
    numeric: bool = True


COLUMNS: tuple[Column, ...] = (
    Column("name", "NODE", 14, numeric=False),
    Column("state", "STATE", 11, numeric=False),
    Column("eager", "EAGER", 5),
    Column("lazy", "LAZY", 4),
    Column("peers", "PEERS", 5),
    Column("delivered", "DELIV/S", 8),
    Column("dup", "DUP %", 6),
    Column("grafts", "GRAFT/S", 7),
    Column("graft_fail", "GFAIL/M", 7),
    Column("pending", "PEND", 5),
    Column("cache", "CACHE%", 6),
    Column("score", "SCORE", 5),
    Column("health", "HEALTH", 9, numeric=False),
    Column("eager_hist", "EAGER~", 12, numeric=False),
    Column("lazy_hist", "LAZY~", 12, numeric=False),
    Column("graft_hist", "GRAFT/S~", 12, numeric=False),
)
COLUMN_KEYS = tuple(c.key for c in COLUMNS)


@dataclass(frozen=True, slots=True)
class Cell:
    """One table cell: its text and its level (the app picks the colour)."""

    text: str
    level: Level = Level.OK
    dim: bool = False  # a last-known value of a node that did not answer this time


def fmt(value: float | None, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def spark(values: Iterable[float], width: int = 12) -> str:
    """A text sparkline of the last ``width`` values, scaled from 0 to their maximum."""
    tail = list(values)[-width:]
    if not tail:
        return ""
    top = max(tail)
    if top <= 0:
        return BLOCKS[0] * len(tail)
    last = len(BLOCKS) - 1
    return "".join(BLOCKS[min(last, max(0, round(v / top * last)))] for v in tail)


def cells(row: NodeRow) -> dict[str, Cell]:
    """The row's cells by column key, each with the level that colours it.

    Levels are :func:`plumctl.scoring.classify_rates`' (the monitoring guide's alert thresholds);
    a row whose node did not answer shows its last known numbers, dimmed and uncoloured.
    """
    r = row.rates
    lv = row.levels
    dim = not row.live

    def num(value: float | None, spec: str, level_key: str | None = None) -> Cell:
        level = lv.get(level_key, Level.OK) if level_key and not dim else Level.OK
        if value is None:
            level = Level.UNKNOWN
        return Cell(fmt(value, spec), level, dim)

    cache = None if r is None or r.cache_utilisation is None else 100.0 * r.cache_utilisation
    score = row.score.value if row.score and row.current else None
    status = row.node_health().status
    return {
        # a node running unauthenticated gossip on the network is marked, in red
        "name": Cell(row.name + " !", Level.CRITICAL) if row.insecure else Cell(row.name),
        "state": Cell(row.state, STATE_LEVEL.get(row.state, Level.UNKNOWN)),
        "eager": num(r.eager_peers if r else None, ".0f", "eager_peers"),
        "lazy": num(r.lazy_peers if r else None, ".0f"),
        "peers": num(r.total_peers if r else None, ".0f", "total_peers"),
        "delivered": num(r.delivered_per_s if r else None, ".1f"),
        "dup": num(r.duplicate_pct if r else None, ".1f", "duplicate_pct"),
        "grafts": num(r.graft_sent_per_s if r else None, ".2f"),
        "graft_fail": num(r.graft_failed_per_min if r else None, ".1f", "graft_failed_per_min"),
        "pending": num(r.pending_grafts if r else None, ".0f", "pending_grafts"),
        "cache": num(cache, ".0f", "cache_utilisation"),
        "score": num(score, ".2f"),
        # what the member is now (Failed once dead), never a crashed node's last report
        "health": Cell(status, status_level(status), dim and row.current),
        "eager_hist": Cell(spark(row.eager_hist), Level.OK, dim),
        "lazy_hist": Cell(spark(row.lazy_hist), Level.OK, dim),
        "graft_hist": Cell(spark(row.graft_hist), Level.OK, dim),
    }


# -- sorting and filtering -------------------------------------------------------------


def _severity(level: Level) -> int:
    return -_LEVEL_RANK[level]


def _missing_last(value: float | None, descending: bool = False) -> tuple[int, float]:
    if value is None or math.isnan(value):
        return (1, 0.0)
    return (0, -value if descending else value)


def _rate(row: NodeRow, attr: str) -> float | None:
    return getattr(row.rates, attr) if row.rates else None


#: ``s`` cycles through these: (label, key of a row; ties are broken by name).
SORTS: tuple[tuple[str, Callable[[NodeRow], Any]], ...] = (
    ("node", lambda r: ()),
    ("state", lambda r: STATE_ORDER.index(r.state) if r.state in STATE_ORDER else 99),
    ("health", lambda r: _severity(status_level(r.node_health().status))),
    ("eager", lambda r: _missing_last(_rate(r, "eager_peers"))),
    ("graft fail/min", lambda r: _missing_last(_rate(r, "graft_failed_per_min"), True)),
    ("dup %", lambda r: _missing_last(_rate(r, "duplicate_pct"), True)),
    ("delivered/s", lambda r: _missing_last(_rate(r, "delivered_per_s"), True)),
    ("score", lambda r: _missing_last(r.score.value if r.score else None)),
)


def sort_key(sort: int, row: NodeRow) -> tuple[Any, str]:
    _label, key = SORTS[sort % len(SORTS)]
    return (key(row), row.name)


def name_filter(pattern: str) -> Callable[[str], bool]:
    """A name matcher: a case-insensitive regex search, or a substring if not a regex."""
    if not pattern:
        return lambda name: True
    try:
        rx = re.compile(pattern, re.IGNORECASE)
    except re.error:
        needle = pattern.lower()
        return lambda name: needle in name.lower()
    return lambda name: rx.search(name) is not None
