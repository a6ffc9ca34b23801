"""``plumctl audit``: does every live member have every acknowledged broadcast?

Every broadcast is ``(origin, epoch, seq)``; each node's ``GET /v1/vector`` says, per
origin stream, up to where it has settled everything (``delivered``), what it holds
above that, and what it gave up as lost. The audit compares every reachable member
with a target per stream: the origin's own ``acked`` (the highest seq it acknowledged)
when the origin answers, else the highest ``head`` any member reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from plumctl import exitcodes
from plumctl.options import GlobalOptions, with_global_options

EXAMPLES = """Examples:

  plumctl audit                     # rows where a node lags or lost any

  plumctl audit -o wide             # every node and stream

  plumctl audit --wait 30 -o json   # CI after a fault: until all caught up

Per origin stream the target is the origin's own acknowledged seq when the origin
answers, else the highest seq any member knows of. BEHIND counts the seqs up to the
target a node has neither delivered nor settled; LOST counts what it gave up (no
reachable member held it any more).

Exit 0 when every live member answered and has every acknowledged broadcast (behind 0,
lost 0 everywhere); 1 otherwise, also when a live member does not answer (listed as
unreachable); 3 when no node is reachable. --wait SECONDS re-audits until ok or the
deadline: 124 on timeout, with the last table (3 if no node answered by then).
"""

#: Seconds between two rounds of --wait.
WAIT_STEP = 0.5


def register(app: typer.Typer) -> None:
    app.command(
        "audit",
        help="Replication audit: per node and origin, how far behind it is and what is lost.",
        epilog=EXAMPLES + "\n" + exitcodes.EPILOG,
        rich_help_panel="Inspect",
    )(with_global_options(audit))


def audit(
    ctx: typer.Context,
    wait: Annotated[
        float | None,
        typer.Option(
            "--wait",
            metavar="SECONDS",
            min=0.0,
            help="Re-audit until ok or this many seconds passed (exit 124 then).",
            show_default=False,
        ),
    ] = None,
) -> None:
    import asyncio
    import time

    from plumctl.client import ClientError
    from plumctl.output import emit_json, fail

    opts: GlobalOptions = ctx.obj
    deadline = None if wait is None else time.monotonic() + wait
    status = None
    while True:
        try:
            result: Audit | None = asyncio.run(_round(opts))
            problem: ClientError | None = None
        except ClientError as exc:
            result, problem = None, exc
        if result is not None and result.ok:
            break
        left = None if deadline is None else deadline - time.monotonic()
        if left is None or left <= 0:
            break
        if status is None:
            status = _status()
        if status is not None:
            waiting = "no node answers" if result is None else result.verdict()
            status.update(f"waiting ({left:.0f}s left): {waiting}")
        time.sleep(min(WAIT_STEP, left))
    if status is not None:
        status.stop()
    if result is None:
        assert problem is not None
        after = f" (waited {wait:g}s)" if wait else ""
        fail(problem.message + after, problem.exit_code)
    if opts.json:
        emit_json(result.as_dict())
    else:
        _render(result, opts.wide)
    if result.ok:
        raise typer.Exit(exitcodes.OK)
    if deadline is not None:
        fail(f"timed out after {wait:g}s: {result.verdict()}", exitcodes.TIMEOUT)
    raise typer.Exit(exitcodes.FAILED)


def _status() -> Any:
    """A transient spinner on stderr while --wait polls (only on a terminal)."""
    from plumctl.output import stderr

    console = stderr()
    if not console.is_terminal:
        return None
    status = console.status("auditing")
    status.start()
    return status


# -- the computation ---------------------------------------------------------------------

StreamKey = tuple[str, int]


@dataclass(slots=True)
class StreamRow:
    origin: str
    epoch: int
    delivered: int
    target: int
    behind: int
    lost: int
    missing: int
    head: int
    listed: bool  # False: the node does not list this stream at all

    def as_dict(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "epoch": self.epoch,
            "delivered": self.delivered,
            "target": self.target,
            "behind": self.behind,
            "lost": self.lost,
            "missing": self.missing,
            "head": self.head,
            "listed": self.listed,
        }


@dataclass(slots=True)
class NodeAudit:
    node: str
    url: str | None
    state: str
    error: str | None = None
    behind: int = 0
    lost: int = 0
    missing: int = 0
    streams: list[StreamRow] = field(default_factory=list)

    @property
    def reachable(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        up = self.reachable
        return {
            "node": self.node,
            "url": self.url,
            "state": self.state,
            "reachable": up,
            "error": self.error,
            "behind": self.behind if up else None,
            "lost": self.lost if up else None,
            "missing": self.missing if up else None,
            "streams": [s.as_dict() for s in self.streams],
        }


@dataclass(slots=True)
class Target:
    origin: str
    epoch: int
    target: int
    source: str  # "acked": the origin's own acknowledged seq; "head": highest seq known

    def as_dict(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "epoch": self.epoch,
            "target": self.target,
            "source": self.source,
        }


@dataclass(slots=True)
class Audit:
    node: str
    nodes: list[NodeAudit]
    targets: list[Target]

    @property
    def unreachable(self) -> list[str]:
        return [n.node for n in self.nodes if not n.reachable]

    @property
    def reached(self) -> list[NodeAudit]:
        return [n for n in self.nodes if n.reachable]

    @property
    def ok(self) -> bool:
        return not self.unreachable and all(n.behind == 0 and n.lost == 0 for n in self.nodes)

    def verdict(self) -> str:
        if self.ok:
            return (
                f"every live member ({len(self.nodes)}) has every acknowledged broadcast "
                f"of {len(self.targets)} stream{'s' if len(self.targets) != 1 else ''}"
            )
        parts = []
        for n in self.reached:
            bits = []
            if n.behind:
                bits.append(f"behind {n.behind}")
            if n.lost:
                bits.append(f"lost {n.lost}")
            if bits:
                parts.append(f"{n.node} {' '.join(bits)}")
        if self.unreachable:
            parts.append(f"unreachable: {', '.join(self.unreachable)}")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        reached = self.reached
        return {
            "kind": "Audit",
            "ok": self.ok,
            "node": self.node,
            "behind": sum(n.behind for n in reached),
            "lost": sum(n.lost for n in reached),
            "missing": sum(n.missing for n in reached),
            "streams": [t.as_dict() for t in self.targets],
            "nodes": [n.as_dict() for n in self.nodes],
            "unreachable": self.unreachable,
        }


def settled_up_to(delivered: int, above: list[list[int]], target: int) -> int:
    """How many seqs in 1..target are settled: the watermark plus the ranges above it."""
    count = min(delivered, target)
    for lo, hi in above:
        if lo > target:
            break
        lo = max(lo, delivered + 1)
        if hi >= lo:
            count += min(hi, target) - lo + 1
    return count


def targets_of(vectors: dict[str, dict[str, Any]]) -> dict[StreamKey, Target]:
    """Per stream: the origin's own ``acked`` if it answered, else the highest ``head``."""
    found: dict[StreamKey, Target] = {}
    for vector in vectors.values():
        for s in vector["streams"]:
            key = (str(s["origin"]), int(s["epoch"]))
            head = max(int(s["head"]), int(s["delivered"]))
            if s.get("own") and s.get("acked") is not None:
                found[key] = Target(key[0], key[1], int(s["acked"]), "acked")
                continue
            known = found.get(key)
            if known is None:
                found[key] = Target(key[0], key[1], head, "head")
            elif known.source == "head" and head > known.target:
                known.target = head
    return dict(sorted(found.items()))


