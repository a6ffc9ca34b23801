"""``plumctl keys``: the running cluster's gossip keyring (like ``serf keys``).

By default the one node plumctl talks to (``--node``) carries each change to every live
member over gossip and answers with their replies (``/v1/keys/cluster``): one reachable
admin API is enough, as on a cluster whose admin APIs listen on 127.0.0.1 of each host.
``--direct`` asks every live member's own admin API instead (the URL it advertises).
Either way each node saves the change to its keyring file before it takes effect. ``use`` and
``remove`` first check the order that rotates keys without a rejected frame: a key
becomes primary only once every live member holds it, and is removed only once no live
member encrypts with it (``--force`` skips the check).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer

from plumctl import exitcodes
from plumctl.options import GlobalOptions, with_global_options

if TYPE_CHECKING:
    from plumctl.targets import Asked

keys_app = typer.Typer(
    help="The running cluster's gossip keyring: generate, list, install, use, remove.",
    no_args_is_help=True,
)

ROTATION = """Rotation, with no restart and no rejected message:

  NEW=$(plumctl keys generate)

  plumctl keys install "$NEW"     # every node opens NEW too; all still seal with OLD

  plumctl keys use "$NEW"         # every node seals with NEW (refused unless all hold it)

  plumctl keys remove "$OLD"      # refused while a live node still seals with OLD

The --node carries each request to every live member (alive or suspect) over gossip,
sealed with the cluster key, and waits --timeout seconds for their answers; a member
that did not answer in time is reported as "no answer". Answers show key fingerprints
(8 hex digits of SHA-256), never keys. --direct asks each member's own admin API (the
URL it advertises) instead, and lists full keys. Dead and left members are listed, not
changed (one that comes back with a removed key cannot rejoin: give it the new keyring
file). Each node saves the change to its --keyring file (mode 0600, replaced
atomically) before it takes effect, so a restart keeps it. KEY is standard base64 of
16, 24 or 32 bytes; '-' reads it from stdin (keeps it out of the process list).

Exit 0 when every live member confirmed; 1 when any did not (each named, with its
error: no answer, no keyring, a refused change) or the check before use/remove
refused; 2 for a malformed KEY; 3 when --node does not answer.
"""

KeyArgument = Annotated[
    str, typer.Argument(metavar="KEY", help="Base64 key (16, 24 or 32 bytes), or - for stdin.")
]
ForceOption = Annotated[
    bool,
    typer.Option("--force", help="Skip the check that every live member is ready for this change."),
]
DirectOption = Annotated[
    bool,
    typer.Option(
        "--direct",
        help="Ask every live member's own admin API (the URL it advertises) instead of "
        "having --node carry the request over gossip.",
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys", rich_help_panel="Cluster ops")
    epilog = ROTATION + "\n" + exitcodes.EPILOG
    keys_app.command("generate", help="Print a new random AES-256 key (base64); asks no node.")(
        with_global_options(generate)
    )
    keys_app.command(
        "list",
        help="Every live member's keys and primary, and each key's count of nodes.",
        epilog=epilog,
    )(with_global_options(list_keys))
    keys_app.command("install", help="Add KEY to every live member's keyring.", epilog=epilog)(
        with_global_options(install)
    )
    keys_app.command(
        "use", help="Make KEY the primary (encrypting) key on every live member.", epilog=epilog
    )(with_global_options(use))
    keys_app.command("remove", help="Remove KEY from every live member's keyring.", epilog=epilog)(
        with_global_options(remove)
    )


def generate(ctx: typer.Context) -> None:
    from plumctl.output import emit_json
    from plumtree.runtime.crypto import Keyring

    opts: GlobalOptions = ctx.obj
    key = Keyring.generate()
    if opts.json:
        emit_json({"kind": "Key", "key": key})
    else:
        print(key)


def list_keys(ctx: typer.Context, direct: DirectOption = False) -> None:
    import asyncio

    from plumctl.client import exit_on_error
    from plumctl.output import emit_json

    opts: GlobalOptions = ctx.obj
    with exit_on_error():
        listing = asyncio.run(_ask(opts, direct))
    if opts.json:
        emit_json(listing.as_dict())
    else:
        _render_list(listing, opts.wide)
    _exit(listing.failed, "answered")


def install(ctx: typer.Context, key: KeyArgument, direct: DirectOption = False) -> None:
    _change(ctx.obj, "install", key, force=True, direct=direct)


def use(
    ctx: typer.Context, key: KeyArgument, force: ForceOption = False, direct: DirectOption = False
) -> None:
    _change(ctx.obj, "use", key, force, direct)


def remove(
    ctx: typer.Context, key: KeyArgument, force: ForceOption = False, direct: DirectOption = False
) -> None:
    _change(ctx.obj, "remove", key, force, direct)


# -- the computation ---------------------------------------------------------------------


@dataclass(slots=True)
class NodeKeys:
    """One member's keyring as it answered, or why it did not."""

    node: str
    state: str
    url: str | None
    keys: list[str] = field(default_factory=list)
    primary: str | None = None
    error: str | None = None
    #: after a change: did the node's keyring change, and did it save it
    changed: bool | None = None
    persisted: bool | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        doc = {
            "node": self.node,
            "state": self.state,
            "url": self.url,
            "ok": self.ok,
            "error": self.error,
            "keys": self.keys,
            "primary": self.primary,
        }
        if self.changed is not None:
            doc["changed"] = self.changed
            doc["persisted"] = self.persisted
        return doc


