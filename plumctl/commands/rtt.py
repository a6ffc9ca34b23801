"""``plumctl rtt``: a measured round trip between two members (not Vivaldi coordinates).

serf estimates RTTs between any two members from Vivaldi network coordinates. plumtree
reports what it measures: each node keeps the round trip of its last acknowledged SWIM
probe of each member (direct or through a relay). ``rtt B`` asks the --node for its
measurement to B; ``rtt A B`` asks A's own admin API (found through --node's member
list) for its measurement to B.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from plumctl import exitcodes
from plumctl.options import GlobalOptions, with_global_options

EXAMPLES = """Examples:

  plumctl rtt node-2                  # from the --node to node-2

  plumctl rtt node-1 node-3 -o json   # node-1's measurement to node-3

Source: the last SWIM probe round trip the first node measured to the second (serf
estimates from Vivaldi coordinates instead; plumtree has none). A member is probed
about once per probe interval times the cluster size, so a new member may have no
measurement for a while (exit 1). The value has the resolution of the node's clock
(a round trip shorter than one tick reads 0 in JSON, "below the node's clock
resolution" in the table).

Exit 0 measured; 1 no measurement yet, or an unknown member; 3 a node does not answer.
"""


def register(app: typer.Typer) -> None:
    app.command(
        "rtt",
        help="Measured round trip between two members (SWIM probes, not Vivaldi).",
        epilog=EXAMPLES + "\n" + exitcodes.EPILOG,
        rich_help_panel="Inspect",
    )(with_global_options(rtt))


def rtt(
    ctx: typer.Context,
    first: Annotated[str, typer.Argument(metavar="NODE", help="Member name.")],
    second: Annotated[
        str | None, typer.Argument(metavar="[NODE]", help="Second member: RTT from NODE to it.")
    ] = None,
) -> None:
    from plumctl.client import Client, exit_on_error
    from plumctl.output import emit_json, fail

    opts: GlobalOptions = ctx.obj
    with exit_on_error(), Client(opts.node, opts.token, opts.timeout) as client:
        doc = client.rtt(first) if second is None else _from_member(client, opts, first, second)
    if opts.json:
        emit_json(doc)
    else:
        ms = doc.get("rtt_ms")
        if ms is None:
            shown = "no measurement yet"
        elif ms <= 0:  # no round trip takes no time: the node's clock did not tick
            shown = "below the node's clock resolution (measured 0)"
        else:
            shown = f"{ms:.3f} ms"
        print(f"{doc.get('from')} -> {doc.get('to')}: {shown} (source: {doc.get('source')})")
    if doc.get("rtt_ms") is None:
        fail(
            f"{doc.get('from')} has not measured a round trip to {doc.get('to')} yet",
            exitcodes.FAILED,
        )


def _from_member(client: Any, opts: GlobalOptions, name: str, to: str) -> dict[str, Any]:
    """Ask member ``name``'s own admin API (advertised in its tags) for its RTT to ``to``."""
    from plumctl.client import Client
    from plumctl.output import fail

    members = client.members().get("items") or []
    member = next((m for m in members if m.get("name") == name), None)
    if member is None:
        fail(f"no member named {name!r} (as {client.base_url} sees it)", exitcodes.FAILED)
    url = member.get("admin_url")
    if not url:
        fail(f"member {name!r} advertises no admin API", exitcodes.FAILED)
    with Client(str(url), opts.token, opts.timeout) as other:
        doc: dict[str, Any] = other.rtt(to)
        return doc
