"""``plumctl top``: the Textual dashboard over a :class:`~plumctl.tui.source.ClusterSource`.

Polling is one worker per poll; the next poll is scheduled (``set_timer``) only when the
previous one has finished, so a slow cluster can never pile polls up, and nothing that
waits on the network runs in a message handler, so the screen never freezes. The table
(:class:`~plumctl.tui.rowtable.RowTable`) is updated in place: rows are keyed by node
name, a row whose cells did not change keeps its line, only changed lines are redrawn,
and sorting reorders rows without laying them out again.

Unhandled errors never reach the terminal as a Textual traceback (which shows locals):
:meth:`TopApp._handle_exception` records the error and exits with code 1, and the
command writes a redacted crash report (:mod:`plumctl.tui.crash`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from rich.cells import cell_len, set_cell_size
from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import DataTable, Digits, Input, Sparkline, Static
from textual.worker import Worker, WorkerState

from plumctl.client import ClientError
from plumctl.output import plural
from plumctl.scoring import SCORE_EAGER_TARGET, Level
from plumctl.tui.keybar import KeyBar
from plumctl.tui.model import (
    COLUMNS,
    SORTS,
    Cell,
    ClusterModel,
    NodeRow,
    cells,
    fmt,
    name_filter,
    sort_key,
    status_level,
)
from plumctl.tui.rowtable import RowTable
from plumctl.tui.source import ClusterSnapshot, ClusterSource, NodeDetail
from plumtree.core.health import SEED_THRESHOLDS

W = TypeVar("W", bound=Widget)

#: ``+`` and ``-`` step through these refresh intervals (seconds).
INTERVALS = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 30.0, 60.0)

#: Cell styles by level: the guide's warning and critical thresholds, one colour each.
LEVEL_STYLE: Mapping[Level, str] = {
    Level.OK: "",
    Level.WARNING: "bold black on yellow",
    Level.CRITICAL: "bold white on red",
    Level.UNKNOWN: "dim",
}
#: OK is shown green in the state and health columns (words), plain in numeric ones.
OK_WORD_STYLE = "green"
STALE_STYLE = "dim"
SPARK_STYLE = "cyan"

_WORD_COLUMNS = frozenset({"state", "health"})
_SPARK_COLUMNS = frozenset({"eager_hist", "lazy_hist", "graft_hist"})


def cell_style(column: str, cell: Cell) -> str:
    """The Rich style of a cell: its level's colour; last-known values dimmed."""
    if cell.level is Level.OK and column in _WORD_COLUMNS and not cell.dim:
        return OK_WORD_STYLE
    if column in _SPARK_COLUMNS and not cell.dim:
        return SPARK_STYLE
    style = LEVEL_STYLE[cell.level]
    if cell.dim and cell.level in (Level.OK, Level.UNKNOWN):
        return STALE_STYLE
    return style


#: The node table shows each row as one line of text (see :mod:`plumctl.tui.rowtable`
#: for why): every column in its width, with its level's style, columns :data:`GAP` apart.
GAP = "  "


def _line_spans() -> dict[str, tuple[int, int]]:
    spans: dict[str, tuple[int, int]] = {}
    at = 0
    for column in COLUMNS:
        spans[column.key] = (at, at + column.width)
        at += column.width + len(GAP)
    return spans


#: Where each column sits in a row's line: ``key -> (start, end)`` in terminal cells.
LINE_SPANS = _line_spans()


def fit(text: str, width: int, right: bool) -> str:
    """``text`` in exactly ``width`` terminal cells: cut with an ellipsis, then padded."""
    size = cell_len(text)
    if size > width:
        text = set_cell_size(text, width - 1) + "…"
        size = width
    pad = " " * (width - size)
    return pad + text if right else text + pad


def render_line(row_cells: Mapping[str, Cell]) -> Text:
    """One table row: every column in its width, with its level's style."""
    parts: list[str | tuple[str, str]] = []
    for column in COLUMNS:
        if parts:
            parts.append(GAP)
        cell = row_cells[column.key]
        parts.append((fit(cell.text, column.width, column.numeric), cell_style(column.key, cell)))
    return Text.assemble(*parts, no_wrap=True, overflow="crop")


def table_header() -> Text:
    """The header line: each label placed like its column's values."""
    return Text(GAP.join(fit(c.label, c.width, c.numeric) for c in COLUMNS), no_wrap=True)


