"""``plumctl monitoring``: Prometheus alert rules, the Grafana dashboard, a scrape config.

The artefacts are generated from the monitoring guide (docs/monitoring.md) and the
health model's thresholds (:mod:`plumctl.monitoring`). ``--out FILE`` writes a file in the format its
consumer loads (rules and config as YAML, dashboard and file_sd targets as JSON),
atomically, and confirms on stderr; without it the artefact goes to stdout.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from plumctl import exitcodes
from plumctl.options import with_global_options

if TYPE_CHECKING:
    from plumctl.options import GlobalOptions

HELP = """Generate monitoring artefacts: Prometheus alert rules, a Grafana dashboard and a
Prometheus scrape configuration for the cluster's nodes.

Examples:

  plumctl monitoring rules --out /etc/prometheus/rules/plumtree.yml

  plumctl monitoring dashboard --out plumtree-dashboard.json

  plumctl --node http://10.0.0.5:7947 monitoring scrape-config \\
      --targets-file targets.json --out prometheus.yml
"""

RULES_HELP = """Print the Prometheus alerting rules (YAML; -o json: the same rules as JSON).

The five core rules of the monitoring guide (docs/monitoring.md), plus one rule per row
of its alert tables that they leave out, and the rules of exact delivery, the durable
store and membership. Check them with `promtool check rules FILE`.

Examples:

  plumctl monitoring rules > plumtree-rules.yml

  plumctl monitoring rules --out /etc/prometheus/rules/plumtree.yml

  plumctl -o json monitoring rules | jq '.groups[0].rules[].alert'
"""

DASHBOARD_HELP = """Print the Grafana dashboard (JSON, importable as-is; same with -o json).

Pick the Prometheus data source and the node from the dashboard's variables.

Examples:

  plumctl monitoring dashboard --out plumtree-dashboard.json

  curl -XPOST -H 'Content-Type: application/json' \\
      -d "{\\"dashboard\\": $(plumctl monitoring dashboard), \\"overwrite\\": true}" \\
      http://admin:admin@localhost:3000/api/dashboards/db
"""

SCRAPE_HELP = """Print a Prometheus configuration that scrapes every node's /metrics.

Nodes are found through a file_sd targets file. With --targets-file FILE the
targets are taken from the live member table of the node given by --node (alive,
suspect and dead members with an admin URL, labelled node=NAME) and written to FILE; run
it again when membership changes, Prometheus re-reads the file by itself. A dead member
stays a target (up == 0) until it leaves or is reaped, so Prometheus and plumctl health
--all agree that the cluster is degraded. Without --targets-file, no node is contacted
and the configuration expects targets in plumtree-targets.json.

Examples:

  plumctl monitoring scrape-config --targets-file targets.json --out prometheus.yml

  plumctl monitoring scrape-config --rules-file rules/plumtree.yml --interval 15s

  plumctl -o json monitoring scrape-config --targets-file targets.json

  plumctl monitoring scrape-config --targets-file targets.json --watch   # follow membership

  plumctl monitoring scrape-config --token-file /etc/plumtree/token --targets-file t.json

Nodes started with --token-file want the token on /metrics too (unless they run with
--public-metrics): give the same file with --token-file, and the configuration has
Prometheus send it (its `authorization` section names the file; the token itself is not
copied). The file also serves as the token for reading the member table. With
--cacert, https targets are verified against that CA (`tls_config`).

