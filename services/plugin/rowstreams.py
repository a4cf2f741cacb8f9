"""Streams of pure channels: their rows are recomputed wherever history is needed.

What differs from event channels (services.plugin.eventstreams), and why:
- Generators are pure functions of (channel, tick), so SubscribeStream's initial frame is
  the channel's recent history, or the rows after the subscriber's own, recomputed
  (services.plugin.recomputed; services.plugin.backfill says where that history ends and
  why), and so is every gap a stream must bridge.
- RunStream holds the channel in the broker connection and relays its rows as JSON
  frames, all rows queued since the last packet in one packet, so a channel faster than
  the gRPC stream costs more rows per packet, not more packets. It never sends a tick
  twice or time backwards, and its first packet bridges the end of the history to the
  first live row.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator

from services.common.channels import ChannelSpec
from services.common.logs import fields
from services.common.protocol import floats
from services.common.waveforms import channel_seed
from services.plugin import backfill, bulk, frames, notices, recomputed
from services.plugin.broker_connection import BrokerConnection, BrokerConnections
from services.plugin.display import Display
from services.plugin.metrics import PluginMetrics
from services.plugin.notices import StreamEnded
from services.plugin.pacing import LoopLag
from services.plugin.queues import NO_TICK, SubscriptionRefused, Taken
from services.plugin.recomputed import RecomputeError

log = logging.getLogger("zmqstream.plugin")
INLINE_TICKS = 100
"""Ticks recomputed on the event loop itself (≤ 0.2 ms); more go to a thread, which costs
a hand-off but lets the streams go on between the GIL's switches."""
INLINE_BULK_TICKS = 10_000
"""The same for ticks computed in bulk (services.plugin.bulk: 1,000 in about 0.1 ms)."""


def _gap_before(spec: ChannelSpec, floor: int, first_tick: int) -> bool:
    """Whether ticks are missing between what a stream sent last (`floor`) and `first_tick`."""
    return floor != backfill.NOTHING and spec.tick_time(first_tick) - floor > spec.tick_ns


def _segment_rows(spec: ChannelSpec, first: int, values: bytes) -> tuple[list[int], list[list[float]]]:
    """A segment of the queue (consecutive ticks from `first`, series after series) as times and columns."""
    flat = floats(values)
    if spec.series == 1:
        return spec.tick_times(range(first, first + len(flat))), [flat]
    count = len(flat) // spec.series
    return spec.tick_times(range(first, first + count)), [
        flat[at : at + count] for at in range(0, len(flat), count)
    ]


