"""Shared helpers of the benchmarks: CPU and memory from /proc, machine load, tables.

Benchmarks print medians and ratios and say how loaded the machine was; they never
assert. The machine is shared, so wall-clock numbers come with the CPU time that
produced them and with the load around them.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


# ---------------------------------------------------------------- /proc


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (0.0 if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # the command name (field 2) may contain spaces: split after its closing paren
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kb(pid: int | str, key: str) -> int:
    """A ``kB`` line of /proc/<pid>/status (VmRSS, VmHWM, ...); 0 if unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(pid: int | str = "self") -> float:
    return proc_status_kb(pid, "VmRSS") / 1024


def peak_rss_mb(pid: int | str = "self") -> float:
    return proc_status_kb(pid, "VmHWM") / 1024


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in first]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


@dataclass
class Meter:
    """Wall time, this process's CPU time and the whole machine's busy CPUs over a span.

    ``busy_cpus`` counts every process (us included); ``others_cpus`` is what the rest of
    the machine used meanwhile, i.e. how much the measurement had to share.
    """

    wall: float = 0.0
    cpu: float = 0.0
    busy_cpus: float = 0.0
    load_before: float = 0.0
    load_after: float = 0.0
    extra_cpu: float = 0.0  # CPU seconds of helper processes we account for ourselves
    _t0: float = 0.0
    _c0: float = 0.0
    _m0: tuple[int, int] = (0, 0)

    def __enter__(self) -> Meter:
        self.load_before = os.getloadavg()[0]
        self._m0 = _machine_ticks()
        self._c0 = time.process_time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._t0
        self.cpu = time.process_time() - self._c0
        busy1, total1 = _machine_ticks()
        busy0, total0 = self._m0
        span = max(1, total1 - total0)
        self.busy_cpus = NCPU * (busy1 - busy0) / span
        self.load_after = os.getloadavg()[0]

    @property
    def others_cpus(self) -> float:
        if self.wall <= 0:
            return 0.0
        return max(0.0, self.busy_cpus - (self.cpu + self.extra_cpu) / self.wall)

    def describe(self) -> str:
        return (
            f"load {self.load_before:.2f}->{self.load_after:.2f}, machine busy "
            f"{self.busy_cpus:.2f}/{NCPU} CPUs of which others {self.others_cpus:.2f}"
        )


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {NCPU} CPUs"


# ---------------------------------------------------------------- statistics


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else math.nan


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (``q`` in [0, 1])."""
    data = sorted(values)
    if not data:
        return math.nan
    rank = max(1, math.ceil(q * len(data)))
    return data[min(rank, len(data)) - 1]


# ---------------------------------------------------------------- tables


@dataclass
class Row:
    case: str
    metric: str
    measured: str
    target: str = ""
    ok: bool | None = None  # None: informational


@dataclass
class Report:
    """Rows of measured vs target, printed as one table; also dumped as JSON."""

    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def add(
        self, case: str, metric: str, measured: str, target: str = "", ok: bool | None = None
    ) -> None:
        self.rows.append(Row(case, metric, measured, target, ok))

    def check(self, case: str, metric: str, value: Any, fmt: str, target: str, ok: bool) -> None:
        self.add(case, metric, fmt.format(value) if value is not None else "-", target, ok)

    def note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def missed(self) -> list[Row]:
        return [r for r in self.rows if r.ok is False]

    def render(self) -> str:
        header = ("case", "metric", "measured", "target", "")
        body = [
            (r.case, r.metric, r.measured, r.target, {True: "ok", False: "MISS", None: ""}[r.ok])
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(5)]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

        out = [self.title, line(header), line(["-" * w for w in widths])]
        previous = None
        for row in body:
            shown = list(row)
            if row[0] == previous:
                shown[0] = ""
            previous = row[0]
            out.append(line(shown))
        checked = [r for r in self.rows if r.ok is not None]
        out.append(
            f"{len(checked) - len(self.missed)}/{len(checked)} targets met"
            + (
                f"; missed: {', '.join(f'{r.case} {r.metric}' for r in self.missed)}"
                if self.missed
                else ""
            )
        )
        out.extend(f"note: {n}" for n in self.notes)
        return "\n".join(out)

    def emit(self, json_path: str | None = None) -> None:
        print(self.render(), flush=True)
        if json_path:
            payload = {
                "title": self.title,
                "rows": [r.__dict__ for r in self.rows],
                "notes": self.notes,
                "data": self.data,
            }
            Path(json_path).write_text(json.dumps(payload, indent=2, default=str) + "\n")


def progress(message: str) -> None:
    """Progress goes to stderr so that stdout is only the table."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- per-delivery microbenchmarks


def delivery_args(doc: str, argv: list[str] | None, deliveries: int, repeats: int) -> Any:
    """The options of bench/core.py and bench/node.py: how many deliveries, how often."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--deliveries", type=int, default=deliveries)
    ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--seed", type=int, default=1)
    return ap.parse_args(argv)


def add_costs(out: Report, case: str, costs_us: Sequence[float]) -> None:
    """CPU per delivery: the median of the repeats, and their spread (a noisy machine)."""
    out.add(case, "CPU per delivery (median)", f"{median(costs_us):.1f} us")
    out.add(case, "  min / max over repeats", f"{min(costs_us):.1f} / {max(costs_us):.1f} us")
