"""Which nodes a command talks to: the ``--node`` itself, or every member it knows.

One reachable node is enough: every member advertises its admin URL in its SWIM
metadata, so ``--all`` commands find the others through ``/v1/members``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from plumctl.options import GlobalOptions

if TYPE_CHECKING:
    from plumctl.client import AsyncClient, ClientError

T = TypeVar("T")

#: what a live member that advertises no admin URL "answers"
NO_ADMIN_URL = "advertises no admin URL"


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


@dataclass(slots=True)
class Asked(Generic[T]):
    """Every live member's answer (or its one-line error), by member name."""

    node: str  # the --node's own name
    live: list[Target]
    others: list[Target]  # dead or left: not asked
    answers: dict[str, T | str] = field(default_factory=dict)
    #: the first real failure (not "no admin URL"): what to raise when nobody answered
    first_error: ClientError | None = None

    def failed(self) -> list[str]:
        """Live members that gave no answer."""
        return [t.name for t in self.live if isinstance(self.answers.get(t.name), str)]


async def ask_live(
    opts: GlobalOptions, fn: Callable[[AsyncClient], Awaitable[T]], *, check: type = object
) -> Asked[T]:
    """``fn`` against every live member (alive or suspect) at once, through the admin URL
    it advertises; an answer that is not a ``check`` counts as an error.

    Raises the client's error when ``--node`` itself does not answer (exit 3).
    """
    import asyncio

    from plumctl.client import ClientError, fan_out, normalise_url

    targets, members = await asyncio.to_thread(resolve, opts, True)
    asked: Asked[T] = Asked(
        str(members.get("node", opts.node)),
        [t for t in targets if t.live],
        [t for t in targets if not t.live],
    )
    urls = [t.url for t in asked.live if t.url]
    results = await fan_out(urls, fn, token=opts.token, timeout=opts.timeout, deadline=opts.timeout)
    for t in asked.live:
        if not t.url:
            asked.answers[t.name] = NO_ADMIN_URL
            continue
        try:
            result: T | ClientError | None = results.get(normalise_url(t.url))
        except ClientError as exc:
            result = exc
        if isinstance(result, ClientError):
            asked.answers[t.name] = result.message
            asked.first_error = asked.first_error or result
        elif result is not None and isinstance(result, check):
            asked.answers[t.name] = result
    return asked