With --watch the command keeps running: it re-reads the member table every
--refresh seconds and rewrites the targets file (atomically) whenever the set of
targets changes, one stderr line per change. When --node stops answering, the other
members it listed are asked; if none answers, the file is left as it is. Ctrl-C stops.
"""

OutOption = Annotated[
    str | None,
    typer.Option(
        "--out",
        metavar="FILE",
        help="Write to FILE (atomically) instead of stdout; '-' is stdout.",
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    sub = typer.Typer(
        name="monitoring",
        help=HELP,
        no_args_is_help=True,
        rich_markup_mode="rich",
        epilog=exitcodes.EPILOG,
    )
    sub.command("rules", help=RULES_HELP, epilog=exitcodes.EPILOG)(with_global_options(rules))
    sub.command("dashboard", help=DASHBOARD_HELP, epilog=exitcodes.EPILOG)(
        with_global_options(dashboard)
    )
    sub.command("scrape-config", help=SCRAPE_HELP, epilog=exitcodes.EPILOG)(
        with_global_options(scrape_config)
    )
    app.add_typer(sub, name="monitoring")


def rules(ctx: typer.Context, out: OutOption = None) -> None:
    import json

    from plumctl.monitoring.rules import render_yaml, rule_groups

    opts: GlobalOptions = ctx.obj
    if _is_stdout(out):
        if opts.json:
            _stdout(json.dumps({"kind": "PrometheusRules", **rule_groups()}, sort_keys=True))
        else:
            _stdout(render_yaml(), end="")
        return
    assert out is not None
    path = _write(out, render_yaml())
    _written(opts, [{"path": path, "artifact": "rules"}])


def dashboard(ctx: typer.Context, out: OutOption = None) -> None:
    from plumctl.monitoring.dashboard import render_json

    opts: GlobalOptions = ctx.obj
    text = render_json()
    if _is_stdout(out):
        _stdout(text, end="")  # the dashboard is JSON already: the same for -o json
        return
    assert out is not None
    path = _write(out, text)
    _written(opts, [{"path": path, "artifact": "dashboard"}])


def scrape_config(
    ctx: typer.Context,
    out: OutOption = None,
    targets_file: Annotated[
        str | None,
        typer.Option(
            "--targets-file",
            metavar="FILE",
            help="Fetch the members from --node and write the file_sd targets to FILE.",
            show_default=False,
        ),
    ] = None,
    rules_file: Annotated[
        str | None,
        typer.Option(
            "--rules-file",
            metavar="FILE",
            help="List FILE under rule_files (see `plumctl monitoring rules`).",
            show_default=False,
        ),
    ] = None,
    job: Annotated[str, typer.Option("--job", help="Prometheus job name.")] = "plumtree",
    interval: Annotated[
        str, typer.Option("--interval", help="Scrape interval (a Prometheus duration).")
    ] = "5s",
    evaluation_interval: Annotated[
        str,
        typer.Option(
            "--evaluation-interval", help="Rule evaluation interval (a Prometheus duration)."
        ),
    ] = "15s",
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Keep the --targets-file current: rewrite it whenever membership changes.",
        ),
    ] = False,
    refresh: Annotated[
        float,
        typer.Option(
            "--refresh", min=0.2, max=3600.0, help="With --watch: seconds between member reads."
        ),
    ] = 10.0,
    token_file: Annotated[
        str | None,
        typer.Option(
            "--token-file",
            metavar="FILE",
            help="The nodes' bearer token file: Prometheus sends it (authorization).",
            show_default=False,
        ),
    ] = None,
) -> None:
    import json

    from plumctl.monitoring.scrape import (
        DEFAULT_TARGETS_FILE,
        file_sd_targets,
        is_duration,
        scrape_config_data,
    )
    from plumctl.monitoring.scrape import scrape_config as render
    from plumctl.output import fail, plural, warn

    opts: GlobalOptions = ctx.obj
    if not is_duration(interval):
        fail(f"--interval: not a Prometheus duration: {interval!r} (e.g. 5s, 1m)", exitcodes.USAGE)
    if not is_duration(evaluation_interval):
        fail(
            f"--evaluation-interval: not a Prometheus duration: {evaluation_interval!r}",
            exitcodes.USAGE,
        )
    if not job.strip():
        fail("--job: must not be empty", exitcodes.USAGE)
    if watch and targets_file is None:
        fail("--watch: needs --targets-file (the file to keep current)", exitcodes.USAGE)
    to_stdout = _is_stdout(out)
    config_dir = None if to_stdout else os.path.dirname(os.path.abspath(out or "."))
    credentials = None
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            fail(f"--token-file: {token_file}: {exc.strerror or exc}", exitcodes.USAGE)
        if not token:
            fail(f"--token-file: {token_file} is empty", exitcodes.USAGE)
        opts.token = opts.token or token
        credentials = _reference(token_file, config_dir, False)
    elif opts.token:
        warn(
            "--token given but no --token-file: the configuration has no `authorization`,"
            " so Prometheus gets 401 from nodes that need the token"
        )
    ca_file = _reference(opts.cacert, config_dir, False) if opts.cacert else None

    targets: list[dict[str, Any]] | None = None
    members: list[dict[str, Any]] = []
    written: list[dict[str, Any]] = []
    if targets_file is not None:
        members = fetch_members(opts)
        targets = file_sd_targets(members)
        if not targets:
            warn(
                f"no alive, suspect or dead member with an admin URL among {plural(len(members), 'member')}"
            )
        path = _write(targets_file, json.dumps(targets, indent=2) + "\n", quiet=True)
        _confirm(f"wrote {len(targets)} scrape target(s) to {path}")
        written.append({"path": path, "artifact": "targets", "targets": len(targets)})
    sd_path = _reference(targets_file or DEFAULT_TARGETS_FILE, config_dir, targets_file is None)
    rule_files = [_reference(rules_file, config_dir, False)] if rules_file else []

    if to_stdout:
        if opts.json:
            data = scrape_config_data(
                job, sd_path, interval, rule_files, evaluation_interval, credentials, ca_file
            )
            _stdout(
                json.dumps(
                    {"kind": "PrometheusConfig", "config": data, "targets": targets},
                    sort_keys=True,
                )
            )
        else:
            _stdout(
                render(
                    job, sd_path, interval, rule_files, evaluation_interval, credentials, ca_file
                ),
                end="",
            )
    else:
        assert out is not None
        text = render(job, sd_path, interval, rule_files, evaluation_interval, credentials, ca_file)
        path = _write(out, text)
        written.append({"path": path, "artifact": "config"})
        _written(opts, written)
    if watch:
        assert targets_file is not None and targets is not None
        _watch_until_stopped(opts, targets_file, targets, members, refresh)


def fetch_members(opts: GlobalOptions) -> list[dict[str, Any]]:
    """The member table of ``--node`` (``GET /v1/members``), as a list of records.

    The seam to the HTTP client: tests replace this function. Client errors carry their
    exit code (unreachable, failed...), which becomes the command's.
    """
    from plumctl.output import fail

    try:
        from plumctl.client import Client
    except ImportError as exc:  # pragma: no cover - only before the client lands
        fail(f"cannot reach nodes: the HTTP client is unavailable ({exc})", exitcodes.FAILED)
    try:
        document = Client(opts.node, opts.token, opts.timeout).members()
    except Exception as exc:
        code = _exit_code_of(exc)
        if code is None:
            raise
        fail(f"{opts.node}: {exc}", code)
    return members_of(document)


def fetch_members_from(url: str, opts: GlobalOptions) -> list[dict[str, Any]]:
    """The member table of the node at ``url``; raises the client's errors (for --watch)."""
    from plumctl.client import BadResponse, Client

    with Client(url, opts.token, opts.timeout) as client:
        document = client.members()
    items = document.get("items")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadResponse(f"{url}: /v1/members has no list of members under 'items'", url=url)
    return items


