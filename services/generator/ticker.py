"""A drift-free scheduler for many channel tickers in one thread: a heap of deadlines.

Tick k of a channel is due at `k * tick_ns` (wall clock, ns since the epoch) and is
stamped with exactly that time, so ticks never drift and never depend on when the
previous one ran. A channel faster than the publish interval has its due ticks sent
together, one Rows message per publish interval, so the message rate stays bounded while
every tick still gets its own row and timestamp. A late scheduler catches up without
skipping (at most `max_rows` ticks per message).
"""

from __future__ import annotations

import heapq
import itertools
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

    def __post_init__(self) -> None:
        self.seed = channel_seed(self.spec.path)


@dataclass(slots=True)
class Lateness:
    """How far past its wake-up time each ticker ran, for the heartbeat and the benchmarks."""

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
    ) -> None:
        self._publish = publish
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
        ticker = Ticker(spec, generator, next_tick=now_ns // spec.tick_ns + 1)
        self._tickers[path] = ticker
        self._push(ticker.next_tick * spec.tick_ns, path, ticker)

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
        """Publish every tick due by `now_ns`; return how many Rows messages went out."""
        sent = 0
        heap = self._heap
        while heap and heap[0][0] <= now_ns:
            wake_ns, _, path, ticker = heapq.heappop(heap)
            if self._tickers.get(path) is not ticker:
                continue
            self.lateness.record(now_ns - wake_ns)
            self._emit(path, ticker, now_ns)
            sent += 1
        return sent

    def _emit(self, path: str, ticker: Ticker, now_ns: int) -> None:
        spec = ticker.spec
        tick_ns = spec.tick_ns
        first = ticker.next_tick
        last = min(now_ns // tick_ns, first + self._max_rows - 1)
        ticks = range(first, last + 1)
        try:  # a user's generator may raise or return garbage: stop its channel, not the worker
            columns = ticker.generator.generate(spec, ticker.seed, ticks)
            if len(columns) != spec.series or any(len(column) != len(ticks) for column in columns):
                raise ValueError(f"generate() must return {spec.series} lists of {len(ticks)} values")
            self._publish(path, [k * tick_ns for k in ticks], columns)
        except Exception as exc:
            self.stop(path)
            self._failed(path, exc)
            return
        ticker.next_tick = last + 1
        wake = max(ticker.next_tick * tick_ns, now_ns + self._publish_interval_ns)
        if last * tick_ns + tick_ns <= now_ns:  # still behind: catch up at once
            wake = now_ns
        self._push(wake, path, ticker)

    def _push(self, wake_ns: int, path: str, ticker: Ticker) -> None:
        heapq.heappush(self._heap, (wake_ns, next(self._order), path, ticker))
