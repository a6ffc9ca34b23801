"""Bounds on the inbound gossip TCP connections (the ``[transport]`` config table).

A stranger who can reach the gossip port can open connections and declare large frames
without finishing them. These bounds keep what that costs the node constant:

* connections: at most ``max_connections`` in all and ``max_connections_per_source``
  from one IP address; one more is closed at once and counted.
* frame length: a declared length above the node's maximum frame (the wire limit, plus
  the encryption overhead with a keyring) closes the connection at the header, before
  anything is buffered.
* bytes buffered: the unfinished frames of all connections together hold at most
  ``max_buffered_bytes`` (plus one socket read per connection); the connection whose
  bytes would exceed it is closed.
* time: a frame begun must be complete within ``frame_timeout`` seconds, and a
  connection that sent nothing for ``idle_timeout`` seconds is closed. ``idle_timeout``
  is longer than a sender's own idle close (``_Link.IDLE_AFTER``, 60 s), so a peer's
  quiet link is closed by the peer, never under its feet.

So the inbound side holds at most about ``max_buffered_bytes`` + ``max_connections`` x
(one read, 256 KiB, + a few KiB of socket state), whatever is sent to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


class TcpLimitsError(ValueError):
    """A ``[transport]`` setting is out of range."""


@dataclass(frozen=True, slots=True)
class TcpLimits:
    #: inbound connections in all (legitimate: about one per peer that sends to us)
    max_connections: int = 512
    #: inbound connections from one IP address (nodes sharing a host share it)
    max_connections_per_source: int = 64
    #: bytes of unfinished frames held across all inbound connections
    max_buffered_bytes: int = 32 * 1024 * 1024
    #: seconds within which a frame begun must be complete
    frame_timeout: float = 20.0
    #: seconds without a byte after which an inbound connection is closed
    idle_timeout: float = 150.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> TcpLimits:
        """From a ``[transport]`` table: unknown keys and bad values raise TcpLimitsError."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            spec = known.get(key)
            if spec is None:
                raise TcpLimitsError(
                    f"transport.{key}: unknown setting (known: {', '.join(sorted(known))})"
                )
            integer = spec.type in (int, "int")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TcpLimitsError(f"transport.{key}: must be a number, got {value!r}")
            if integer and not isinstance(value, int):
                raise TcpLimitsError(f"transport.{key}: must be an integer, got {value!r}")
            if value <= 0:
                raise TcpLimitsError(f"transport.{key}: must be positive, got {value!r}")
            values[key] = value if integer else float(value)
        limits = cls(**values)
        if limits.max_connections_per_source > limits.max_connections:
            raise TcpLimitsError(
                "transport.max_connections_per_source: must be at most max_connections"
            )
        return limits

    def sweep_interval(self) -> float:
        """How often the timeouts are checked: a quarter of the shorter, at most 1 s."""
        return min(1.0, self.frame_timeout / 4, self.idle_timeout / 4)