def evaluate(
    name: str,
    members: list[Any],
    answers: dict[str, dict[str, Any] | str],
) -> Audit:
    """The audit of the live ``members`` (targets.Target) from their answers: a vector,
    or the one-line error of a member that did not answer (keyed by member name)."""
    vectors = {n: a for n, a in answers.items() if isinstance(a, dict)}
    targets = targets_of(vectors)
    nodes: list[NodeAudit] = []
    for member in members:
        answer = answers.get(member.name, "advertises no admin URL")
        item = NodeAudit(member.name, member.url, member.state)
        nodes.append(item)
        if not isinstance(answer, dict):
            item.error = answer
            continue
        listed = {(str(s["origin"]), int(s["epoch"])): s for s in answer["streams"]}
        # an epoch superseded by a newer one of the same origin that this node lists,
        # and that it does not list itself, was retired here once complete
        newest: dict[str, int] = {}
        for origin, epoch in listed:
            newest[origin] = max(epoch, newest.get(origin, epoch))
        for key, target in targets.items():
            s = listed.get(key)
            if s is None:
                retired = newest.get(key[0], key[1]) > key[1]
                row = StreamRow(
                    key[0],
                    key[1],
                    0,
                    target.target,
                    0 if retired else target.target,
                    0,
                    0,
                    0,
                    False,
                )
            else:
                delivered = int(s["delivered"])
                behind = target.target - settled_up_to(
                    delivered, s.get("above") or [], target.target
                )
                row = StreamRow(
                    key[0],
                    key[1],
                    delivered,
                    target.target,
                    max(0, behind),
                    int(s.get("lost") or 0),
                    int(s.get("missing") or 0),
                    int(s["head"]),
                    True,
                )
            item.streams.append(row)
        item.behind = sum(r.behind for r in item.streams)
        item.lost = int(answer.get("lost") or 0)
        item.missing = int(answer.get("missing") or 0)
    return Audit(name, nodes, list(targets.values()))


