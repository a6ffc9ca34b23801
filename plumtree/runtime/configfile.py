"""The node's TOML config file, decoded into typed structures before anything reads it.

Every key of every table has a type here (msgspec structs, strict: no ``"3"`` for 3, no
string split into characters where an array is expected, unknown keys refused). The
first wrong key becomes one :class:`ConfigError` line naming it
(``node.join: expected an array of strings, got a string '127.0.0.1:7946'``); range
checks stay with the settings' own classes (``core/config.py``, ``tcplimits.py``),
which name the key too. The protocol and transport tables are derived from those
classes' fields, so a new setting is typed here without a second list.

Durations (any protocol or transport field in seconds) are a number of seconds or a
string in ``core/durations.py``'s grammar, as on the command line.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import msgspec

from plumtree.core.config import (
    PROFILES,
    ConfigError,
    PlumtreeConfig,
    SwimConfig,
    is_duration_field,
    load_toml,
    parse_duration,
    unknown_setting,
)
from plumtree.core.durations import EXAMPLES
from plumtree.runtime.tcplimits import TcpLimits

#: the type of a duration value before parsing: seconds, or a string like "1m30s"
Duration = float | str

ProfileName = Literal["lan", "wan", "local", "large"]
Fsync = Literal["normal", "full"]

UNSET: Any = msgspec.UNSET


class NodeTable(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[node]``: who the node is and where it listens (the flags of ``node start``)."""

    name: str | msgspec.UnsetType = UNSET
    bind: str | msgspec.UnsetType = UNSET
    advertise: str | msgspec.UnsetType = UNSET
    api: str | msgspec.UnsetType = UNSET
    join: list[str] | msgspec.UnsetType = UNSET
    label: str | msgspec.UnsetType = UNSET
    tags: dict[str, str] | msgspec.UnsetType = UNSET
    profile: ProfileName | msgspec.UnsetType = UNSET
    token_file: str | msgspec.UnsetType = UNSET
    keyring: str | msgspec.UnsetType = UNSET
    data_dir: str | msgspec.UnsetType = UNSET
    fsync: Fsync | msgspec.UnsetType = UNSET
    insecure_gossip: bool | msgspec.UnsetType = UNSET
    public_metrics: bool | msgspec.UnsetType = UNSET
    api_cert: str | msgspec.UnsetType = UNSET
    api_key: str | msgspec.UnsetType = UNSET
    api_header_timeout: Duration | msgspec.UnsetType = UNSET
    api_body_timeout: Duration | msgspec.UnsetType = UNSET
    api_idle_timeout: Duration | msgspec.UnsetType = UNSET
    api_max_connections: int | msgspec.UnsetType = UNSET
    handlers: list[str] | msgspec.UnsetType = UNSET
    handler_timeout: Duration | msgspec.UnsetType = UNSET
    handler_queue: int | msgspec.UnsetType = UNSET


def _table_of(cls: type[Any], name: str, durations: set[str]) -> type[msgspec.Struct]:
    """A struct with one optional field per field of the dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    specs: list[tuple[str, Any, Any]] = []
    for f in dataclasses.fields(cls):
        base = hints[f.name]
        if get_origin(base) in (typing.Union, type(int | None)):  # X | None: TOML has no null
            base = next(a for a in get_args(base) if a is not type(None))
        value_type = Duration if f.name in durations else base
        specs.append((f.name, value_type | msgspec.UnsetType, UNSET))
    return msgspec.defstruct(name, specs, forbid_unknown_fields=True, kw_only=True)


#: fields in seconds, per table: they take the duration grammar
DURATIONS: dict[str, set[str]] = {
    "plumtree": {f.name for f in dataclasses.fields(PlumtreeConfig) if is_duration_field(f)},
    "swim": {f.name for f in dataclasses.fields(SwimConfig) if is_duration_field(f)},
    "transport": {f.name for f in dataclasses.fields(TcpLimits) if f.type in (float, "float")},
    "node": {"api_header_timeout", "api_body_timeout", "api_idle_timeout", "handler_timeout"},
}

PlumtreeTable = _table_of(PlumtreeConfig, "PlumtreeTable", DURATIONS["plumtree"])
SwimTable = _table_of(SwimConfig, "SwimTable", DURATIONS["swim"])
TransportTable = _table_of(TcpLimits, "TransportTable", DURATIONS["transport"])


class ConfigFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The whole file: a top-level ``profile`` and the five tables."""

    profile: ProfileName | msgspec.UnsetType = UNSET
    node: NodeTable = msgspec.field(default_factory=NodeTable)
    plumtree: PlumtreeTable = msgspec.field(default_factory=PlumtreeTable)  # type: ignore[valid-type]
    swim: SwimTable = msgspec.field(default_factory=SwimTable)  # type: ignore[valid-type]
    transport: TransportTable = msgspec.field(default_factory=TransportTable)  # type: ignore[valid-type]