def next_interval(current: float, step: int) -> float:
    """The next longer (``step=1``) or shorter (``-1``) interval of :data:`INTERVALS`."""
    if step > 0:
        return next((i for i in INTERVALS if i > current), INTERVALS[-1])
    return next((i for i in reversed(INTERVALS) if i < current), INTERVALS[0])


def spark_data(values: Iterable[float]) -> list[float]:
    """Data for a Sparkline widget: nothing while all zero (it would draw a full bar)."""
    data = list(values)
    return data if any(v > 0 for v in data) else []


class FilterInput(Input):
    """The ``/`` prompt: enter applies, escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.cancel_filter", "Cancel", show=False),
    ]


class NodeTable(RowTable):
    """The node table (``#nodes``); its ``enter`` is shown in the key bar as "Detail"."""


class TopApp(App[None]):
    """The dashboard. ``source`` is any :class:`ClusterSource` (tests inject a fake)."""

    TITLE = "plumctl top"
    CSS = """
    Screen { layout: vertical; }
    #header { height: 5; padding: 0 1; background: $boost; }
    #info { width: 1fr; }
    #info Static { height: 1; }
    #title { text-style: bold; width: 1fr; }
    #members, #status, #reason { width: 1fr; }
    #statusline { height: 1; }
    #stale { width: auto; padding: 0 1; background: $error; color: $text; text-style: bold;
             display: none; }
    #stale.on { display: block; }
    #scorebox { width: 26; align-horizontal: right; }
    #score-label { width: 100%; text-align: right; color: $text-muted; }
    #score { width: auto; }
    #score.ok { color: $success; }
    #score.warning { color: $warning; }
    #score.critical { color: $error; }
    #score.unknown { color: $text-muted; }
    #sparks { height: 2; padding: 0 1; }
    .spark { width: 1fr; padding-right: 2; }
    .spark Sparkline { height: 1; }
    #nodes { height: 1fr; }
    #filter { dock: bottom; display: none; }
    #filter.on { display: block; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit_top", "Quit", id="quit"),
        Binding("question_mark", "help", "Help", key_display="?", id="help"),
        Binding("p", "pause", "Pause", id="pause"),
        Binding("r", "refresh", "Refresh", id="refresh"),
        Binding("plus", "interval(1)", "Slower", key_display="+", id="slower"),
        Binding("minus", "interval(-1)", "Faster", key_display="-", id="faster"),
        Binding("slash", "filter", "Filter", key_display="/", id="filter"),
        Binding("s", "sort", "Sort", id="sort"),
        Binding("enter", "detail", "Detail", show=False),
        Binding("escape", "clear_filter", "Back", id="back"),
    ]
    ENABLE_COMMAND_PALETTE = False

    def __init__(
        self,
        source: ClusterSource,
        *,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        initial: ClusterSnapshot | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.interval = interval
        self.clock = clock
        self.model = ClusterModel()
        self.paused = False
        self.sort_index = 0
        self.filter_text = ""
        self.poll_count = 0  # polls finished (ok or failed), for tests and the header
        self.crash: BaseException | None = None
        self._initial = initial
        self._poll_worker: Worker[None] | None = None
        self._poll_again = False
        self._next_poll: Timer | None = None
        #: row key -> (cells, their line) as displayed: an unchanged row keeps its line
        self._shown: dict[str, tuple[dict[str, Cell], Text]] = {}
        self._statics: dict[str, str | Text] = {}  # selector -> content as displayed
        self._widgets: dict[str, Widget] = {}
        self._main: Screen[Any] | None = None  # the dashboard screen, set on mount

    # -- layout -------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="header"):
            with Vertical(id="info"):
                yield Static("plumctl top", id="title")
                yield Static("", id="members")
                with Horizontal(id="statusline"):
                    yield Static("", id="stale")
                    yield Static("", id="status")
                yield Static("", id="reason")
            with Vertical(id="scorebox"):
                yield Static("cluster health score", id="score-label")
                yield Digits("--", id="score", classes="unknown")
        with Horizontal(id="sparks"):
            with Vertical(classes="spark"):
                yield Static("cluster delivered/s", id="delivered-label")
                yield Sparkline([], id="delivered")
            with Vertical(classes="spark"):
                yield Static("cluster duplicate %", id="duplicates-label")
                yield Sparkline([], id="duplicates")
        yield NodeTable(id="nodes")
        yield FilterInput(
            placeholder="filter nodes: substring or regex, enter to apply", id="filter"
        )
        yield KeyBar()

    def _put(self, selector: str, content: str | Text, *, layout: bool = False) -> None:
        """Update a Static only when its content changed (a refresh costs a render)."""
        if self._statics.get(selector) == content:
            return
        self._statics[selector] = content
        self._widget(selector, Static).update(content, layout=layout)

    def _widget(self, selector: str, kind: type[W]) -> W:
        """A widget of the main screen, looked up once (another screen may be on top:
        ``self.query_one`` would search that one)."""
        found = self._widgets.get(selector)
        if found is None:
            assert self._main is not None, "the app is not mounted"
            found = self._widgets[selector] = self._main.query_one(selector, kind)
        assert isinstance(found, kind)
        return found

    @property
    def table(self) -> NodeTable:
        return self._widget("#nodes", NodeTable)

    async def on_mount(self) -> None:
        self._main = self.screen
        table = self.table
        table.set_header(table_header())
        table.focus()
        await self.source.open()
        if self._initial is not None:
            self.model.update(self._initial)
            self.poll_count += 1
            self._render()
            self._schedule(self.interval)
        else:
            self.start_poll()
        self.set_interval(1.0, self._render_header)

    async def on_unmount(self) -> None:
        await self.source.close()

    # -- polling ------------------------------------------------------------------------

    def start_poll(self) -> None:
        """Poll now, unless a poll is running (then poll again right after it)."""
        if self._next_poll is not None:
            self._next_poll.stop()
            self._next_poll = None
        worker = self._poll_worker
        if worker is not None and worker.state in (WorkerState.PENDING, WorkerState.RUNNING):
            self._poll_again = True
            return
        self._poll_worker = self.run_worker(self.poll_once(), name="poll", group="poll")

    async def poll_once(self) -> None:
        """One poll folded into the model and shown. Tests may await it directly."""
        try:
            snap = await self.source.poll()
        except ClientError as exc:
            self.model.fail(self.clock(), exc.message)
        else:
            self.model.update(snap)
            for name in self.model.joined:
                self.notify(f"{name} joined", title="member")
            for name in self.model.failed:
                self.notify(f"{name} failed", title="member", severity="warning")
        self.poll_count += 1
        self._render()
        if isinstance(self.screen, DetailScreen):
            self.screen.render_row()

    def _schedule(self, delay: float) -> None:
        if self._next_poll is not None:
            self._next_poll.stop()
        self._next_poll = self.set_timer(delay, self.start_poll, name="next-poll")

    @on(Worker.StateChanged)
    def _poll_finished(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._poll_worker or event.state in (
            WorkerState.PENDING,
            WorkerState.RUNNING,
        ):
            return
        if self._poll_again:
            self._poll_again = False
            self.start_poll()
        elif not self.paused:
            self._schedule(self.interval)

    # -- rendering ----------------------------------------------------------------------

    def _render(self) -> None:
        self._render_table()
        self._render_header()
        self._render_sparks()

    def _render_table(self) -> None:
        match = name_filter(self.filter_text)
        rows = self.model.rows
        wanted = [row for row in rows.values() if match(row.name)]
        index = self.sort_index
        wanted.sort(key=lambda row: sort_key(index, row))
        shown: dict[str, tuple[dict[str, Cell], Text]] = {}
        for row in wanted:
            new = cells(row)
            old = self._shown.get(row.name)
            shown[row.name] = old if old is not None and old[0] == new else (new, render_line(new))
        self._shown = shown
        self.table.set_rows([(name, line) for name, (_, line) in shown.items()])

    def _render_header(self) -> None:
        model = self.model
        label = model.label or "(no cluster label)"
        via = model.via or self.source.describe
        self._put("#title", f"plumctl top · cluster {label} · via {via}")
        counts = model.counts()
        members = Text.assemble(
            ("members ", "bold"),
            (f"{counts['alive']} alive", "green"),
            " · ",
            (f"{counts['suspect']} suspect", "yellow" if counts["suspect"] else ""),
            " · ",
            (f"{counts['dead']} dead", "bold red" if counts["dead"] else ""),
            " · ",
            f"{counts['left']} left",
            "   ",
            ("delivered ", "bold"),
            f"{fmt(model.delivered_per_s)}/s",
            " · ",
            ("dup ", "bold"),
            f"{fmt(model.duplicate_pct)} %",
        )
        self._put("#members", members)
        stale = model.stale_for(self.clock())
        self._widget("#stale", Static).set_class(stale is not None, "on")
        self._put("#stale", f"stale {stale:.0f}s" if stale is not None else "", layout=True)
        parts = [f"every {self.interval:g}s", f"sort: {SORTS[self.sort_index][0]}"]
        if self.filter_text:
            parts.append(f"filter: {self.filter_text}")
        if self.paused:
            parts.append("PAUSED (p resumes)")
        if model.error:
            parts.append(model.error)
        self._put("#status", Text(" · ".join(parts), no_wrap=True))
        # the verdict's reasons (a failed member first), then what lowered the score
        judged = model.verdict()
        reasons = judged.reasons if judged is not None else list(model.cluster.reasons)
        reason = reasons[0] if reasons else ""
        if len(reasons) > 1:
            reason += f" (+{len(reasons) - 1} more, ? explains)"
        self._put("#reason", Text(reason, style="dim", no_wrap=True))
        self._render_score()

    def _render_score(self) -> None:
        digits = self._widget("#score", Digits)
        value = self.model.cluster.value
        shown = "--" if value is None else f"{value:.2f}"
        if digits.value != shown:
            digits.update(shown)
        level = status_level(self.model.status())
        for name in ("ok", "warning", "critical", "unknown"):
            digits.set_class(name == level.value, name)

    def _render_sparks(self) -> None:
        model = self.model
        for selector, hist in (
            ("#delivered", model.delivered_hist),
            ("#duplicates", model.duplicate_hist),
        ):
            spark = self._widget(selector, Sparkline)
            data = spark_data(hist)
            if list(spark.data or ()) != data:
                spark.data = data
        self._put("#delivered-label", f"cluster delivered/s {fmt(model.delivered_per_s)}")
        self._put("#duplicates-label", f"cluster duplicate % {fmt(model.duplicate_pct)}")

    # -- actions ------------------------------------------------------------------------

    def selected_node(self) -> str | None:
        return self.table.cursor_key

    #: Actions on the node table: only offered (and shown in the footer) on the dashboard.
    TABLE_ACTIONS = frozenset({"filter", "sort", "detail", "clear_filter"})

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.TABLE_ACTIONS and self._main is not None:
            return self.screen is self._main
        return True

    def action_quit_top(self) -> None:
        self.exit(return_code=0)

    def action_pause(self) -> None:
        self.paused = not self.paused
        if self.paused:
            if self._next_poll is not None:
                self._next_poll.stop()
                self._next_poll = None
        else:
            self.start_poll()
        self._render_header()

    def action_refresh(self) -> None:
        self.start_poll()

    def action_interval(self, step: int) -> None:
        self.interval = next_interval(self.interval, step)
        if self._next_poll is not None:
            self._schedule(self.interval)
        self._render_header()

    def action_sort(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(SORTS)
        self._render_table()
        self._render_header()

    def action_filter(self) -> None:
        box = self._widget("#filter", FilterInput)
        box.value = self.filter_text
        box.add_class("on")
        box.focus()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self.filter_text = event.value.strip()
        self._close_filter()
        self._render_table()
        self._render_header()

    def action_cancel_filter(self) -> None:
        self._close_filter()

    def action_clear_filter(self) -> None:
        if self.filter_text:
            self.filter_text = ""
            self._render_table()
            self._render_header()

    def _close_filter(self) -> None:
        self._widget("#filter", FilterInput).remove_class("on")
        self.table.focus()

    def action_detail(self) -> None:
        name = self.selected_node()
        if name is not None:
            self.push_screen(DetailScreen(name))

    @on(RowTable.Selected, "#nodes")
    def _row_selected(self, event: RowTable.Selected) -> None:
        self.push_screen(DetailScreen(event.key))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    # -- crashes ------------------------------------------------------------------------

    def _handle_exception(self, error: Exception) -> None:
        """Textual's funnel for every unhandled error (handlers, workers, rendering).

        The stock one queues a traceback *with locals* for the terminal; this one keeps
        the error for the crash report and exits with code 1, printing nothing.
        """
        if self.crash is None:
            self.crash = error
        self._return_code = 1
        self._close_messages_no_wait()

    def crash_context(self) -> dict[str, Any]:
        """Facts for a crash report (no secrets: the token is never part of them)."""
        return {
            "source": type(self.source).__name__,
            "via": self.model.via or self.source.describe,
            "interval_s": self.interval,
            "polls": self.poll_count,
            "nodes": len(self.model.rows),
            "paused": self.paused,
            "sort": SORTS[self.sort_index][0],
            "screen": type(self.screen).__name__ if self.is_running else "-",
        }


# -- detail --------------------------------------------------------------------------------


class DetailScreen(Screen[None]):
    """One node: sparklines, score and reasons, health report, peers, recent events."""

    CSS = """
    DetailScreen { layout: vertical; }
    #d-title { height: 1; padding: 0 1; background: $boost; text-style: bold; }
    #d-body { height: 1fr; padding: 0 1; }
    #d-sparks { height: 2; }
    #d-sparks Vertical { width: 1fr; padding-right: 2; }
    #d-sparks Sparkline { height: 1; }
    .d-section { margin-top: 1; text-style: bold; }
    #d-peers { height: auto; max-height: 16; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="back"),
        Binding("r", "reload_all", "Refresh", id="detail-refresh"),
        Binding("q", "app.quit_top", "Quit", id="detail-quit"),
    ]

    def __init__(self, name: str) -> None:
        super().__init__()
        self.node_name = name
        self.detail: NodeDetail | None = None
        self.loads = 0

    def compose(self) -> ComposeResult:
        yield Static(f"node {self.node_name}", id="d-title")
        with VerticalScroll(id="d-body"):
            with Horizontal(id="d-sparks"):
                for key, label in (("eager", "eager peers"), ("lazy", "lazy peers")):
                    with Vertical():
                        yield Static(label, id=f"d-{key}-label")
                        yield Sparkline([], id=f"d-{key}")
                with Vertical():
                    yield Static("Grafts sent/s", id="d-graft-label")
                    yield Sparkline([], id="d-graft")
            yield Static("", id="d-score")
            yield Static("health", classes="d-section")
            yield Static("loading…", id="d-health")
            yield Static("peers", classes="d-section")
            yield DataTable(id="d-peers", cursor_type="row", show_cursor=False)
            yield Static("recent events (newest first)", classes="d-section")
            yield Static("loading…", id="d-events")
            yield Static("", id="d-errors")
        yield KeyBar()

    def on_mount(self) -> None:
        peers = self.query_one("#d-peers", DataTable)
        for key, label in (
            ("peer", "PEER"),
            ("state", "STATE"),
            ("rtt", "RTT MS"),
            ("since", "SINCE"),
            ("gossip", "GOSSIP OUT/IN"),
            ("ihave", "IHAVE OUT/IN"),
            ("graft", "GRAFT OUT/IN"),
            ("prune", "PRUNE OUT/IN"),
        ):
            peers.add_column(label, key=key)
        self.render_row()
        self.action_reload()

    @property
    def top(self) -> TopApp:
        app = self.app
        assert isinstance(app, TopApp)
        return app

    def action_back(self) -> None:
        self.dismiss()

    def action_reload_all(self) -> None:
        self.action_reload()
        self.top.start_poll()

    def action_reload(self) -> None:
        """Fetch the node's detail again (and poll the cluster: the sparklines move too)."""
        self.run_worker(self._load(), group="detail", exclusive=True)

    async def _load(self) -> None:
        detail = await self.top.source.detail(self.node_name)
        self.detail = detail
        self.loads += 1
        self._render_detail(detail)
        self.render_row()

    def render_row(self) -> None:
        row = self.top.model.rows.get(self.node_name)
        if row is None:
            return
        self.query_one("#d-title", Static).update(
            Text.assemble(
                (f"node {row.name}", "bold"),
                "  ",
                (row.state, cell_style("state", cells(row)["state"])),
                f"  {row.admin_url or ''}",
                "   esc: back",
            )
        )
        for key, hist in (("eager", row.eager_hist), ("lazy", row.lazy_hist)):
            self.query_one(f"#d-{key}", Sparkline).data = spark_data(hist)
            last = f"{hist[-1]:g}" if hist else "n/a"
            self.query_one(f"#d-{key}-label", Static).update(
                f"{key} peers {last} (last {plural(len(hist), 'poll')})"
            )
        self.query_one("#d-graft", Sparkline).data = spark_data(row.graft_hist)
        last = f"{row.graft_hist[-1]:.2f}" if row.graft_hist else "n/a"
        self.query_one("#d-graft-label", Static).update(f"Grafts sent/s {last}")
        self.query_one("#d-score", Static).update(score_text(row))

    def _render_detail(self, detail: NodeDetail) -> None:
        self.query_one("#d-health", Static).update(health_text(detail.health))
        table = self.query_one("#d-peers", DataTable)
        table.clear()
        for p in sorted(detail.peers or (), key=_peer_order):
            peer = str(p.get("peer", "?"))
            table.add_row(
                peer,
                Text(str(p.get("state", "?")), style="green" if p.get("state") == "eager" else ""),
                fmt(p.get("rtt_ms"), ".1f"),
                _ago(p.get("since")),
                _pair(p, "gossip_sent", "gossip_received"),
                _pair(p, "ihave_sent", "ihave_received"),
                _pair(p, "grafts_sent", "grafts_received"),
                _pair(p, "prunes_sent", "prunes_received"),
                key=peer,
            )
        self.query_one("#d-events", Static).update(events_text(detail.events))
        self.query_one("#d-errors", Static).update(
            Text("\n".join(detail.errors), style="bold red") if detail.errors else ""
        )


