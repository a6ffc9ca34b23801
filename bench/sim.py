"""Simulator benchmark: the broadcast targets of issue 2, measured vs target.

    python bench/sim.py            # 1k nodes x 200 broadcasts (no faults, 5% loss, 20%
                                   # crash) and 10k nodes x 100 broadcasts (no faults)
    python bench/sim.py --quick    # the same at 200 / 2,000 nodes (a smoke check)

Every case is ``plumtree.sim.scenario.run(SimParams(...))``, the code ``plumctl sim``
runs: oracle membership, lan profile, random origins, after a warm-up. The protocol
numbers are deterministic (same seed, same report); the time numbers are not, so they
come with the CPU time behind them and the machine's load meanwhile. From 2,000 nodes
on, each run is split across two processes (``SimParams.workers``; same report as one
process, see ``plumtree.sim.parallel``), and the flood baseline (fewer broadcasts,
``flood_broadcasts``) runs inside the first one, in the time it would otherwise wait for
the other; the wall time is that of both.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this checkout, not whatever is installed
#: --mypyc: the plumtree package to measure (a compiled copy), ahead of this checkout's
COMPILED = os.environ.get("PLUMTREE_BENCH_COMPILED")
if COMPILED:
    sys.path.insert(0, COMPILED)

from bench.common import (  # noqa: E402
    Meter,
    Report,
    load_line,
    median,
    peak_rss_mb,
    progress,
)
from plumtree.sim.scenario import (  # noqa: E402
    ProtocolResult,
    SimParams,
    run,
)

TIME_LIMIT_S = 120.0  # issue 2: the 10k-node run finishes in under 2 minutes

#: --mypyc compiles these (typed, self-contained) modules; the rest stays interpreted
MYPYC_MODULES = (
    "plumtree/core/plumtree.py",
    "plumtree/core/cache.py",
    "plumtree/core/peers.py",
    "plumtree/core/stats.py",
    "plumtree/core/ratelimit.py",
    "plumtree/core/ids.py",
    "plumtree/sim/engine.py",
    "plumtree/sim/network.py",
)


def run_compiled(argv: list[str]) -> int:
    """Build a mypyc-compiled copy of the package in a temp dir and rerun this bench on it.

    An experiment, not how the package ships: it shows what compiling the typed core
    buys (the reports are identical; only the speed changes).
    """
    build = Path(tempfile.mkdtemp(prefix="plumtree-mypyc-"))
    try:
        shutil.copytree(
            ROOT / "plumtree",
            build / "plumtree",
            ignore=shutil.ignore_patterns("__pycache__", "*.so"),
        )
        progress(f"mypyc: compiling {len(MYPYC_MODULES)} modules in {build}")
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "mypyc", *MYPYC_MODULES],
            cwd=build,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
            return 1
        progress(f"mypyc: built in {time.perf_counter() - t0:.0f} s")
        env = {**os.environ, "PLUMTREE_BENCH_COMPILED": str(build)}
        rest = [a for a in argv if a != "--mypyc"]
        return subprocess.run([sys.executable, __file__, *rest], env=env, check=False).returncode
    finally:
        shutil.rmtree(build, ignore_errors=True)


@dataclass
class Case:
    name: str
    params: SimParams
    kind: str  # nofault | loss | crash
    timed: bool = False  # the 2-minute target applies
    big: bool = False


def cases(quick: bool, seed: int) -> list[Case]:
    small, big = (200, 2_000) if quick else (1_000, 10_000)
    b_small, b_big = (50, 30) if quick else (200, 100)
    warm = 10 if quick else 20
    base = SimParams(nodes=small, broadcasts=b_small, warmup=warm, profile="lan", seed=seed)
    return [
        Case(
            f"{small:,} no faults",
            replace(base, flood=True, flood_broadcasts=b_small // 2),
            "nofault",
        ),
        Case(f"{small:,} 5% loss", replace(base, loss=0.05, flood=False), "loss"),
        Case(f"{small:,} 20% crash", replace(base, crash=0.2, flood=False), "crash"),
        Case(
            f"{big:,} no faults",
            SimParams(
                nodes=big,
                broadcasts=b_big,
                warmup=warm,
                profile="lan",
                seed=seed,
                flood=True,
                flood_broadcasts=10 if quick else 30,
            ),
            "nofault",
            timed=not quick,
            big=True,
        ),
    ]


# ---------------------------------------------------------------- running


@dataclass
class Outcome:
    report: dict[str, Any]
    plumtree: ProtocolResult
    meter: Meter
    cpu: float  # this process and the parts it forked, Plumtree and flood


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_case(case: Case, workers: int) -> Outcome:
    params = replace(case.params, workers=workers)
    children = _children_cpu()
    with Meter() as meter:
        c0 = time.process_time()
        report = run(params)
        cpu = time.process_time() - c0
    meter.extra_cpu = _children_cpu() - children  # the forked parts, once joined
    return Outcome(report.as_dict(), report.plumtree, meter, cpu + meter.extra_cpu)


# ---------------------------------------------------------------- checking


def judge(out: Report, case: Case, o: Outcome, walls: list[float]) -> None:
    d = o.report
    name = case.name
    p = case.params
    out.add(
        name,
        "setup",
        f"{p.nodes:,} nodes, {p.broadcasts} broadcasts (+{p.warmup} warm-up), lan, "
        f"seed {p.seed}" + (f", flood {p.flood_broadcasts}" if p.flood else ""),
    )
    if case.kind == "nofault":
        out.check(
            name,
            "reliability, every broadcast (min)",
            d["reliability_min"],
            "{:.6f}",
            "= 1.0",
            d["reliability_min"] == 1.0,
        )
        out.check(name, "RMR (mean)", d["rmr"], "{:.4f}", "<= 0.05", d["rmr"] <= 0.05)
        flood_ldh = d["flood_ldh"]
        ratio = d["ldh"] / flood_ldh if flood_ldh else None
        out.check(
            name,
            "LDH (mean) / flood LDH",
            ratio,
            "{:.2f}x",
            "<= 2x",
            ratio is not None and ratio <= 2.0,
        )
        out.add(
            name,
            "  LDH plumtree / flood",
            f"{d['ldh']:.2f} / {flood_ldh:.2f}" if flood_ldh else f"{d['ldh']:.2f} / -",
        )
        out.add(name, "  flood RMR", f"{d['flood_rmr']:.3f}" if flood_ldh else "-")
    elif case.kind == "loss":
        out.check(
            name,
            "reliability (mean)",
            d["reliability"],
            "{:.6f}",
            ">= 0.9999",
            d["reliability"] >= 0.9999,
        )
        out.add(name, "  reliability (min)", f"{d['reliability_min']:.6f}")
        out.add(
            name,
            "  Grafts sent / Graft failures",
            f"{d['graft_messages']:,} / {d['graft_failures']}",
        )
    elif case.kind == "crash":
        after = d["reliability_after_heal"]
        out.check(
            name, "survivors get every broadcast after heal", after, "{:.6f}", "= 1.0", after == 1.0
        )
        out.check(
            name,
            "broadcasts to heal",
            d["broadcasts_to_heal"],
            "{}",
            f"healed (< {p.broadcasts // 2})",
            d["broadcasts_to_heal"] is not None and d["broadcasts_to_heal"] < p.broadcasts // 2,
        )
        out.add(name, "  nodes crashed", str(d["crashed"]))
    out.check(  # every kind of case
        name,
        "duplicates delivered",
        d["duplicates_delivered"],
        "{}",
        "= 0",
        d["duplicates_delivered"] == 0,
    )
    out.add(
        name,
        "latency p50 / p99 / last delivery p99",
        f"{d['latency_p50_ms']:.2f} / {d['latency_p99_ms']:.2f} / "
        f"{d['last_delivery_p99_ms']:.2f} ms (simulated)",
    )
    m = o.meter
    events = d["events"]
    if case.timed:
        out.check(
            name,
            "wall time, whole case",
            m.wall,
            "{:.1f} s",
            f"< {TIME_LIMIT_S:.0f} s",
            m.wall < TIME_LIMIT_S,
        )
    else:
        out.add(
            name,
            "wall time, whole case",
            f"{median(walls):.1f} s" + (f" (median of {len(walls)})" if len(walls) > 1 else ""),
        )
    out.add(name, "Plumtree events", f"{events:,} ({d['sim_seconds']:.1f} simulated s)")
    out.add(
        name,
        "Plumtree events / s",
        f"{d['events_per_second']:,.0f} wall (event loop), "
        f"{events / o.plumtree.wall_seconds / d['workers']:,.0f} per process",
    )
    out.add(
        name,
        "processes / CPU, whole case",
        f"{d['workers']} / {o.cpu:.1f} CPU-s (Plumtree and flood, every part)",
    )
    out.add(name, "machine during case", m.describe())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke check)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="repeat the small cases N times (median wall time; reports must match)",
    )
    ap.add_argument("--only", choices=["small", "big"], help="run only the small or the big cases")
    ap.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes per run (0: as plumctl sim picks: 2 from 2,000 nodes on 2+ cores)",
    )
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    ap.add_argument(
        "--mypyc",
        action="store_true",
        help="experiment: measure a mypyc-compiled copy of the core and engine",
    )
    args = ap.parse_args(argv)
    if args.mypyc and not COMPILED:
        return run_compiled(sys.argv[1:] if argv is None else argv)

    flavour = " (mypyc-compiled core+engine)" if COMPILED else ""
    out = Report(
        f"bench/sim.py{' --quick' if args.quick else ''}: simulator targets (issue 2){flavour}"
    )
    out.note(f"start: {load_line()}")
    for case in cases(args.quick, args.seed):
        big = case.big
        if args.only and (args.only == "big") != big:
            continue
        reps = 1 if big else max(1, args.repeat)
        walls: list[float] = []
        first: Outcome | None = None
        for r in range(reps):
            progress(f"{case.name}: run {r + 1}/{reps} ({load_line()})")
            o = run_case(case, args.workers)
            walls.append(o.meter.wall)
            if first is None:
                first = o
            elif {
                k: v for k, v in o.report.items() if k not in ("wall_seconds", "events_per_second")
            } != {
                k: v
                for k, v in first.report.items()
                if k not in ("wall_seconds", "events_per_second")
            }:
                out.note(f"{case.name}: repeat {r + 1} gave a different report (nondeterminism!)")
        assert first is not None
        judge(out, case, first, walls)
        out.data[case.name] = first.report | {
            "wall_case_s": walls,
            "cpu_s": first.cpu,
            "busy_cpus": first.meter.busy_cpus,
            "others_cpus": first.meter.others_cpus,
        }
    out.note(f"peak RSS of this process: {peak_rss_mb():.0f} MB (all cases; the biggest dominates)")
    out.note(f"end: {load_line()}")
    out.emit(args.json)
    sys.stdout.flush()
    sys.stderr.flush()
    # skip freeing millions of objects one by one at exit (seconds at 10k nodes)
    os._exit(1 if args.strict and out.missed else 0)


if __name__ == "__main__":
    sys.exit(main())
