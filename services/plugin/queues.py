"""The queues between the broker connection and the streams: one per stream, bounded in bytes.

A RowQueue holds a pure channel's Rows (float64 columns from a first tick), an EventQueue an
event channel's Events (typed batches with their own times); both share StreamQueue: at
most `max_bytes` queued (for events an estimate of what the batches hold), the oldest
batches dropped past it and counted, and a Wakeup that tells the waiting stream of rows,
of a refusal or of a stall. `take` hands a stream only rows strictly after what it sent;
an EventQueue's, all of one schema: a batch of another schema waits for the next packet,
which then carries the new schema instead of mixing two in one frame.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from services.common import fields as f
from services.common.errors import PipelineError
from services.common.fields import Batch, Schema
from services.common.protocol import FLOAT_BYTES, split_columns

Item = TypeVar("Item")
"""What a StreamQueue holds per batch."""
ROW_BYTES = 8
"""Bytes a row's time costs in a queue; each value costs 8 more, a string its length too."""


class SubscriptionRefused(PipelineError):
    """The broker refused a channel (a limit, or a path it cannot run), or its folder is not trusted."""


@dataclass(slots=True)
class Wakeup:
    """What a stream's queue (RowQueue, EventQueue) tells the stream waiting on it: rows, refusal, stall.

    One stream waits on a queue, so its waiter is one future, made per wait; not an
    asyncio.Event, whose deque of waiters and set/clear cost every stream memory and
    every packet time (10,000 streams at 1 Hz).
    """

    error: str = ""
    waiter: asyncio.Future[None] | None = None
    puts: int = 0
    puts_checked: int = 0
    stalled: bool = False
    """Set by the broker connection's heartbeat when no row came since the one before (check_stall)."""

    def put(self) -> None:
        self.puts += 1
        self._wake()

    def fail(self, error: str) -> None:
        self.error = error
        self._wake()

    def check_stall(self, empty: bool) -> None:
        """Wake a waiting take with TimeoutError if no row came since the last check.

        Once per heartbeat for every queue, instead of a timer per wait, which would cost
        each stream's every packet (~10 µs).
        """
        if self.puts == self.puts_checked and empty:
            self.stalled = True
            self._wake()
        self.puts_checked = self.puts

    async def wait(self, queued: deque[Any]) -> None:
        """Until `queued` holds something; SubscriptionRefused or TimeoutError (a stall) instead."""
        while not queued:
            if self.error:
                raise SubscriptionRefused(self.error)
            if self.stalled:
                self.stalled = False
                raise TimeoutError
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


def batch_bytes(batch: Batch) -> int:
    """About what a batch holds in memory, for the queue's bound (strings count their length)."""
    size = ROW_BYTES * len(batch.times) * (1 + len(batch.columns))
    for column in batch.columns:
        if column.kind == f.STRING:
            size += sum(len(v) for v in column.values if isinstance(v, str))
    return size


@dataclass(slots=True)
class EventsTaken:
    batch: Batch | None
    """Rows after the stream's last, all of one schema; None if every queued row was old."""
    repeated: int
    """Rows left out because they were not after what the stream had (out of order, repeated)."""
    gap: bool = False
    """Rows may have been lost on the way just before these: the stream asks the recorder for them."""


@dataclass(slots=True)
class StreamQueue(Generic[Item]):
    """What a stream's queue (RowQueue, EventQueue) shares: at most `max_bytes` queued, the
    oldest batches dropped past it (the newest always kept) and counted, and the Wakeup."""

    max_bytes: int
    on_drop: Callable[[int], None] = lambda rows: None
    """Told at once how many rows were dropped, so metrics move even while the client stalls."""
    batches: deque[Item] = field(default_factory=deque)
    size_bytes: int = 0
    dropped_rows: int = 0
    wakeup: Wakeup = field(default_factory=Wakeup)

    @property
    def error(self) -> str:
        return self.wakeup.error

    def fail(self, error: str) -> None:
        self.wakeup.fail(error)

    def check_stall(self) -> None:
        self.wakeup.check_stall(not self.batches)

    def _queue(self, item: Item, size: int) -> None:
        """Queue `item` of `size` bytes, shed the oldest past max_bytes, wake the stream."""
        self.batches.append(item)
        self.size_bytes += size
        while self.size_bytes > self.max_bytes and len(self.batches) > 1:
            freed, rows = self._measure(self.batches.popleft())
            self.size_bytes -= freed
            self.dropped_rows += rows
            self.on_drop(rows)
        self.wakeup.put()

    def _measure(self, item: Item) -> tuple[int, int]:
        """(bytes, rows) of a queued item."""
        raise NotImplementedError