def watch_targets(
    node: str,
    members: list[dict[str, Any]],
    current: list[dict[str, Any]],
    fetch: Callable[[str], list[dict[str, Any]]],
    write: Callable[[list[dict[str, Any]]], None],
    sleep: Callable[[float], None],
    refresh: float,
    rounds: int | None = None,
) -> list[dict[str, Any]]:
    """Re-read the member table every ``refresh`` s; ``write`` the targets when they change.

    ``fetch(url)`` reads one node's member table (raising on failure): ``node`` first,
    then the admin URLs of the alive members last seen, so the watch outlives the node it
    started from. When nobody answers, a warning and the file is kept. ``rounds`` bounds
    the loop (tests); None runs until interrupted. Returns the targets last written.
    """
    from plumctl.client import ClientError
    from plumctl.monitoring.scrape import file_sd_targets
    from plumctl.output import warn

    done = 0
    failing = False
    while rounds is None or done < rounds:
        done += 1
        sleep(refresh)
        candidates = [node] + [
            str(m["admin_url"])
            for m in members
            if m.get("state") == "alive" and isinstance(m.get("admin_url"), str)
        ]
        errors: list[str] = []
        for url in dict.fromkeys(candidates):
            try:
                members = fetch(url)
            except ClientError as exc:
                errors.append(str(exc))
                continue
            break
        else:
            if not failing:
                warn(f"cannot refresh the targets, keeping them as they are: {errors[0]}")
            failing = True
            continue
        if failing:
            _confirm("member table readable again")
        failing = False
        fresh = file_sd_targets(members)
        if fresh != current:
            before = {g["labels"]["node"] for g in current}
            after = {g["labels"]["node"] for g in fresh}
            change = [f"+{n}" for n in sorted(after - before)]
            change += [f"-{n}" for n in sorted(before - after)]
            write(fresh)
            _confirm(
                f"targets changed ({' '.join(change) or 'addresses'}): "
                f"{len(fresh)} target(s) written"
            )
            current = fresh
    return current


