"""The key hints at the bottom of ``top``'s screens: one widget, one line of text.

Textual's ``Footer`` holds a widget per key and rebuilds them all (CSS, layout, render)
whenever the bindings change, which they do as focus settles when the app opens: that
cost 150-180 ms of the time to first data on 32 nodes (``bench/tui.py``). This bar shows
the same keys (those the screen's active bindings show, dimmed when disabled) as one
``Text``, re-rendered in place; a click on a key presses it, as on the Footer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from rich.cells import cell_len
from rich.text import Text
from textual import events
from textual.screen import Screen
from textual.widgets import Static

__all__ = ["KeyBar", "KeySpan", "render_keys"]


class KeySpan(NamedTuple):
    """Where one key sits on the bar (terminal cells), for clicks."""

    start: int
    end: int
    key: str
    enabled: bool


KEY_STYLE = "bold"
DISABLED_STYLE = "dim"


def render_keys(
    active: Mapping[str, Any], key_display: Callable[[Any], str]
) -> tuple[Text, list[KeySpan]]:
    """The bar's text and key positions from ``Screen.active_bindings``.

    Shown bindings only, first binding of an action only (as the Footer), in binding
    order: `` q Quit  ? Help ...``.
    """
    text = Text(no_wrap=True, overflow="crop")
    spans: list[KeySpan] = []
    seen: set[str] = set()
    for key, active_binding in active.items():
        binding = active_binding.binding
        if not binding.show or binding.action in seen:
            continue
        seen.add(binding.action)
        enabled = bool(active_binding.enabled)
        start = text.cell_len
        shown_key = f" {key_display(binding)} "
        text.append(shown_key, style=KEY_STYLE if enabled else DISABLED_STYLE)
        text.append(f"{binding.description} ", style="" if enabled else DISABLED_STYLE)
        end = start + cell_len(shown_key + binding.description)
        spans.append(KeySpan(start, end, key, enabled))
    return text, spans


class KeyBar(Static):
    """The keys of the screen it is on; follows their changes (focus, ``check_action``)."""

    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        color: $footer-foreground;
        background: $footer-background;
    }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self.spans: list[KeySpan] = []

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self._bindings_changed(self.screen)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen: Screen[Any]) -> None:
        if not self.is_attached or screen is not self.screen:
            return
        text, self.spans = render_keys(screen.active_bindings, self.app.get_key_display)
        self.update(text)

    def on_click(self, event: events.Click) -> None:
        for span in self.spans:
            if span.start <= event.x < span.end:
                if span.enabled:
                    self.app.simulate_key(span.key)
                else:
                    self.app.bell()
                return
