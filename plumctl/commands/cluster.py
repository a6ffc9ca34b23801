"""``plumctl cluster up|down|status``: a whole local cluster of node processes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from plumctl import exitcodes

if TYPE_CHECKING:
    from plumctl.localcluster import ClusterState
from plumctl.options import PROFILES, GlobalOptions, completes, with_global_options

cluster_app = typer.Typer(
    help="Start, inspect and stop a local cluster on loopback.", no_args_is_help=True
)

#: seconds a node may take to bind its sockets (Python start-up on a busy machine)
READY_TIMEOUT = 60.0

DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help="State directory of the cluster (default: a per-user state dir)."),
]

UP_EXAMPLES = """Examples:

  plumctl cluster up -n 5

  plumctl cluster up -n 16 --profile lan --dir /tmp/c16

  export PLUMCTL_NODE=$(plumctl cluster status -o json | jq -r '.items[0].admin_url')

The nodes gossip on 127.0.0.1 only, which only this machine reaches: they run without a
keyring (a --config may still give them one: node.keyring).
"""


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster", rich_help_panel="Cluster ops")
    cluster_app.command(
        "up",
        help="Start N local nodes in the background, joined into one cluster.",
        epilog=UP_EXAMPLES + "\n" + exitcodes.EPILOG,
    )(with_global_options(up))
    cluster_app.command(
        "down", help="Stop the local cluster gracefully, then forcefully.", epilog=exitcodes.EPILOG
    )(with_global_options(down))
    cluster_app.command(
        "status", help="One line per local node: pid, alive, health.", epilog=exitcodes.EPILOG
    )(with_global_options(status))


def _dir(directory: Path | None) -> Path:
    from plumctl.localcluster import default_dir

    return (directory or default_dir()).expanduser().resolve()


def _load(where: Path) -> ClusterState | None:
    """The cluster state in ``where`` (None: none); an unreadable one ends the command."""
    from plumctl.localcluster import ClusterError, ClusterState
    from plumctl.output import fail

    try:
        return ClusterState.load(where)
    except ClusterError as exc:
        fail(str(exc), exitcodes.FAILED)


def _require(where: Path, missing: str) -> ClusterState:
    """The cluster state in ``where``; none at all ends the command with ``missing``."""
    from plumctl.output import fail

    state = _load(where)
    if state is None:
        fail(missing, exitcodes.FAILED)
    return state


def up(
    ctx: typer.Context,
    nodes: Annotated[
        int, typer.Option("--nodes", "-n", min=1, max=256, help="How many nodes.")
    ] = 5,
    profile: Annotated[
        str, typer.Option(help="lan, wan, local or large.", autocompletion=completes(*PROFILES))
    ] = "local",
    directory: DirOption = None,
    wait: Annotated[
        float, typer.Option(min=1.0, help="Seconds to wait for every node to see all others.")
    ] = 60.0,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML config given to every node.")
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="Bearer token file given to every node.")
    ] = None,
    keyring: Annotated[
        Path | None,
        typer.Option(help="Gossip keyring file; each node gets its own copy in DIR/keys/."),
    ] = None,
) -> None:
    import time

    from plumctl.localcluster import (
        ClusterError,
        ClusterState,
        NodeProcess,
        copy_keyring,
        keyring_path,
        spawn_node,
        stop_nodes,
        terminate,
        wait_ready,
    )
    from plumctl.output import emit_json, fail, plural, stderr
    from plumtree.core.config import PROFILES

    opts: GlobalOptions = ctx.obj
    if profile not in PROFILES:
        fail(
            f"--profile: unknown profile {profile!r} (choose one of {', '.join(PROFILES)})",
            exitcodes.USAGE,
        )
    where = _dir(directory)
    existing = _load(where)
    if existing is not None:
        alive = [n for n in existing.nodes if n.running()]
        if alive:
            fail(
                f"a cluster is already running in {where} ({plural(len(alive), 'node')}, pids "
                f"{', '.join(str(n.pid) for n in alive[:5])}{'...' if len(alive) > 5 else ''}); "
                f"stop it with: plumctl cluster down --dir {where}",
                exitcodes.FAILED,
            )
    where.mkdir(parents=True, exist_ok=True)
    state = ClusterState(
        str(where), profile, time.time(), token_file=_token_file(token_file, config)
    )
    names = [f"node-{i}" for i in range(nodes)]
    extra: list[str] = []
    for flag, path in (("--config", config), ("--token-file", token_file)):
        if path is not None:
            if not path.is_file():
                fail(f"{flag}: {path}: no such file", exitcodes.USAGE)
            extra += [flag, str(path.resolve())]
    if keyring is not None:
        try:
            copy_keyring(keyring, where, names)
        except (ClusterError, OSError) as exc:
            fail(str(exc), exitcodes.USAGE)

    def own(name: str) -> list[str]:
        """``extra`` and, with --keyring, the node's own keyring file."""
        return [*extra, "--keyring", str(keyring_path(where, name))] if keyring else extra

    console = stderr()
    started: list[NodeProcess] = []
    spawned: list[Any] = []  # every process we started, ready or not: ours to clean up
    try:
        proc, ready, log_path = spawn_node(where, names[0], profile, [], own(names[0]))
        spawned.append(proc)
        info = wait_ready(proc, ready, log_path, READY_TIMEOUT)
        started.append(
            NodeProcess(names[0], proc.pid, info["gossip_addr"], info["admin_url"], str(log_path))
        )
        state.nodes = started
        state.save()
        seed = info["gossip_addr"]
        pending = []
        for name in names[1:]:
            proc, ready, log_path = spawn_node(where, name, profile, [seed], own(name))
            spawned.append(proc)
            pending.append((name, proc, ready, log_path))
        for name, proc, ready, log_path in pending:
            info = wait_ready(proc, ready, log_path, READY_TIMEOUT)
            started.append(
                NodeProcess(name, proc.pid, info["gossip_addr"], info["admin_url"], str(log_path))
            )
            state.save()
    except (ClusterError, KeyboardInterrupt) as exc:
        stop_nodes(started, grace=5.0)
        terminate(spawned)
        (where / "cluster.json").unlink(missing_ok=True)
        if isinstance(exc, KeyboardInterrupt):
            fail("interrupted: stopped the nodes started so far", exitcodes.FAILED)
        fail(str(exc), exitcodes.FAILED)
    converged, seen = _wait_converged(
        started, nodes, wait, quiet=opts.json, timeout=opts.timeout, token=state.token()
    )
    if opts.json:
        emit_json(
            {
                "kind": "LocalCluster",
                "converged": converged,
                **state.as_dict(),
                "items": [_row(n) for n in started],
            }
        )
    else:
        _print_cluster(state, started)
        console.print(
            f"\n[b]{plural(nodes, 'node')}[/b] up in {where}"
            + (
                ""
                if converged
                else f" [yellow](not converged after {wait:g}s: min {min(seen.values(), default=0)} alive)[/]"
            )
        )
        console.print(f"  export PLUMCTL_NODE={started[0].admin_url}")
        if state.token_file:
            console.print(f'  export PLUMCTL_TOKEN="$(cat {state.token_file})"')
        console.print(
            "  plumctl members · plumctl broadcast 'hello' --wait · plumctl health --all · plumctl top"
        )
        console.print(f"  plumctl cluster down --dir {where}")
    if not converged:
        raise typer.Exit(exitcodes.TIMEOUT)


