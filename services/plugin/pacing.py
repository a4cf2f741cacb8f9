"""Fewer, fuller packets when the plugin is overloaded, so it never stops hearing Grafana.

Every RunStream sends whatever rows are queued as soon as it can: at a light load each row
leaves at once (sub-millisecond latency). Past what the plugin's one event loop can do,
streams sending packet after packet keep it so busy that new RunStream calls wait
unaccepted (1,000 streams of 50 ms ticks: a third of them had no packet after 30 s, then
were cancelled), and CheckHealth and Shutdown wait too. So the loop's own lateness is
measured, and while it is late each stream pauses after a packet in proportion: its
next packet carries more rows, the packets per second (what costs CPU) drop, and the loop
has time again for calls, health and shutdown. At a light load the pause is zero.

A burst of starts (Grafana restarting with many open panels runs every RunStream at once)
is where that is not enough: the streams started first go on at up to 10 packets/s each
while the others wait for their first, and 1,000 channels of 50 ms ticks took 5 s to start,
at 5 ms of CPU per stream started instead of 1.4 ms at 1 s ticks. So while streams are
starting and the loop runs late, the running streams together send at most
BURST_PACKETS_PER_S: each pauses for its share (up to MAX_BURST_PAUSE_S), and the starts
have the loop. The cost is latency in the running streams during the burst only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

PROBE_S = 0.02
"""How often the loop's lateness is sampled."""
LATE_S = 0.01
"""Lateness below this is a loop at ease: no pause (a loop carrying 250,000 rows/s stays below)."""
PAUSE_PER_LATE = 4.0
MAX_PAUSE_S = 0.1
"""At most this much latency added: 1,000 streams then send 10,000 packets/s at most."""
SMOOTHING = 0.2
BURST_S = 1.0
"""A stream started within this long: streams are starting, the running ones yield to them."""
BURST_PACKETS_PER_S = 1000.0
"""What the running streams send together during a burst of starts (each ~70 µs: 7 % of a core)."""
MAX_BURST_PAUSE_S = 1.0
"""At most this much latency added during a burst (a panel of 1 s ticks still moves each tick)."""


class LoopLag:
    """The event loop's recent lateness (seconds a sleep overshoots), smoothed."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.lag_s = 0.0
        self.streams = 0
        """Streams running (each pauses by pause_s)."""
        self._started = -BURST_S
        self._task: asyncio.Task[None] | None = None

    def opened(self) -> None:
        """A stream starts: for BURST_S the running streams pause for their share (module docstring)."""
        self.streams += 1
        self._started = self.clock()

    def closed(self) -> None:
        self.streams -= 1

    def pause_s(self, tick_s: float) -> float:
        """How long a stream whose rows come every `tick_s` waits after a packet before taking more.

        Outside a burst of starts, zero when the pause is not longer than the tick: no second
        row would come in it to share the next packet, so it would only add latency and one
        more wakeup of the loop per packet (10,000 streams at 1 Hz spent a tenth of the
        plugin's samples on those timers). During a burst every running stream pauses for its
        share whatever its tick: on a loop that late the pause outlasts the tick (without it,
        10,000 streams of 1 s ticks were not all started after 90 s).
        The first call starts the sampling (with the first stream: no stream, no pause).
        """
        if self._task is None:
            self._task = asyncio.create_task(self._probe(), name="loop-lag")
        if self.lag_s < LATE_S:
            return 0.0
        pause = min(MAX_PAUSE_S, self.lag_s * PAUSE_PER_LATE)
        if self.clock() - self._started < BURST_S:
            return max(pause, min(MAX_BURST_PAUSE_S, self.streams / BURST_PACKETS_PER_S))
        return pause if pause > tick_s else 0.0

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(PROBE_S)
            late = max(0.0, loop.time() - started - PROBE_S)
            self.lag_s += SMOOTHING * (late - self.lag_s)
