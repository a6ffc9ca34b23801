"""``plumctl sim``: a simulated cluster in-process, reported beside the flood baseline."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from plumctl import exitcodes
from plumctl.options import PROFILES, GlobalOptions, completes, with_global_options

EXAMPLES = """Examples:

  plumctl sim --nodes 1000 --broadcasts 200

  plumctl sim --nodes 200 --loss 0.05 -o json

  plumctl sim --nodes 1000 --crash 0.2 --seed 7

  plumctl sim --membership swim --nodes 200 --loss 0.05 --slow 0.1 --duration 600

  plumctl sim --nodes 1000 --fault freeze --fault-duration 70 -o json

A --fault run (freeze, partition, restart or churn; on the node's own stack, as with
--membership swim) broadcasts at --interval all along the fault and accounts for every
message: duplicates_delivered, lost (given up and counted), missing (known, not yet
delivered) and undelivered (owed and none of those: a silent loss, always 0).
"""


def register(app: typer.Typer) -> None:
    app.command(
        "sim",
        help="Simulate a cluster and report reliability, RMR, LDH and latency.",
        epilog=EXAMPLES + "\n" + exitcodes.EPILOG,
    )(with_global_options(sim))


def sim(
    ctx: typer.Context,
    nodes: Annotated[int, typer.Option("--nodes", "-n", min=2, help="Cluster size.")] = 200,
    broadcasts: Annotated[
        int, typer.Option("--broadcasts", "-b", min=1, help="Measured broadcasts.")
    ] = 100,
    warmup: Annotated[int, typer.Option(min=0, help="Broadcasts before measuring.")] = 20,
    loss: Annotated[
        float, typer.Option(min=0.0, max=0.99, help="Uniform message loss (0-1).")
    ] = 0.0,
    crash: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Fraction of nodes crashing mid-run.")
    ] = 0.0,
    profile: Annotated[
        str, typer.Option(help="lan, wan, local or large.", autocompletion=completes(*PROFILES))
    ] = "lan",
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same report).")] = 1,
    membership: Annotated[
        str,
        typer.Option(
            help="oracle (peer sampling) or swim.", autocompletion=completes("oracle", "swim")
        ),
    ] = "oracle",
    degree: Annotated[
        int, typer.Option(min=2, help="Overlay mean degree (oracle membership).")
    ] = 5,
    interval: Annotated[float, typer.Option(min=0.001, help="Seconds between broadcasts.")] = 0.25,
    flood: Annotated[
        bool, typer.Option("--flood/--no-flood", help="Also run the flood baseline.")
    ] = True,
    slow: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.9,
            help="Fraction of nodes whose processing is delayed by 2x the probe timeout "
            "(swim membership).",
        ),
    ] = 0.0,
    duration: Annotated[
        float,
        typer.Option(
            min=0.0, help="Simulated seconds of steady state before the broadcasts (swim)."
        ),
    ] = 0.0,
    workers: Annotated[
        int,
        typer.Option(
            min=0,
            max=64,
            help="Processes to split the run across (oracle membership; 0: 2 from 2,000 "
            "nodes on 2+ cores). The report does not depend on it.",
        ),
    ] = 0,
    fault: Annotated[
        str | None,
        typer.Option(
            help="freeze, partition, restart or churn a fraction of the nodes while "
            "broadcasting, and account for every message."
        ),
    ] = None,
    fault_fraction: Annotated[
        float, typer.Option(min=0.001, max=0.5, help="Fraction of the nodes the fault hits.")
    ] = 0.05,
    fault_duration: Annotated[
        float, typer.Option(min=0.1, help="Simulated seconds the fault lasts.")
    ] = 30.0,
) -> None:
    from plumctl import exitcodes
    from plumctl.output import emit_json, fail
    from plumtree.core.config import PROFILES, ConfigError
    from plumtree.sim.scenario import SimParams, run

    opts: GlobalOptions = ctx.obj
    if profile not in PROFILES:
        fail(
            f"--profile: unknown profile {profile!r} (choose one of {', '.join(PROFILES)})",
            exitcodes.USAGE,
        )
    if membership not in ("oracle", "swim"):
        fail(f"--membership: must be 'oracle' or 'swim', got {membership!r}", exitcodes.USAGE)
    from plumtree.sim.faults import FAULTS

    if fault is not None and fault not in FAULTS:
        fail(f"--fault: expected one of {', '.join(FAULTS)}, got {fault!r}", exitcodes.USAGE)
    params = SimParams(
        nodes=nodes,
        broadcasts=broadcasts,
        warmup=warmup,
        loss=loss,
        crash=crash,
        profile=profile,
        seed=seed,
        membership=membership,
        degree=degree,
        interval=interval,
        flood=flood,
        slow=slow,
        duration=duration,
        workers=workers,
        fault=fault or "",
        fault_fraction=fault_fraction,
        fault_duration=fault_duration,
    )
    try:
        report = _run_with_progress(run, params, quiet=opts.json)
    except ConfigError as exc:
        fail(str(exc), exitcodes.USAGE)
    data = report.as_dict()
    if opts.json:
        emit_json({"kind": "SimReport", **data})
        return
    if fault:
        _print_fault_report(data)
        return
    _print_report(data, wide=opts.wide)


def _run_with_progress(run: Any, params: Any, quiet: bool) -> Any:
    if quiet:
        return run(params)
    from plumctl.output import plural, stderr

    what = (
        f"a {params.fault} of {params.fault_duration:g}s"
        if params.fault
        else plural(params.warmup + params.broadcasts, "broadcast")
    )
    with stderr().status(f"simulating {params.nodes} nodes x {what}"):
        return run(params)


def _print_report(d: dict[str, Any], wide: bool) -> None:
    from plumctl.output import stdout, table

    def f(value: Any, fmt: str = "{:.4f}") -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return fmt.format(value)
        return str(value)

    t = table("metric", "plumtree", "flood", title=_title(d))
    t.add_row(
        "reliability (mean)", f(d["reliability"], "{:.6f}"), f(d["flood_reliability"], "{:.6f}")
    )
    t.add_row("reliability (min)", f(d["reliability_min"], "{:.6f}"), "")
    t.add_row("RMR", f(d["rmr"]), f(d["flood_rmr"]))
    t.add_row("LDH (mean last-delivery hops)", f(d["ldh"], "{:.2f}"), f(d["flood_ldh"], "{:.2f}"))
    t.add_row("latency p50 ms", f(d["latency_p50_ms"], "{:.2f}"), "")
    t.add_row(
        "latency p99 ms", f(d["latency_p99_ms"], "{:.2f}"), f(d["flood_latency_p99_ms"], "{:.2f}")
    )
    t.add_row("latency max ms", f(d["latency_max_ms"], "{:.2f}"), "")
    t.add_row(
        "control overhead (IHave+Graft+Prune / Gossip)", f(d["control_overhead"], "{:.3f}"), ""
    )
    t.add_row("Grafts sent", f(d["graft_messages"]), "")
    t.add_row("Graft failures", f(d["graft_failures"]), "")
    t.add_row("duplicates delivered to apps", f(d["duplicates_delivered"]), "")
    t.add_row("lost / missing at the end", f"{d['lost']} / {d['missing']}", "")
    if d["crash"]:
        t.add_row("nodes crashed", f(d["crashed"]), "")
        t.add_row("broadcasts to heal", f(d["broadcasts_to_heal"]), "")
        t.add_row("reliability after heal", f(d["reliability_after_heal"], "{:.6f}"), "")
    for key in (
        "convergence_p50_s",
        "convergence_p99_s",
        "convergence_max_s",
        "detection_p50_s",
        "detection_p99_s",
        "detection_max_s",
        "detection_bound_s",
        "false_positives",
    ):
        if key in d:
            t.add_row(key.replace("_", " "), f(d[key], "{:.3f}"), "")
    if wide:
        t.add_row("last delivery p50 ms", f(d["last_delivery_p50_ms"], "{:.2f}"), "")
        t.add_row("last delivery p99 ms", f(d["last_delivery_p99_ms"], "{:.2f}"), "")
        t.add_row(
            "Gossip / IHave / Prune msgs",
            f"{d['gossip_messages']} / {d['ihave_messages']} / {d['prune_messages']}",
            "",
        )
    t.add_row("simulated seconds", f(d["sim_seconds"], "{:.1f}"), "")
    t.add_row(
        "events / wall second",
        f"{d['events_per_second']:,.0f} ({d['events']:,} in {d['wall_seconds']:.1f}s"
        + (f", {d['workers']} processes)" if d.get("workers", 1) > 1 else ")"),
        "",
    )
    stdout().print(t)


def _print_fault_report(d: dict[str, Any]) -> None:
    from plumctl.output import stdout, table

    t = table(
        "metric",
        "value",
        title=(
            f"{d['nodes']} nodes · {d['fault']} of {d['fault_nodes']} nodes for "
            f"{d['fault_duration_s']:g}s · {d['profile']} · seed {d['seed']}"
        ),
    )
    rows = [
        ("messages broadcast", d["messages"]),
        ("deliveries owed", d["owed_deliveries"]),
        ("delivered exactly once", d["delivered_once"]),
        ("duplicates delivered", d["duplicates_delivered"]),
        ("lost (given up, counted)", d["lost"]),
        ("missing (known, not delivered yet)", d["missing"]),
        ("undelivered and silent", d["undelivered"]),
        ("delivered by anti-entropy", d["repaired"]),
        ("settled after the stream stopped (s)", f"{d['settled_after_s']:.1f}"),
        ("simulated seconds", f"{d['sim_seconds']:.1f}"),
        ("wall seconds", f"{d['wall_seconds']:.1f}"),
    ]
    for name, value in rows:
        t.add_row(name, str(value))
    stdout().print(t)


def _title(d: dict[str, Any]) -> str:
    from plumctl.output import plural

    faults = []
    if d["loss"]:
        faults.append(f"{100 * d['loss']:g}% loss")
    if d["crash"]:
        faults.append(f"{100 * d['crash']:g}% crash")
    if d.get("slow_nodes"):
        faults.append(plural(d["slow_nodes"], "slow node"))
    return (
        f"{d['nodes']} nodes · {plural(d['broadcasts'], 'broadcast')} (+{d['warmup']} warm-up) · "
        f"{d['profile']} · {d['membership']} · seed {d['seed']}"
        + (f" · {', '.join(faults)}" if faults else "")
    )
