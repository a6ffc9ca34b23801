"""Network-namespace labs: "hosts" on this machine with their own network stacks, for
partition tests and ``plumctl lab``. Linux and root only; see :mod:`plumctl.lab.netns`.

Nothing imports this package at ``plumctl`` import time; import it where it is used.
"""

from __future__ import annotations

from plumctl.lab.netns import (
    Host,
    Lab,
    LabError,
    available,
    cleanup_stale,
    host_address,
    resources,
)

__all__ = [
    "Host",
    "Lab",
    "LabError",
    "available",
    "cleanup_stale",
    "host_address",
    "resources",
]
