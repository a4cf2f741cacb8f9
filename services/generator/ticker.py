"""A drift-free scheduler for many channel tickers in one thread: a heap of deadlines.

Tick k of a channel is due at `spec.tick_time(k)` (wall clock, ns since the epoch: k
intervals plus the channel's phase) and is stamped with exactly that time, so ticks never
drift and never depend on when the previous one ran. A channel faster than the publish
interval has its due ticks sent together, one Rows message per publish interval (on a grid
of such intervals, so the delay never adds up), so the message rate stays bounded while
every tick still gets its own row and timestamp. A late scheduler catches up without
skipping (at most `max_rows` ticks per message).
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.common.channels import ChannelSpec
from services.generator.waveforms import Generator, channel_seed

Publish = Callable[[str, list[int], list[list[float]]], None]
"""publish(channel, times_ns, columns)"""
Failed = Callable[[str, Exception], None]
"""failed(channel, error): the channel's generator broke; the scheduler has stopped it."""


@dataclass(slots=True)
class Ticker:
    spec: ChannelSpec
    generator: Generator
    next_tick: int
    seed: int = field(init=False)
    phase_ns: int = field(init=False)

    def __post_init__(self) -> None:
        self.seed = channel_seed(self.spec.path)
        self.phase_ns = self.spec.phase_ns


@dataclass(slots=True)
class Lateness:
    """How long after its due time each ticker ran, for the heartbeat and the benchmarks."""

    budget_ns: int
    late: int = 0
    worst_ns: int = 0

    def record(self, late_ns: int) -> None:
        if late_ns > self.budget_ns:
            self.late += 1
        self.worst_ns = max(self.worst_ns, late_ns)


class Scheduler:
    def __init__(
        self,
        publish: Publish,
        failed: Failed,
        *,
        publish_interval_ns: int,
        max_rows: int,
        lateness_budget_ns: int = 1_000_000,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._publish = publish
        self._clock = clock
        self._failed = failed
        self._publish_interval_ns = publish_interval_ns
        self._max_rows = max_rows
        self._tickers: dict[str, Ticker] = {}
        self._heap: list[tuple[int, int, str, Ticker]] = []
        self._order = itertools.count()
        self.lateness = Lateness(lateness_budget_ns)

    @property
    def channels(self) -> list[str]:
        return list(self._tickers)

    def __contains__(self, channel: str) -> bool:
        return channel in self._tickers

    def start(self, spec: ChannelSpec, generator: Generator, now_ns: int) -> None:
        """Run a channel from its first tick after `now_ns`; a running one is left alone."""
        path = spec.path
        if path in self._tickers:
            return
        ticker = Ticker(spec, generator, next_tick=spec.last_tick(now_ns) + 1)
        self._tickers[path] = ticker
        self._push(spec.tick_time(ticker.next_tick), path, ticker)

    def stop(self, channel: str) -> None:
        """Forget a channel; its heap entry is dropped when it comes up."""
        self._tickers.pop(channel, None)

    def next_deadline(self) -> int | None:
        """When the earliest ticker is due (ns), discarding stopped ones on the way."""
        heap = self._heap
        while heap and self._tickers.get(heap[0][2]) is not heap[0][3]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def run_due(self, now_ns: int) -> int:
        """Publish every tick due by `now_ns`; return how many Rows messages went out.

        Lateness is read from the clock as each ticker runs, not from `now_ns`: in a long
        burst the last tickers run well after the call began.
        """
        sent = 0
        heap = self._heap
        while heap and heap[0][0] <= now_ns:
            wake_ns, _, path, ticker = heapq.heappop(heap)
            if self._tickers.get(path) is not ticker:
                continue
            self.lateness.record(self._clock() - wake_ns)
            self._emit(path, ticker, now_ns)
            sent += 1
        return sent

    def _emit(self, path: str, ticker: Ticker, now_ns: int) -> None:
        spec = ticker.spec
        tick_ns, phase_ns = spec.tick_ns, ticker.phase_ns
        first = ticker.next_tick
        last = min((now_ns - phase_ns) // tick_ns, first + self._max_rows - 1)
        ticks = range(first, last + 1)
        try:  # a user's generator may raise or return garbage: stop its channel, not the worker
            columns = ticker.generator.generate(spec, ticker.seed, ticks)
            if len(columns) != spec.series or any(len(column) != len(ticks) for column in columns):
                raise ValueError(f"generate() must return {spec.series} lists of {len(ticks)} values")
            self._publish(path, [k * tick_ns + phase_ns for k in ticks], columns)
        except Exception as exc:
            self.stop(path)
            self._failed(path, exc)
            return
        ticker.next_tick = last + 1
        wake = ticker.next_tick * tick_ns + phase_ns
        if wake <= now_ns:  # still behind: catch up at once
            wake = now_ns
        elif tick_ns < self._publish_interval_ns:  # a fast channel: the next publish slot
            interval = self._publish_interval_ns
            wake = max(wake, (now_ns // interval + 1) * interval)
        self._push(wake, path, ticker)

    def _push(self, wake_ns: int, path: str, ticker: Ticker) -> None:
        heapq.heappush(self._heap, (wake_ns, next(self._order), path, ticker))
