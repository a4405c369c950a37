"""How many CPU threads a run takes when ``--threads`` is not given: the cores other processes
leave idle, at least one.

Why not all cores: PyTorch's OpenMP threads spin-wait at the end of every parallel region, so
when another process holds a core, the thread that shares it is descheduled for whole time
slices while its partner spins. Measured on this project's 2-core machine (``docs/results.md``,
CLI speed): the plain LeNet-5 script fell from about 1,800 images/s on one thread to 433 on
two when the other core was busy, while on an idle machine one and two threads ran within 10%
of each other (a LeNet-5 batch is too small to split well). Counting idle cores once at the
start costs nothing on an idle machine and avoids the collapse on a busy one; ``--threads N``
always wins.
"""

from __future__ import annotations

import os
import time

SAMPLE_S = 0.05  # how long the idle cores are measured


def _cpu_times() -> tuple[float, float] | None:
    """(idle, total) jiffies of all CPUs since boot, from /proc/stat (None where there is none)."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 4:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return idle, sum(fields[:8])


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def busy_cores(sample_s: float = SAMPLE_S) -> float:
    """How many cores other processes keep busy now: measured over ``sample_s`` from /proc/stat
    (this process sleeps meanwhile), else the 1-minute load average."""
    before = _cpu_times()
    if before is not None:
        time.sleep(sample_s)
        after = _cpu_times()
        if after is not None and after[1] > before[1]:
            busy = 1.0 - (after[0] - before[0]) / (after[1] - before[1])
            return busy * (os.cpu_count() or 1)
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def auto_threads(processes: int = 1) -> int:
    """Threads for each of ``processes`` local processes: the idle cores shared out, >= 1."""
    idle = usable_cores() - round(busy_cores())
    return max(1, min(usable_cores(), idle) // max(1, processes))
