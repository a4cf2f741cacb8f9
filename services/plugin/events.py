"""Event channels in the plugin: their per-stream queues and their typed data-frame JSON.

An event channel's rows carry their own times and typed columns (services.common.fields),
so nothing here can be recomputed: a stream relays what arrives, in time order, and its
history comes from the recorder (services.plugin.recorder).

EventQueue is RowQueue's counterpart for Events: bounded in bytes (an estimate of what the
batches hold), oldest batches dropped past it and counted, and `take` hands a stream only
rows strictly after what it sent, all of one schema: a batch of another schema waits for
the next packet, which then carries the new schema instead of mixing two in one frame.

The frames are written as the SDK's FrameToJSON writes nullable fields (shared docs §3):
`{"name","type","typeInfo":{"frame":<go type>,"nullable":true}}`, nulls as JSON null,
NaN and ±Inf of float64 fields as null with their rows in `entities`.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson

from services.common import fields as f
from services.common.errors import PipelineError
from services.common.fields import Batch, Schema
from services.plugin.display import DEFAULT, Display
from services.plugin.frames import TIME_FIELD

TYPES = {f.FLOAT64: "number", f.INT64: "number", f.BOOL: "boolean", f.STRING: "string"}
"""Frontend field type of each column kind."""
GO_TYPES = {f.FLOAT64: "float64", f.INT64: "int64", f.BOOL: "bool", f.STRING: "string"}
"""The SDK's typeInfo.frame of each kind (the non-nullable Go name; `nullable` says the rest)."""
Item = TypeVar("Item")
"""What a StreamQueue holds per batch."""
ROW_BYTES = 8
"""Bytes a row's time costs in a queue; each value costs 8 more, a string its length too."""


class SubscriptionRefused(PipelineError):
    """The broker refused a channel (a limit, or a path it cannot run), or its folder is not trusted."""


@dataclass(slots=True)
class Wakeup:
    """What a stream's queue (RowQueue, EventQueue) tells the stream waiting on it: rows, refusal, stall."""

    error: str = ""
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    puts: int = 0
    puts_checked: int = 0
    stalled: bool = False
    """Set by the broker connection's heartbeat when no row came since the one before (check_stall)."""

    def put(self) -> None:
        self.puts += 1
        self.ready.set()

    def fail(self, error: str) -> None:
        self.error = error
        self.ready.set()

    def check_stall(self, empty: bool) -> None:
        """Wake a waiting take with TimeoutError if no row came since the last check.

        Once per heartbeat for every queue, instead of a timer per wait, which would cost
        each stream's every packet (~10 µs).
        """
        if self.puts == self.puts_checked and empty:
            self.stalled = True
            self.ready.set()
        self.puts_checked = self.puts

    async def wait(self, queued: deque[Any]) -> None:
        """Until `queued` holds something; SubscriptionRefused or TimeoutError (a stall) instead."""
        while not queued:
            if self.error:
                raise SubscriptionRefused(self.error)
            if self.stalled:
                self.stalled = False
                raise TimeoutError
            self.ready.clear()
            await self.ready.wait()


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
class EventQueue(StreamQueue[tuple[Batch, int]]):
    """Events waiting for one stream, at most `max_bytes` (batch_bytes): beyond, the oldest drop."""

    def put(self, batch: Batch) -> None:
        size = batch_bytes(batch)
        self._queue((batch, size), size)

    def _measure(self, item: tuple[Batch, int]) -> tuple[int, int]:
        batch, size = item
        return size, len(batch)

    async def take(self, max_rows: int, after_ns: int) -> EventsTaken:
        """Wait for rows, then return up to `max_rows` of one schema later than `after_ns`.

        TimeoutError when a heartbeat found no new row; SubscriptionRefused once the channel was refused.
        """
        await self.wakeup.wait(self.batches)
        kept: list[Batch] = []
        schema: Schema | None = None
        cursor, rows, repeated = after_ns, 0, 0
        while self.batches and rows < max_rows:
            batch, size = self.batches[0]
            if schema is not None and batch.schema != schema:
                break  # the next packet starts with this batch and its schema
            self.batches.popleft()
            self.size_bytes -= size
            fresh = batch.after(cursor)
            repeated += len(batch) - len(fresh)
            if not fresh.times:
                continue
            if rows + len(fresh) > max_rows:
                rest = fresh.rows(max_rows - rows, len(fresh))
                fresh = fresh.rows(0, max_rows - rows)
                self.batches.appendleft((rest, batch_bytes(rest)))
                self.size_bytes += batch_bytes(rest)
            schema = fresh.schema
            kept.append(fresh)
            cursor, rows = fresh.times[-1], rows + len(fresh)
        return EventsTaken(f.concat(kept) if kept else None, repeated)


# -- frames ---------------------------------------------------------------------------------


def schema(batch_schema: Schema | None, shown: Display = DEFAULT) -> dict[str, Any]:
    """The frame schema of rows of `batch_schema` (time only while none is known).

    A number field gets the query's unit, and its alias as `displayNameFromDS` with
    `{{field}}` replaced by the field's name; other fields are shown as they are.
    """
    frame_fields: list[dict[str, Any]] = [TIME_FIELD]
    for name, kind in batch_schema.fields if batch_schema else ():
        entry: dict[str, Any] = {
            "name": name,
            "type": TYPES[kind],
            "typeInfo": {"frame": GO_TYPES[kind], "nullable": True},
        }
        config = field_config(name, kind, shown)
        if config:
            entry["config"] = config
        frame_fields.append(entry)
    return {"fields": frame_fields}


def field_config(name: str, kind: str, shown: Display) -> dict[str, Any]:
    if TYPES[kind] != "number":
        return {}
    config: dict[str, Any] = {}
    if shown.alias:
        config["displayNameFromDS"] = shown.alias.replace("{{field}}", name)
    if shown.unit:
        config["unit"] = shown.unit
    return config


def data(batch: Batch) -> dict[str, Any]:
    """The `data` object of a batch: ms times (the rest in `nanos`), typed values, nulls as null."""
    times = batch.times
    values: list[list[Any]] = [[t // 1_000_000 for t in times]]
    entities: list[dict[str, list[int]] | None] = [None]
    for column in batch.columns:
        if column.kind == f.FLOAT64:
            cleaned, found = _finite(column.values)
            values.append(cleaned)
            entities.append(found)
        else:
            values.append(column.values)
            entities.append(None)
    body: dict[str, Any] = {"values": values}
    if any(entities):
        body["entities"] = entities
    nanos = [t % 1_000_000 for t in times]
    if any(nanos):
        body["nanos"] = [nanos, *([None] * len(batch.columns))]
    return body


def _finite(column: Sequence[Any]) -> tuple[list[Any], dict[str, list[int]] | None]:
    """A float64 column with NaN and ±Inf as null, and where they were (the SDK's `entities`)."""
    found: dict[str, list[int]] = {"NaN": [], "Inf": [], "NegInf": []}
    cleaned = list(column)
    for row, value in enumerate(column):
        if value is None or math.isfinite(value):
            continue
        cleaned[row] = None
        found["NaN" if value != value else "Inf" if value > 0 else "NegInf"].append(row)
    present = {kind: rows for kind, rows in found.items() if rows}
    return cleaned, present or None


def packet(batch: Batch, frame_schema: dict[str, Any] | None = None) -> bytes:
    """One StreamPacket's JSON: schema+data when `frame_schema` is given, else data only."""
    if frame_schema is None:
        return orjson.dumps({"data": data(batch)})
    return orjson.dumps({"schema": frame_schema, "data": data(batch)})
