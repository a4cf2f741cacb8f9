"""The gRPC services Grafana calls: pluginv2 Stream and Diagnostics, go-plugin's controller.

A stream's life: SubscribeStream checks the path (NOT_FOUND with the reason logged if it
is bad; display options after the channel, services.plugin.display, shape the frames, but
the channel held is the canonical one) and answers the schema with the channel's recent
history, or with the rows after the subscriber's own (services.plugin.backfill says where
that history ends and why); RunStream holds the channel in the broker connection and
relays its rows as JSON frames, all rows queued since the last packet in one packet, so a
channel faster than the gRPC stream costs more rows per packet, not more packets. It never
sends a tick twice or time backwards, and its first packet bridges the end of the
history to the first live row. Both calls first ask admission control
(services.plugin.admission) whether the datasource and the plugin have room for the
channel; past their budgets SubscribeStream answers PERMISSION_DENIED and RunStream
RESOURCE_EXHAUSTED, with the reason logged and counted. Whatever keeps a stream from
starting or moving is also told in its panel, as a frame notice (services.plugin.notices).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import orjson

from services.common import protocol
from services.common.channels import Channel, ChannelSpec, EventChannel, parse_channel
from services.common.config import PluginSettings
from services.common.errors import ConfigError, InvalidChannel
from services.common.logs import fields
from services.common.protocol import FLOAT_BYTES, StatusReply, floats
from services.plugin import backfill, display, eventframes, frames, notices, recomputed
from services.plugin._proto import goplugin_pb2, goplugin_pb2_grpc, pluginv2_pb2_grpc
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin.admission import Admission, Refusal
from services.plugin.broker_connection import (
    BrokerConnection,
    BrokerConnections,
    BrokerUnavailable,
    TooManyBrokers,
    UntrustedBroker,
)
from services.plugin.datasource import DatasourceConfig
from services.plugin.display import Display
from services.plugin.eventstreams import EventStreams, StreamEnded
from services.plugin.link import ADDRESS_HINT
from services.plugin.metrics import PluginMetrics
from services.plugin.pacing import LoopLag
from services.plugin.queues import NO_TICK, SubscriptionRefused, Taken
from services.plugin.recomputed import RecomputeError, generator_for
from services.sources import source_for

log = logging.getLogger("zmqstream.plugin")
INLINE_TICKS = 100
"""Ticks recomputed on the event loop itself (≤ 0.2 ms); more go to a thread, which costs
a hand-off but lets the streams go on between the GIL's switches."""
Health = pb.CheckHealthResponse.HealthStatus
RECONNECT_POLL_S = 0.05
"""How often CheckHealth asks again while a new broker connection comes up."""
Context = grpc.aio.ServicerContext[Any, Any]


def stream_key(context: pb.PluginContext, path: str) -> backfill.StreamKey:
    """What Grafana runs one RunStream for: the channel `<org>/ds/<uid>/<path>`."""
    return (context.orgId, context.dataSourceInstanceSettings.uid, path)


def _gap_before(spec: ChannelSpec, floor: int, first_tick: int) -> bool:
    """Whether ticks are missing between what a stream sent last (`floor`) and `first_tick`."""
    return floor != backfill.NOTHING and spec.tick_time(first_tick) - floor > spec.tick_ns


