"""Which nodes a command talks to: the ``--node`` itself, or every member it knows.

One reachable node is enough: every member advertises its admin URL in its SWIM
metadata, so ``--all`` commands find the others through ``/v1/members``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plumctl.options import GlobalOptions


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    url: str | None  # None: the member advertises no admin API
    state: str  # SWIM state as the --node sees it (alive/suspect/dead/left)

    @property
    def live(self) -> bool:
        return self.state in ("alive", "suspect")


def member_targets(members: dict[str, Any]) -> list[Target]:
    """Targets from a /v1/members document, sorted by name."""
    items = sorted(members.get("items", []), key=lambda m: str(m.get("name", "")))
    return [Target(str(m["name"]), m.get("admin_url"), str(m.get("state", "alive"))) for m in items]


def resolve(opts: GlobalOptions, everyone: bool) -> tuple[list[Target], dict[str, Any]]:
    """The targets (just ``--node``, or all members) and the /v1/members document.

    Raises the client's errors (Unreachable -> exit 3) when ``--node`` does not answer.
    """
    from plumctl.client import Client

    with Client(opts.node, opts.token, opts.timeout) as client:
        members = client.members()
    if everyone:
        return member_targets(members), members
    name = str(members.get("node", opts.node))
    return [Target(name, opts.node, "alive")], members
