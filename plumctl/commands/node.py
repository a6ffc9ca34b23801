"""``plumctl node start``: run one cluster node in the foreground until a signal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from plumctl import exitcodes
from plumctl.options import PROFILES, completes

node_app = typer.Typer(help="Run a node.", no_args_is_help=True)

EXAMPLES = """Examples:

  plumctl node start --name n1 --bind 127.0.0.1:7946 --api 127.0.0.1:7947

  plumctl node start --name n2 --bind 127.0.0.1:7948 --api 127.0.0.1:7949 --join 127.0.0.1:7946

  plumctl node start --name n1 --keyring keys.json --data-dir /var/lib/plumtree/n1 --join 10.0.0.2:7946

  plumctl node start --config node.toml --log-json

  plumctl node start --name n1 --handler 'delivery=./on-message.sh' --handler 'member-failed=./page.sh'

Gossip bound to an address other machines reach (the default, 0.0.0.0:7946) needs
--keyring FILE (a JSON list of base64 AES keys, mode 0600: a file group or others can
read is refused); --insecure-gossip runs without one, with a warning. Gossip on loopback
only (127.0.0.1, as plumctl cluster up runs it) needs no keyring.

With --data-dir the node keeps its state there (its epoch and sequence numbers, what it
delivered, the payloads kept for repair, its delivery log and the member list): a
broadcast is acknowledged once it is committed there, and after a restart the node
delivers nothing twice, catches up on what it missed (within the retention) and finds
its cluster again without --join. Without it, state is in memory only.

SIGTERM or Ctrl-C leaves the cluster gracefully (others see *left*, not *dead*),
drains the send queues and exits 0; a second signal exits at once.

--handler [EVENT,...=]CMD runs /bin/sh -c CMD for each event (delivery, member-join,
member-leave, member-failed, member-update, member-reap, query, query:NAME; no filter:
all) with the
payload on stdin and PLUMTREE_EVENT, PLUMTREE_SELF_NAME, PLUMTREE_ORIGIN,
PLUMTREE_MESSAGE_ID, PLUMTREE_CURSOR, PLUMTREE_MEMBER_NAME, ... in its environment (see
the README): one run at a time per handler, killed after node.handler_timeout (30 s).
A query handler's stdout (up to 1 KiB) is its answer to plumctl query.

