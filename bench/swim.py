"""SWIM membership benchmark: the issue's targets, measured in the simulator (lan profile).

    python bench/swim.py                 # the full run (several minutes)
    python bench/swim.py --quick         # smaller sizes, for a smoke check

Prints one table: each target, what was measured, whether it holds, and the wall time.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plumtree.core.config import SwimConfig
from plumtree.sim.scenario import SimParams, run
from plumtree.sim.stats import percentile
from plumtree.sim.swim_stack import SwimCluster, detection_bound

Row = tuple[str, str, str, str, str]


def timed(fn: Callable[[], list[Row]]) -> tuple[list[Row], float]:
    t0 = time.perf_counter()
    rows = fn()
    return rows, time.perf_counter() - t0


def ok(flag: bool) -> str:
    return "yes" if flag else "NO"


def join(n: int, seed: int) -> list[Row]:
    c = SwimCluster(SimParams(nodes=n, membership="swim", seed=seed))
    c.start_all()
    done = c.converge(limit=60.0)
    times = sorted(c.convergence_times())
    p50, p99, top = percentile(times, 0.5), percentile(times, 0.99), times[-1]
    agree = all(v == sorted(c.names) for v in c.alive_views().values())
    return [
        (
            f"{n} nodes join through one seed: convergence p50 / p99 / max",
            f"{p50:.2f} / {p99:.2f} / {top:.2f} s"
            + ("" if done else f" ({n - len(times)} never converged)"),
            "p99 <= 5 s",
            ok(done and p99 <= 5.0 and agree),
            "",
        )
    ]


def detect(n: int, crashes: int, seed: int) -> list[Row]:
    c = SwimCluster(SimParams(nodes=n, membership="swim", seed=seed))
    c.start_all()
    c.converge(limit=60.0)
    c.run_until(c.now + 10.0)  # past the join storm's gossip backlog
    c.crash(crashes)
    bound = detection_bound(c.swim_config, n)
    limit = c.now + 3 * bound + 60
    while c.now < limit and not c.all_detected():
        c.run_until(c.now + 1.0)
    times, undetected = c.detection_times()
    times.sort()
    p50, p99, top = percentile(times, 0.5), percentile(times, 0.99), times[-1] if times else 0
    cfg = c.swim_config
    return [
        (
            f"{n} nodes, {crashes} crashed at once: time until every live member marks each dead"
            " (p50 / p99 / max)",
            f"{p50:.2f} / {p99:.2f} / {top:.2f} s"
            + (f" ({undetected} undetected)" if undetected else ""),
            f"p99 <= {bound:.2f} s (2x{cfg.probe_interval:g} probe + suspicion "
            f"{cfg.suspicion_mult}*log10({n})*{cfg.probe_interval:g} + dissemination)",
            ok(not undetected and p99 <= bound),
            "",
        ),
        (
            "  false positives during that run",
            str(len(c.recorder.false_positive_names)),
            "0",
            ok(not c.recorder.false_positive_names),
            "",
        ),
    ]


def false_positives(n: int, minutes: float, seed: int) -> list[Row]:
    d = run(
        SimParams(
            nodes=n,
            membership="swim",
            loss=0.05,
            slow=0.1,
            duration=60.0 * minutes,
            broadcasts=20,
            warmup=10,
            flood=False,
            seed=seed,
        )
    ).as_dict()
    return [
        (
            f"{n} nodes, {minutes:g} simulated min, 5% loss, {d['slow_nodes']} slow nodes "
            f"(+{2 * SwimConfig().probe_timeout:g} s): live nodes ever declared dead",
            f"{d['false_positives']} ({d['swim_suspicions']} suspicions, "
            f"{d['swim_refutations']} refutations, max LHA score {d['swim_max_health_score']})",
            "0",
            ok(d["false_positives"] == 0),
            "",
        )
    ]


def broadcast(n: int, warmup: int, broadcasts: int, seed: int) -> list[Row]:
    d = run(
        SimParams(
            nodes=n, membership="swim", warmup=warmup, broadcasts=broadcasts, seed=seed, flood=True
        )
    ).as_dict()
    return [
        (
            f"Plumtree over SWIM, {n} nodes, no faults ({broadcasts} broadcasts after "
            f"{warmup} warm-up): reliability",
            f"{d['reliability']:.6f}",
            "1.0",
            ok(d["reliability"] == 1.0),
            "",
        ),
        ("  mean RMR", f"{d['rmr']:.4f}", "<= 0.05", ok(d["rmr"] <= 0.05), ""),
        (
            "  LDH (flood LDH on the oracle overlay)",
            f"{d['ldh']:.2f} ({d['flood_ldh']:.2f})",
            f"<= {2 * d['flood_ldh']:.2f}",
            ok(d["ldh"] <= 2 * d["flood_ldh"]),
            "",
        ),
        (
            "  duplicates delivered",
            str(d["duplicates_delivered"]),
            "0",
            ok(d["duplicates_delivered"] == 0),
            "",
        ),
        (
            "  (convergence p99 / false positives in that run)",
            f"{d['convergence_p99_s']:.2f} s / {d['false_positives']}",
            "",
            "",
            "",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke check)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", choices=["join", "detect", "fp", "broadcast"], action="append")
    args = ap.parse_args(argv)
    q = args.quick
    plan: list[tuple[str, Callable[[], list[Row]]]] = [
        ("join", lambda: join(200 if q else 1000, args.seed)),
        ("detect", lambda: detect(200 if q else 1000, 2 if q else 10, args.seed)),
        ("fp", lambda: false_positives(100 if q else 200, 2 if q else 10, args.seed)),
        ("broadcast", lambda: broadcast(200 if q else 1000, 40 if q else 60, 40, args.seed)),
    ]
    rows: list[Row] = []
    for name, fn in plan:
        if args.only and name not in args.only:
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        got, wall = timed(fn)
        got[0] = (*got[0][:4], f"{wall:.1f} s")
        rows.extend(got)
    _print(rows)
    return 0 if all(r[3] != "NO" for r in rows) else 1


def _print(rows: list[Row]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency, but stay plain-friendly
        for r in rows:
            print(" | ".join(r))
        return
    t = Table(title="SWIM membership targets (simulated, lan profile)")
    for col in ("target", "measured", "goal", "met", "wall"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(*r)
    Console(width=160).print(t)


if __name__ == "__main__":
    raise SystemExit(main())
