"""`host`: this machine's CPU, memory, network and disk, so a new user sees something real move.

Fields (float64): `cpu` (% busy over all cores), `cpu0`…`cpuN` (% per core), `memory_used`
(%), `net_rx`/`net_tx` and `disk_read`/`disk_write` (bytes/s). Percentages and rates are
taken between two polls from counters this instance keeps (psutil's own cpu_percent keeps
one module-wide previous sample, which two channels of different ticks would share and
spoil). The constructor takes the first sample, so the first poll has every field; a
counter the host does not have (no disk statistics in some containers) is null.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import psutil

from services.common.channels import EventChannel


class Sample(NamedTuple):
    at: float
    """time.monotonic() when taken."""
    cpu: list[tuple[float, float]]
    """(busy, total) seconds per core."""
    net: tuple[int, int] | None
    disk: tuple[int, int] | None


def _busy_total(times: Any) -> tuple[float, float]:
    """psutil's own arithmetic: guest time is already in user time on Linux; idle and iowait are not busy."""
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    idle = times.idle + getattr(times, "iowait", 0.0)
    return total - idle, total


def _percent(busy: float, total: float) -> float:
    return min(100.0, max(0.0, 100.0 * busy / total)) if total > 0 else 0.0


def _rate(now: int, before: int, seconds: float) -> float | None:
    """Bytes per second; None if the counter went back (a NIC or disk went away)."""
    return (now - before) / seconds if now >= before and seconds > 0 else None


def sample() -> Sample:
    net = psutil.net_io_counters()
    disk = psutil.disk_io_counters()
    return Sample(
        time.monotonic(),
        [_busy_total(core) for core in psutil.cpu_times(percpu=True)],
        (net.bytes_recv, net.bytes_sent) if net else None,
        (disk.read_bytes, disk.write_bytes) if disk else None,
    )


class HostSource:
    description = "this host: cpu and per-core cpu %, memory_used %, net and disk bytes/s"

    def __init__(self, channel: EventChannel) -> None:
        self._last = sample()
        self._cores = len(self._last.cpu)
        """Fixed at the first sample: a channel's fields never change (a core added later is left out)."""

    def poll(self) -> list[dict[str, Any]]:
        now = sample()
        before, self._last = self._last, now
        seconds = now.at - before.at
        cores = [
            (busy - was_busy, total - was_total)
            for (busy, total), (was_busy, was_total) in zip(now.cpu, before.cpu, strict=False)
        ][: self._cores]
        record: dict[str, Any] = {
            "cpu": _percent(sum(b for b, _ in cores), sum(t for _, t in cores)),
            **{f"cpu{i}": _percent(*core) for i, core in enumerate(cores)},
            **{f"cpu{i}": None for i in range(len(cores), self._cores)},
            "memory_used": float(psutil.virtual_memory().percent),
        }
        for names, counters, previous in (
            (("net_rx", "net_tx"), now.net, before.net),
            (("disk_read", "disk_write"), now.disk, before.disk),
        ):
            for index, name in enumerate(names):
                record[name] = (
                    _rate(counters[index], previous[index], seconds) if counters and previous else None
                )
        return [record]
