"""Who used the CPUs during a measured window: the client, the server and everything else.

Linux only (``/proc``); on other systems the server's and the machine's figures are None.
On a shared machine "everything else" is what tells a clean run from a polluted one.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int | None) -> float | None:
    """User plus system CPU time of another process; None if unknown."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # utime and stime are fields 14 and 15 of proc_pid_stat(5); fields[0] is field 3.
    return (int(fields[11]) + int(fields[12])) / _TICK


def _machine_busy_seconds() -> float | None:
    """CPU time all cores spent on anything but idling and waiting for I/O."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[1:8])
    return (user + nice + system + irq + softirq) / _TICK


@dataclass(frozen=True)
class Clocks:
    """Wall time and CPU counters read at one instant."""

    wall: float
    client: float
    server: float | None
    machine: float | None

    @classmethod
    def read(cls, server_pid: int | None) -> Clocks:
        """Read every clock now; `server_pid` None leaves the server's CPU unknown."""
        return cls(
            wall=time.perf_counter(),
            client=time.process_time(),
            server=process_cpu_seconds(server_pid),
            machine=_machine_busy_seconds(),
        )


def _delta(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round(end - start, 4)


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds spent over a window of `seconds`, by whom."""

    seconds: float
    client: float
    server: float | None
    other: float | None
    """Every process but client and server, kernel interrupts included, in CPU seconds."""

    @classmethod
    def between(cls, start: Clocks, end: Clocks) -> CpuUse:
        """The CPU use from `start` to `end`."""
        client = round(end.client - start.client, 4)
        server = _delta(start.server, end.server)
        machine = _delta(start.machine, end.machine)
        other = None
        if server is not None and machine is not None:
            other = round(max(0.0, machine - server - client), 4)
        return cls(round(end.wall - start.wall, 4), client, server, other)

    def share(self, cpu_seconds: float | None) -> float | None:
        """CPU seconds as a share of one core over the window."""
        if cpu_seconds is None or self.seconds <= 0:
            return None
        return round(cpu_seconds / self.seconds, 4)


class CollectorTime:
    """The automatic collections of this process and the time they took, by generation:
    a ``gc.callbacks`` entry (``gc.callbacks.append(CollectorTime())``)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            self.seconds[generation] += time.perf_counter() - self._started
            self.collections[generation] += 1
