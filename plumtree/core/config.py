"""Protocol configuration: validated dataclasses, named presets, TOML loading.

Every bad value is reported as one :class:`ConfigError` naming the field
(``plumtree.eager_fanout: must be >= 1, got 0``), because that is what an operator
needs at 3 a.m. Durations are seconds (floats); in TOML they may also be strings with a
unit: ``"200ms"``, ``"1.5s"``, ``"2m"``, ``"1h"``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from plumtree.core import limits

PROFILES = ("lan", "wan", "local", "large")
Profile = Literal["lan", "wan", "local", "large"]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


# --- value checks -----------------------------------------------------------------------

Check = Callable[[str, Any], None]


def _fail(name: str, what: str, value: Any) -> None:
    raise ConfigError(f"{name}: {what}, got {value!r}")


def at_least(lo: float) -> Check:
    def check(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            _fail(name, "must be a number", value)
        if not math.isfinite(value) or value < lo:
            _fail(name, f"must be >= {lo:g}", value)

    return check


def integer_at_least(lo: int) -> Check:
    def check(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(name, "must be an integer", value)
        if value < lo:
            _fail(name, f"must be >= {lo}", value)

    return check


def optional(inner: Check) -> Check:
    def check(name: str, value: Any) -> None:
        if value is not None:
            inner(name, value)

    return check


def positive_duration(name: str, value: Any) -> None:
    at_least(0.0)(name, value)
    if value <= 0:
        _fail(name, "must be > 0", value)


#: a positive duration, or None for "derived from another field"
optional_duration = optional(positive_duration)


def non_negative(name: str, value: Any) -> None:
    at_least(0.0)(name, value)


def boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(name, "must be true or false", value)


def _check(section: str, obj: Any) -> None:
    for f in fields(obj):
        check = f.metadata.get("check")
        if check is not None:
            check(f"{section}.{f.name}", getattr(obj, f.name))


def _f(default: Any, check: Check, doc: str = "") -> Any:
    return field(default=default, metadata={"check": check, "doc": doc})


# --- Plumtree -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlumtreeConfig:
    """Broadcast-tree parameters. Defaults are the ``lan`` preset."""

    eager_fanout: int = _f(3, integer_at_least(1), "target eager peers when peers join")
    lazy_fanout: int = _f(6, integer_at_least(1), "lazy peers sent each IHave batch")
    max_peers: int | None = _f(None, optional(integer_at_least(1)), "cap on eager+lazy")
    ihave_interval: float = _f(0.05, positive_duration, "IHave batch flush interval")
    ihave_batch_size: int = _f(8, integer_at_least(1), "ids per IHave (flush when reached)")
    ihave_queue_max: int = _f(10_000, integer_at_least(1), "pending IHave ids; more dropped")
    ihave_timeout: float = _f(0.1, positive_duration, "wait after an IHave before grafting")
    ihave_timeout_max: float | None = _f(
        None, optional_duration, "adaptive IHave wait cap (default 10x ihave_timeout)"
    )
    graft_timeout: float = _f(0.2, positive_duration, "base Graft retry timeout (backoff)")
    graft_max_retries: int = _f(3, integer_at_least(0), "Graft retries before giving up")
    graft_backoff_cap: float = _f(8.0, at_least(1.0), "max backoff multiple of graft_timeout")
    max_pending_grafts: int = _f(10_000, integer_at_least(1), "missing ids tracked at once")
    graft_rate_limit_per_second: float = _f(20.0, at_least(0.001), "Grafts/s per peer")
    graft_rate_limit_burst: int = _f(40, integer_at_least(1), "Graft burst per peer")
    graft_answer_bytes_per_second: int = _f(
        512 * 1024,
        integer_at_least(1024),
        "payload bytes sent per second answering one peer's Grafts",
    )
    graft_answer_burst_bytes: int = _f(
        512 * 1024, integer_at_least(1024), "payload bytes one peer's Grafts may be sent at once"
    )
    retention_age: float = _f(
        3600.0, positive_duration, "payloads kept for repair at most this long"
    )
    retention_bytes: int = _f(
        256 * 1024 * 1024, integer_at_least(1024), "bytes of payloads kept for repair at most"
    )
    retention_messages: int = _f(1_000_000, integer_at_least(1), "payloads kept at most")
    seen_ttl: float = _f(60.0, positive_duration, "per-message tree bookkeeping kept this long")
    seen_max_size: int = _f(200_000, integer_at_least(1), "per-message tree records at most")
    prune_threshold: int = _f(0, integer_at_least(0), "duplicates tolerated before Prune")
    prune_streak: int = _f(
        3,
        integer_at_least(1),
        "duplicates in a row, over at least the IHave timeout, before Prune of an eager peer",
    )
    optimization_threshold: int = _f(2, integer_at_least(0), "hop gain to swap (0: off)")
    optimization_streak: int = _f(
        3, integer_at_least(1), "announcements in a row, in as many IHaves, before a swap"
    )
    optimization_interval: float = _f(5.0, non_negative, "least time between two swaps")
    max_message_size: int = _f(64 * 1024, integer_at_least(1), "largest payload accepted")
    sync_interval: float = _f(2.0, non_negative, "anti-entropy digest period (0: off)")
    repair_delay: float = _f(
        1.0, non_negative, "how long a gap may last before anti-entropy pulls it"
    )
    repair_interval: float = _f(
        0.1, positive_duration, "pace of repair rounds while something is missing"
    )
    repair_batch: int = _f(256, integer_at_least(1), "messages sent back per repair answer")
    loss_timeout: float = _f(
        10.0,
        non_negative,
        "how long peers that lack a message too get to find it before it is declared lost",
    )
    adopt_timeout: float = _f(
        3.0, non_negative, "a node without history waits this long for a peer's vector"
    )
    maintenance_interval: float = _f(1.0, positive_duration, "housekeeping period")
    maintenance_jitter: float = _f(0.2, non_negative, "random extra delay per period")

    def __post_init__(self) -> None:
        _check("plumtree", self)
        if self.max_message_size > limits.MAX_PAYLOAD_BYTES:
            _fail(
                "plumtree.max_message_size",
                f"must be <= {limits.MAX_PAYLOAD_BYTES} (wire limit)",
                self.max_message_size,
            )
        if self.ihave_batch_size > limits.MAX_IHAVE_IDS:
            _fail(
                "plumtree.ihave_batch_size",
                f"must be <= {limits.MAX_IHAVE_IDS} (wire limit)",
                self.ihave_batch_size,
            )
        if self.ihave_timeout_max is not None and self.ihave_timeout_max < self.ihave_timeout:
            _fail(
                "plumtree.ihave_timeout_max",
                f"must be >= ihave_timeout ({self.ihave_timeout:g}s); equal turns the"
                " adaptive IHave timer off",
                self.ihave_timeout_max,
            )
        if self.repair_batch > limits.MAX_MESSAGES_PER_ENVELOPE:
            _fail(
                "plumtree.repair_batch",
                f"must be <= {limits.MAX_MESSAGES_PER_ENVELOPE} (wire limit)",
                self.repair_batch,
            )

    @property
    def ihave_timeout_ceiling(self) -> float:
        """How far the adaptive IHave timer may stretch (see core/lateness.py)."""
        if self.ihave_timeout_max is None:
            return 10 * self.ihave_timeout
        return self.ihave_timeout_max

    @classmethod
    def preset(cls, profile: str) -> PlumtreeConfig:
        return _preset(_PLUMTREE_PRESETS, profile)


_PLUMTREE_PRESETS: dict[str, PlumtreeConfig] = {
    # lan: the reference's lan(): small graft timeout, fast IHave flush.
    "lan": PlumtreeConfig(),
    # wan: longer timers, more fanout to ride out lossy, slow links.
    "wan": PlumtreeConfig(
        eager_fanout=4,
        lazy_fanout=8,
        ihave_interval=0.2,
        ihave_batch_size=16,
        ihave_timeout=0.5,
        graft_timeout=1.0,
        graft_max_retries=7,
        graft_rate_limit_per_second=5.0,
        graft_rate_limit_burst=15,
        seen_ttl=240.0,
        optimization_threshold=3,
        sync_interval=10.0,
        repair_delay=5.0,
        repair_interval=0.5,
        loss_timeout=60.0,
        adopt_timeout=10.0,
        maintenance_interval=5.0,
        maintenance_jitter=1.0,
    ),
    # local: loopback development clusters; everything is fast, but IHaves: on loopback
    # nothing is lost, and at 20 ms batches (8 ids) IHaves were ~60% of the frames a node
    # handled. At 100 ms (up to 256 ids) a 16-node loopback cluster sustains 1,000
    # broadcasts/s, not 650 (bench/loopback.py). Three lazy peers per batch, not six:
    # every node still hears of each id from about three announcers, the paced
    # anti-entropy repairs what none announced, and a node handles half the IHave ids:
    # the bench's best sustained step went from 9,200-9,700 to 10,600-13,600 deliveries
    # per CPU-second (3 runs each, same day).
    "local": PlumtreeConfig(
        lazy_fanout=3,
        ihave_interval=0.1,
        ihave_batch_size=256,
        ihave_timeout=0.03,
        graft_timeout=0.05,
        graft_max_retries=5,
        # a development cluster on one machine: ten minutes and 64 MiB a node
        retention_age=600.0,
        retention_bytes=64 * 1024 * 1024,
        retention_messages=500_000,
        sync_interval=1.0,
        repair_delay=0.5,
        repair_interval=0.05,
        loss_timeout=5.0,
        adopt_timeout=2.0,
        maintenance_interval=0.5,
        maintenance_jitter=0.1,
    ),
    # large: thousands of nodes: bounded peer views, bigger batches and caches.
    "large": PlumtreeConfig(
        eager_fanout=5,
        lazy_fanout=10,
        max_peers=64,
        ihave_interval=0.15,
        ihave_batch_size=32,
        ihave_timeout=0.3,
        graft_timeout=0.75,
        graft_max_retries=5,
        graft_rate_limit_per_second=10.0,
        graft_rate_limit_burst=30,
        seen_ttl=180.0,
        optimization_threshold=2,
        sync_interval=5.0,
        repair_delay=2.0,
        repair_interval=0.25,
        loss_timeout=30.0,
        adopt_timeout=5.0,
        maintenance_interval=3.0,
        maintenance_jitter=0.75,
    ),
}


# --- SWIM -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SwimConfig:
    """Membership parameters, named as in hashicorp/memberlist. Defaults: ``lan``."""

    probe_interval: float = _f(1.0, positive_duration, "period of the probe cycle")
    probe_timeout: float = _f(0.5, positive_duration, "wait for a direct ack")
    indirect_checks: int = _f(3, integer_at_least(0), "ping-req relays per failed probe")
    retransmit_mult: int = _f(4, integer_at_least(1), "update retransmits x ceil(log10(N+1))")
    suspicion_mult: int = _f(4, integer_at_least(1), "suspicion timeout multiplier")
    suspicion_max_timeout_mult: int = _f(6, integer_at_least(1), "upper bound multiplier")
    push_pull_interval: float = _f(30.0, non_negative, "full-state sync period (0: off)")
    gossip_interval: float = _f(0.2, positive_duration, "period of gossip rounds")
    gossip_nodes: int = _f(3, integer_at_least(1), "members gossiped to per round")
    gossip_to_the_dead_time: float = _f(30.0, non_negative, "keep gossiping to the dead")
    awareness_max_multiplier: int = _f(8, integer_at_least(1), "Lifeguard LHA ceiling")
    dead_reap_time: float = _f(300.0, non_negative, "forget dead/left members after")
    tcp_timeout: float = _f(10.0, positive_duration, "push-pull and stream timeout")
    udp_buffer_size: int = _f(limits.MAX_DATAGRAM_BYTES, integer_at_least(512), "datagram max")
    max_meta_bytes: int = _f(512, integer_at_least(0), "encoded metadata bound")
    reconnect_interval: float = _f(30.0, non_negative, "push-pull a failed member (0: off)")
    handoff_queue_depth: int = _f(1024, integer_at_least(1), "ping-reqs relayed at once")
    max_members: int = _f(
        limits.MAX_PUSHPULL_MEMBERS, integer_at_least(1), "member table size; more dropped"
    )

    def __post_init__(self) -> None:
        _check("swim", self)
        if self.probe_timeout > self.probe_interval:
            _fail(
                "swim.probe_timeout",
                f"must be <= probe_interval ({self.probe_interval:g}s)",
                self.probe_timeout,
            )
        if self.max_members > limits.MAX_PUSHPULL_MEMBERS:
            _fail(
                "swim.max_members",
                f"must be <= {limits.MAX_PUSHPULL_MEMBERS} (push-pull wire limit)",
                self.max_members,
            )
        if self.udp_buffer_size > limits.MAX_DATAGRAM_BYTES:
            _fail(
                "swim.udp_buffer_size",
                f"must be <= {limits.MAX_DATAGRAM_BYTES}",
                self.udp_buffer_size,
            )

    @classmethod
    def preset(cls, profile: str) -> SwimConfig:
        return _preset(_SWIM_PRESETS, profile)


_SWIM_PRESETS: dict[str, SwimConfig] = {
    # memberlist DefaultLANConfig
    "lan": SwimConfig(),
    # memberlist DefaultWANConfig
    "wan": SwimConfig(
        probe_interval=5.0,
        probe_timeout=3.0,
        suspicion_mult=6,
        push_pull_interval=60.0,
        gossip_interval=0.5,
        gossip_nodes=4,
        gossip_to_the_dead_time=60.0,
        tcp_timeout=30.0,
    ),
    # memberlist DefaultLocalConfig
    "local": SwimConfig(
        probe_interval=1.0,
        probe_timeout=0.2,
        indirect_checks=1,
        retransmit_mult=2,
        suspicion_mult=3,
        push_pull_interval=15.0,
        gossip_interval=0.1,
        gossip_to_the_dead_time=15.0,
        tcp_timeout=1.0,
    ),
    # large: LAN timings (memberlist scales its own intervals with log N).
    "large": SwimConfig(),
}

_C = TypeVar("_C")


def _preset(table: Mapping[str, _C], profile: str) -> _C:
    try:
        return table[profile]
    except KeyError:
        raise ConfigError(
            f"profile: unknown profile {profile!r} (choose one of {', '.join(PROFILES)})"
        ) from None


# --- durations and overrides ------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(name: str, value: Any) -> float:
    """Seconds from a number or a string like ``"200ms"``; ConfigError names the field."""
    if isinstance(value, bool):
        _fail(name, "must be a duration like 0.5, '500ms', '2s' or '1m'", value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNIT[m.group(2)]
    _fail(name, "must be a duration like 0.5, '500ms', '2s' or '1m'", value)
    raise AssertionError  # unreachable


def _is_duration_field(f: dataclasses.Field[Any]) -> bool:
    check = f.metadata.get("check")
    if check is optional_duration:
        return True
    return check in (positive_duration, non_negative) and f.type in ("float", float)


#: settings an older release had, and what took their place
RENAMED = {
    "plumtree.message_cache_ttl": "retention_age",
    "plumtree.message_cache_max_size": "retention_messages (and retention_bytes)",
    "plumtree.sync_window": None,
    "plumtree.sync_max_ids": None,
}


def with_overrides(base: _C, section: str, values: Mapping[str, Any]) -> _C:
    """Return ``base`` with ``values`` applied; unknown keys and bad values are errors."""
    by_name = {f.name: f for f in fields(base)}  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for key, value in values.items():
        f = by_name.get(key)
        if f is None and f"{section}.{key}" in RENAMED:
            now = RENAMED[f"{section}.{key}"]
            hint = f"renamed to {now}" if now else "no longer used (digests are version vectors)"
            raise ConfigError(f"{section}.{key}: {hint}")
        if f is None:
            known = ", ".join(sorted(by_name))
            raise ConfigError(f"{section}.{key}: unknown setting (known: {known})")
        if _is_duration_field(f):
            value = parse_duration(f"{section}.{key}", value)
        elif f.type in ("float", float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        changes[key] = value
    try:
        return replace(base, **changes)  # type: ignore[type-var]
    except TypeError as exc:  # pragma: no cover - guarded by the field check above
        raise ConfigError(f"{section}: {exc}") from None


# --- the whole protocol config --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProtocolConfig:
    """Both state machines' settings plus the profile they started from."""

    profile: str = "lan"
    plumtree: PlumtreeConfig = field(default_factory=PlumtreeConfig)
    swim: SwimConfig = field(default_factory=SwimConfig)

    @classmethod
    def from_profile(cls, profile: str) -> ProtocolConfig:
        return cls(profile, PlumtreeConfig.preset(profile), SwimConfig.preset(profile))


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; syntax and I/O problems become one ConfigError line."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except PermissionError:
        raise ConfigError(f"{p}: permission denied") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, not a config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None