def _peer_order(p: Mapping[str, Any]) -> tuple[bool, str]:
    return (p.get("state") != "eager", str(p.get("peer", "")))


def _pair(p: Mapping[str, Any], out: str, into: str) -> str:
    return f"{p.get(out, '-')}/{p.get(into, '-')}"


def _ago(at: Any) -> str:
    if not isinstance(at, int | float):
        return "n/a"
    seconds = max(0.0, time.time() - float(at))
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def score_text(row: NodeRow) -> Text:
    """The node's score and the reasons that lowered it (the monitoring guide's formula)."""
    if row.score is None:
        return Text("score n/a (no scrape yet)", style="dim")
    value = "n/a" if row.score.value is None else f"{row.score.value:.2f}"
    text = Text.assemble(("health score ", "bold"), value)
    for reason in row.score.reasons or ("no reason to lower it",):
        text.append(f"\n  · {reason}", style="dim")
    return text


def health_text(health: Mapping[str, Any] | None) -> Text:
    """The node's /v1/health report: status, message, one line per component."""
    if not health:
        return Text("no health report", style="dim")
    status = str(health.get("status", "?"))
    level = status_level(status)
    text = Text.assemble(
        (status, LEVEL_STYLE[level] or OK_WORD_STYLE), "  ", str(health.get("message", ""))
    )
    components = health.get("components")
    if isinstance(components, Mapping):
        for name, comp in sorted(components.items()):
            if not isinstance(comp, Mapping):
                continue
            c_status = str(comp.get("status", "?"))
            c_level = status_level(c_status)
            text.append(f"\n  {name:<15}")
            text.append(f"{c_status:<10}", style=LEVEL_STYLE[c_level] or OK_WORD_STYLE)
            text.append(f" {comp.get('message', '')}")
    return text


