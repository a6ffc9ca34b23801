"""``plumctl top`` headless: Pilot drives the app over a scripted :class:`FakeSource`.

The interval is an hour unless a test is about timing, so every poll is one the test
triggers (``r``) or awaits; nothing depends on the wall clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rich.text import Text
from textual.binding import Binding
from textual.pilot import Pilot
from textual.widgets import Digits, Static

from plumctl.scoring import Level
from plumctl.tui.app import (
    LEVEL_STYLE,
    LINE_SPANS,
    OK_WORD_STYLE,
    STALE_STYLE,
    DetailScreen,
    HelpScreen,
    TopApp,
)
from plumctl.tui.model import COLUMNS, SORTS
from tests.tui.fakes import FakeSource, shown

SIZE = (160, 50)
HOUR = 3600.0
NAMES = ["n1", "n2", "n3", "n4"]


def make(names: list[str] | None = None, step: float = 10.0, interval: float = HOUR) -> TopApp:
    source = FakeSource(list(names or NAMES), step=step)
    return TopApp(source, interval=interval, clock=source.clock)


def fake(app: TopApp) -> FakeSource:
    assert isinstance(app.source, FakeSource)
    return app.source


async def until(pilot: Pilot[None], cond: Callable[[], bool], what: str = "condition") -> None:
    for _ in range(300):
        if cond():
            return
        await pilot.pause()
    raise AssertionError(f"timed out waiting for {what}")


async def polled(pilot: Pilot[None], app: TopApp, n: int) -> None:
    await until(pilot, lambda: app.poll_count >= n, f"{n} polls")
    await pilot.pause()


async def refresh(pilot: Pilot[None], app: TopApp) -> None:
    """Press r and wait for that poll to land."""
    want = app.poll_count + 1
    await pilot.press("r")
    await polled(pilot, app, want)


def cell(app: TopApp, row: str, column: str) -> Text:
    return shown(app, row, column)


def order(app: TopApp) -> list[str]:
    return app.table.ordered_keys


def badge(app: TopApp) -> Static:
    return app.query_one("#stale", Static)


def static_text(widget: Static) -> str:
    content = widget.render()
    return content.plain if isinstance(content, Text) else str(content)


async def test_rows_appear_for_every_node() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, app, 1)
        assert sorted(order(app)) == NAMES
        header = app.table.header.plain
        for column in COLUMNS:  # every label, above its column's values
            start, end = LINE_SPANS[column.key]
            assert header[start:end].strip() == column.label
        for name in NAMES:
            assert cell(app, name, "name").plain == name
            assert cell(app, name, "state").plain == "alive"
            assert cell(app, name, "eager").plain == "2"
            assert cell(app, name, "lazy").plain == "3"
            assert cell(app, name, "peers").plain == "5"
            assert cell(app, name, "health").plain == "Healthy"
            assert cell(app, name, "delivered").plain == "n/a"  # one scrape: no rate yet
        assert "4 alive" in static_text(app.query_one("#members", Static))
        assert "cluster test" in static_text(app.query_one("#title", Static))
        await pilot.resize_terminal(80, 24)  # a small terminal still works
        await refresh(pilot, app)
        assert app.table.row_count == 4
    assert app.crash is None
    assert fake(app).opened >= 1 and fake(app).closed >= 1


async def test_values_update_in_place_on_the_next_poll() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, app, 1)
        table = app.table
        for _ in range(13):  # the sparklines fill up: then a quiet row stops changing
            await refresh(pilot, app)
        keys_before = table.ordered_keys
        lines_before = {name: table.line(name) for name in NAMES}
        built_before = table.strips_built
        src = fake(app)
        src.nodes["n2"].eager = 3
        src.bump("n2", "plumtree_messages_delivered_total", 50)  # 50 in 10 s
        src.bump("n2", "plumtree_graft_sent_total", 5)
        await refresh(pilot, app)
        assert cell(app, "n2", "eager").plain == "3"
        assert cell(app, "n2", "delivered").plain == "5.0"
        assert cell(app, "n2", "grafts").plain == "0.50"
        assert cell(app, "n1", "delivered").plain == "0.0"
        assert table.ordered_keys == keys_before  # same rows, same order
        for name in ("n1", "n3", "n4"):  # unchanged rows keep their line and strip
            assert table.line(name) is lines_before[name]
        assert table.line("n2") is not lines_before["n2"]
        assert table.strips_built == built_before + 1  # only n2's row was drawn again
    assert app.crash is None


async def test_threshold_crossings_change_the_cell_style_and_the_score_colour() -> None:
    app = make(step=60.0)  # one poll a minute: failures per poll are failures per minute
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, app, 1)
        digits = app.query_one("#score", Digits)
        assert digits.value == "--"  # the score needs two scrapes
        assert digits.has_class("ok")
        await refresh(pilot, app)
        assert digits.value == "0.67"  # the seed's score: eager 2 / 3, no Graft failures
        src = fake(app)
        src.bump("n1", "plumtree_graft_failed_total", 5)
        await refresh(pilot, app)
        gfail = cell(app, "n1", "graft_fail")
        assert gfail.plain == "5.0" and gfail.style == LEVEL_STYLE[Level.OK]
        # n2..n4: eager 2 of 3, no Graft sent; n1: 5 failures of 0 sent -> clamped to 0
        assert digits.value == "0.00"
        assert digits.has_class("ok")  # coloured by health status, not by the score
        src.bump("n1", "plumtree_graft_failed_total", 6)
        await refresh(pilot, app)
        gfail = cell(app, "n1", "graft_fail")
        assert gfail.plain == "6.0" and gfail.style == LEVEL_STYLE[Level.WARNING]
        src.bump("n1", "plumtree_graft_failed_total", 21)
        await refresh(pilot, app)
        assert cell(app, "n1", "graft_fail").style == LEVEL_STYLE[Level.CRITICAL]

        src.nodes["n2"].eager = 0
        src.nodes["n3"].eager, src.nodes["n3"].lazy = 1, 0  # eager < 2 and no lazy peer
        src.nodes["n4"].eager, src.nodes["n4"].lazy = 1, 2  # a tree leaf: fine
        src.nodes["n4"].pending = 101
        await refresh(pilot, app)
        assert cell(app, "n2", "eager").style == LEVEL_STYLE[Level.CRITICAL]
        assert cell(app, "n3", "eager").style == LEVEL_STYLE[Level.WARNING]
        assert cell(app, "n4", "eager").style == LEVEL_STYLE[Level.OK]
        assert cell(app, "n4", "pending").style == LEVEL_STYLE[Level.WARNING]
        assert cell(app, "n1", "eager").style == LEVEL_STYLE[Level.OK]

        src.nodes["n3"].health = "Degraded"
        await refresh(pilot, app)
        assert digits.has_class("warning") and not digits.has_class("ok")
        assert cell(app, "n3", "health").style == LEVEL_STYLE[Level.WARNING]
        assert cell(app, "n1", "health").style == OK_WORD_STYLE
        src.nodes["n1"].health = "Unhealthy"
        await refresh(pilot, app)
        # one Unhealthy node of four: the cluster is Degraded, as plumctl health --all says
        assert digits.has_class("warning") and not digits.has_class("critical")
        assert cell(app, "n1", "health").style == LEVEL_STYLE[Level.CRITICAL]
        src.nodes["n2"].health = src.nodes["n3"].health = "Unhealthy"
        await refresh(pilot, app)
        assert digits.has_class("critical")  # a majority Unhealthy: Unhealthy
    assert app.crash is None


async def test_sort_cycles_columns_and_keeps_the_selection() -> None:
    app = make(step=60.0)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, app, 1)
        src = fake(app)
        for name, failures in (("n1", 1), ("n2", 30), ("n3", 0), ("n4", 7)):
            src.bump(name, "plumtree_graft_failed_total", failures)
        await refresh(pilot, app)
        assert order(app) == ["n1", "n2", "n3", "n4"]  # by name
        await pilot.press("down")  # select n2
        assert app.selected_node() == "n2"
        labels = [label for label, _ in SORTS]
        target = labels.index("graft fail/min")
        for _ in range(target):
            await pilot.press("s")
        assert SORTS[app.sort_index][0] == "graft fail/min"
        assert "sort: graft fail/min" in static_text(app.query_one("#status", Static))
        assert order(app) == ["n2", "n4", "n1", "n3"]  # most failures first
        assert app.selected_node() == "n2"  # the cursor followed the row
        for _ in range(len(SORTS) - target):
            await pilot.press("s")
        assert app.sort_index == 0 and order(app) == ["n1", "n2", "n3", "n4"]


async def test_filter_by_substring_and_regex() -> None:
    app = make(["db-1", "db-2", "web-1", "web-2"])
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, app, 1)
        await pilot.press("slash", *"WEB", "enter")  # a substring, case-insensitive
        assert sorted(order(app)) == ["web-1", "web-2"]
        assert app.filter_text == "WEB"
        assert app.focused is app.table
        assert "filter: WEB" in static_text(app.query_one("#status", Static))

        await pilot.press("slash", "ctrl+u", *"^db-[2-9]", "enter")  # a regex
        assert order(app) == ["db-2"]
        await refresh(pilot, app)  # a poll keeps the filter
        assert order(app) == ["db-2"]

        await pilot.press("escape")  # on the table, esc clears the filter
        assert app.filter_text == "" and sorted(order(app)) == ["db-1", "db-2", "web-1", "web-2"]

        await pilot.press("slash", *"zz", "escape")  # esc in the prompt cancels
        assert app.filter_text == "" and app.table.row_count == 4


async def test_pause_stops_polling_and_resume_restarts_it() -> None:
    app = make(interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, app, 2)  # the timer runs
        await pilot.press("p")
        assert app.paused
        await until(pilot, lambda: app._poll_worker is None or not app._poll_worker.is_running)
        frozen = fake(app).polls
        for _ in range(3):
            await pilot.pause(0.06)  # longer than the interval, three times
        assert fake(app).polls == frozen
        assert "PAUSED" in static_text(app.query_one("#status", Static))
        await refresh(pilot, app)  # r still polls once while paused
        assert fake(app).polls == frozen + 1
        await pilot.pause(0.1)
        assert fake(app).polls == frozen + 1
        await pilot.press("p")
        assert not app.paused
        await polled(pilot, app, app.poll_count + 2)
        assert fake(app).polls >= frozen + 3


async def test_polls_never_pile_up_behind_a_slow_source() -> None:
    app = make()
    gate = asyncio.Event()
    src = fake(app)
    inner = src.poll
    started = 0

    async def slow_poll() -> object:
        nonlocal started
        started += 1
        await gate.wait()
        return await inner()

    src.poll = slow_poll  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: started == 1, "first poll to start")
        await pilot.press("r", "r", "r", "r")  # impatient operator
        assert started == 1  # nothing started while the first poll hangs
        assert app.table.row_count == 0
        gate.set()
        await polled(pilot, app, 2)  # the first, then exactly one more
        await pilot.pause()
        assert started == 2 and app.poll_count == 2
        assert app.table.row_count == 4


async def test_interval_keys_then_quit_exits_with_code_zero() -> None:
    app = make(interval=2.0)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, app, 1)
        await pilot.press("plus")
        assert app.interval == 3.0
        await pilot.press("minus", "minus", "minus")
        assert app.interval == 0.5
        await pilot.press("minus")
        assert app.interval == 0.5  # the shortest
        assert "every 0.5s" in static_text(app.query_one("#status", Static))
        app.interval = HOUR  # no stray polls in the test
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0
    assert app.crash is None
    assert fake(app).closed >= 1  # the source (its HTTP client) is closed on exit


async def test_the_table_moves_its_cursor_by_keys_and_mouse_and_scrolls_under_its_header() -> None:
    names = [f"n{i:02d}" for i in range(40)]  # more rows than fit: the table scrolls
    app = make(names)
    async with app.run_test(size=(160, 30)) as pilot:
        await polled(pilot, app, 1)
        table = app.table
        assert app.selected_node() == "n00"
        await pilot.press("end")
        assert app.selected_node() == "n39"
        assert table.scroll_offset.y > 0  # the last row was scrolled into view
        assert table.render_line(0).text.strip().startswith("NODE")  # header stays on top
        await pilot.press("home", "down", "down")
        assert app.selected_node() == "n02" and table.scroll_offset.y == 0
        await pilot.press("pagedown")
        assert app.selected_node() == f"n{2 + table.size.height - 1:02d}"
        await pilot.press("home", "right", "right")
        assert table.scroll_offset.x > 0  # wider than 160 columns: it scrolls sideways
        await pilot.press("left", "left")
        assert table.scroll_offset.x == 0
        await pilot.click("#nodes", offset=(5, 4))  # header, then n00, n01, n02: n03
        assert app.selected_node() == "n03" and not isinstance(app.screen, DetailScreen)
        await pilot.click("#nodes", offset=(5, 4))  # a click on the selected row opens it
        await until(pilot, lambda: isinstance(app.screen, DetailScreen))
        assert app.screen.node_name == "n03"  # type: ignore[attr-defined]
    assert app.crash is None


async def test_the_key_bar_shows_the_screen_keys_and_a_click_presses_one() -> None:
    from plumctl.tui.keybar import KeyBar

    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, app, 1)
        bar = app.screen.query_one(KeyBar)
        text = static_text(bar)
        for words in ("⏎ Detail", "q Quit", "? Help", "/ Filter", "s Sort"):
            assert words in text
        help_key = next(span for span in bar.spans if span.key == "question_mark")
        await pilot.click(KeyBar, offset=(help_key.start + 1, 0))
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), "help to close")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DetailScreen))
        detail_keys = static_text(app.screen.query_one(KeyBar))
        assert "/ Filter" not in detail_keys and "s Sort" not in detail_keys  # check_action
    assert app.crash is None


async def test_detail_shows_peers_events_health_and_esc_returns() -> None:
    app = make()
    src = fake(app)
    src.nodes["n3"].peers = [
        {"peer": "n1", "state": "eager", "rtt_ms": 0.4, "since": None, "gossip_sent": 7},
        {"peer": "n4", "state": "lazy", "rtt_ms": None, "since": None},
    ]
    src.nodes["n3"].events = [
        {"kind": "peer_added", "level": "info", "at": 1.0, "seq": 1, "peer": "n1"},
        {"kind": "demoted", "level": "info", "at": 2.0, "seq": 2, "peer": "n4"},
    ]
    src.nodes["n3"].health = "Degraded"
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, app, 1)
        await pilot.press("down", "down")
        assert app.selected_node() == "n3"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DetailScreen))
        screen = app.screen
        assert isinstance(screen, DetailScreen) and screen.node_name == "n3"
        await until(pilot, lambda: screen.loads == 1, "detail to load")
        assert src.details == ["n3"]
        peers = screen.query_one("#d-peers")
        assert [str(k.value) for k in peers.rows] == ["n1", "n4"]  # type: ignore[attr-defined]
        events = static_text(screen.query_one("#d-events", Static))
        assert events.index("demoted") < events.index("peer_added")  # newest first
        health = static_text(screen.query_one("#d-health", Static))
        assert "Degraded" in health and "connectivity" in health
        assert "n3" in static_text(screen.query_one("#d-title", Static))

        await pilot.press("s", "slash")  # table keys do nothing here
        assert app.sort_index == 0 and not app.query_one("#filter").has_class("on")
        footer_keys = {k for k, b in app.screen.active_bindings.items() if b.binding.show}
        assert "slash" not in footer_keys and "s" not in footer_keys

        # r on the detail screen reloads it and polls; the dashboard behind keeps up
        src.nodes["n3"].eager = 7
        want = app.poll_count + 1
        await pilot.press("r")
        await until(pilot, lambda: screen.loads == 2 and app.poll_count >= want, "reload")
        app._render_header()  # the once-a-second tick, while another screen is on top
        assert "eager peers 7" in static_text(screen.query_one("#d-eager-label", Static))

        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, DetailScreen))
        assert app.table.row_count == 4
        assert cell(app, "n3", "eager").plain == "7"
    assert app.crash is None


async def test_help_explains_the_score_and_esc_closes_it() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, app, 1)
        await refresh(pilot, app)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = static_text(app.screen.query_one(Static))
        assert "0.33" in text and "eager peers 2 of 3" in text
        for binding in app.table.BINDINGS:  # every key of the table is explained
            key = binding.key if isinstance(binding, Binding) else binding[0]
            shown = {"up": "↑", "down": "↓", "left": "←", "right": "→"}
            assert shown.get(key, key.replace("page", "page ")) in text, key
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen))


async def test_failures_keep_the_last_rows_and_show_what_is_stale() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, app, 1)
        assert not badge(app).has_class("on")
        src = fake(app)

        # one node stops answering: its row says so and keeps its last values, dimmed
        src.nodes["n2"].answers = False
        await refresh(pilot, app)
        state = cell(app, "n2", "state")
        assert state.plain == "unreachable" and state.style == LEVEL_STYLE[Level.WARNING]
        eager = cell(app, "n2", "eager")
        assert eager.plain == "2" and eager.style == STALE_STYLE
        assert not badge(app).has_class("on")  # the cluster still answers

        # nothing answers: the stale badge counts the seconds since the last good poll
        src.fail = "cannot reach node at http://fake:7947: connection refused"
        await refresh(pilot, app)
        await refresh(pilot, app)
        assert badge(app).has_class("on")
        assert static_text(badge(app)) == "stale 20s"  # two failed polls of 10 s each
        assert "connection refused" in static_text(app.query_one("#status", Static))
        assert sorted(order(app)) == NAMES  # the last rows stay
        assert cell(app, "n1", "eager").plain == "2"
        src.fail = None
        await refresh(pilot, app)
        assert not badge(app).has_class("on")
    assert app.crash is None


async def test_members_that_fail_stay_listed_as_dead_and_members_that_join_appear() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, app, 1)
        src = fake(app)
        src.nodes["n3"].state = "suspect"
        await refresh(pilot, app)
        assert cell(app, "n3", "state").plain == "suspect"
        src.nodes["n3"].state = "dead"
        src.nodes["n9"] = type(src.nodes["n1"])("n9")
        await refresh(pilot, app)
        state = cell(app, "n3", "state")
        assert state.plain == "dead" and state.style == LEVEL_STYLE[Level.CRITICAL]
        assert sorted(order(app)) == [*NAMES, "n9"]
        assert cell(app, "n9", "state").plain == "alive"
        members = static_text(app.query_one("#members", Static))
        assert "4 alive" in members and "1 dead" in members
        del src.nodes["n3"]  # reaped from the member table: still listed
        await refresh(pilot, app)
        assert sorted(order(app)) == [*NAMES, "n9"]
        assert cell(app, "n3", "state").plain == "dead"
    assert app.crash is None


async def test_a_bug_exits_with_code_one_and_no_traceback_on_screen() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, app, 1)
        fake(app).crash = ZeroDivisionError("token=abc123 broke")
        app.start_poll()
        for _ in range(500):  # the app is going down: no Pilot waits from here on
            if app.crash is not None and not app.is_running:
                break
            await asyncio.sleep(0.01)
    assert app.return_code == 1
    assert "ZeroDivisionError" in repr(app.crash) or "ZeroDivisionError" in repr(
        getattr(app.crash, "error", None)
    )
    assert app._exit_renderables == []  # nothing queued for the terminal


async def test_a_new_theme_redraws_every_row_in_its_colours() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, app, 1)
        await pilot.pause()
        table = app.table
        before = table.render_line(1)
        built = table.strips_built
        app.theme = "textual-light" if app.theme != "textual-light" else "textual-dark"
        await pilot.pause()
        await pilot.pause()
        assert table.strips_built >= built + len(NAMES)  # every visible row again
        after = table.render_line(1)
        assert after.text == before.text  # same row ...
        assert [s.style for s in after] != [s.style for s in before]  # ... new colours
    assert app.crash is None
