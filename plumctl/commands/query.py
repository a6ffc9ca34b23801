"""``plumctl query NAME [PAYLOAD]``: serf's query, through the --node's admin API.

The node asks every targeted live member over gossip; each acks and, when one of its
handlers wants the query (``--handler 'query:NAME=CMD'`` or ``query=CMD``), answers
with that handler's stdout (at most 1 KiB). This prints who acked and answered.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from plumctl import exitcodes
from plumctl.options import GlobalOptions, with_global_options

EXAMPLES = """Examples:

  plumctl query uptime

  plumctl query deploy v42 --tag role=api --node-filter 'web-.*' --timeout 10

  plumctl query load -o json

Members answer with their query handlers (plumctl node start --handler
'query:uptime=./uptime.sh': the payload on stdin, PLUMTREE_QUERY_NAME and
PLUMTREE_QUERY_ORIGIN in the environment, stdout up to 1 KiB is the response). A
member without such a handler acks only. --timeout is how long the node gathers
answers (default 5 s, at most 60). --node-filter and --tag KEY=REGEX (repeatable, all
must match) are regexes the whole name or tag value must match; dead and left members
are not asked.

Exit 0 every targeted live member acked; 1 some did not (named on stderr) or the node
refused; 2 a bad name, payload or regex; 3 --node does not answer.
"""


def register(app: typer.Typer) -> None:
    app.command(
        "query",
        help="Ask members to run their query handlers; collect acks and answers.",
        epilog=EXAMPLES + "\n" + exitcodes.EPILOG,
        rich_help_panel="Cluster ops",
    )(with_global_options(query))


def query(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Query name (handlers filter on it).")
    ],
    payload: Annotated[
        str, typer.Argument(metavar="[PAYLOAD]", help="Text given to handlers on stdin.")
    ] = "",
    node_filter: Annotated[
        str | None,
        typer.Option("--node-filter", help="Only members whose whole name matches REGEX."),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", help="Only members with tag KEY fully matching REGEX (repeatable)."),
    ] = None,
) -> None:
    import re

    from plumctl.client import Client, exit_on_error
    from plumctl.output import emit_json, fail

    opts: GlobalOptions = ctx.obj
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        fail(f"query name {name!r}: 1-64 of A-Z a-z 0-9 _ . -", exitcodes.USAGE)
    tags: dict[str, str] = {}
    for item in tag or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--tag: expected KEY=REGEX, got {item!r}", exitcodes.USAGE)
        tags[key] = value
    for option, text in [
        ("--node-filter", node_filter),
        *[(f"--tag {k}", v) for k, v in tags.items()],
    ]:
        if text is not None:
            try:
                re.compile(text)
            except re.error as exc:
                fail(f"{option}: invalid regex {text!r}: {exc}", exitcodes.USAGE)
    with exit_on_error(), Client(opts.node, opts.token, opts.timeout) as client:
        doc = client.query(name, payload, opts.timeout, node_filter, tags)
    if opts.json:
        emit_json(doc)
    else:
        _table(doc)
    missing = doc.get("missing") or []
    if missing:
        fail(
            f"no ack from {len(missing)} of {len(doc.get('nodes') or [])} member(s) within"
            f" {doc.get('timeout')}s: {', '.join(missing)}",
            exitcodes.FAILED,
        )


def _table(doc: dict[str, Any]) -> None:
    from plumctl.output import stdout, table

    rows = doc.get("nodes") or []
    t = table("NODE", "ACK", "ACK MS", "RESPONSE", title=f"query {doc.get('name')}")
    for row in rows:
        if not row.get("acked"):
            response = "-"
        elif not row.get("responded"):
            response = "(no handler answered)"
        elif row.get("ok"):
            response = (row.get("response") or "").rstrip("\n")
        else:
            response = f"failed: {row.get('error')}"
        ack_ms = row.get("ack_ms")
        t.add_row(
            str(row.get("node")),
            "yes" if row.get("acked") else "NO",
            "-" if ack_ms is None else f"{ack_ms:.1f}",
            response,
        )
    stdout().print(t)
    print(
        f"{doc.get('acks')} of {len(rows)} acked, {doc.get('responses')} responded"
        + (
            f"; {len(doc.get('skipped') or [])} dead or left not asked"
            if doc.get("skipped")
            else ""
        )
    )