async def _round(opts: GlobalOptions) -> Audit:
    """One audit: the member list from --node, then every live member's vector at once.

    Raises the client's error when no node at all answers (Unreachable: exit 3).
    """
    from plumctl.client import AsyncClient
    from plumctl.targets import ask_live

    async def ask(client: AsyncClient) -> dict[str, Any]:
        return await client.vector()

    asked = await ask_live(opts, ask, check=dict)
    if not any(isinstance(a, dict) for a in asked.answers.values()):
        if asked.first_error is not None:
            raise asked.first_error
        from plumctl.client import Unreachable

        raise Unreachable(f"no live member of {opts.node} advertises an admin URL to audit")
    return evaluate(asked.node, asked.live, asked.answers)


# -- output ------------------------------------------------------------------------------


def _render(result: Audit, wide: bool) -> None:
    from rich.markup import escape

    from plumctl.output import stdout, table

    console = stdout()
    columns = ["node", "origin", "epoch", "delivered", "target", "behind", "lost"]
    if wide:
        columns += ["missing", "head"]
    t = table(*columns)
    rows = 0
    for n in result.reached:
        for r in n.streams:
            if not wide and not r.behind and not r.lost:
                continue
            cells = [
                escape(n.node),
                escape(r.origin),
                str(r.epoch),
                str(r.delivered) if r.listed else "-",
                str(r.target),
                f"[red]{r.behind}[/]" if r.behind else "0",
                f"[red]{r.lost}[/]" if r.lost else "0",
            ]
            if wide:
                cells += [str(r.missing), str(r.head) if r.listed else "-"]
            t.add_row(*cells)
            rows += 1
    if rows:
        console.print(t)
        console.print()
    for n in result.nodes:
        if n.reachable:
            line = f"{escape(n.node)}: behind {n.behind}, lost {n.lost}"
            if wide or n.missing:
                line += f", missing {n.missing}"
        else:
            line = f"{escape(n.node)}: [red]unreachable[/] ({escape(str(n.error))})"
        console.print(line)
    if result.ok:
        console.print(f"audit: [green]ok[/] · {escape(result.verdict())}")
    else:
        console.print(f"audit: [red]FAILED[/] · {escape(result.verdict())}")
