"""A scripted, deterministic :class:`ClusterSource` for the TUI tests (no network, no clock)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.text import Text

from plumctl.client import Unreachable
from plumctl.promtext import Scrape
from plumctl.tui.source import ClusterSnapshot, Member, NodeDetail, NodeSample

NO: frozenset[tuple[str, str]] = frozenset()

COUNTERS = (
    "plumtree_messages_delivered_total",
    "plumtree_messages_duplicate_total",
    "plumtree_messages_broadcast_total",
    "plumtree_graft_sent_total",
    "plumtree_graft_failed_total",
    "plumtree_graft_success_total",
)


@dataclass
class FakeNode:
    name: str
    state: str = "alive"
    eager: float = 2
    lazy: float = 3
    pending: float = 0
    cache: float = 10
    capacity: float = 1000
    health: str = "Healthy"
    answers: bool = True  # False: the admin API does not answer (an error sample)
    counters: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0.0))
    peers: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def scrape(self, at: float) -> Scrape:
        values = {
            **self.counters,
            "plumtree_eager_peers": self.eager,
            "plumtree_lazy_peers": self.lazy,
            "plumtree_total_peers": self.eager + self.lazy,
            "plumtree_pending_grafts": self.pending,
            "plumtree_cache_size": self.cache,
            "plumtree_cache_capacity": self.capacity,
        }
        return Scrape.from_samples({(k, NO): float(v) for k, v in values.items()}, at=at)

    def health_body(self) -> dict[str, Any]:
        return {
            "node": self.name,
            "status": self.health,
            "message": "all checks passed" if self.health == "Healthy" else "something is off",
            "components": {"connectivity": {"status": self.health, "message": "fake"}},
        }


class FakeSource:
    """Each poll advances a fake clock by ``step`` seconds and reports ``nodes`` as they are.

    Tests mutate ``nodes`` (or set ``fail``) between polls; ``polls`` counts calls.
    """

    def __init__(self, names: list[str], step: float = 10.0) -> None:
        self.nodes: dict[str, FakeNode] = {n: FakeNode(n) for n in names}
        self.now = 1000.0
        self.step = step
        self.fail: str | None = None
        self.crash: BaseException | None = None
        self.polls = 0
        self.details: list[str] = []
        self.opened = 0
        self.closed = 0

    @property
    def describe(self) -> str:
        return "http://fake:7947"

    def clock(self) -> float:
        return self.now

    def bump(self, name: str, metric: str, by: float) -> None:
        self.nodes[name].counters[metric] += by

    async def open(self) -> None:
        self.opened += 1

    async def close(self) -> None:
        self.closed += 1

    async def poll(self) -> ClusterSnapshot:
        self.polls += 1
        self.now += self.step
        if self.crash is not None:
            raise self.crash
        if self.fail is not None:
            raise Unreachable(self.fail)
        members = tuple(
            Member(n.name, n.state, f"http://{n.name}:7947") for n in self.nodes.values()
        )
        samples = {}
        for n in self.nodes.values():
            if n.state not in ("alive", "suspect"):
                continue
            url = f"http://{n.name}:7947"
            if n.answers:
                samples[n.name] = NodeSample(
                    n.name, url, scrape=n.scrape(self.now), health=n.health_body()
                )
            else:
                samples[n.name] = NodeSample(
                    n.name, url, error=f"cannot reach node at {url}: connection refused"
                )
        return ClusterSnapshot(
            at=self.now, via="http://fake:7947", members=members, nodes=samples, label="test"
        )

    async def detail(self, name: str) -> NodeDetail:
        self.details.append(name)
        n = self.nodes[name]
        return NodeDetail(
            name, f"http://{name}:7947", peers=n.peers, events=n.events, health=n.health_body()
        )


def shown(app: Any, row: str, column: str) -> Text:
    """What the node table shows for ``column`` of ``row``: its text (padding stripped)
    and the one style it is drawn in ("" when plain). Fails if a column's cells were
    drawn in more than one style, or if the text spills out of its column."""
    from plumctl.tui.app import GAP, LINE_SPANS

    line = app.table.line(row)
    assert isinstance(line, Text)
    start, end = LINE_SPANS[column]
    if end < len(line.plain):
        assert line.plain[end : end + len(GAP)] == GAP, f"{column} spills over its width"
    piece = line[start:end]
    styles = {str(span.style) for span in piece.spans}
    assert len(styles) <= 1, f"{column} drawn in several styles: {styles}"
    if styles:
        assert all(s.start == 0 and s.end == len(piece.plain) for s in piece.spans)
    return Text(piece.plain.strip(), style=styles.pop() if styles else "")