@dataclass(slots=True)
class Listing:
    """Every live member's keyring, each key's count, and the members not asked."""

    node: str
    nodes: list[NodeKeys]
    skipped: list[NodeKeys]
    #: "gossip": keys are fingerprints (the --node asked the others); "direct": keys
    via: str = "direct"

    def ident(self, key: str) -> str:
        """How this listing names ``key`` (base64): itself, or its fingerprint."""
        from plumtree.runtime.crypto import decode_key, fingerprint

        return fingerprint(decode_key(key)) if self.via == "gossip" else key

    @property
    def failed(self) -> list[NodeKeys]:
        return [n for n in self.nodes if not n.ok]

    def holding(self, key: str) -> list[str]:
        return [n.node for n in self.nodes if key in n.keys]

    def sealing(self, key: str) -> list[str]:
        return [n.node for n in self.nodes if n.primary == key]

    def pool(self) -> list[dict[str, Any]]:
        """Each key once (primaries first), with how many answering nodes hold it."""
        seen: dict[str, None] = {}
        for n in sorted(self.nodes, key=lambda n: n.primary is None):
            if n.primary is not None:
                seen.setdefault(n.primary)
        for n in self.nodes:
            for k in n.keys:
                seen.setdefault(k)
        answered = sum(n.ok for n in self.nodes)
        return [
            {
                "key": k,
                "nodes": len(self.holding(k)),
                "primary_on": len(self.sealing(k)),
                "of": answered,
            }
            for k in seen
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "KeyringList",
            "ok": not self.failed,
            "node": self.node,
            "via": self.via,
            "keys": self.pool(),
            "items": [n.as_dict() for n in self.nodes],
            "skipped": [n.as_dict() for n in self.skipped],
            "failed": [n.node for n in self.failed],
        }


def summarise(asked: Asked[dict[str, Any]]) -> Listing:
    """The listing from every live member's ``/v1/keys`` answer (or its error)."""
    nodes = []
    for t in asked.live:
        item = NodeKeys(t.name, t.state, t.url)
        answer = asked.answers.get(t.name, "no answer")
        if isinstance(answer, dict):
            item.keys = [str(k) for k in answer["keys"]]
            item.primary = str(answer["primary"])
            if "changed" in answer:
                item.changed = bool(answer["changed"])
                item.persisted = bool(answer.get("persisted"))
        else:
            item.error = answer
        nodes.append(item)
    skipped = [NodeKeys(t.name, t.state, t.url) for t in asked.others]
    return Listing(asked.node, nodes, skipped)


def from_cluster(doc: dict[str, Any], wait: float) -> Listing:
    """The listing from a ``/v1/keys/cluster`` answer: every live member's reply (keys
    as fingerprints), those that gave none in time, the dead and left not asked."""
    nodes = []
    for n in doc["nodes"]:
        item = NodeKeys(str(n.get("node")), str(n.get("state", "alive")), None)
        if n.get("ok"):
            item.keys = [str(k) for k in n.get("keys", [])]
            item.primary = str(n.get("primary"))
        else:
            item.error = str(n.get("error") or "refused")
        if "changed" in n and doc.get("op") != "list":
            item.changed = bool(n["changed"])
            item.persisted = bool(n.get("persisted"))
        nodes.append(item)
    for n in doc["missing"]:
        nodes.append(
            NodeKeys(str(n.get("node")), str(n.get("state")), None, error=f"no answer in {wait:g}s")
        )
    nodes.sort(key=lambda n: n.node)
    skipped = [NodeKeys(str(n.get("node")), str(n.get("state")), None) for n in doc["skipped"]]
    return Listing(str(doc["node"]), nodes, skipped, via="gossip")


def refusal(op: str, key: str, listing: Listing) -> str | None:
    """Why ``op`` would cut a member off now (None: safe). ``use``: every live member must
    already hold the key (else it could not open what the others seal); ``remove``: no
    live member may still seal with it (else the others could not open its frames)."""
    key = listing.ident(key)
    if listing.failed:
        return f"cannot check every live member first: {_failures(listing.failed)}"
    if op == "use":
        lacking = [n.node for n in listing.nodes if key not in n.keys]
        if lacking:
            return (
                f"not switching: {', '.join(lacking)} {'does' if len(lacking) == 1 else 'do'} "
                "not hold the key yet (plumctl keys install KEY first)"
            )
    if op == "remove":
        sealing = listing.sealing(key)
        if sealing:
            return (
                f"not removing: {', '.join(sealing)} still encrypt{'s' if len(sealing) == 1 else ''}"
                " with it (plumctl keys use ANOTHER first)"
            )
    return None


