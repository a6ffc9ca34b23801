"""RowTable's fast segment builder draws exactly what Rich's renderer draws."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

from plumctl.tui.rowtable import _segments

STYLES = ["", "green", "dim", "cyan", "bold black on yellow", "bold white on red", "repr.number"]
PARTS = st.lists(
    st.tuples(st.text(alphabet="ab 1.▁█…名", max_size=6), st.sampled_from(STYLES)), max_size=12
)
BASES = st.sampled_from([Style(), Style(bgcolor="grey23"), Style(color="white", bold=True)])
POSTS = st.sampled_from([None, Style(bgcolor="blue", bold=True)])


def rich_way(text: Text, base: Style, post: Style | None, console: Console) -> list[Segment]:
    return list(Segment.apply_style(text.render(console), base, post))


def same(a: list[Segment], b: list[Segment]) -> bool:
    """Equal as drawn: the same characters in the same styles (Rich may split a run of
    one style into more segments, and writes the null style as None)."""

    def cells(segments: list[Segment]) -> list[tuple[str, Style]]:
        return [(ch, seg.style or Style()) for seg in segments for ch in seg.text]

    return cells(a) == cells(b)


@given(PARTS, BASES, POSTS)
def test_laid_out_rows_render_as_rich_renders_them(
    parts: list[tuple[str, str]], base: Style, post: Style | None
) -> None:
    console = Console(width=200)
    text = Text.assemble(*parts, no_wrap=True) if parts else Text()
    assert same(_segments(text, base, post, console), rich_way(text, base, post, console))


@given(PARTS, BASES, POSTS)
def test_overlapping_spans_and_a_text_style_take_rich_s_path(
    parts: list[tuple[str, str]], base: Style, post: Style | None
) -> None:
    console = Console(width=200)
    text = Text.assemble(*parts, style="italic") if parts else Text(style="italic")
    text.stylize("underline", 0, 3)  # overlaps whatever the first part is
    assert same(_segments(text, base, post, console), rich_way(text, base, post, console))
