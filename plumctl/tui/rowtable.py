"""A table of pre-rendered rows for ``top``: one ``Text`` per row, a header, a row cursor.

Why not ``DataTable``: it renders every cell through Rich's padding and cropping on its
own, and any update invalidates every cached cell, so each poll of 32 nodes re-rendered
the whole table (about 60 ms of CPU per poll, and a slow first paint). Here the caller
lays a row out once (:func:`plumctl.tui.app.render_line`); a row is turned into a strip
only when its text, its stripe or the cursor on it changes, and drawing is cropping.

Keys: up/down, page up/down, home/end move the cursor (it stays on its row when rows
are reordered); left/right scroll a table wider than the terminal; enter, or a click on the row under the cursor, posts :class:`Selected`.
The header stays on the first line while rows scroll under it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

__all__ = ["RowTable"]


class RowTable(ScrollView, can_focus=True):
    """Rows keyed by a string, shown in the order last given to :meth:`set_rows`."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "rowtable--header",
        "rowtable--cursor",
        "rowtable--even-row",
    }
    DEFAULT_CSS = """
    RowTable {
        background: $surface;
        color: $foreground;
        padding: 0 1;
        & > .rowtable--header { text-style: bold; background: $panel; color: $foreground; }
        & > .rowtable--even-row { background: $surface-lighten-1 50%; }
        & > .rowtable--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus > .rowtable--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select", "Detail", id="detail"),
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "cursor(-1000000000)", "First", show=False),
        Binding("end", "cursor(1000000000)", "Last", show=False),
        Binding("left", "scroll_left", "Scroll left", show=False),
        Binding("right", "scroll_right", "Scroll right", show=False),
    ]

    class Selected(Message):
        """Enter, or a click on the row under the cursor."""

        def __init__(self, table: RowTable, key: str) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> RowTable:
            return self.table

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.header = Text()
        self._keys: list[str] = []
        self._lines: dict[str, Text] = {}
        self._cursor = 0
        #: key -> (text, variant, strip): a row's strip, rebuilt only when one changes
        self._strips: dict[str, tuple[Text, str, Strip]] = {}
        self._header_strip: tuple[Text, Strip] | None = None
        self._width = 0
        self._base: Style | None = None
        #: strips built so far (tests check that an unchanged row is not rebuilt)
        self.strips_built = 0

    # -- content --------------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self._keys)

    @property
    def ordered_keys(self) -> list[str]:
        return list(self._keys)

    def line(self, key: str) -> Text:
        """The text of row ``key`` (KeyError if there is none)."""
        return self._lines[key]

    def set_header(self, header: Text) -> None:
        self.header = header
        self._resize()
        self.refresh()

    def set_rows(self, rows: Sequence[tuple[str, Text]]) -> None:
        """Show exactly these rows, in this order. The cursor stays on its row's key
        (or at its position, if that row is gone). Pass the same ``Text`` object for a
        row that did not change: only changed rows are rendered again."""
        selected = self.cursor_key
        old_keys, old_lines, old_cursor, old_width = (
            self._keys,
            self._lines,
            self._cursor,
            self._width,
        )
        self._keys = [key for key, _ in rows]
        self._lines = dict(rows)
        for key in [k for k in self._strips if k not in self._lines]:
            del self._strips[key]
        if selected in self._lines:
            self._cursor = self._keys.index(selected)
        self._cursor = max(0, min(self._cursor, len(self._keys) - 1))
        self._resize()
        if self._keys != old_keys or self._width != old_width or self._cursor != old_cursor:
            self.refresh()  # rows moved: every line may be different
            return
        # the same rows in the same places: repaint only the lines whose text changed
        top = round(self.scroll_offset.y)
        width = self.size.width
        for index, key in enumerate(self._keys):
            if self._lines[key] is not old_lines.get(key):
                y = index - top + 1
                if 1 <= y < self.size.height:
                    self.refresh(Region(0, y, width, 1))

    def _resize(self) -> None:
        widths = [self.header.cell_len, *(t.cell_len for t in self._lines.values())]
        self._width = max(widths)
        self.virtual_size = Size(self._width, len(self._keys) + 1)

    # -- cursor ---------------------------------------------------------------------------

    @property
    def cursor_key(self) -> str | None:
        return self._keys[self._cursor] if self._keys else None

    def move_cursor(self, row: int) -> None:
        if not self._keys:
            return
        self._cursor = max(0, min(row, len(self._keys) - 1))
        self._scroll_to_cursor()
        self.refresh()

    @property
    def _page(self) -> int:
        """Rows in view: the header takes a line."""
        return max(1, self.size.height - 1)

    def _scroll_to_cursor(self) -> None:
        visible = self._page
        top = round(self.scroll_offset.y)
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=False)
        elif self._cursor >= top + visible:
            self.scroll_to(y=self._cursor - visible + 1, animate=False)

    def action_cursor(self, step: int) -> None:
        self.move_cursor(self._cursor + step)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self._cursor + direction * self._page)

    def action_select(self) -> None:
        key = self.cursor_key
        if key is not None:
            self.post_message(self.Selected(self, key))

    def on_click(self, event: events.Click) -> None:
        if event.y < 1:
            return  # the header
        row = round(self.scroll_offset.y) + event.y - 1
        if 0 <= row < len(self._keys):
            if row == self._cursor:
                self.action_select()
            else:
                self.move_cursor(row)

    # -- drawing --------------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        # the widget's style is computed from the CSS of every ancestor: once per frame,
        # not once per line; when it changes (a new theme), every strip is drawn anew
        base = self.rich_style
        if base != self._base:
            self._strips.clear()
            self._header_strip = None
        self._base = base
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = (round(v) for v in self.scroll_offset)
        width = self.size.width
        base = self._base if self._base is not None else self.rich_style
        if y == 0:
            strip = self._header()
        else:
            index = scroll_y + y - 1
            if index >= len(self._keys):
                return Strip.blank(width, base)
            strip = self._row(index)
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def _header(self) -> Strip:
        cached = self._header_strip
        if cached is None or cached[0] is not self.header:
            style = self.get_component_rich_style("rowtable--header")
            cached = self._header_strip = (self.header, self._strip(self.header, style, None))
        return cached[1]

    def _row(self, index: int) -> Strip:
        key = self._keys[index]
        text = self._lines[key]
        variant = "cursor" if index == self._cursor else ("even" if index % 2 else "odd")
        if self.has_focus and variant == "cursor":
            variant = "cursor-focus"
        cached = self._strips.get(key)
        if cached is not None and cached[0] is text and cached[1] == variant:
            return cached[2]
        base = self._base if self._base is not None else self.rich_style
        post: Style | None = None
        if variant.startswith("cursor"):
            post = self.get_component_rich_style("rowtable--cursor")
        elif variant == "even":
            base = base + self.get_component_rich_style("rowtable--even-row")
        strip = self._strip(text, base, post)
        self._strips[key] = (text, variant, strip)
        return strip

    def _strip(self, text: Text, style: Style, post: Style | None) -> Strip:
        self.strips_built += 1
        width = max(self._width, text.cell_len)
        segments = _segments(text, style, post, self.app.console)
        return Strip(segments, text.cell_len).extend_cell_length(width, style)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()


def _segments(text: Text, base: Style, post: Style | None, console: Console) -> list[Segment]:
    """``text`` as segments over ``base`` (then ``post`` on top), the same segments
    ``Segment.apply_style(text.render(console), base, post)`` gives, five times faster.

    The fast path takes the rows ``top`` lays out: no base style of their own, spans
    that do not overlap. Anything else goes through Rich's renderer.
    """
    spans = sorted(text.spans, key=lambda span: span.start)
    if text.style:
        return list(Segment.apply_style(text.render(console), base, post))
    plain = text.plain
    out: list[Segment] = []
    at = 0
    for span in spans:
        if span.start < at:  # overlapping spans: Rich combines them
            return list(Segment.apply_style(text.render(console), base, post))
        if span.start >= span.end:
            continue
        if span.start > at:
            out.append(Segment(plain[at : span.start], base))
        style = console.get_style(span.style, default=Style.null())
        out.append(Segment(plain[span.start : span.end], base + style))
        at = span.end
    if at < len(plain):
        out.append(Segment(plain[at:], base))
    if post is not None:
        out = [Segment(seg.text, seg.style + post if seg.style else post) for seg in out]
    return out