def protocol_config_from_mapping(
    data: Mapping[str, Any], profile: str | None = None
) -> ProtocolConfig:
    """Build a ProtocolConfig from ``{"profile": ..., "plumtree": {...}, "swim": {...}}``.

    ``profile`` (e.g. from the command line) wins over the file's own ``profile`` key.
    """
    chosen = profile if profile is not None else data.get("profile", "lan")
    if not isinstance(chosen, str):
        _fail("profile", "must be a string", chosen)
    base = ProtocolConfig.from_profile(chosen)
    sections: dict[str, Any] = {}
    for name in ("plumtree", "swim"):
        section = data.get(name, {})
        if not isinstance(section, Mapping):
            _fail(name, "must be a table", section)
        sections[name] = section
    return ProtocolConfig(
        profile=chosen,
        plumtree=with_overrides(base.plumtree, "plumtree", sections["plumtree"]),
        swim=with_overrides(base.swim, "swim", sections["swim"]),
    )


def describe(config: Any) -> dict[str, Any]:
    """Plain-dict view of a config dataclass (for /v1/status and logs)."""
    return {f.name: getattr(config, f.name) for f in fields(config)}


def field_docs(cls: type[Any]) -> dict[str, str]:
    return {f.name: f.metadata.get("doc", "") for f in fields(cls)}


assert set(get_args(Profile)) == set(PROFILES)
