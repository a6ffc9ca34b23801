"""``plumctl join``, ``leave``, ``force-leave``: serf's membership verbs on a running node."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from plumctl import exitcodes
from plumctl.options import GlobalOptions, with_global_options

JOIN_EXAMPLES = """Examples:

  plumctl join 10.0.0.5:7946 10.0.0.6:7946

  plumctl --node http://127.0.0.1:7951 join 127.0.0.1:7946 -o json

The node (--node) pushes its member list to each address and pulls theirs, once (as
serf join); an address counts as joined when a live member advertises it within
--timeout seconds. Exit 0 when at least one address joined (like serf), 1 when none did,
3 when --node does not answer.
"""

LEAVE_EXAMPLES = """Examples:

  plumctl leave                                    # the node at --node

  plumctl --node http://127.0.0.1:7949 leave -o json

The node announces its leave (others record it as left, not failed), then stops;
plumctl waits until it no longer answers. Exit 0 once it stopped, 124 when it still
answers after --timeout seconds, 1 refused (bad token), 3 --node does not answer.
"""

FORCE_LEAVE_EXAMPLES = """Examples:

  plumctl force-leave web-3                 # web-3 crashed: stop waiting for it

The member must be dead or suspect here: it becomes left on every member now instead
of after the reap time (serf force-leave). A live member is refused (exit 1): take a
live node out with `plumctl leave` on it. A forced-out member that is in fact alive
refutes and is alive again. Exit 0 done; 1 refused (alive, unknown name, bad token);
3 --node does not answer.
"""


def register(app: typer.Typer) -> None:
    verbs: list[tuple[str, Callable[..., None], str, str]] = [
        ("join", join, "Ask the node to join these gossip addresses (host:port).", JOIN_EXAMPLES),
        ("leave", leave, "Make the node leave the cluster gracefully and stop.", LEAVE_EXAMPLES),
        (
            "force-leave",
            force_leave,
            "Mark a failed member as left on every member, now.",
            FORCE_LEAVE_EXAMPLES,
        ),
    ]
    for name, func, help_, examples in verbs:
        app.command(
            name,
            help=help_,
            epilog=examples + "\n" + exitcodes.EPILOG,
            rich_help_panel="Cluster ops",
        )(with_global_options(func))


def join(
    ctx: typer.Context,
    addrs: Annotated[
        list[str], typer.Argument(metavar="ADDR...", help="Gossip addresses (host:port).")
    ],
) -> None:
    from plumctl.client import Client, exit_on_error
    from plumctl.output import emit_json, stderr

    opts: GlobalOptions = ctx.obj
    with exit_on_error(), Client(opts.node, opts.token, opts.timeout) as client:
        doc = client.join(addrs, opts.timeout)
    if opts.json:
        emit_json(doc)
    else:
        for seed in doc.get("seeds") or []:
            if seed.get("joined"):
                print(f"joined {seed.get('addr')} ({seed.get('member')})")
            else:
                stderr().print(f"not joined {seed.get('addr')}: {seed.get('reason')}")
        print(f"{doc.get('node')}: joined {doc.get('joined')} of {len(addrs)}")
    if not doc.get("joined"):
        raise typer.Exit(exitcodes.FAILED)


def leave(ctx: typer.Context) -> None:
    import time

    from plumctl.client import ApiError, Client, Unreachable, exit_on_error
    from plumctl.output import emit_json, fail

    opts: GlobalOptions = ctx.obj
    with exit_on_error(), Client(opts.node, opts.token, opts.timeout) as client:
        doc = client.leave()
        deadline = time.monotonic() + opts.timeout
        while True:
            try:
                client.status()
            except Unreachable:
                break
            except ApiError:
                pass  # 503 while it shuts down
            if time.monotonic() >= deadline:
                fail(
                    f"{doc.get('node')} still answers {opts.timeout:g}s after its leave",
                    exitcodes.TIMEOUT,
                )
            time.sleep(0.05)
    if opts.json:
        emit_json({"kind": "Leave", "node": doc.get("node"), "left": True, "stopped": True})
    else:
        print(f"{doc.get('node')}: left the cluster and stopped")


def force_leave(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The failed member's name.")],
) -> None:
    from plumctl.client import Client, exit_on_error
    from plumctl.output import emit_json

    opts: GlobalOptions = ctx.obj
    with exit_on_error(), Client(opts.node, opts.token, opts.timeout) as client:
        doc = client.force_leave(name)
    if opts.json:
        emit_json(doc)
    else:
        print(f"{name}: {doc.get('was')} -> left (announced by {doc.get('node')})")