async def _ask(opts: GlobalOptions, direct: bool, op: str | None = None, key: str = "") -> Listing:
    """``op`` (None: list) on every live member: through --node over gossip, or
    ``direct``ly through each member's own admin API."""
    from plumctl.client import AsyncClient
    from plumctl.targets import ask_live

    if not direct:
        async with AsyncClient(opts.node, opts.token, opts.timeout) as client:
            return from_cluster(await client.cluster_keys(op, key, opts.timeout), opts.timeout)

    async def one(client: AsyncClient) -> dict[str, Any]:
        if op is None:
            return await client.keys()
        return await client.change_keys(op, key)

    return summarise(await ask_live(opts, one, check=dict))


def _change(opts: GlobalOptions, op: str, text: str, force: bool, direct: bool) -> None:
    import asyncio

    from plumctl.client import exit_on_error
    from plumctl.output import emit_json, fail

    key = _read_key(text)
    with exit_on_error():
        if not force:
            why = refusal(op, key, asyncio.run(_ask(opts, direct)))
            if why is not None:
                fail(why + "; --force to do it anyway", exitcodes.FAILED)
        listing = asyncio.run(_ask(opts, direct, op, key))
    if opts.json:
        emit_json(
            {**listing.as_dict(), "kind": "KeyringChange", "op": op, "key": listing.ident(key)}
        )
    else:
        _render_change(listing, op, opts.wide)
    _exit(listing.failed, "confirmed")


def _read_key(text: str) -> str:
    """The key as given (or read from stdin for '-'), checked: a bad key is a usage error."""
    import sys

    from plumctl.output import fail
    from plumtree.runtime.crypto import KeyringError, decode_key, encode_key

    if text == "-":
        text = sys.stdin.readline()
    try:
        return encode_key(decode_key(text))
    except KeyringError as exc:
        fail(f"KEY: {exc}: expected base64 of 16, 24 or 32 bytes", exitcodes.USAGE)


def _failures(failed: list[NodeKeys]) -> str:
    return "; ".join(f"{n.node}: {n.error}" for n in failed)


def _exit(failed: list[NodeKeys], verb: str) -> None:
    from plumctl.output import fail

    if failed:
        fail(f"not every live member {verb}: {_failures(failed)}", exitcodes.FAILED)
    raise typer.Exit(exitcodes.OK)


# -- output ------------------------------------------------------------------------------


def _render_list(listing: Listing, wide: bool) -> None:
    from rich.markup import escape

    from plumctl.output import stdout, table

    console = stdout()
    pool = table("key", "nodes", "primary on")
    for k in listing.pool():
        pool.add_row(k["key"], f"{k['nodes']}/{k['of']}", f"{k['primary_on']}/{k['of']}")
    console.print(pool)
    console.print()
    columns = ["node", "state", "primary", "keys"] + (["all keys"] if wide else [])
    nodes = table(*columns)
    for n in listing.nodes:
        if n.ok:
            cells = [escape(n.node), n.state, n.primary or "-", str(len(n.keys))]
        else:
            cells = [escape(n.node), n.state, f"[red]{escape(str(n.error))}[/]", "-"]
        nodes.add_row(*cells, *([", ".join(n.keys) or "-"] if wide else []))
    for n in listing.skipped:
        nodes.add_row(escape(n.node), n.state, "[dim]not asked[/]", "-", *(["-"] if wide else []))
    console.print(nodes)


def _render_change(listing: Listing, op: str, wide: bool) -> None:
    from rich.markup import escape

    from plumctl.output import stdout, table

    console = stdout()
    columns = ["node", "state", "result", "keys", "primary"] + (["saved"] if wide else [])
    t = table(*columns)
    for n in listing.nodes:
        if n.ok:
            result = "[green]ok[/]" if n.changed else "ok (unchanged)"
            cells = [escape(n.node), n.state, result, str(len(n.keys)), n.primary or "-"]
        else:
            cells = [escape(n.node), n.state, f"[red]{escape(str(n.error))}[/]", "-", "-"]
        if wide:
            cells.append("-" if n.persisted is None else ("yes" if n.persisted else "memory only"))
        t.add_row(*cells)
    for n in listing.skipped:
        t.add_row(escape(n.node), n.state, "[dim]not asked[/]", "-", "-", *(["-"] if wide else []))
    console.print(t)
    done = sum(n.ok for n in listing.nodes)
    colour = "green" if not listing.failed else "red"
    console.print(f"keys {op}: [{colour}]{done}/{len(listing.nodes)}[/] live members confirmed")
