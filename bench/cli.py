"""CLI speed benchmark (issue 5): how long ``plumctl`` makes an operator wait.

    python bench/cli.py               # --help, completion, imports, health --all on 32 nodes
    python bench/cli.py --no-cluster  # skip the live-cluster part

Measured vs target:

* wall time of ``plumctl --help`` and of a bash completion request
  (``COMP_WORDS="plumctl me" COMP_CWORD=1 _PLUMCTL_COMPLETE=complete_bash plumctl``),
  median of N runs, <= 250 ms each. ``plumctl`` here is a copy of the console-script
  entry point run with this checkout on ``PYTHONPATH``;
* ``python -X importtime -c "import plumctl.cli"``: the top offenders, and whether
  textual, aiohttp or prometheus_client get imported (they must not be);
* ``plumctl health --all`` against a 32-node local cluster: wall time minus
  ``--interval``, median of N runs, <= 1 s;
* everyday commands (issue 19) against a live 3-node cluster started and stopped here,
  median of 20 runs: ``members -o json`` and ``broadcast`` <= 120 ms, ``health`` of one
  node (no ``--interval``: the node's own rates; JSON and table) <= 200 ms, and ``metrics`` (two
  scrapes ``--interval`` apart, no target). ``--everyday-only`` runs just this part.

Hook for more live-cluster measurements (``plumctl top``): a module ``bench/tui.py`` that
defines ``measure(ctx: CliContext, out: Report) -> None`` is called with the running
cluster (see :class:`CliContext`: nodes, ``run_plumctl``, ``time_command``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this checkout, not whatever is installed

from bench.common import Report, load_line, median, progress, quantile  # noqa: E402
from bench.loopback import NodeInfo, cluster_down, cluster_up, plumctl_env  # noqa: E402

TARGET_MS = 250.0
TARGET_HEALTH_S = 1.0
#: issue 19: (label, arguments after ``--node URL``, target in ms or None: reported only)
EVERYDAY: tuple[tuple[str, tuple[str, ...], float | None], ...] = (
    ("members -o json", ("members", "-o", "json"), 120.0),
    ("broadcast PAYLOAD", ("broadcast", "bench"), 120.0),
    ("health -o json (one node)", ("health", "-o", "json"), 200.0),
    ("health (one node, table)", ("health",), 200.0),
    ("metrics -o json (2 scrapes 1 s apart)", ("metrics", "-o", "json"), None),
)
FORBIDDEN = ("textual", "aiohttp", "prometheus_client")
WATCHED = (*FORBIDDEN, "typer", "click", "rich", "httpx", "msgspec", "cryptography")

ENTRY_POINT = """#!{python}
import sys
from plumctl.__main__ import main
sys.exit(main())
"""


def make_entry_point(directory: Path) -> Path:
    """A ``plumctl`` script like the one pip installs (console_scripts)."""
    path = directory / "plumctl"
    path.write_text(ENTRY_POINT.format(python=sys.executable))
    path.chmod(0o755)
    return path


@dataclass
class Timing:
    runs: list[float]
    code: int
    stdout: str
    stderr: str

    @property
    def median_ms(self) -> float:
        return 1000 * median(self.runs)


def time_command(
    argv: Sequence[str], runs: int, env: dict[str, str] | None = None, warm: int = 1
) -> Timing:
    """Median wall time of a command over ``runs`` (after ``warm`` unmeasured runs)."""
    env = env or plumctl_env()
    walls: list[float] = []
    last: subprocess.CompletedProcess[str] | None = None
    for i in range(warm + runs):
        t0 = time.perf_counter()
        last = subprocess.run(list(argv), capture_output=True, text=True, env=env, check=False)
        if i >= warm:
            walls.append(time.perf_counter() - t0)
    assert last is not None
    return Timing(walls, last.returncode, last.stdout, last.stderr)


@dataclass
class CliContext:
    """What a live-cluster measurement hook gets."""

    plumctl: Path
    nodes: list[NodeInfo]
    runs: int
    env: dict[str, str]

    def run_plumctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.plumctl), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def time_command(self, *args: str, runs: int | None = None) -> Timing:
        return time_command([str(self.plumctl), *args], runs or self.runs, self.env)


def import_profile() -> tuple[list[tuple[int, int, str]], int]:
    """``-X importtime`` of ``import plumctl.cli``: (self us, cumulative us, module) rows."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import plumctl.cli"],
        capture_output=True,
        text=True,
        env=plumctl_env(),
        check=False,
    )
    rows: list[tuple[int, int, str]] = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = line.split(":", 1)[1].split("|", 2)
        rows.append((int(self_us), int(cum_us), name.rstrip()))
    total_us = sum(r[0] for r in rows)
    return rows, total_us


