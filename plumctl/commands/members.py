"""``plumctl members``: the SWIM member table as one node sees it (serf/consul style)."""

from __future__ import annotations

from typing import Annotated

import typer

from plumctl import exitcodes
from plumctl.options import GlobalOptions, with_global_options

#: (plumtree.runtime.gossippolicy.INSECURE_TAG, not imported: plumctl stays light)
INSECURE_TAG = "insecure_gossip"

EXAMPLES = """Examples:

  plumctl members

  plumctl members --state 'alive|suspect' -o json

  plumctl members --state dead          # failed members stay listed until reaped

  plumctl members --name 'web-.*' --tag role=api --tag 'zone=eu-.*'

Filters combine with AND; each regex must match the whole value (--name 'web-.*'),
and --tag KEY=REGEX needs the tag KEY with a value matching REGEX. --status is
serf's name for --state.

With -o wide, GOSSIP says "insecure" for a member that runs unauthenticated gossip on a
network address (--insecure-gossip).

Exit 0 even when the filter matches nothing (like serf); a bad regex is a usage error.
"""


def register(app: typer.Typer) -> None:
    app.command(
        "members",
        help="List cluster members: name, address, admin URL, state, incarnation, tags.",
        epilog=EXAMPLES + "\n" + exitcodes.EPILOG,
        rich_help_panel="Inspect",
    )(with_global_options(members))


def members(
    ctx: typer.Context,
    state: Annotated[
        str | None,
        typer.Option(
            "--state", "--status", help="Only members whose state fully matches this regex."
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Only members whose name fully matches this regex.")
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(
            "--tag",
            metavar="KEY=REGEX",
            help="Only members with tag KEY fully matching REGEX (repeatable: all must match).",
        ),
    ] = None,
) -> None:
    import time

    from plumctl.client import Client, exit_on_error
    from plumctl.memberfilter import FilterError, member_filter, member_list
    from plumctl.output import emit_json, fail, stdout, table

    opts: GlobalOptions = ctx.obj
    try:
        keep = member_filter(state, name, tag or [])
    except FilterError as exc:
        fail(str(exc), exitcodes.USAGE)
    with exit_on_error(), Client(opts.node, opts.token, opts.timeout) as client:
        doc = client.members()
    items = member_list(doc, keep)
    if opts.json:
        emit_json({"kind": "MemberList", "node": doc.get("node"), "items": items})
        return
    columns = ["name", "address", "admin url", "state", "incarnation", "tags"]
    if opts.wide:
        columns += ["since", "gossip"]
    t = table(*columns)
    colour = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "dim"}
    now = time.time()
    for m in items:
        tags = ",".join(f"{k}={v}" for k, v in sorted((m.get("tags") or {}).items()))
        st = str(m.get("state"))
        row = [
            str(m.get("name")) + (" *" if m.get("self") else ""),
            str(m.get("addr")),
            str(m.get("admin_url") or "-"),
            f"[{colour.get(st, 'red')}]{st}[/]",
            str(m.get("incarnation")),
            tags or "-",
        ]
        if opts.wide:
            since = m.get("since")
            row.append("-" if since is None else _ago(now - float(since)))
            # the node's own word (its tag): gossip reachable and unauthenticated
            insecure = (m.get("tags") or {}).get(INSECURE_TAG) == "true"
            row.append("[red]insecure[/]" if insecure else "-")
        t.add_row(*row)
    stdout().print(t)


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
