"""CPU time and memory of processes, read from /proc (Linux only, as the benchmark is).

A server may be several processes (ejabberd's beam, a PostgreSQL postmaster and its backends), so a
sample covers a pid and all its descendants. CPU that exited children took with them is lost, which is
why the measured windows start after connections are up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    cpu_s: float
    rss_kb: int
    pids: int


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    return data[data.rindex(")") + 2 :].split()


def descendants(roots: list[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.append(pid)
            stack.extend(children.get(pid, []))
    return found


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def sample(roots: list[int], tree: bool = True) -> Sample:
    pids = descendants(roots) if tree else roots
    cpu = 0.0
    rss = 0
    alive = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is None:
            continue
        alive += 1
        # utime and stime are fields 14 and 15 of /proc/PID/stat, i.e. 11 and 12 after the name.
        cpu += (int(fields[11]) + int(fields[12])) / TICKS
        rss += rss_kb(pid)
    return Sample(cpu, rss, alive)


def cpu_pct(before: Sample, after: Sample, wall_s: float) -> float:
    """Share of one core over the window: 100 means one core saturated."""
    return round(100.0 * (after.cpu_s - before.cpu_s) / wall_s, 1) if wall_s > 0 else 0.0