def events_text(events: Sequence[Mapping[str, Any]] | None) -> Text:
    if events is None:
        return Text("events unavailable", style="dim")
    if not events:
        return Text("no events yet", style="dim")
    styles = {"warn": "yellow", "error": "bold red", "debug": "dim"}
    text = Text()
    for i, event in enumerate(reversed(events)):
        at = event.get("at")
        stamp = (
            time.strftime("%H:%M:%S", time.localtime(at)) if isinstance(at, int | float) else "?"
        )
        level = str(event.get("level", "info"))
        rest = " ".join(
            f"{k}={v}"
            for k, v in sorted(event.items())
            if k not in ("at", "level", "kind", "seq", "meta")
        )
        if i:
            text.append("\n")
        text.append(f"{stamp} {level:<5} ", style="dim")
        text.append(str(event.get("kind", "?")), style=styles.get(level, "bold"))
        text.append(f" {rest}")
    return text


# -- help ----------------------------------------------------------------------------------


class HelpScreen(ModalScreen[None]):
    """Keys, columns, thresholds, and why the score is what it is."""

    CSS = """
    HelpScreen { align: center middle; }
    #help { width: 100; height: auto; max-height: 90%; border: round $primary;
            background: $surface; padding: 1 2; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Back", id="help-back"),
        Binding("question_mark", "close", "Back", show=False),
        Binding("q", "close", "Back", show=False),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(help_text(self.app.model if isinstance(self.app, TopApp) else None))

    def action_close(self) -> None:
        self.dismiss()


def help_text(model: ClusterModel | None) -> Text:
    t = SEED_THRESHOLDS
    text = Text()
    text.append("Keys\n", style="bold")
    for keys, what in (
        ("q", "quit"),
        ("?", "this help (esc closes)"),
        ("p", "pause / resume polling"),
        ("r", "refresh now"),
        ("+ / -", "longer / shorter refresh interval"),
        ("/", "filter nodes by name (substring or regex; enter applies, empty clears)"),
        ("s", "cycle the sort: " + ", ".join(label for label, _ in SORTS)),
        ("↑ ↓", "select a node (page up, page down, home, end: by pages, to the ends)"),
        ("← →", "scroll a table wider than the terminal"),
        ("enter", "detail of the selected node: peers, recent events, health report"),
        ("esc", "back (or clear the filter)"),
    ):
        text.append(f"  {keys:<7}", style="bold cyan")
        text.append(f"{what}\n")
    text.append(
        "\nColours (the alert thresholds of the monitoring guide, docs/monitoring.md)\n",
        style="bold",
    )
    text.append("  warning ", style=LEVEL_STYLE[Level.WARNING])
    text.append(" ")
    text.append("critical", style=LEVEL_STYLE[Level.CRITICAL])
    text.append(
        f"\n  EAGER < {t.eager_critical_below} critical; < {t.eager_warning_below} warning only"
        " when the node has no lazy peer either\n"
        "  (a tree leaf has one eager peer; its lazy peers are its redundancy)\n"
        f"  GFAIL/M > {t.graft_failed_per_min_warning:g} warning, "
        f"> {t.graft_failed_per_min_critical:g} critical   "
        f"DUP % > {100 * t.duplicate_ratio_warning:g} warning, "
        f"> {100 * t.duplicate_ratio_critical:g} critical "
        f"(from {t.duplicate_ratio_min_delivered} deliveries)\n"
        f"  CACHE% > {100 * t.cache_ratio_warning:g} warning, "
        f"> {100 * t.cache_ratio_critical:g} critical   "
        f"PEND > {t.pending_grafts_warning} warning   "
        f"PEERS < {t.total_peers_warning_below} warning\n"
        "  HEALTH is each node's own /v1/health verdict; dimmed numbers are the last known\n"
        "  values of a node that did not answer.\n"
        "  A red NODE ending in ! runs unauthenticated gossip on the network\n"
        "  (--insecure-gossip): anyone who reaches its port can forge members and messages.\n"
    )
    text.append("\nThe health score\n", style="bold")
    text.append(
        "  The guide's Cluster Health Score, per node over the last poll interval:\n"
        f"    min(1, eager_peers/{SCORE_EAGER_TARGET:g} x "
        "(1 - graft_failed_rate/(graft_sent_rate + 0.001)))\n"
        "  and the cluster's is the minimum over nodes. A healthy tree leaf has one eager\n"
        f"  peer, so it scores 1/{SCORE_EAGER_TARGET:g} = 0.33: a low score alone is not an"
        " alarm.\n"
        "  The big number is coloured by the cluster's status instead, as plumctl health\n"
        "  --all gives it: a member that failed makes it Degraded whatever the others say.\n"
    )
    if model is not None:
        value = model.cluster.value
        text.append(
            f"\n  Now: {'n/a' if value is None else f'{value:.2f}'}"
            f" (cluster status: {model.status() or 'n/a'})\n",
            style="bold",
        )
        judged = model.verdict()
        reasons = judged.reasons if judged is not None else list(model.cluster.reasons)
        for reason in reasons or ("nothing lowers it",):
            text.append(f"    · {reason}\n")
    return text