@dataclass(slots=True)
class EventQueue(StreamQueue[tuple[Batch, int, bool]]):
    """Events waiting for one stream, at most `max_bytes` (batch_bytes): beyond, the oldest drop.

    Each batch notes whether rows may have been lost just before it (a gap): its Events' `prev`
    is later than the last row that arrived, or the broker connection said so (`missed`).
    """

    last_in: int = 0
    """The time of the last row that arrived (0: none yet)."""
    missed: bool = False
    """Rows may have been lost (a new broker, a new placement): the next batch starts after a gap."""

    def put(self, batch: Batch, prev: int = 0) -> None:
        gap = self.missed or bool(self.last_in and prev > self.last_in)
        self.missed = False
        self.last_in = max(self.last_in, batch.times[-1])
        size = batch_bytes(batch)
        self._queue((batch, size, gap), size)

    def _measure(self, item: tuple[Batch, int, bool]) -> tuple[int, int]:
        batch, size, _ = item
        return size, len(batch)

    async def take(self, max_rows: int, after_ns: int) -> EventsTaken:
        """Wait for rows, then return up to `max_rows` of one schema later than `after_ns`, a gap
        only before the first of them.

        TimeoutError when a heartbeat found no new row; SubscriptionRefused once the channel was refused.
        """
        await self.wakeup.wait(self.batches)
        kept: list[Batch] = []
        schema: Schema | None = None
        cursor, rows, repeated = after_ns, 0, 0
        gap = False
        while self.batches and rows < max_rows:
            batch, size, gapped = self.batches[0]
            if schema is not None and (batch.schema != schema or gapped):
                break  # the next packet starts with this batch, its schema and its gap
            self.batches.popleft()
            self.size_bytes -= size
            gap = gap or gapped
            fresh = batch.after(cursor)
            repeated += len(batch) - len(fresh)
            if not fresh.times:
                continue
            if rows + len(fresh) > max_rows:
                rest = fresh.rows(max_rows - rows, len(fresh))
                fresh = fresh.rows(0, max_rows - rows)
                self.batches.appendleft((rest, batch_bytes(rest), False))
                self.size_bytes += batch_bytes(rest)
            schema = fresh.schema
            kept.append(fresh)
            cursor, rows = fresh.times[-1], rows + len(fresh)
        return EventsTaken(f.concat(kept) if kept else None, repeated, gap)


NO_TICK = -(2**63)
"""A tick index before every tick."""
Segment = tuple[int, bytes]
"""(first tick, values): consecutive ticks of one channel, their float64 values series after series
(as a Rows payload carries them: services.common.protocol.split_columns)."""


@dataclass(slots=True)
class Taken:
    """What RowQueue.take hands a stream: strictly increasing segments, all after its floor."""

    segments: list[Segment]
    repeated: int
    """Rows left out because the stream had sent those ticks already."""


@dataclass(slots=True)
class RowQueue(StreamQueue[Segment]):
    """Rows waiting for one stream, at most `max_bytes` of values: beyond, the oldest batches drop."""

    series: int = 1

    def put(self, first_tick: int, values: bytes) -> None:
        """Queue consecutive ticks from `first_tick`: their values, series after series, kept as they came."""
        self._queue((first_tick, values), len(values))

    def _measure(self, item: Segment) -> tuple[int, int]:
        values = item[1]
        return len(values), len(values) // (FLOAT_BYTES * self.series)

    async def take(self, max_rows: int, after_tick: int) -> Taken:
        """Wait for rows, then return up to `max_rows` of the queued ones later than `after_tick`.

        TimeoutError instead when a heartbeat found no new row (check_stall): the stream may say why.

        Batches may arrive in any order (a ticker moved, a stale worker woke up): each tick
        is kept only if it is later than every tick kept before it, so what a stream sends
        is strictly increasing whatever came in. Consecutive batches join into one segment.
        """
        await self.wakeup.wait(self.batches)
        return self._run(max_rows, after_tick) or self._sorted(max_rows, after_tick)

    def _run(self, max_rows: int, after_tick: int) -> Taken | None:
        """All that is queued as one segment, if it is one: every batch new and right after the one
        before, within max_rows (the common case: the ticks since the last packet, in order)."""
        batches, width = self.batches, FLOAT_BYTES * self.series
        first = batches[0][0]
        if first <= after_tick:
            return None
        cursor = first
        for tick, values in batches:
            if tick != cursor:
                return None
            cursor += len(values) // width
        if cursor - first > max_rows:
            return None
        values = (
            batches[0][1] if len(batches) == 1 else _joined([values for _, values in batches], self.series)
        )
        batches.clear()
        self.size_bytes = 0
        return Taken([(first, values)], 0)

    def _sorted(self, max_rows: int, after_tick: int) -> Taken:
        """Up to `max_rows` queued ticks after `after_tick`, each later than every tick kept before it."""
        taken = Taken([], 0)
        cursor, rows, pending, series = after_tick, 0, self.batches, self.series
        width = FLOAT_BYTES * series
        run: list[bytes] = []
        first_of_run = NO_TICK
        while pending and rows < max_rows:
            first, values = pending.popleft()
            self.size_bytes -= len(values)
            count = len(values) // width
            skip = max(0, min(count, cursor - first + 1))
            if skip:
                taken.repeated += skip
                if skip == count:
                    continue
                values = _ticks(values, series, skip, count)
                first, count = first + skip, count - skip
            if rows + count > max_rows:  # the rest waits for the next packet
                keep = max_rows - rows
                rest = _ticks(values, series, keep, count)
                pending.appendleft((first + keep, rest))
                self.size_bytes += len(rest)
                values, count = _ticks(values, series, 0, keep), keep
            if not run or first != cursor + 1:
                if run:
                    taken.segments.append((first_of_run, _joined(run, series)))
                run, first_of_run = [], first
            run.append(values)
            cursor, rows = first + count - 1, rows + count
        if run:
            taken.segments.append((first_of_run, _joined(run, series)))
        return taken


def _ticks(values: bytes, series: int, start: int, stop: int) -> bytes:
    """Ticks start to stop (counted from 0) of consecutive ticks' values, series after series."""
    if series == 1:
        return values[start * FLOAT_BYTES : stop * FLOAT_BYTES]
    size = len(values) // series
    return b"".join(
        values[at + start * FLOAT_BYTES : at + stop * FLOAT_BYTES] for at in range(0, len(values), size)
    )


def _joined(runs: list[bytes], series: int) -> bytes:
    """Consecutive batches' values as those of one segment, series after series."""
    if len(runs) == 1:
        return runs[0]
    if series == 1:
        return b"".join(runs)
    return b"".join(
        b"".join(column) for column in zip(*(split_columns(run, series) for run in runs), strict=True)
    )