The node runs on uvloop when it is installed (PLUMTREE_EVENT_LOOP=asyncio forces the
standard loop); the first log line says which.
"""


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node", rich_help_panel="Cluster ops")
    node_app.command(
        "start", help="Start a node in the foreground.", epilog=EXAMPLES + "\n" + exitcodes.EPILOG
    )(start)


def start(
    name: Annotated[
        str | None, typer.Option(help="Unique node name (default: hostname-pid).")
    ] = None,
    bind: Annotated[
        str | None, typer.Option(help="Gossip address, UDP and TCP (default: 0.0.0.0:7946).")
    ] = None,
    advertise: Annotated[
        str | None, typer.Option(help="Address other members use to reach this node.")
    ] = None,
    api: Annotated[
        str | None,
        typer.Option(help="Admin API address (default: 127.0.0.1:7947); 'off' disables it."),
    ] = None,
    join: Annotated[
        list[str] | None, typer.Option("--join", help="Seed address host:port (repeatable).")
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            help="lan, wan, local or large (default: lan).", autocompletion=completes(*PROFILES)
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML file with node, plumtree and swim tables.")
    ] = None,
    label: Annotated[
        str | None, typer.Option(help="Cluster label: clusters with different labels never merge.")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Member tag key=value (repeatable).")
    ] = None,
    handler: Annotated[
        list[str] | None,
        typer.Option(
            "--handler",
            help="[EVENT,...=]CMD run per event, payload on stdin, PLUMTREE_* env (repeatable).",
        ),
    ] = None,
    keyring: Annotated[
        Path | None,
        typer.Option(
            help="JSON list of base64 AES keys, primary first (mode 0600); plumctl keys edits it."
        ),
    ] = None,
    insecure_gossip: Annotated[
        bool,
        typer.Option(
            "--insecure-gossip",
            help="Allow unauthenticated gossip on a non-loopback address (no --keyring).",
        ),
    ] = False,
    token_file: Annotated[
        Path | None,
        typer.Option(help="File holding the bearer token every admin API call must carry."),
    ] = None,
    public_metrics: Annotated[
        bool | None,
        typer.Option(
            "--public-metrics",
            help="With --token-file: serve /metrics and /v1/health without the token.",
            show_default=False,
        ),
    ] = None,
    api_cert: Annotated[
        Path | None,
        typer.Option(help="PEM certificate (chain) for the admin API: it then speaks HTTPS."),
    ] = None,
    api_key: Annotated[Path | None, typer.Option(help="PEM private key of --api-cert.")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Keep the node's state here across restarts (default: memory only)."),
    ] = None,
    fsync: Annotated[
        str | None,
        typer.Option(
            help="normal: a commit survives a crash of the node; full: of the machine too"
            " (slower). Default normal.",
            autocompletion=completes("normal", "full"),
        ),
    ] = None,
    log_level: Annotated[
        str,
        typer.Option(
            help="debug, info, warning or error.",
            autocompletion=completes("debug", "info", "warning", "error"),
        ),
    ] = "info",
    log_json: Annotated[
        bool, typer.Option("--log-json", help="One JSON object per log line.")
    ] = False,
    ready_file: Annotated[
        Path | None, typer.Option(hidden=True, help="Write addresses here (JSON) once listening.")
    ] = None,
) -> None:
    from plumctl.output import fail

    try:
        settings = _settings(
            name,
            bind,
            advertise,
            api,
            join,
            profile,
            config,
            label,
            tag,
            keyring,
            token_file,
            data_dir,
            fsync,
            insecure_gossip,
            public_metrics,
            api_cert,
            api_key,
            handler,
        )
    except (ValueError, OSError) as exc:
        fail(str(exc), exitcodes.USAGE)
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        fail(
            f"--log-level: expected debug, info, warning or error, got {log_level!r}",
            exitcodes.USAGE,
        )
    from plumtree.runtime import logs
    from plumtree.runtime.eventloop import loop_factory

    try:
        loop_factory()  # a bad PLUMTREE_EVENT_LOOP is a usage error, before anything binds
    except ValueError as exc:
        fail(str(exc), exitcodes.USAGE)
    logs.setup(log_level, log_json)
    code = _run(settings, ready_file)
    raise typer.Exit(code)


def _settings(
    name: str | None,
    bind: str | None,
    advertise: str | None,
    api: str | None,
    join: list[str] | None,
    profile: str | None,
    config: Path | None,
    label: str | None,
    tags: list[str] | None,
    keyring: Path | None,
    token_file: Path | None,
    data_dir: Path | None = None,
    fsync: str | None = None,
    insecure_gossip: bool = False,
    public_metrics: bool | None = None,
    api_cert: Path | None = None,
    api_key: Path | None = None,
    handlers: list[str] | None = None,
) -> Any:
    """Merge the config file and the flags (flags win) into a NodeConfig."""
    import os

    from plumtree.admin import limits
    from plumtree.core.config import ConfigError, load_toml, protocol_config_from_mapping
    from plumtree.runtime import gossippolicy
    from plumtree.runtime.addresses import parse_addr
    from plumtree.runtime.crypto import Keyring
    from plumtree.runtime.node import NodeConfig
    from plumtree.runtime.tcplimits import TcpLimits

    data: dict[str, Any] = load_toml(config) if config else {}
    node = data.get("node", {})
    if not isinstance(node, dict):
        raise ConfigError("node: must be a table")
    known = {
        "name",
        "bind",
        "advertise",
        "api",
        "join",
        "label",
        "tags",
        "profile",
        "token_file",
        "keyring",
        "data_dir",
        "fsync",
        "insecure_gossip",
        "public_metrics",
        "api_cert",
        "api_key",
        "handlers",
        "handler_timeout",
        "handler_queue",
        *limits.CONFIG_KEYS,
    }
    for key in node:
        if key not in known:
            raise ConfigError(f"node.{key}: unknown setting (known: {', '.join(sorted(known))})")
    sections = ("node", "plumtree", "swim", "transport", "profile")
    for key in data:
        if key not in sections:
            raise ConfigError(f"{key}: unknown section (known: {', '.join(sections)})")
    transport = data.get("transport", {})
    if not isinstance(transport, dict):
        raise ConfigError("transport: must be a table")
    protocol = protocol_config_from_mapping(
        {
            "profile": node.get("profile", data.get("profile", "lan")),
            "plumtree": data.get("plumtree", {}),
            "swim": data.get("swim", {}),
        },
        profile=profile,
    )
    cfg = NodeConfig(protocol=protocol, tcp_limits=TcpLimits.from_mapping(transport))
    directory = data_dir or node.get("data_dir")
    if directory is not None:
        if not isinstance(directory, str | Path):
            raise ConfigError(f"node.data_dir: must be a path, got {directory!r}")
        cfg.data_dir = str(directory)
    fsync_value = fsync or node.get("fsync") or cfg.fsync
    if fsync_value not in ("normal", "full"):
        raise ConfigError(f"--fsync: expected normal or full, got {fsync_value!r}")
    cfg.fsync = fsync_value
    # a data dir remembers whose it is: its name is the default
    stored = _stored_name(cfg.data_dir) if cfg.data_dir else None
    cfg.name = name or node.get("name") or stored or cfg.name
    cfg.bind = bind or node.get("bind") or cfg.bind
    cfg.advertise = advertise or node.get("advertise")
    api_value = api or node.get("api") or cfg.api
    cfg.api = None if api_value == "off" else api_value
    cfg.join = list(join or node.get("join") or [])
    cfg.label = label if label is not None else str(node.get("label", ""))
    file_tags = node.get("tags", {})
    if not isinstance(file_tags, dict):
        raise ConfigError("node.tags: must be a table of strings")
    cfg.tags = {str(k): str(v) for k, v in file_tags.items()}
    for item in tags or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--tag: expected key=value, got {item!r}")
        cfg.tags[key] = value
    for reserved in ("admin", gossippolicy.INSECURE_TAG):
        if reserved in cfg.tags:
            raise ConfigError(f"--tag: {reserved!r} is reserved (the node sets it)")
    for what, addr in [
        ("--bind", cfg.bind),
        ("--advertise", cfg.advertise),
        ("--api", cfg.api),
        *[("--join", j) for j in cfg.join],
    ]:
        if addr:
            try:
                parse_addr(addr, 7946)
            except ValueError as exc:
                raise ConfigError(f"{what}: {exc}") from None
    keyring_path = keyring or node.get("keyring")
    if keyring_path:
        cfg.keyring = Keyring.load(keyring_path)
        cfg.keyring_file = os.path.abspath(keyring_path)  # live key changes are saved there
    allow = node.get("insecure_gossip", False)
    if not isinstance(allow, bool):
        raise ConfigError(f"node.insecure_gossip: must be true or false, got {allow!r}")
    cfg.insecure_gossip = insecure_gossip or allow
    gossippolicy.check(cfg.bind, cfg.keyring is not None, cfg.insecure_gossip)
    token_path = token_file or node.get("token_file")
    if token_path:
        try:
            token = Path(token_path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--token-file: {token_path}: {exc.strerror}") from None
        if not token:
            raise ConfigError(f"--token-file: {token_path} is empty")
        cfg.token = token
    _api_settings(cfg, node, public_metrics, api_cert, api_key)
    _handler_settings(cfg, node, handlers)
    return cfg


def _handler_settings(cfg: Any, node: dict[str, Any], flags: list[str] | None) -> None:
    """``--handler`` (each adds to ``node.handlers``), its time limit and queue."""
    from plumtree.core.config import ConfigError, parse_duration
    from plumtree.runtime.handlers import parse_handler

    listed = node.get("handlers", [])
    if not isinstance(listed, list) or not all(isinstance(h, str) for h in listed):
        raise ConfigError(f"node.handlers: must be a list of strings, got {listed!r}")
    try:
        cfg.handlers = [parse_handler(h) for h in [*listed, *(flags or [])]]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    timeout = parse_duration(
        "node.handler_timeout", node.get("handler_timeout", cfg.handler_timeout)
    )
    if not timeout > 0:
        raise ConfigError(f"node.handler_timeout: must be more than 0, got {timeout!r}")
    cfg.handler_timeout = timeout
    queue = node.get("handler_queue", cfg.handler_queue)
    if isinstance(queue, bool) or not isinstance(queue, int) or queue < 1:
        raise ConfigError(f"node.handler_queue: must be an integer >= 1, got {queue!r}")
    cfg.handler_queue = queue


def _api_settings(
    cfg: Any,
    node: dict[str, Any],
    public_metrics: bool | None,
    api_cert: Path | None,
    api_key: Path | None,
) -> None:
    """The admin API's exemptions, TLS and limits, from flags and the ``[node]`` table."""
    from plumtree.admin import limits
    from plumtree.admin.tls import TlsConfigError, server_context
    from plumtree.core.config import ConfigError

    public = public_metrics if public_metrics is not None else node.get("public_metrics", False)
    if not isinstance(public, bool):
        raise ConfigError(f"node.public_metrics: must be true or false, got {public!r}")
    cfg.public_metrics = public
    cert = api_cert or node.get("api_cert")
    key = api_key or node.get("api_key")
    if (cert is None) != (key is None):
        raise ConfigError("--api-cert and --api-key: give both (or neither)")
    if cert is not None and key is not None:
        try:
            server_context(str(cert), str(key))  # refuse a bad pair now, not at bind time
        except TlsConfigError as exc:
            raise ConfigError(str(exc)) from None
        cfg.api_tls = (str(cert), str(key))
    try:
        cfg.api_limits = limits.ApiLimits.from_mapping(
            {k: v for k, v in node.items() if k in limits.CONFIG_KEYS}
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"node.{exc}") from None


