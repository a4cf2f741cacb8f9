"""Every process, once a second: alive (unless a fault has it down) and its memory."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from bench.chaos.cluster import Cluster
from bench.chaos.faults import Injected, Injector, _rss_mib

STARVED_S = 0.5
"""A wake-up this late means this process was not scheduled: the machine is overloaded."""


@dataclass
class Death:
    name: str
    at: float
    code: int | None


@dataclass
class Monitor:
    cluster: Cluster
    injector: Injector
    rss_peak_mib: dict[str, float] = field(default_factory=dict)
    deaths: list[Death] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    starved: list[Injected] = field(default_factory=list)
    """Stretches when this process was not scheduled (as pseudo-faults of kind `starved`)."""

    def watch_scheduling(self) -> None:
        """Until `stop`: sleep 50 ms over and over; a late wake-up is a stretch of starvation."""
        while not self.stop.is_set():
            before = time.time()
            time.sleep(0.05)
            after = time.time()
            if after - before > STARVED_S:
                self.starved.append(Injected("starved", "", before, after))

    def run(self) -> None:
        """Until `stop`: a process that exited on its own is a death, and is restarted so the run goes on."""
        while not self.stop.wait(1.0):
            for name in self.cluster.names():
                with self.cluster.lock:
                    process = self.cluster.process(name)
                    code = process.poll()
                if name in self.injector.faulted:
                    continue
                if code is not None:
                    self.deaths.append(Death(name, time.time(), code))
                    self.cluster.start(name)
                    continue
                role = "worker" if name.startswith("w") else name
                self.rss_peak_mib[role] = max(self.rss_peak_mib.get(role, 0.0), _rss_mib(process.pid))
