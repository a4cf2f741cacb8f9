"""A drift-free scheduler for many channel tickers in one thread: a heap of deadlines.

Tick k of a channel is due at `spec.tick_time(k)` (wall clock, ns since the epoch: k
intervals plus the channel's phase) and is stamped with exactly that time, so ticks never
drift and never depend on when the previous one ran. A channel faster than the publish
interval has its due ticks sent together, one Rows message per publish interval (on a grid
of such intervals, so the delay never adds up), so the message rate stays bounded while
every tick still gets its own row and timestamp. A late scheduler catches up without
skipping (at most `max_rows` ticks per message).

Each ticker runs under the epoch of its placement, and its Rows carry it; values leave as
float64 bytes, so a generator returning something that is not a number fails its channel
here rather than in a reader.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.common.channels import ChannelSpec
from services.common.protocol import FLOAT_BYTES, float_bytes
from services.common.waveforms import Generator, channel_seed
from services.generator.placements import Placements

Publish = Callable[[str, int, int, list[bytes]], None]
"""publish(channel, first_tick, epoch, columns as float64 bytes)"""
Failed = Callable[[str, Exception], None]
"""failed(channel, error): the channel's generator broke; the scheduler has stopped it."""


ID_BITS = 32
ID_MASK = (1 << ID_BITS) - 1


@dataclass(slots=True)
class Ticker:
    spec: ChannelSpec
    generator: Generator
    next_tick: int
    id: int
    """Unique among running tickers; a channel started again gets a new one."""
    epoch: int
    seed: int = field(init=False)
    """The generator's seed, hashed once (the spec holds its path, tick and phase already)."""

    def __post_init__(self) -> None:
        self.seed = channel_seed(self.spec.path)


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


class Scheduler(Placements[Ticker]):
    """Tickers in a heap of plain ints, `wake_ns << ID_BITS | ticker id`: ints compare in
    half the time tuples do, and the heap is what every tick of every channel goes through.
    A stopped ticker's entry stays in the heap until it comes up, then is dropped."""

    def __init__(
        self,
        publish: Publish,
        failed: Failed,
        *,
        publish_interval_ns: int,
        max_rows: int,
        lateness_budget_ns: int = 1_000_000,
        pass_budget_ns: int = 20_000_000,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        super().__init__()
        self._publish = publish
        self._pass_budget_ns = pass_budget_ns
        self._clock = clock
        self._failed = failed
        self._publish_interval_ns = publish_interval_ns
        self._max_rows = max_rows
        self._by_id: dict[int, Ticker] = {}
        self._heap: list[int] = []
        self._ids = itertools.count()
        self.lateness = Lateness(lateness_budget_ns)

    def start(self, spec: ChannelSpec, generator: Generator, now_ns: int, epoch: int) -> None:
        """Run a channel from its first tick after `now_ns`; a running one only takes a newer epoch."""
        path = spec.path
        if self.advance_epoch(path, epoch):
            return
        ticker = Ticker(spec, generator, spec.last_tick(now_ns) + 1, next(self._ids) & ID_MASK, epoch)
        self._place(path, ticker)
        self._by_id[ticker.id] = ticker
        heapq.heappush(self._heap, spec.tick_time(ticker.next_tick) << ID_BITS | ticker.id)

    def stop(self, channel: str, epoch: int | None = None) -> bool:
        """Forget a channel (only if it runs under `epoch` or older, when given); whether it stopped.

        Its heap entry is dropped when it comes up.
        """
        ticker = self._unplace(channel, epoch)
        if ticker is None:
            return False
        del self._by_id[ticker.id]
        return True

    def next_deadline(self) -> int | None:
        """When the earliest ticker is due (ns), discarding stopped ones on the way."""
        heap = self._heap
        while heap and heap[0] & ID_MASK not in self._by_id:
            heapq.heappop(heap)
        return heap[0] >> ID_BITS if heap else None

    def run_due(self, now_ns: int) -> int:
        """Publish every tick due by `now_ns`; return how many Rows messages went out.

        Lateness is read from the clock as each ticker runs, not from `now_ns`: in a long
        burst the last tickers run well after the call began. A pass stops after
        `pass_budget_ns` with work left (an overloaded worker must still heartbeat, or the
        broker takes it for dead and moves its channels); the next call carries on. This
        loop runs for every tick of every channel, hence the local names and one heap
        operation per tick.
        """
        sent = 0
        heap, by_id, clock, record = self._heap, self._by_id, self._clock, self.lateness.record
        due = now_ns << ID_BITS | ID_MASK
        give_up_at = clock() + self._pass_budget_ns
        while heap and heap[0] <= due:
            entry = heap[0]
            ticker = by_id.get(entry & ID_MASK)
            if ticker is None:  # stopped
                heapq.heappop(heap)
                continue
            ran_at = clock()
            if ran_at > give_up_at:  # overloaded: let the caller heartbeat, the rest stays due
                break
            record(ran_at - (entry >> ID_BITS))
            wake_ns = self._emit(ticker, now_ns)
            if wake_ns is None:
                heapq.heappop(heap)
                continue
            heapq.heapreplace(heap, wake_ns << ID_BITS | ticker.id)
            sent += 1
        return sent

    def _emit(self, ticker: Ticker, now_ns: int) -> int | None:
        """Publish the ticker's due ticks; return when it is next due, None if its generator failed."""
        spec = ticker.spec
        tick_ns, phase_ns = spec.tick_ns, spec.phase_ns
        first = ticker.next_tick
        last = min((now_ns - phase_ns) // tick_ns, first + self._max_rows - 1)
        ticks = range(first, last + 1)
        try:  # a user's generator may raise or return garbage: stop its channel, not the worker
            columns = ticker.generator.generate(spec, ticker.seed, ticks)
            self._publish(spec.path, first, ticker.epoch, _column_bytes(columns, spec.series, len(ticks)))
        except Exception as exc:
            self.stop(spec.path)
            self._failed(spec.path, exc)
            return None
        ticker.next_tick = last + 1
        wake = ticker.next_tick * tick_ns + phase_ns
        if wake <= now_ns:  # still behind: catch up at once
            return now_ns
        if tick_ns < self._publish_interval_ns:  # a fast channel: the next publish slot
            interval = self._publish_interval_ns
            return max(wake, (now_ns // interval + 1) * interval)
        return wake


def _column_bytes(columns: list[list[float]], series: int, rows: int) -> list[bytes]:
    """The columns as Rows carries them; an error unless they are `series` lists of `rows` numbers."""
    if len(columns) == series:
        encoded = [float_bytes(column) for column in columns]
        size = rows * FLOAT_BYTES
        for column in encoded:  # a loop, not any(): this runs on every tick
            if len(column) != size:
                break
        else:
            return encoded
    raise ValueError(f"generate() must return {series} lists of {rows} values")