def _stored_name(directory: str) -> str | None:
    from plumtree.store import StoreError, stored_name

    try:
        return stored_name(directory)
    except StoreError as exc:
        raise ValueError(str(exc)) from None


#: Profiling hook: with this variable set to a directory, the node runs under cProfile and
#: writes DIR/<node name>.prof when it stops (``python -m pstats`` reads it).
PROFILE_ENV = "PLUMTREE_CPROFILE_DIR"


def _run(cfg: Any, ready_file: Path | None) -> int:
    import os

    from plumtree.runtime.eventloop import run

    profile_dir = os.environ.get(PROFILE_ENV)
    if not profile_dir:
        return run(_main(cfg, ready_file))
    import cProfile
    import time

    profiler = cProfile.Profile(time.process_time)  # CPU time: nodes share the CPUs
    try:
        code: int = profiler.runcall(run, _main(cfg, ready_file))
        return code
    finally:
        profiler.dump_stats(os.path.join(profile_dir, f"{cfg.name}.prof"))


async def _main(cfg: Any, ready_file: Path | None) -> int:
    import asyncio
    import json
    import logging
    import os
    import signal

    from plumctl.output import error
    from plumtree.admin.server import AddressInUse
    from plumtree.runtime.gossippolicy import InsecureGossip
    from plumtree.runtime.node import Node
    from plumtree.runtime.transport import BindError
    from plumtree.store import StoreError

    log = logging.getLogger("plumtree.node")
    node = Node(cfg)
    try:
        await node.start()
    except (StoreError, InsecureGossip) as exc:
        error(str(exc))
        return exitcodes.USAGE
    except (BindError, AddressInUse) as exc:
        error(exc.strerror or str(exc))
        return exitcodes.FAILED
    except OSError as exc:
        error(f"cannot start node: {exc}")
        return exitcodes.FAILED
    if ready_file is not None:
        tmp = ready_file.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "name": node.name,
                    "pid": os.getpid(),
                    "gossip_addr": node.gossip_addr,
                    "admin_url": node.admin_url,
                }
            )
        )
        tmp.replace(ready_file)
    loop = asyncio.get_running_loop()
    signals = 0
    stopping: list[asyncio.Task[None]] = []

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second signal: exiting at once")
            os._exit(exitcodes.FAILED)
        log.info("received %s: leaving the cluster", signal.Signals(signum).name)
        # from now on a second signal exits at once, even while the loop shuts down
        for again in (signal.SIGTERM, signal.SIGINT):
            signal.signal(again, lambda *_: os._exit(exitcodes.FAILED))
        stopping.append(loop.create_task(node.stop(leave=True)))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    await node.stopped.wait()
    return exitcodes.OK
