"""How long and how many: the admin API's bounds on slow and numerous clients.

Kept apart from the server (no aiohttp import) so the node's config can carry them.
A client is never trusted to finish what it starts: a connection must deliver its
first request head within ``header_timeout``, a request body within ``body_timeout``,
take each answer (each piece of a streamed one) within ``body_timeout`` too, and a kept-alive
connection is closed after ``idle_timeout`` without a complete next request head.
At most ``max_connections`` are open at once: a new one beyond that first evicts the
oldest connection waiting for a request head (a slow or silent client), and is itself
refused when every open connection is busy with a request.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class ApiLimits:
    #: seconds a new connection has to deliver its first complete request head (and, with
    #: TLS, to finish the handshake)
    header_timeout: float = 10.0
    #: seconds to receive a request body; also the longest the node waits for a client to
    #: take an answer (or one piece of a ``/v1/events`` stream) before it cuts it off
    body_timeout: float = 10.0
    #: seconds a kept-alive connection may wait for its next complete request head
    idle_timeout: float = 60.0
    #: admin connections open at once
    max_connections: int = 256

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"api_{f.name}: must be a positive number, got {value!r}")
        if not isinstance(self.max_connections, int):
            raise ValueError(
                f"api_max_connections: must be an integer, got {self.max_connections!r}"
            )

    @classmethod
    def from_mapping(cls, values: dict[str, object]) -> ApiLimits:
        """From ``api_<field>`` keys (the ``[node]`` table of a config file)."""
        return cls(**{k.removeprefix("api_"): v for k, v in values.items()})  # type: ignore[arg-type]


#: the config keys (``[node]`` table) that set the limits
CONFIG_KEYS = tuple(f"api_{f.name}" for f in fields(ApiLimits))

#: Why the admin API refused a request or closed a connection (the ``reason`` label of
#: ``plumtree_admin_rejected_total``).
REASONS = (
    "unauthorized",
    "bad_request",
    "header_timeout",
    "body_timeout",
    "write_timeout",
    "connection_limit",
)
