"""``plumctl tags set|unset``: change a running node's tags, gossiped to every member."""

from __future__ import annotations

from typing import Annotated

import typer

from plumctl import exitcodes
from plumctl.options import GlobalOptions, with_global_options

tags_app = typer.Typer(
    help="Change a running node's tags (serf's tags): every member sees them in seconds.",
    no_args_is_help=True,
)

EXAMPLES = """Examples:

  plumctl tags set role=api zone=eu-1         # on the node --node points at

  plumctl --node http://127.0.0.1:7949 tags unset zone

  plumctl members --tag role=api              # who carries it now

The node gossips its new tags with a bumped incarnation: every member's `members` shows
them within a few gossip rounds. Tags live in memory: a restarted node starts with the
tags of its configuration again. Reserved keys (admin, insecure_gossip) are set by the
node itself and refused; all tags together must fit one SWIM datagram (the node says
the limit when they do not).

Exit 0 changed; 1 refused by the node (reserved key, too large, bad token); 2 a
malformed KEY=VALUE; 3 --node does not answer.
"""


def register(app: typer.Typer) -> None:
    app.add_typer(tags_app, name="tags", rich_help_panel="Cluster ops")
    epilog = EXAMPLES + "\n" + exitcodes.EPILOG
    tags_app.command("set", help="Set tags KEY=VALUE on the node.", epilog=epilog)(
        with_global_options(set_tags)
    )
    tags_app.command("unset", help="Remove tags KEY from the node.", epilog=epilog)(
        with_global_options(unset_tags)
    )


def set_tags(
    ctx: typer.Context,
    pairs: Annotated[list[str], typer.Argument(metavar="KEY=VALUE...", help="Tags to set.")],
) -> None:
    from plumctl.output import fail

    assign: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"tags set: expected KEY=VALUE, got {pair!r}", exitcodes.USAGE)
        assign[key] = value
    _change(ctx.obj, assign, [])


def unset_tags(
    ctx: typer.Context,
    keys: Annotated[list[str], typer.Argument(metavar="KEY...", help="Tag keys to remove.")],
) -> None:
    from plumctl.output import fail

    for key in keys:
        if not key or "=" in key:
            fail(f"tags unset: expected a KEY, got {key!r}", exitcodes.USAGE)
    _change(ctx.obj, {}, keys)


def _change(opts: GlobalOptions, assign: dict[str, str], unset: list[str]) -> None:
    from plumctl.client import Client, exit_on_error
    from plumctl.output import emit_json

    with exit_on_error(), Client(opts.node, opts.token, opts.timeout) as client:
        doc = client.set_tags(assign, unset)
    tags = doc.get("tags") or {}
    if opts.json:
        emit_json({"kind": "Tags", "node": doc.get("node"), "tags": tags})
        return
    shown = ",".join(f"{k}={v}" for k, v in sorted(tags.items())) or "(none)"
    print(f"{doc.get('node')}: tags {shown}")