def _watch_until_stopped(
    opts: GlobalOptions,
    targets_file: str,
    targets: list[dict[str, Any]],
    members: list[dict[str, Any]],
    refresh: float,
) -> None:
    """Run :func:`watch_targets` until Ctrl-C or SIGTERM, both a clean exit 0."""
    import json
    import signal
    import time

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    def write(fresh: list[dict[str, Any]]) -> None:
        _write(targets_file, json.dumps(fresh, indent=2) + "\n", quiet=True)

    previous = signal.signal(signal.SIGTERM, stop)
    _confirm(f"watching the member table every {refresh:g}s (Ctrl-C to stop)")
    try:
        watch_targets(
            opts.node,
            members,
            targets,
            lambda url: fetch_members_from(url, opts),
            write,
            time.sleep,
            refresh,
        )
    except KeyboardInterrupt:
        _confirm("stopped watching")
    finally:
        signal.signal(signal.SIGTERM, previous)


def members_of(document: Any) -> list[dict[str, Any]]:
    """The records of a ``/v1/members`` answer (``{"kind": "MemberList", "items": [...]}``)."""
    from plumctl.output import fail

    items = document.get("items") if isinstance(document, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        fail(
            "unexpected answer from /v1/members: no list of members under 'items'",
            exitcodes.FAILED,
        )
    return items


def _exit_code_of(exc: BaseException) -> int | None:
    for attr in ("exit_code", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _is_stdout(out: str | None) -> bool:
    return out is None or out == "-"


def _reference(path: str, config_dir: str | None, as_given: bool) -> str:
    """A path as the config should name it: Prometheus resolves relative paths against
    the config file's directory, so point at the file from there (absolute on stdout)."""
    if as_given or os.path.isabs(path):
        return path
    if config_dir is None:
        return os.path.abspath(path)
    return os.path.relpath(os.path.abspath(path), config_dir)


def _stdout(text: str, end: str = "\n") -> None:
    import sys

    sys.stdout.write(text + end)
    sys.stdout.flush()


def _write(path: str, text: str, quiet: bool = False) -> str:
    """Write ``text`` to ``path`` atomically (temp file + rename); one-line error on failure."""
    import tempfile

    from plumctl.output import fail

    target = os.path.abspath(path)
    if os.path.isdir(target):
        fail(f"cannot write {path}: is a directory", exitcodes.FAILED)
    directory = os.path.dirname(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".plumctl-", dir=directory)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}", exitcodes.FAILED)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        fail(f"cannot write {path}: {exc.strerror or exc}", exitcodes.FAILED)
    if not quiet:
        _confirm(f"wrote {target}")
    return target


def _mode_for(target: str) -> int:
    """Keep an existing file's mode; a new file gets 0666 minus the umask, like open()."""
    try:
        return os.stat(target).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _confirm(message: str) -> None:
    import sys

    sys.stderr.write(f"plumctl: {message}\n")
    sys.stderr.flush()


def _written(opts: GlobalOptions, items: list[dict[str, Any]]) -> None:
    """With -o json, describe the files written on stdout (humans got stderr lines)."""
    if opts.json:
        from plumctl.output import emit_json

        emit_json({"kind": "MonitoringFiles", "items": items})
