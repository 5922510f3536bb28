"""CPU load of the whole machine, read from /proc/stat (for ``max-cpu-usage``).

Public names: CPU_SAMPLE_INTERVAL, CpuTimes, read_cpu_times, cpu_busy.
"""

from __future__ import annotations

import os
from typing import NamedTuple

__all__ = ["CPU_SAMPLE_INTERVAL", "CpuTimes", "cpu_busy", "read_cpu_times"]

#: Seconds between samples fed to the scheduler's CpuGate (it smooths them).
CPU_SAMPLE_INTERVAL = 1.0


class CpuTimes(NamedTuple):
    """Cumulative busy and total CPU time (clock ticks, all cores)."""

    busy: float
    total: float


def read_cpu_times() -> CpuTimes:
    """The machine's CPU counters; falls back to this process's times where /proc is absent."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
    except OSError:
        t = os.times()
        return CpuTimes(busy=t.user + t.system, total=t.elapsed * (os.cpu_count() or 1))
    values = [float(v) for v in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return CpuTimes(busy=total - idle, total=total)


def cpu_busy(before: CpuTimes, after: CpuTimes) -> float:
    """The busy fraction in [0, 1] between two readings."""
    total = after.total - before.total
    if total <= 0:
        return 0.0
    return min(1.0, max(0.0, (after.busy - before.busy) / total))
