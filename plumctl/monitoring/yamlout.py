"""A small block-style YAML emitter for the fixed shapes we write (no PyYAML).

Covers dicts, lists, strings, numbers, booleans and None. Strings stay plain where YAML
1.1 (go-yaml, what Prometheus reads) would read them back unchanged, multi-line strings
become ``|-`` literal blocks, everything else is double-quoted with JSON escapes (a JSON
string is a valid YAML double-quoted scalar). Lists sit at their parent key's indentation,
as in the Prometheus documentation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

_INDICATORS = frozenset("-?:,[]{}#&*!|>'\"%@`")
_RESERVED = re.compile(
    r"(?i:y|n|yes|no|true|false|on|off|null|~|\.inf|[-+]\.inf|\.nan|<<|=)", re.ASCII
)
_DURATION = re.compile(r"(?:\d+(?:ms|s|m|h|d|w|y))+")
_NUMBER_START = re.compile(r"[0-9]|[+.-]\.?[0-9]")


class Quoted(str):
    """A string always written double-quoted (annotations read better that way)."""

    __slots__ = ()


def plain_ok(text: str) -> bool:
    """True when ``text`` can be written as a plain scalar and read back identically."""
    if not text or text != text.strip() or _RESERVED.fullmatch(text):
        return False
    if not text.isascii() or not text.isprintable():
        return False
    if text[0] in _INDICATORS or ": " in text or " #" in text or text.endswith(":"):
        return False
    # Anything that might read as a number, a date or a sexagesimal: quote, unless it is
    # a Prometheus duration such as "5m".
    return not (_NUMBER_START.match(text) and not _DURATION.fullmatch(text))


def scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        if plain_ok(value) and not isinstance(value, Quoted):
            return value
        return json.dumps(value, ensure_ascii=True)
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _literal_ok(text: str) -> bool:
    return (
        not isinstance(text, Quoted)
        and "\n" in text
        and text.isascii()
        and not text.startswith((" ", "\n"))
        and not text.endswith(("\n", " "))
        and all(line.isprintable() for line in text.split("\n"))
    )


def _lines(value: Any, indent: int) -> list[str]:
    """Lines for a mapping or sequence value, at ``indent`` spaces."""
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            out.extend(_entry(f"{pad}{scalar(str(key))}:", item, indent, nested=indent + 2))
    else:
        for item in value:
            if isinstance(item, Mapping) and item:
                inner = _lines(item, indent + 2)
                out.append(f"{pad}- {inner[0][indent + 2 :]}")
                out.extend(inner[1:])
            else:
                out.extend(_entry(f"{pad}-", item, indent + 2, nested=indent + 2))
    return out


def _entry(head: str, item: Any, indent: int, nested: int) -> list[str]:
    if isinstance(item, Mapping):
        return [f"{head} {{}}"] if not item else [head, *_lines(item, nested)]
    if isinstance(item, Sequence) and not isinstance(item, str):
        # A list under a key stays at the key's indentation (``indent``); the caller passes
        # one level deeper for a list inside a list.
        return [f"{head} []"] if not item else [head, *_lines(item, indent)]
    if isinstance(item, str) and _literal_ok(item):
        body = " " * nested
        return [f"{head} |-", *(f"{body}{line}" if line else "" for line in item.split("\n"))]
    return [f"{head} {scalar(item)}"]


def dump(document: Mapping[str, Any] | Sequence[Any], indent: int = 0) -> str:
    """``document`` as YAML text (ending with a newline)."""
    return "\n".join(_lines(document, indent)) + "\n"
