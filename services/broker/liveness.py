"""When a silent peer is presumed dead: a lease, stretched by how irregular its heartbeats are.

A fixed lease (3 heartbeats) takes a live worker for dead as soon as the machine is loaded:
its heartbeats come late and in bunches, the broker moves its channels, and a freeze of a
few hundred milliseconds becomes a failover. So the lease is only the least silence that
counts; beyond it a peer is dead once its silence is implausible given the intervals seen
so far (phi accrual, Hayashibara et al. 2004, as Akka and Cassandra use it): with
`phi = -log10(P(an interval at least this long))` under a normal fit of the recent
intervals, dead means phi ≥ PHI_DEAD. A regular peer is dead right after its lease; one
whose heartbeats wander is given time in proportion.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

PHI_DEAD = 8.0
"""≈ one chance in 10^8 that a live peer is this late, under the fitted intervals."""
WINDOW = 50
"""Intervals remembered: about 10 s of worker heartbeats."""
MIN_SAMPLES = 5
MIN_SPREAD = 0.1
"""The standard deviation is taken as at least this share of the mean interval."""


@dataclass(slots=True)
class Liveness:
    """Heartbeat arrivals of one peer (monotonic seconds)."""

    last_seen: float
    intervals: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def beat(self, now: float) -> None:
        if now > self.last_seen:
            self.intervals.append(now - self.last_seen)
            self.last_seen = now

    def forgive(self, pause_s: float) -> None:
        """The observer itself did not run for `pause_s`: that silence is not the peer's."""
        self.last_seen += pause_s

    def phi(self, now: float) -> float:
        """How implausible the current silence is (0: not at all)."""
        if len(self.intervals) < MIN_SAMPLES:
            return math.inf
        mean = sum(self.intervals) / len(self.intervals)
        variance = sum((x - mean) ** 2 for x in self.intervals) / len(self.intervals)
        spread = max(math.sqrt(variance), MIN_SPREAD * mean, 1e-3)
        tail = 0.5 * math.erfc((now - self.last_seen - mean) / (spread * math.sqrt(2)))
        return math.inf if tail <= 0 else -math.log10(tail)

    def dead(self, now: float, lease_s: float) -> bool:
        """Silent for longer than the lease, and implausibly so."""
        return now - self.last_seen > lease_s and self.phi(now) >= PHI_DEAD