def _token_file(flag: Path | None, config: Path | None) -> str | None:
    """The nodes' token file: ``--token-file``, else the config's ``node.token_file``
    (relative to the directory plumctl runs in, as the nodes read it)."""
    if flag is None and config is not None and config.is_file():
        from plumtree.core.config import ConfigError, load_toml

        try:
            node = load_toml(config).get("node", {})
        except ConfigError:
            return None  # the nodes will say what is wrong with it
        named = node.get("token_file") if isinstance(node, dict) else None
        flag = Path(named) if isinstance(named, str) else None
    return str(flag.resolve()) if flag is not None else None


def _wait_converged(
    nodes: list[Any], n: int, wait: float, quiet: bool, timeout: float, token: str | None
) -> tuple[bool, dict[str, int]]:
    """Poll every node's /v1/members until each sees ``n`` alive members."""
    import time

    from plumctl.client import AsyncClient, ClientError, fan_out_sync

    async def alive(client: AsyncClient) -> int:
        doc = await client.members()
        return sum(1 for m in doc["items"] if m["state"] == "alive")

    urls = [node.admin_url for node in nodes]
    seen: dict[str, int] = {}
    deadline = time.monotonic() + wait

    def poll() -> int:
        results = fan_out_sync(urls, alive, token=token, timeout=min(timeout, 2.0))
        for url, value in results.items():
            seen[url] = 0 if isinstance(value, ClientError) else value
        return sum(1 for v in seen.values() if v >= n)

    if quiet:
        while time.monotonic() < deadline:
            if poll() == len(urls):
                return True, seen
            time.sleep(0.2)
        return False, seen
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from plumctl.output import stderr

    with Progress(
        TextColumn("nodes seeing all {task.fields[n]} members alive"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr(),
        transient=True,
    ) as progress:
        task = progress.add_task("converge", total=len(urls), n=n)
        while time.monotonic() < deadline:
            done = poll()
            progress.update(task, completed=done)
            if done == len(urls):
                return True, seen
            time.sleep(0.2)
    return False, seen


def _row(node: Any) -> dict[str, Any]:
    return {
        "name": node.name,
        "pid": node.pid,
        "gossip_addr": node.gossip_addr,
        "admin_url": node.admin_url,
        "log_file": node.log_file,
    }


def _print_cluster(state: Any, nodes: list[Any]) -> None:
    from plumctl.output import stdout, table

    t = table("name", "admin url", "gossip", "pid", "log")
    for n in nodes:
        t.add_row(n.name, n.admin_url, n.gossip_addr, str(n.pid), n.log_file)
    stdout().print(t)


def down(
    ctx: typer.Context,
    directory: DirOption = None,
    grace: Annotated[
        float, typer.Option(min=0.0, help="Seconds to wait for a graceful leave before SIGKILL.")
    ] = 10.0,
    keep_data: Annotated[
        bool,
        typer.Option(
            "--keep-data", help="Keep DIR/data (each node's state) for a later cluster up."
        ),
    ] = False,
) -> None:
    import shutil

    from plumctl.localcluster import stop_nodes
    from plumctl.output import emit_json, plural, stderr

    opts: GlobalOptions = ctx.obj
    where = _dir(directory)
    state = _load(where)
    if state is None:
        # its state file gone (the directory removed while the nodes ran): the nodes
        # are still ours, found by the ready files their command line names
        from plumctl.localcluster import orphans

        nodes = orphans(where)
        if not nodes:  # idempotent, as `make demo-down` twice must be: nothing to do is ok
            if opts.json:
                emit_json({"kind": "LocalClusterDown", "dir": str(where), "items": []})
            else:
                stderr().print(f"no cluster running in {where} (nothing to stop)")
            return
    else:
        nodes = state.nodes
    outcome = stop_nodes(nodes, grace)
    (where / "cluster.json").unlink(missing_ok=True)
    shutil.rmtree(where / "run", ignore_errors=True)
    shutil.rmtree(where / "logs", ignore_errors=True)
    if not keep_data:
        shutil.rmtree(where / "data", ignore_errors=True)
    if opts.json:
        emit_json(
            {
                "kind": "LocalClusterDown",
                "dir": str(where),
                "items": [{"name": k, "result": v} for k, v in outcome.items()],
            }
        )
    else:
        killed = [k for k, v in outcome.items() if v == "killed"]
        msg = f"stopped {plural(sum(v == 'stopped' for v in outcome.values()), 'node')} in {where}"
        if state is None:
            msg += " (its state file was gone: found by their command lines)"
        if killed:
            msg += f"; killed after {grace:g}s: {', '.join(killed)}"
        stderr().print(msg)


def status(ctx: typer.Context, directory: DirOption = None) -> None:
    from plumctl.client import AsyncClient, ClientError, fan_out_sync
    from plumctl.output import emit_json, stdout, table

    opts: GlobalOptions = ctx.obj
    where = _dir(directory)
    state = _require(
        where, f"no local cluster in {where} (start one with: plumctl cluster up --dir {where})"
    )

    async def health(client: AsyncClient) -> dict[str, Any]:
        body: dict[str, Any]
        body, _code = await client.health()
        return body

    running = {n.name: n.running() for n in state.nodes}
    urls = [n.admin_url for n in state.nodes if running[n.name]]
    token = opts.token or state.token()
    results = fan_out_sync(urls, health, token=token, timeout=opts.timeout) if urls else {}
    rows = []
    for n in state.nodes:
        result = results.get(n.admin_url.rstrip("/"))
        if result is None:
            result = next((v for k, v in results.items() if k.startswith(n.admin_url)), None)
        if not running[n.name]:
            health_status, message = "down", "process not running"
        elif isinstance(result, ClientError) or result is None:
            health_status, message = "unreachable", str(result) if result else "no answer"
        else:
            health_status, message = result["status"], result["message"]
        rows.append(
            {**_row(n), "alive": running[n.name], "health": health_status, "message": message}
        )
    code = _status_code([r["health"] for r in rows])
    if opts.json:
        emit_json({"kind": "LocalClusterStatus", "dir": str(where), "items": rows})
    else:
        t = table(
            "name", "admin url", "pid", "alive", "health", *(("message",) if opts.wide else ())
        )
        for r in rows:
            colour = {"Healthy": "green", "Degraded": "yellow"}.get(r["health"], "red")
            cells = [
                r["name"],
                r["admin_url"],
                str(r["pid"]),
                "yes" if r["alive"] else "no",
                f"[{colour}]{r['health']}[/]",
            ]
            if opts.wide:
                cells.append(r["message"])
            t.add_row(*cells)
        stdout().print(t)
    raise typer.Exit(code)


def _status_code(healths: list[str]) -> int:
    if not healths or all(h in ("down", "unreachable") for h in healths):
        return exitcodes.UNREACHABLE
    if any(h in ("down", "unreachable", "Unhealthy") for h in healths):
        return exitcodes.FAILED
    if any(h == "Degraded" for h in healths):
        return exitcodes.DEGRADED
    return exitcodes.OK
