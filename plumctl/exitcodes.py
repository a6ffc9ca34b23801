"""Exit codes, shared by every command and documented in ``plumctl --help``."""

from __future__ import annotations

OK = 0
FAILED = 1  # operation failed, or the cluster is unhealthy
USAGE = 2  # bad arguments (typer/click's own code)
UNREACHABLE = 3  # no node reachable
DEGRADED = 4  # the cluster is degraded
TIMEOUT = 124  # a --wait ran out of time (like coreutils timeout)
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)

EPILOG = (
    "Exit codes: 0 ok/healthy · 1 failed/unhealthy · 2 usage error · "
    "3 no node reachable · 4 degraded · 124 wait timed out · 130 interrupted"
)
