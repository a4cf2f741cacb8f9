"""Each event channel's recent rows in memory, bounded by rows and bytes, oldest dropped first.

This is what history is served from, so it must stay bounded however fast publishers and
sources write: per channel by `ring_rows` and `ring_bytes`, and across channels by a total
(the channel holding the oldest row gives it up first). Bytes are the Python objects the
rows hold (an int or float object and its list slot), not their size on the wire: that
is the memory a flood would cost.

A channel keeps its schema and its last time after its rows are dropped, so a stream
never changes its fields nor steps back, whatever the ring forgot.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

from services.common import fields
from services.common.fields import Batch, Column, Schema

TIME_BYTES = 36
"""An int object and its list slot."""
VALUE_BYTES = {fields.FLOAT64: 32, fields.INT64: 36, fields.BOOL: 8, fields.STRING: 57}
"""One value of a kind (a string adds its length); None costs a slot."""
SLOT_BYTES = 8
CHUNK_BYTES = 400
"""A Batch, its lists and Columns: what a chunk costs besides its values."""
MERGE_ROWS = 1024
"""Small batches are merged into the last chunk up to this many rows, so a publisher sending
one row at a time does not cost a chunk per row."""


def batch_bytes(batch: Batch) -> int:
    """The memory `batch` holds, by the estimate above."""
    size = CHUNK_BYTES + TIME_BYTES * len(batch.times)
    for column in batch.columns:
        each = VALUE_BYTES[column.kind]
        if column.kind == fields.STRING:
            size += sum(each + len(v) if isinstance(v, str) else SLOT_BYTES for v in column.values)
        else:
            size += sum(each if v is not None else SLOT_BYTES for v in column.values)
    return size


@dataclass(slots=True)
class ChannelRing:
    schema: Schema
    last_time: int
    """The last time ever recorded, kept when its row is dropped."""
    chunks: deque[tuple[Batch, int]] = field(default_factory=deque)
    """(rows, their bytes), oldest first."""
    rows: int = 0
    bytes: int = 0
    growing: Batch | None = None
    """The newest chunk when it is the ring's own (made by a merge), so small batches extend it
    in place: merging a copy each time cost O(chunk) per row, ~0.1 ms for 1-row publishes."""

    def append(self, batch: Batch) -> None:
        size = batch_bytes(batch)
        self.rows += len(batch)
        self.bytes += size
        self.last_time = batch.times[-1]
        if self.chunks and len(self.chunks[-1][0]) + len(batch) <= MERGE_ROWS:
            last, last_size = self.chunks.pop()
            if last is not self.growing:  # a batch others may hold (the segments'): copied once
                last = self.growing = Batch(
                    list(last.times), [Column(c.name, c.kind, list(c.values)) for c in last.columns]
                )
            last.times.extend(batch.times)
            for column, more in zip(last.columns, batch.columns, strict=True):
                column.values.extend(more.values)
            self.chunks.append((last, last_size + size))
            return
        self.growing = None
        self.chunks.append((batch, size))

    @property
    def first_time(self) -> int | None:
        return self.chunks[0][0].times[0] if self.chunks else None

    def drop_oldest(self, rows: int, nbytes: int) -> int:
        """Drop at least `rows` rows and `nbytes` bytes from the oldest chunk (or all of it); bytes freed."""
        batch, size = self.chunks[0]
        count = len(batch)
        cut = max(rows, -(-nbytes * count // size))
        if cut >= count:
            self.chunks.popleft()
            freed = size
        else:
            rest = batch.last(count - cut)
            rest_size = batch_bytes(rest)
            self.chunks[0] = (rest, rest_size)
            freed = size - rest_size
        self.rows -= min(cut, count)
        self.bytes -= freed
        return freed

    def query(self, from_ns: int, to_ns: int, max_rows: int) -> tuple[Batch, bool]:
        """The last `max_rows` rows with from_ns <= time <= to_ns, and whether earlier ones were left out."""
        parts: list[Batch] = []
        taken = 0
        truncated = False
        for batch, _ in reversed(self.chunks):
            times = batch.times
            if times[0] > to_ns:
                continue
            if times[-1] < from_ns:
                break
            start = bisect.bisect_left(times, from_ns)
            end = bisect.bisect_right(times, to_ns)
            if taken + end - start > max_rows:
                start = end - (max_rows - taken)
                truncated = True
            if end > start:
                parts.append(batch.rows(start, end))
                taken += end - start
            if truncated:
                break
        if not parts:
            return Batch([], [Column(name, kind, []) for name, kind in self.schema.fields]), truncated
        return fields.concat(parts[::-1]), truncated


class Rings:
    """Every channel's ring, with the bounds of the settings."""

    def __init__(self, ring_rows: int, ring_bytes: int, total_bytes: int) -> None:
        self.ring_rows = ring_rows
        self.ring_bytes = ring_bytes
        self.total_bytes = total_bytes
        self.channels: dict[str, ChannelRing] = {}
        self.bytes = 0

    def add(self, channel: str, batch: Batch) -> None:
        """Record rows the caller checked: the channel's schema, times after its last (see `accepts`)."""
        if not batch.times:
            return
        ring = self.channels.get(channel)
        if ring is None:
            ring = self.channels[channel] = ChannelRing(batch.schema, batch.times[-1])
        before = ring.bytes
        ring.append(batch)
        while ring.rows > self.ring_rows or ring.bytes > self.ring_bytes:
            ring.drop_oldest(ring.rows - self.ring_rows, ring.bytes - self.ring_bytes)
        self.bytes += ring.bytes - before
        while self.bytes > self.total_bytes:
            oldest = min(
                (r for r in self.channels.values() if r.chunks),
                key=lambda r: r.first_time or 0,
            )
            self.bytes -= oldest.drop_oldest(0, self.bytes - self.total_bytes)

    def reschema(self, channel: str, schema: Schema) -> None:
        """Forget a channel's rows for rows of `schema` to come (its last time is kept)."""
        ring = self.channels[channel]
        self.bytes -= ring.bytes
        self.channels[channel] = ChannelRing(schema, ring.last_time)

    def query(self, channel: str, from_ns: int, to_ns: int, max_rows: int) -> tuple[Batch, bool] | None:
        """See ChannelRing.query; None for a channel never recorded."""
        ring = self.channels.get(channel)
        return None if ring is None else ring.query(from_ns, to_ns, max_rows)
