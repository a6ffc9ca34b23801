"""The ``members`` filters (``--state/--status``, ``--name``, ``--tag``), without typer:
the typer command and the fast path (:mod:`plumctl.fastcmd`) build the same predicate."""

from __future__ import annotations

import re

TYPE_CHECKING = False  # mypy takes it as True: the fast path imports no typing module
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class FilterError(ValueError):
    """A bad regex or a ``--tag`` without ``=``: the one line to print (exit 2)."""


def member_filter(
    state: str | None, name: str | None, tags: list[str]
) -> Callable[[dict[str, Any]], bool]:
    """One predicate for ``--state``, ``--name`` and ``--tag`` (AND); each regex must match
    the whole value. Raises :class:`FilterError` for a bad regex or a tag without ``=``."""

    def compile_(option: str, text: str) -> re.Pattern[str]:
        try:
            return re.compile(text)
        except re.error as exc:
            raise FilterError(f"{option}: invalid regex {text!r}: {exc}") from None

    # (what to read from a member: its state, its name, or tag KEY) -> pattern
    fields: list[tuple[tuple[str, str], re.Pattern[str]]] = []
    if state is not None:
        fields.append((("field", "state"), compile_("--state", state)))
    if name is not None:
        fields.append((("field", "name"), compile_("--name", name)))
    for item in tags:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise FilterError(f"--tag: expected KEY=REGEX, got {item!r}")
        fields.append((("tag", key), compile_(f"--tag {key}", value)))

    def keep(member: dict[str, Any]) -> bool:
        for (where, key), pattern in fields:
            value = member.get(key) if where == "field" else (member.get("tags") or {}).get(key)
            if value is None or pattern.fullmatch(str(value)) is None:
                return False
        return True

    return keep


def member_list(doc: dict[str, Any], keep: Callable[[dict[str, Any]], bool]) -> list[Any]:
    """The members of a /v1/members document to show: alive first, then by name, filtered."""
    items = sorted(
        doc.get("items", []), key=lambda m: (m.get("state") != "alive", str(m.get("name")))
    )
    return [m for m in items if keep(m)]