def _segment_rows(spec: ChannelSpec, first: int, values: list[bytes]) -> tuple[list[int], list[list[float]]]:
    """A segment of the queue (consecutive ticks from `first`) as times and float columns."""
    return spec.tick_times(range(first, first + len(values[0]) // FLOAT_BYTES)), [floats(v) for v in values]


class StreamService(pluginv2_pb2_grpc.StreamServicer):
    def __init__(
        self, connections: BrokerConnections, settings: PluginSettings, metrics: PluginMetrics
    ) -> None:
        self.connections = connections
        self.settings = settings
        self.metrics = metrics
        self.ledger = backfill.Ledger()
        self.admission = Admission(settings.max_values_per_s)
        self.lag = LoopLag()
        self.events = EventStreams(connections, metrics, self.ledger)

    def _spec(self, context: pb.PluginContext, path: str) -> tuple[Channel, Display, DatasourceConfig]:
        """The canonical channel a Live path streams, the frames' display options, the datasource."""
        config = DatasourceConfig.from_context(context, self.settings)
        channel_path, shown = display.split_path(path)
        spec = parse_channel(channel_path, config.limits)
        if isinstance(spec, ChannelSpec):
            generator_for(spec)
        else:
            source_for(spec)
        return spec, shown, config

    def _refusal(self, call: str, spec: Channel, config: DatasourceConfig) -> Refusal | None:
        """Admission control (services.plugin.admission), each refusal counted by call and budget."""
        refusal = self.admission.refusal(config.uid, spec, config.max_channels, config.max_values_per_s)
        if refusal is not None:
            self.metrics.streams_refused.labels(call, refusal.budget).inc()
        return refusal

    async def SubscribeStream(
        self, request: pb.SubscribeStreamRequest, context: Context
    ) -> pb.SubscribeStreamResponse:
        try:
            spec, shown, config = self._spec(request.pluginContext, request.path)
        except InvalidChannel as exc:
            log.warning("subscription refused", extra=fields(path=request.path[:200], error=str(exc)))
            return pb.SubscribeStreamResponse(status=pb.SubscribeStreamResponse.NOT_FOUND)
        if refusal := self._refusal("subscribe", spec, config):
            log.warning("subscription refused", extra=fields(path=request.path, error=refusal.reason))
            return pb.SubscribeStreamResponse(status=pb.SubscribeStreamResponse.PERMISSION_DENIED)
        try:
            after_ms = backfill.after_of(request.data)
        except InvalidChannel as exc:
            log.warning("subscription refused", extra=fields(path=request.path, error=str(exc)))
            return pb.SubscribeStreamResponse(status=pb.SubscribeStreamResponse.NOT_FOUND)
        key = stream_key(request.pluginContext, request.path)
        if isinstance(spec, EventChannel):
            data = await self.events.initial(key, spec, shown, after_ms)
            return pb.SubscribeStreamResponse(status=pb.SubscribeStreamResponse.OK, data=data)
        end_ns = self.ledger.history_end(key, spec, time.time_ns())
        ticks = backfill.recent(spec, end_ns) if after_ms is None else backfill.since(spec, after_ms, end_ns)
        times, columns = await self._recomputed(spec, ticks)
        if times:
            data = frames.packet(times, columns, frames.schema(spec, shown))
        else:
            data = frames.schema_only(frames.schema(spec, shown))
        self.metrics.sent("initial", len(times), len(data))
        return pb.SubscribeStreamResponse(status=pb.SubscribeStreamResponse.OK, data=data)

    async def PublishStream(
        self, request: pb.PublishStreamRequest, context: Context
    ) -> pb.PublishStreamResponse:
        """Rows into a published channel, through the recorder (services.plugin.eventstreams)."""
        try:
            channel, _, config = self._spec(request.pluginContext, request.path)
        except InvalidChannel as exc:
            log.warning("publish refused", extra=fields(path=request.path[:200], error=str(exc)))
            return pb.PublishStreamResponse(status=pb.PublishStreamResponse.NOT_FOUND)
        if not isinstance(channel, EventChannel):
            log.warning("publish refused", extra=fields(path=request.path, error="not a published channel"))
            return pb.PublishStreamResponse(status=pb.PublishStreamResponse.PERMISSION_DENIED)
        status = await self.events.publish(request, channel, config)
        return pb.PublishStreamResponse(status=status)

    async def RunStream(
        self, request: pb.RunStreamRequest, context: Context
    ) -> AsyncIterator[pb.StreamPacket]:
        try:
            spec, shown, config = self._spec(request.pluginContext, request.path)
        except InvalidChannel as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        key = stream_key(request.pluginContext, request.path)
        channel = spec.path
        stream_schema = (
            eventframes.schema(None, shown) if isinstance(spec, EventChannel) else frames.schema(spec, shown)
        )
        try:
            connection = self.connections.get(*config.broker)
        except (TooManyBrokers, ConfigError) as exc:  # ConfigError: the datasource's CURVE keys
            budget = "brokers" if isinstance(exc, TooManyBrokers) else "settings"
            self.metrics.streams_refused.labels("run", budget).inc()
            log.warning("stream refused", extra=fields(path=request.path, error=str(exc)))
            yield pb.StreamPacket(data=notices.notice_packet(stream_schema, notices.ERROR, str(exc)))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        if refusal := self._refusal("run", spec, config):
            log.warning("stream refused", extra=fields(path=request.path, error=refusal.reason))
            yield pb.StreamPacket(data=notices.notice_packet(stream_schema, notices.ERROR, refusal.reason))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal.reason)
        self.admission.enter(config.uid, spec)
        if isinstance(spec, EventChannel):
            self.metrics.streams.inc()
            try:
                async for data in self.events.run(key, spec, shown, connection):
                    yield pb.StreamPacket(data=data)
            except StreamEnded as exc:
                yield pb.StreamPacket(data=exc.packet)
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
            finally:
                self.admission.leave(config.uid, spec)
                self.ledger.close(key)
                self.metrics.streams.dec()
            return
        queue = connection.hold(spec, on_drop=functools.partial(self.metrics.dropped, "slow_consumer"))
        floor = max(self.ledger.open(key), self.ledger.promised(key))
        self.metrics.streams.inc()
        log.debug("stream started", extra=fields(path=request.path, channel=channel))
        frame_schema: dict[str, object] | None = stream_schema
        drops_seen = dropped = 0
        notice = notices.PanelNotice(spec, stream_schema)
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
                    data = frames.packet(times, columns, notice.rows(dropped) or frame_schema)
                    floor = times[-1]
                    self.ledger.sent(key, floor)
                    self.metrics.sent("stream", len(times), len(data))
                    yield pb.StreamPacket(data=data)
                    frame_schema = None
                    # Overloaded: a pause, so the next packets are fewer and fuller (pacing).
                    if pause := self.lag.pause_s():
                        await asyncio.sleep(pause)
                elif frame_schema is not None:
                    # Nothing sent yet: a new subscriber may have been promised more.
                    floor = max(floor, self.ledger.promised(key))
                after = spec.last_tick(floor) if floor != backfill.NOTHING else NO_TICK
                try:
                    taken = await queue.take(self.settings.max_rows_per_packet, after)
                except TimeoutError:  # no row for a heartbeat: the panel may be told why
                    times = []  # sent already
                    if told := await notice.stalled(connection, self.settings.broker_timeout_s):
                        yield pb.StreamPacket(data=told)
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
            yield pb.StreamPacket(data=notices.notice_packet(stream_schema, notices.ERROR, str(exc)))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        finally:
            connection.release(channel, queue)
            self.admission.leave(config.uid, spec)
            self.ledger.close(key)
            self.metrics.streams.dec()
            log.debug("stream stopped", extra=fields(channel=channel, dropped_rows=queue.dropped_rows))

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
            if len(ticks) <= INLINE_TICKS:
                rows = recomputed.values(spec, ticks)
            else:
                rows = await asyncio.to_thread(recomputed.values, spec, ticks)
        except RecomputeError as exc:
            log.warning("cannot recompute ticks", extra=fields(channel=spec.path, error=str(exc)))
            return [], [[] for _ in range(spec.series)]
        return rows.times_ns, rows.columns


class DiagnosticsService(pluginv2_pb2_grpc.DiagnosticsServicer):
    def __init__(
        self, connections: BrokerConnections, settings: PluginSettings, metrics: PluginMetrics
    ) -> None:
        self.connections = connections
        self.settings = settings
        self.metrics = metrics

    async def CollectMetrics(
        self, request: pb.CollectMetricsRequest, context: Context
    ) -> pb.CollectMetricsResponse:
        """Prometheus text (services.plugin.metrics), the datasource's broker included if it names one."""
        config = DatasourceConfig.from_context(request.pluginContext, self.settings)
        with contextlib.suppress(TooManyBrokers, ConfigError):  # the metrics of the brokers connected
            self.connections.get(*config.broker)
        text = await self.metrics.exposition()
        return pb.CollectMetricsResponse(metrics=pb.CollectMetricsResponse.Payload(prometheus=text))

    async def CheckHealth(self, request: pb.CheckHealthRequest, context: Context) -> pb.CheckHealthResponse:
        config = DatasourceConfig.from_context(request.pluginContext, self.settings)
        try:
            connection = self.connections.get(*config.broker)
        except (TooManyBrokers, ConfigError) as exc:  # ConfigError: the datasource's CURVE keys
            return _health(Health.ERROR, f"Broker not asked: {exc}", {})
        try:
            status = await _status(connection, self.settings.broker_timeout_s)
        except UntrustedBroker as exc:
            return _health(Health.ERROR, str(exc), {"endpoint": connection.control_endpoint})
        except BrokerUnavailable as exc:
            return _health(
                Health.ERROR, _unreachable(connection, exc), {"endpoint": connection.control_endpoint}
            )
        workers = notices.workers_of(status, protocol.GENERATOR)
        recorders = notices.workers_of(status, protocol.RECORDER)
        details = {
            "broker": status.broker,
            "endpoint": connection.control_endpoint,
            "workers": workers,
            "recorders": recorders,
            "channels": len(status.channels),
            "plugins": status.plugins,
        }
        recorder = (
            "a recorder is alive"
            if recorders
            else "no recorder is alive (published channels and the history of source channels need one)"
        )
        if workers == 0:
            message = f"Broker at {connection.control_endpoint} is up, but no generator worker is alive"
            return _health(Health.ERROR, message, details)
        message = (
            f"Broker at {connection.control_endpoint} is up: {workers} worker"
            f"{'s' if workers != 1 else ''} alive, {len(status.channels)} channels running; {recorder}"
        )
        return _health(Health.OK, message, details)


async def _status(connection: BrokerConnection, timeout_s: float) -> StatusReply:
    """The broker's status within `timeout_s`, retried while a connection is still being made.

    A new connection (a datasource's first check) is not up at once, and the reason it
    never comes up (refused, CURVE) is known only a moment later: ask again until either.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await connection.status(max(0.01, deadline - time.monotonic()))
        except BrokerUnavailable:
            if connection.problem() or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(RECONNECT_POLL_S)


def _unreachable(connection: BrokerConnection, error: BrokerUnavailable) -> str:
    """The real cause when it is known (services.plugin.link), else where the address came from."""
    problem = connection.problem()
    if problem:
        return f"Broker unreachable: {problem}"
    return f"Broker unreachable: {error}. {ADDRESS_HINT}"


def _health(status: int, message: str, details: dict[str, object]) -> pb.CheckHealthResponse:
    return pb.CheckHealthResponse(status=status, message=message, jsonDetails=orjson.dumps(details))  # type: ignore[arg-type]


class ControllerService(goplugin_pb2_grpc.GRPCControllerServicer):
    """go-plugin's Shutdown: the host's polite request to exit (SIGKILL follows in 2 s)."""

    def __init__(self, on_shutdown: Callable[[], None]) -> None:
        self.on_shutdown = on_shutdown

    async def Shutdown(self, request: goplugin_pb2.Empty, context: Context) -> goplugin_pb2.Empty:
        log.info("shutdown requested by the host")
        self.on_shutdown()
        return goplugin_pb2.Empty()


class StdioService(goplugin_pb2_grpc.GRPCStdioServicer):
    """Held open and silent: our logs already reach the host on stderr."""

    # A coroutine, not a generator: grpc.aio accepts either for a server stream, the stub's type does not.
    async def StreamStdio(self, request: object, context: Context) -> None:  # type: ignore[override]
        await asyncio.Event().wait()  # until the host hangs up, which cancels this