def imported_modules(code: str, env: dict[str, str]) -> set[str]:
    """Top-level packages in sys.modules after running ``code``."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=False
    )
    try:
        return set(json.loads(done.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return set()


def help_imports(
    plumctl: Path, env: dict[str, str], argv: Sequence[str], extra_env: dict[str, str] | None = None
) -> set[str]:
    """Top-level packages a real ``plumctl ...`` run imports (via an exit hook)."""
    hook = (
        "import atexit, sys, json, os\n"
        "atexit.register(lambda: open(os.environ['BENCH_MODULES_OUT'], 'w').write("
        "json.dumps(sorted({m.split('.')[0] for m in sys.modules}))))\n"
        "sys.argv = ['plumctl', *sys.argv[1:]]\n"
        "from plumctl.__main__ import main\nmain()\n"
    )
    with tempfile.NamedTemporaryFile("r", suffix=".json") as f:
        run_env = {**env, **(extra_env or {}), "BENCH_MODULES_OUT": f.name}
        subprocess.run(
            [sys.executable, "-c", hook, *argv], capture_output=True, env=run_env, check=False
        )
        try:
            return set(json.loads(Path(f.name).read_text() or "[]"))
        except ValueError:
            return set()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=15, help="measured runs per command")
    ap.add_argument("--nodes", type=int, default=32, help="cluster size for health --all")
    ap.add_argument("--interval", type=float, default=1.0, help="health --interval")
    ap.add_argument("--no-cluster", action="store_true", help="skip the live-cluster part")
    ap.add_argument("--everyday-runs", type=int, default=20, help="runs per everyday command")
    ap.add_argument(
        "--everyday-only", action="store_true", help="only the everyday commands (issue 19)"
    )
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    args = ap.parse_args(argv)

    out = Report("bench/cli.py: plumctl start-up and health --all (issue 5)")
    out.note(f"start: {load_line()}")
    env = plumctl_env()
    # an installed package has its bytecode compiled; a checkout run with
    # PYTHONDONTWRITEBYTECODE would recompile every module on every start
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "plumctl"), str(ROOT / "plumtree")],
        capture_output=True,
        check=False,
    )
    out.note("bytecode of plumctl/ and plumtree/ compiled first (as an installed package has it)")
    bindir = Path(tempfile.mkdtemp(prefix="plumctl-bench-bin-"))
    if args.everyday_only:
        try:
            everyday(args, make_entry_point(bindir), env, out)
        finally:
            shutil.rmtree(bindir, ignore_errors=True)
        out.note(f"end: {load_line()}")
        out.emit(args.json)
        return 1 if args.strict and out.missed else 0
    try:
        plumctl = make_entry_point(bindir)

        # start-up: --help and completion
        progress(f"plumctl --help x{args.runs}")
        t = time_command([str(plumctl), "--help"], args.runs, env)
        out.check(
            "startup",
            "plumctl --help (median)",
            t.median_ms,
            "{:.0f} ms",
            f"<= {TARGET_MS:.0f} ms",
            t.median_ms <= TARGET_MS and t.code == 0,
        )
        out.add(
            "startup",
            "  min / p90 / exit",
            f"{1000 * min(t.runs):.0f} / {1000 * quantile(t.runs, 0.9):.0f} ms / {t.code}",
        )
        comp_env = {
            **env,
            "COMP_WORDS": "plumctl me",
            "COMP_CWORD": "1",
            "_PLUMCTL_COMPLETE": "complete_bash",
        }
        progress(f"completion x{args.runs}")
        c = time_command([str(plumctl)], args.runs, comp_env)
        ok = c.code == 0 and "members" in c.stdout
        out.check(
            "startup",
            "completion 'plumctl me<TAB>' (median)",
            c.median_ms,
            "{:.0f} ms",
            f"<= {TARGET_MS:.0f} ms",
            c.median_ms <= TARGET_MS and ok,
        )
        out.add(
            "startup",
            "  min / p90 / answer",
            f"{1000 * min(c.runs):.0f} / "
            f"{1000 * quantile(c.runs, 0.9):.0f} ms / {c.stdout.split() or c.stderr[-80:]!r}",
        )
        rich = time_command([str(plumctl), "--help"], args.runs, {**env, "PLUMCTL_RICH_HELP": "1"})
        out.add(
            "startup", "  PLUMCTL_RICH_HELP=1 plumctl --help", f"{rich.median_ms:.0f} ms (median)"
        )
        narrow = time_command([str(plumctl), "--help"], args.runs, {**env, "COLUMNS": "60"})
        out.add(
            "startup",
            "  plumctl --help, 60 columns (typer)",
            f"{narrow.median_ms:.0f} ms (median)",
        )
        slow_env = {**comp_env, "COMP_WORDS": "plumctl -o json me", "COMP_CWORD": "3"}
        b = time_command([str(plumctl)], args.runs, slow_env)
        out.add(
            "startup", "  bash completion after an option (typer)", f"{b.median_ms:.0f} ms (median)"
        )
        for shell, words, how in (
            ("zsh", "plumctl me", "table"),
            ("fish", "plumctl me", "table"),
            ("zsh", "plumctl -o json me", "after an option: typer"),
        ):
            shell_env = {
                **env,
                "_PLUMCTL_COMPLETE": f"complete_{shell}",
                "_TYPER_COMPLETE_ARGS": words,
                "_TYPER_COMPLETE_FISH_ACTION": "get-args",
            }
            t = time_command([str(plumctl)], args.runs, shell_env)
            out.add(
                "startup",
                f"  {shell} completion '{words}' ({how})",
                f"{t.median_ms:.0f} ms (median)" + ("" if "members" in t.stdout else " NO ANSWER"),
            )
        py = time_command([sys.executable, "-c", "pass"], args.runs, env)
        out.add("startup", "python -c pass (floor)", f"{py.median_ms:.0f} ms")

        # imports
        rows, total_us = import_profile()
        out.add("imports", "import plumctl.cli (sum of self times)", f"{total_us / 1000:.0f} ms")
        top = sorted(rows, key=lambda r: -r[1])
        shown = 0
        for _self_us, cum_us, name in top:
            if name.strip().startswith("plumctl") or shown >= 8:
                continue
            if "." in name.strip():
                continue  # top-level packages only; their submodules are inside
            out.add("imports", f"  {name.strip()}", f"{cum_us / 1000:.1f} ms cumulative")
            shown += 1
        loaded = imported_modules("import plumctl.cli", env)
        bad = [m for m in FORBIDDEN if m in loaded]
        out.check(
            "imports",
            "textual/aiohttp/prometheus_client by import plumctl.cli",
            ", ".join(bad) or "none",
            "{}",
            "none",
            not bad,
        )
        out.add(
            "imports",
            "  heavy packages loaded",
            ", ".join(m for m in WATCHED if m in loaded) or "none",
        )
        for label, argv_, extra in (
            ("--help", ["--help"], None),
            ("completion", [], {k: v for k, v in comp_env.items() if k not in env}),
        ):
            mods = help_imports(plumctl, env, argv_, extra)
            out.add(
                "imports",
                f"  loaded by plumctl {label}",
                ", ".join(m for m in WATCHED if m in mods) or "none",
            )

        # live cluster
        if not args.no_cluster:
            everyday(args, plumctl, env, out)
            live(args, plumctl, env, out)
    finally:
        shutil.rmtree(bindir, ignore_errors=True)
    out.note(f"end: {load_line()}")
    out.emit(args.json)
    return 1 if args.strict and out.missed else 0


def live(args: argparse.Namespace, plumctl: Path, env: dict[str, str], out: Report) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="plumtree-bench-cli-"))
    nodes: list[NodeInfo] = []
    try:
        progress(f"cluster up -n {args.nodes} --profile local --dir {tmp}")
        t0 = time.perf_counter()
        try:
            nodes = cluster_up(args.nodes, "local", tmp, wait=90.0)
        except RuntimeError as exc:
            out.add("health --all", "cluster", str(exc), "converged", False)
            return
        out.add(
            "health --all",
            "cluster up + converged",
            f"{len(nodes)} nodes in {time.perf_counter() - t0:.1f} s",
        )
        time.sleep(2.0)
        node_env = {**env, "PLUMCTL_NODE": nodes[0].url}
        progress(f"health --all --interval {args.interval:g} x{args.runs}")
        h = time_command(
            [str(plumctl), "health", "--all", "--interval", str(args.interval), "-o", "json"],
            args.runs,
            node_env,
        )
        over = [w - args.interval for w in h.runs]
        try:
            doc = json.loads(h.stdout)
            verdict = f"{doc.get('status')} · {len(doc.get('items', []))} nodes"
        except ValueError:
            verdict = f"exit {h.code}: {h.stderr.strip()[-100:]}"
        out.check(
            "health --all",
            f"wall - interval ({args.nodes} nodes, median)",
            median(over),
            "{:.2f} s",
            f"<= {TARGET_HEALTH_S:.0f} s",
            median(over) <= TARGET_HEALTH_S,
        )
        out.add("health --all", "  min / p90", f"{min(over):.2f} / {quantile(over, 0.9):.2f} s")
        out.add("health --all", "  verdict (last run)", verdict)
        ctx = CliContext(plumctl, nodes, args.runs, node_env)
        for hook in hooks():
            hook(ctx, out)
    finally:
        progress("cluster down")
        cluster_down(tmp, nodes)
        shutil.rmtree(tmp, ignore_errors=True)


def everyday(args: argparse.Namespace, plumctl: Path, env: dict[str, str], out: Report) -> None:
    """Issue 19: the commands an operator types all day, against a live 3-node cluster."""
    case = "everyday commands"
    tmp = Path(tempfile.mkdtemp(prefix="plumtree-bench-everyday-"))
    nodes: list[NodeInfo] = []
    try:
        progress(f"cluster up -n 3 --profile local --dir {tmp}")
        try:
            nodes = cluster_up(3, "local", tmp, wait=60.0)
        except RuntimeError as exc:
            out.add(case, "cluster", str(exc), "converged", False)
            return
        time.sleep(2.0)  # the node's rate window holds a few ticks
        for label, argv, target in EVERYDAY:
            progress(f"{label} x{args.everyday_runs}")
            t = time_command([str(plumctl), "--node", nodes[0].url, *argv], args.everyday_runs, env)
            ok = None if target is None else (t.median_ms <= target and t.code == 0)
            out.add(
                case,
                f"{label} (median of {len(t.runs)})",
                f"{t.median_ms:.0f} ms" + ("" if t.code == 0 else f" EXIT {t.code}"),
                "-" if target is None else f"<= {target:.0f} ms",
                ok,
            )
            out.add(
                case,
                "  min / p90",
                f"{1000 * min(t.runs):.0f} / {1000 * quantile(t.runs, 0.9):.0f} ms",
            )
        py = time_command([sys.executable, "-c", "pass"], args.everyday_runs, env)
        out.add(case, "python -c pass (floor)", f"{py.median_ms:.0f} ms")
    finally:
        progress("cluster down")
        cluster_down(tmp, nodes)
        shutil.rmtree(tmp, ignore_errors=True)


def hooks() -> list[Callable[[CliContext, Report], None]]:
    """Live-cluster measurements from other modules (``bench/tui.py``: ``measure``)."""
    found = []
    for name in ("bench.tui",):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        measure = getattr(module, "measure", None)
        if callable(measure):
            found.append(measure)
    return found


if __name__ == "__main__":
    sys.exit(main())