def given(table: msgspec.Struct) -> dict[str, Any]:
    """The keys a table sets (the others keep the profile's or the default value)."""
    return {f: v for f in table.__struct_fields__ if (v := getattr(table, f)) is not msgspec.UNSET}


def load(path: str | Path) -> ConfigFile:
    """Read and decode ``path``; ConfigError (one line, naming the key) if anything is wrong."""
    return decode(load_toml(path))


def decode(data: dict[str, Any]) -> ConfigFile:
    """Typed view of a parsed TOML document; durations are returned as seconds."""
    try:
        config = msgspec.convert(data, ConfigFile, strict=True)
    except msgspec.ValidationError as exc:
        raise _explain(str(exc), data) from None
    for section in ("node", "plumtree", "swim", "transport"):
        table = getattr(config, section)
        for key in DURATIONS[section]:
            value = getattr(table, key)
            if value is not msgspec.UNSET:
                setattr(table, key, parse_duration(f"{section}.{key}", value))
    return config


# --- errors ------------------------------------------------------------------------------

_AT = re.compile(r"^(?P<what>.*) - at `\$(?P<path>[^`]*)`$", re.S)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<key>.*)`$", re.S)
_STEP = re.compile(r"\.([^.\[]+)|\[\d+\]")


def _explain(message: str, data: dict[str, Any]) -> ConfigError:
    """One line naming the key, from msgspec's ``Expected `str`, got `int` - at `$.node.name```."""
    m = _AT.match(message)
    path = _STEP.findall(m.group("path")) if m else []
    what = m.group("what") if m else message
    unknown = _UNKNOWN.match(what)
    if unknown:
        key = unknown.group("key")
        if not path:
            known = ", ".join(ConfigFile.__struct_fields__)
            return ConfigError(f"{key}: unknown section (known: {known})")
        section = path[0]
        return unknown_setting(section, key, _fields(section))
    # the key is the section and the setting; deeper steps (join[0], tags.x) are inside it
    named = [p for p in path if p][:2]
    key = ".".join(named) or "(top level)"
    value: Any = data
    for step in named:
        value = value.get(step) if isinstance(value, dict) else None
    return ConfigError(f"{key}: expected {_expected(named)}, got {_kind(value)} {value!r}")


def _fields(section: str) -> tuple[str, ...]:
    table = typing.get_type_hints(ConfigFile)[section]
    fields: tuple[str, ...] = table.__struct_fields__
    return fields


def field_type(path: list[str]) -> Any:
    """The declared type of ``[section, key]`` (or of a top-level key), UNSET removed."""
    hints = typing.get_type_hints(ConfigFile, include_extras=False)
    kind: Any = hints.get(path[0]) if path else ConfigFile
    if len(path) > 1 and isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        kind = typing.get_type_hints(kind).get(path[1])
    args = [a for a in get_args(kind) if a is not msgspec.UnsetType]
    if get_origin(kind) in (typing.Union, type(int | None)) and len(args) == 1:
        return args[0]
    if get_origin(kind) in (typing.Union, type(int | None)):
        return typing.Union[tuple(args)]  # noqa: UP007 - a runtime value
    return kind


def _expected(path: list[str]) -> str:
    kind = field_type(path)
    if kind == Duration or (path and path[-1] in DURATIONS.get(path[0], ())):
        return f"a duration ({EXAMPLES})"
    return describe(kind)


def describe(kind: Any) -> str:
    """How an error message names a type: ``an array of strings``."""
    origin = get_origin(kind)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(kind))
    if origin is list:
        return f"an array of {describe(get_args(kind)[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return f"a table of {describe(get_args(kind)[1]).removeprefix('a ')}s"
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return "a table"
    names = {str: "a string", bool: "true or false", int: "an integer", float: "a number"}
    return names.get(kind, str(kind))


def _kind(value: Any) -> str:
    """The TOML kind of a value, for ``got ...``."""
    if isinstance(value, bool):
        return "a boolean"
    kinds: list[tuple[type | tuple[type, ...], str]] = [
        (str, "a string"),
        (int, "an integer"),
        (float, "a number"),
        (list, "an array"),
        (dict, "a table"),
        ((datetime.date, datetime.time), "a date/time"),
    ]
    return next((name for t, name in kinds if isinstance(value, t)), type(value).__name__)


assert set(get_args(ProfileName)) == set(PROFILES)
