"""``plumctl peers``: the Plumtree view of one node, or of every member side by side."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from plumctl import exitcodes
from plumctl.options import GlobalOptions, with_global_options

EXAMPLES = """Examples:

  plumctl peers                  # eager/lazy peers of --node, RTT, traffic

  plumctl peers --all            # every member; flags asymmetric links and isolated nodes

  plumctl peers --all -o json
"""


def register(app: typer.Typer) -> None:
    app.command(
        "peers",
        help="Plumtree peers: eager/lazy, RTT, since, traffic.",
        epilog=EXAMPLES + "\n" + exitcodes.EPILOG,
        rich_help_panel="Inspect",
    )(with_global_options(peers))


def peers(
    ctx: typer.Context,
    everyone: Annotated[
        bool, typer.Option("--all", "-a", help="Every member side by side.")
    ] = False,
) -> None:
    from plumctl.client import Client, exit_on_error

    opts: GlobalOptions = ctx.obj
    if everyone:
        _all(opts)
        return
    with exit_on_error(), Client(opts.node, opts.token, opts.timeout) as client:
        doc = client.peers()
    _one(doc, opts)


def _one(doc: dict[str, Any], opts: GlobalOptions) -> None:
    import time

    from plumctl.commands.members import _ago
    from plumctl.output import emit_json, stdout, table

    items = sorted(
        doc.get("items", []), key=lambda p: (p.get("state") != "eager", str(p.get("peer")))
    )
    if opts.json:
        emit_json({"kind": "PeerList", "node": doc.get("node"), "items": items})
        return
    now = time.time()
    t = table(
        "peer",
        "state",
        "rtt",
        "since",
        "gossip out/in",
        "ihave out/in",
        "grafts out/in",
        "prunes out/in",
    )
    for p in items:
        rtt = p.get("rtt_ms")
        t.add_row(
            str(p.get("peer")),
            "[green]eager[/]" if p.get("state") == "eager" else "lazy",
            "-" if rtt is None else f"{rtt:.2f}ms",
            "-" if p.get("since") is None else _ago(now - float(p["since"])),
            f"{p.get('gossip_sent', 0)}/{p.get('gossip_received', 0)}",
            f"{p.get('ihave_sent', 0)}/{p.get('ihave_received', 0)}",
            f"{p.get('grafts_sent', 0)}/{p.get('grafts_received', 0)}",
            f"{p.get('prunes_sent', 0)}/{p.get('prunes_received', 0)}",
        )
    console = stdout()
    console.print(t)
    eager = sum(1 for p in items if p.get("state") == "eager")
    console.print(f"{doc.get('node')}: {eager} eager, {len(items) - eager} lazy")


def peer_map(views: dict[str, dict[str, str]]) -> tuple[list[dict[str, str]], list[str]]:
    """Asymmetric links and nodes without eager peers, from each node's {peer: state}.

    A link is asymmetric when one side pushes eagerly and the other side does not (lazy
    or not a peer at all): payloads flow one way only until a Graft or Prune settles it.
    """
    pairs = sorted({tuple(sorted((a, b))) for a, v in views.items() for b in v if b in views})
    asymmetric: list[dict[str, str]] = []
    for a, b in pairs:
        a_sees, b_sees = views[a].get(b, "none"), views[b].get(a, "none")
        if a_sees != b_sees and "eager" in (a_sees, b_sees):
            asymmetric.append({"a": a, "b": b, "a_sees_b": a_sees, "b_sees_a": b_sees})
    isolated = sorted(n for n, v in views.items() if not any(s == "eager" for s in v.values()))
    return asymmetric, isolated


def _all(opts: GlobalOptions) -> None:
    from plumctl.client import AsyncClient, ClientError, exit_on_error, fan_out_sync, normalise_url
    from plumctl.output import emit_json, stdout, table, warn
    from plumctl.targets import resolve

    with exit_on_error():
        targets, _ = resolve(opts, everyone=True)

    async def get(client: AsyncClient) -> dict[str, Any]:
        return await client.peers()

    live = [t for t in targets if t.live and t.url]
    results = fan_out_sync(
        [t.url for t in live if t.url], get, token=opts.token, timeout=opts.timeout
    )
    views: dict[str, dict[str, str]] = {}
    errors: dict[str, str] = {}
    for target in live:
        result = results[normalise_url(target.url or "")]
        if isinstance(result, ClientError):
            errors[target.name] = str(result)
            continue
        views[target.name] = {str(p["peer"]): str(p["state"]) for p in result.get("items", [])}
    asymmetric, isolated = peer_map(views)
    if opts.json:
        emit_json(
            {
                "kind": "PeerMap",
                "items": [
                    {
                        "node": n,
                        "eager": sorted(p for p, s in v.items() if s == "eager"),
                        "lazy": sorted(p for p, s in v.items() if s == "lazy"),
                    }
                    for n, v in sorted(views.items())
                ],
                "asymmetric": asymmetric,
                "isolated": isolated,
                "unreachable": errors,
            }
        )
        return
    t = table("node", "eager", "lazy", "eager peers", "flags")
    flagged = {x["a"] for x in asymmetric} | {x["b"] for x in asymmetric}
    for n, v in sorted(views.items()):
        eager = sorted(p for p, s in v.items() if s == "eager")
        flags = []
        if n in isolated:
            flags.append("[red]no eager peers[/]")
        if n in flagged:
            flags.append("[yellow]asymmetric[/]")
        t.add_row(
            n,
            str(len(eager)),
            str(len(v) - len(eager)),
            ", ".join(eager) or "-",
            " ".join(flags) or "-",
        )
    console = stdout()
    console.print(t)
    for x in asymmetric:
        console.print(
            f"  asymmetric: {x['a']} sees {x['b']} as {x['a_sees_b']}, {x['b']} sees {x['a']} as {x['b_sees_a']}"
        )
    for name, err in errors.items():
        warn(f"{name}: {err}")
