"""``plumctl info``: one node's runtime facts (serf info), from ``GET /v1/status``."""

from __future__ import annotations

from typing import Any

import typer

from plumctl import exitcodes
from plumctl.options import GlobalOptions, with_global_options

EXAMPLES = """Examples:

  plumctl info

  plumctl --node http://127.0.0.1:7949 info -o json | jq .keyring

Shows: version and wire version, profile, addresses (gossip bind and advertised, admin),
keyring (on/off, key count, the primary's fingerprint: never a key), store (data dir,
fsync, epoch, delivery cursor), insecure gossip, uptime and member counts. -o json is
the node's whole /v1/status (its effective configuration too).

Exit 0; 1 the node answered with an error; 3 --node does not answer.
"""


def register(app: typer.Typer) -> None:
    app.command(
        "info",
        help="One node's runtime facts: version, addresses, keyring, store, uptime.",
        epilog=EXAMPLES + "\n" + exitcodes.EPILOG,
        rich_help_panel="Inspect",
    )(with_global_options(info))


def info(ctx: typer.Context) -> None:
    from plumctl.client import Client, exit_on_error
    from plumctl.output import emit_json, stdout, table

    opts: GlobalOptions = ctx.obj
    with exit_on_error(), Client(opts.node, opts.token, opts.timeout) as client:
        status = client.status()
    if opts.json:
        emit_json({"kind": "Info", **status})
        return
    t = table("key", "value")
    for key, value in facts(status):
        t.add_row(key, value)
    stdout().print(t)


def facts(s: dict[str, Any]) -> list[tuple[str, str]]:
    """The table rows of ``info``, in reading order."""
    ring = s.get("keyring") or {}
    store = s.get("store") or {}
    counts = s.get("members") or {}
    keyring = (
        f"on, {ring.get('keys')} key(s), primary {ring.get('primary')}"
        if ring.get("enabled")
        else "off"
    )
    stored = (
        f"{store.get('data_dir')} (fsync {store.get('fsync')})" if s.get("durable") else "memory"
    )
    members = ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "-"
    return [
        ("name", str(s.get("name"))),
        ("version", f"{s.get('version')} (wire {s.get('wire_version')})"),
        ("profile", str(s.get("profile"))),
        ("cluster label", str(s.get("cluster_label") or "-")),
        ("gossip bind", str(s.get("gossip_bind") or "-")),
        ("gossip advertise", str(s.get("gossip_addr"))),
        ("admin", str(s.get("admin_url"))),
        ("keyring", keyring),
        ("insecure gossip", "yes" if s.get("insecure_gossip") else "no"),
        ("store", stored),
        ("epoch", str(s.get("epoch"))),
        ("delivery cursor", str(s.get("delivery_cursor"))),
        ("incarnation", str(s.get("incarnation"))),
        ("uptime", f"{float(s.get('uptime_s') or 0):.1f}s"),
        ("members", members),
    ]