class RowStreams:
    def __init__(self, brokers: BrokerConnections, metrics: PluginMetrics, ledger: backfill.Ledger) -> None:
        self.settings = brokers.settings
        self.metrics = metrics
        self.ledger = ledger
        self.lag = LoopLag()
        self._streams: Counter[str] = Counter()
        """Streams running per channel (display variants and viewers of one channel share packets)."""
        self._shared: dict[str, tuple[tuple[int, int], bytes]] = {}
        """Per channel, the last data-only packet built: (its first and last time, the packet)."""

    # -- SubscribeStream ---------------------------------------------------------------

    async def initial(
        self, key: backfill.StreamKey, spec: ChannelSpec, shown: Display, after_ms: int | None
    ) -> bytes:
        """The initial frame: the recent history (or the rows after `after_ms`), recomputed."""
        end_ns = self.ledger.history_end(key, spec, time.time_ns())
        ticks = backfill.recent(spec, end_ns) if after_ms is None else backfill.since(spec, after_ms, end_ns)
        frame_schema = frames.schema(spec, shown)
        if bulk.handles(spec, ticks):  # the built-in generator, computed and encoded in numpy
            seed = channel_seed(spec.path)
            columns = bulk.column_arrays(spec, seed, ticks)
            data = frames.array_packet(bulk.time_array(spec, ticks), columns, frame_schema)
            rows = len(ticks)
        else:
            times, lists = await self._recomputed(spec, ticks)
            data = frames.packet(times, lists, frame_schema) if times else frames.schema_only(frame_schema)
            rows = len(times)
        self.metrics.sent("initial", rows, len(data))
        return data

    # -- RunStream ---------------------------------------------------------------------

    async def run(
        self, key: backfill.StreamKey, spec: ChannelSpec, shown: Display, broker: BrokerConnection
    ) -> AsyncGenerator[bytes, None]:
        """The packets of one stream, until cancelled; StreamEnded if its channel is refused."""
        channel = spec.path
        stream_schema = frames.schema(spec, shown)
        queue = broker.hold(spec, on_drop=functools.partial(self.metrics.dropped, "slow_consumer"))
        self._streams[channel] += 1
        self.lag.opened()
        floor = max(self.ledger.open(key), self.ledger.promised(key))
        log.debug("stream started", extra=fields(path=key[2], channel=channel))
        frame_schema: dict[str, object] | None = stream_schema
        drops_seen = dropped = 0
        notice = notices.PanelNotice(spec, stream_schema, self.lag)
        try:
            if queue.error:  # refused at once (a broker folder we do not trust): nothing goes out
                raise SubscriptionRefused(queue.error)
            # The first packet goes out now, not when the first live row comes: the ticks due
            # since the history's end (for a fresh stream, the latest tick) are recomputed.
            due = spec.last_tick(time.time_ns())
            since = spec.last_tick(floor) if floor != backfill.NOTHING else due - 1
            times, columns = await self._recomputed(spec, range(since + 1, due + 1))
            while True:
                if times:
                    header = notice.rows(dropped) or frame_schema
                    data = (
                        self._data_packet(spec, times, columns)
                        if header is None
                        else frames.packet(times, columns, header)
                    )
                    floor = times[-1]
                    self.ledger.sent(key, floor)
                    self.metrics.sent("stream", len(times), len(data))
                    yield data
                    frame_schema = None
                    # Overloaded: a pause, so the next packets are fewer and fuller (pacing).
                    if pause := self.lag.pause_s(spec.tick_ns / 1e9):
                        await asyncio.sleep(pause)
                elif frame_schema is not None:
                    # Nothing sent yet: a new subscriber may have been promised more.
                    floor = max(floor, self.ledger.promised(key))
                after = spec.last_tick(floor) if floor != backfill.NOTHING else NO_TICK
                try:
                    taken = await queue.take(self.settings.max_rows_per_packet, after)
                except TimeoutError:  # no row for a heartbeat: the panel may be told why
                    times = []  # sent already
                    if told := await notice.stalled(broker, self.settings.broker_timeout_s):
                        yield told
                    continue
                self.metrics.dropped("already_sent", taken.repeated)
                dropped = queue.dropped_rows - drops_seen
                drops_seen = queue.dropped_rows
                segments = taken.segments
                if len(segments) == 1 and not _gap_before(spec, floor, segments[0][0]):  # the common case
                    times, columns = _segment_rows(spec, *segments[0])
                else:
                    times, columns = await self._assembled(spec, floor, taken, bridge=not dropped)
        except SubscriptionRefused as exc:
            raise StreamEnded(
                str(exc), notices.notice_packet(stream_schema, notices.ERROR, str(exc))
            ) from None
        finally:
            broker.release(channel, queue)
            self.lag.closed()
            self._streams[channel] -= 1
            if not self._streams[channel]:
                del self._streams[channel]
                self._shared.pop(channel, None)
            log.debug("stream stopped", extra=fields(channel=channel, dropped_rows=queue.dropped_rows))

    def _data_packet(self, spec: ChannelSpec, times: list[int], columns: list[list[float]]) -> bytes:
        """A data-only packet, built once for every stream of the channel that sends the same rows.

        A pure channel's rows are a function of their ticks, so consecutive ticks from one
        time to another are the same rows whoever sends them: display variants of one
        channel and its other viewers reuse the packet instead of encoding it again.
        """
        if times[-1] - times[0] != (len(times) - 1) * spec.tick_ns:  # not consecutive: its own
            return frames.packet(times, columns)
        span = (times[0], times[-1])
        shared = self._shared.get(spec.path)
        if shared is not None and shared[0] == span:
            return shared[1]
        data = frames.packet(times, columns)
        self._shared[spec.path] = (span, data)
        return data

    async def _assembled(
        self, spec: ChannelSpec, floor: int, taken: Taken, *, bridge: bool
    ) -> tuple[list[int], list[list[float]]]:
        """One packet's rows from what the queue handed over, with the gaps before its segments
        recomputed; not the first gap after rows were dropped for a slow client (`bridge`)."""
        times: list[int] = []
        columns: list[list[float]] = [[] for _ in range(spec.series)]
        for first, values in taken.segments:
            if bridge and _gap_before(spec, floor, first):
                # The ticks before the first live row, or a ticker moved off a dead worker.
                gap = backfill.between(spec, floor, spec.tick_time(first))
                gap_times, gap_columns = await self._recomputed(spec, gap)
                times += gap_times
                for column, recomputed in zip(columns, gap_columns, strict=True):
                    column += recomputed
            segment_times, segment_columns = _segment_rows(spec, first, values)
            times += segment_times
            for column, live in zip(columns, segment_columns, strict=True):
                column += live
            floor, bridge = times[-1], True
        return times, columns

    async def _recomputed(self, spec: ChannelSpec, ticks: range) -> tuple[list[int], list[list[float]]]:
        """The values of `ticks`; a few inline, more in a thread so the streams go on meanwhile."""
        try:
            if len(ticks) <= (INLINE_BULK_TICKS if bulk.handles(spec, ticks) else INLINE_TICKS):
                rows = recomputed.values(spec, ticks)
            else:
                rows = await asyncio.to_thread(recomputed.values, spec, ticks)
        except RecomputeError as exc:
            log.warning("cannot recompute ticks", extra=fields(channel=spec.path, error=str(exc)))
            return [], [[] for _ in range(spec.series)]
        return rows.times_ns, rows.columns
