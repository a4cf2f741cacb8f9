"""Fewer, fuller packets when the plugin is overloaded, so it never stops hearing Grafana.

Every RunStream sends whatever rows are queued as soon as it can: at a light load each row
leaves at once (sub-millisecond latency). Past what the plugin's one event loop can do,
streams sending packet after packet keep it so busy that new RunStream calls wait
unaccepted (1,000 streams of 50 ms ticks: a third of them had no packet after 30 s, then
were cancelled), and CheckHealth and Shutdown wait too. So the loop's own lateness is
measured, and while it is late each stream pauses after a packet in proportion: its
next packet carries more rows, the packets per second (what costs CPU) drop, and the loop
has time again for calls, health and shutdown. At a light load the pause is zero.
"""

from __future__ import annotations

import asyncio

PROBE_S = 0.02
"""How often the loop's lateness is sampled."""
LATE_S = 0.01
"""Lateness below this is a loop at ease: no pause (a loop carrying 250,000 rows/s stays below)."""
PAUSE_PER_LATE = 4.0
MAX_PAUSE_S = 0.1
"""At most this much latency added: 1,000 streams then send 10,000 packets/s at most."""
SMOOTHING = 0.2


class LoopLag:
    """The event loop's recent lateness (seconds a sleep overshoots), smoothed."""

    def __init__(self) -> None:
        self.lag_s = 0.0
        self._task: asyncio.Task[None] | None = None

    def pause_s(self) -> float:
        """How long a stream waits after a packet before taking the next batch.

        The first call starts the sampling (with the first stream: no stream, no pause).
        """
        if self._task is None:
            self._task = asyncio.create_task(self._probe(), name="loop-lag")
        if self.lag_s < LATE_S:
            return 0.0
        return min(MAX_PAUSE_S, self.lag_s * PAUSE_PER_LATE)

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(PROBE_S)
            late = max(0.0, loop.time() - started - PROBE_S)
            self.lag_s += SMOOTHING * (late - self.lag_s)
