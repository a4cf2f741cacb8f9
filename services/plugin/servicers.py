"""The gRPC services Grafana calls: pluginv2 Stream and Diagnostics, go-plugin's controller.

A stream's life: SubscribeStream checks the path (NOT_FOUND with the reason logged if it
is bad; display options after the channel, services.plugin.display, shape the frames, but
the channel held is the canonical one) and answers the schema with the channel's recent
history, or with the rows after the subscriber's own (services.plugin.backfill says where
that history ends and why); RunStream holds the channel in the pipeline and
relays its rows as JSON frames, all rows queued since the last packet in one packet, so a
channel faster than the gRPC stream costs more rows per packet, not more packets. It never
sends a tick twice or time backwards, and its first packet bridges the end of the
history to the first live row.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import orjson

from services.common.channels import ChannelSpec, parse_path
from services.common.config import PluginSettings
from services.common.errors import InvalidChannel
from services.common.logs import fields
from services.common.protocol import FLOAT_BYTES, floats
from services.plugin import backfill, display, frames
from services.plugin._proto import goplugin_pb2, goplugin_pb2_grpc, pluginv2_pb2_grpc
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin.datasource import DatasourceConfig
from services.plugin.display import Display
from services.plugin.history import HistoryError, Rows, generator_for
from services.plugin.metrics import PluginMetrics
from services.plugin.pipeline import (
    NO_TICK,
    BrokerUnavailable,
    Pipelines,
    SubscriptionRefused,
    UntrustedBroker,
)
from services.plugin.quota import ChannelQuota

log = logging.getLogger("zmqstream.plugin")
Health = pb.CheckHealthResponse.HealthStatus
Context = grpc.aio.ServicerContext[Any, Any]


def stream_key(context: pb.PluginContext, path: str) -> backfill.StreamKey:
    """What Grafana runs one RunStream for: the channel `<org>/ds/<uid>/<path>`."""
    return (context.orgId, context.dataSourceInstanceSettings.uid, path)


class StreamService(pluginv2_pb2_grpc.StreamServicer):
    def __init__(self, pipelines: Pipelines, settings: PluginSettings, metrics: PluginMetrics) -> None:
        self.pipelines = pipelines
        self.settings = settings
        self.metrics = metrics
        self.ledger = backfill.Ledger()
        self.quota = ChannelQuota()

    def _spec(self, context: pb.PluginContext, path: str) -> tuple[ChannelSpec, Display, DatasourceConfig]:
        """The canonical channel a Live path streams, the frames' display options, the datasource."""
        config = DatasourceConfig.from_context(context, self.settings)
        channel_path, shown = display.split_path(path)
        spec = parse_path(channel_path, config.limits)
        generator_for(spec)
        return spec, shown, config

    async def SubscribeStream(
        self, request: pb.SubscribeStreamRequest, context: Context
    ) -> pb.SubscribeStreamResponse:
        try:
            spec, shown, config = self._spec(request.pluginContext, request.path)
        except InvalidChannel as exc:
            log.warning("subscription refused", extra=fields(path=request.path[:200], error=str(exc)))
            return pb.SubscribeStreamResponse(status=pb.SubscribeStreamResponse.NOT_FOUND)
        if not self.quota.admits(config.uid, spec.path, config.max_channels):
            log.warning("subscription refused", extra=fields(path=request.path, error=_over_quota(config)))
            return pb.SubscribeStreamResponse(status=pb.SubscribeStreamResponse.PERMISSION_DENIED)
        try:
            after_ms = backfill.after_of(request.data)
        except InvalidChannel as exc:
            log.warning("subscription refused", extra=fields(path=request.path, error=str(exc)))
            return pb.SubscribeStreamResponse(status=pb.SubscribeStreamResponse.NOT_FOUND)
        end_ns = self.ledger.history_end(
            stream_key(request.pluginContext, request.path), spec, time.time_ns()
        )
        try:
            if after_ms is None:
                rows = await asyncio.to_thread(backfill.recent, spec, end_ns)
            else:
                rows = await asyncio.to_thread(backfill.since, spec, after_ms, end_ns)
        except HistoryError as exc:
            log.warning("no history for the new subscriber", extra=fields(channel=spec.path, error=str(exc)))
            rows = Rows([], [])
        if rows:
            data = frames.packet(rows.times_ns, rows.columns, frames.schema(spec, shown))
        else:
            data = frames.schema_only(frames.schema(spec, shown))
        self.metrics.sent("initial", len(rows), len(data))
        return pb.SubscribeStreamResponse(status=pb.SubscribeStreamResponse.OK, data=data)

    async def PublishStream(
        self, request: pb.PublishStreamRequest, context: Context
    ) -> pb.PublishStreamResponse:
        log.info("publish denied", extra=fields(path=request.path[:200]))
        return pb.PublishStreamResponse(status=pb.PublishStreamResponse.PERMISSION_DENIED)

    async def RunStream(
        self, request: pb.RunStreamRequest, context: Context
    ) -> AsyncIterator[pb.StreamPacket]:
        try:
            spec, shown, config = self._spec(request.pluginContext, request.path)
        except InvalidChannel as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        key = stream_key(request.pluginContext, request.path)
        channel = spec.path
        if not self.quota.admits(config.uid, channel, config.max_channels):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, _over_quota(config))
        self.quota.enter(config.uid, channel)
        pipeline = self.pipelines.get(config.broker_address)
        queue = pipeline.hold(spec, on_drop=functools.partial(self.metrics.dropped, "slow_consumer"))
        floor = self.ledger.open(key)
        self.metrics.streams.inc()
        log.info("stream started", extra=fields(path=request.path, channel=channel))
        frame_schema: dict[str, object] | None = frames.schema(spec, shown)
        drops_seen = 0
        try:
            while True:
                if frame_schema is not None:  # nothing sent yet: a new subscriber may have been promised more
                    floor = max(floor, self.ledger.promised(key))
                after = spec.last_tick(floor) if floor != backfill.NOTHING else NO_TICK
                taken = await queue.take(self.settings.max_rows_per_packet, after)
                self.metrics.dropped("already_sent", taken.repeated)
                dropped_meanwhile, drops_seen = queue.dropped_rows != drops_seen, queue.dropped_rows
                times: list[int] = []
                columns: list[list[float]] = [[] for _ in range(spec.series)]
                for first, values in taken.segments:
                    start = spec.tick_time(first)
                    if floor != backfill.NOTHING and not dropped_meanwhile and start - floor > spec.tick_ns:
                        # A gap we did not make by dropping for a slow client: the ticks before the
                        # first live row, or a ticker moved off a dead worker. Recompute it.
                        await self._bridge(spec, floor, start, times, columns)
                    count = len(values[0]) // FLOAT_BYTES
                    times += spec.tick_times(range(first, first + count))
                    for column, data in zip(columns, values, strict=True):
                        column += floats(data)
                    floor, dropped_meanwhile = times[-1], False
                if not times:
                    continue
                data = frames.packet(times, columns, frame_schema)
                self.ledger.sent(key, floor)
                self.metrics.sent("stream", len(times), len(data))
                yield pb.StreamPacket(data=data)
                frame_schema = None
        except SubscriptionRefused as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        finally:
            pipeline.release(channel, queue)
            self.quota.leave(config.uid, channel)
            self.ledger.close(key)
            self.metrics.streams.dec()
            log.info("stream stopped", extra=fields(channel=channel, dropped_rows=queue.dropped_rows))

    async def _bridge(
        self, spec: ChannelSpec, floor: int, before: int, times: list[int], columns: list[list[float]]
    ) -> None:
        """Append the ticks strictly between `floor` and `before`, recomputed."""
        try:
            gap = await asyncio.to_thread(backfill.bridge, spec, floor, before)
        except HistoryError as exc:
            log.warning("cannot bridge to the live rows", extra=fields(channel=spec.path, error=str(exc)))
            return
        times += gap.times_ns
        for column, values in zip(columns, gap.columns, strict=True):
            column += values


def _over_quota(config: DatasourceConfig) -> str:
    return f"datasource {config.uid} already streams its maximum of {config.max_channels} channels"


class DiagnosticsService(pluginv2_pb2_grpc.DiagnosticsServicer):
    def __init__(self, pipelines: Pipelines, settings: PluginSettings, metrics: PluginMetrics) -> None:
        self.pipelines = pipelines
        self.settings = settings
        self.metrics = metrics

    async def CollectMetrics(
        self, request: pb.CollectMetricsRequest, context: Context
    ) -> pb.CollectMetricsResponse:
        """Prometheus text (services.plugin.metrics), the datasource's broker included if it names one."""
        config = DatasourceConfig.from_context(request.pluginContext, self.settings)
        self.pipelines.get(config.broker_address)
        text = await self.metrics.exposition()
        return pb.CollectMetricsResponse(metrics=pb.CollectMetricsResponse.Payload(prometheus=text))

    async def CheckHealth(self, request: pb.CheckHealthRequest, context: Context) -> pb.CheckHealthResponse:
        config = DatasourceConfig.from_context(request.pluginContext, self.settings)
        pipeline = self.pipelines.get(config.broker_address)
        try:
            status = await pipeline.status(self.settings.broker_timeout_s)
        except UntrustedBroker as exc:
            return _health(Health.ERROR, str(exc), {"endpoint": pipeline.control_endpoint})
        except BrokerUnavailable as exc:
            return _health(Health.ERROR, f"Broker unreachable: {exc}. Is supervisord running?", {})
        workers = len(status.workers)
        details = {
            "broker": status.broker,
            "endpoint": pipeline.control_endpoint,
            "workers": workers,
            "channels": len(status.channels),
            "plugins": status.plugins,
        }
        if workers == 0:
            message = f"Broker at {pipeline.control_endpoint} is up, but no generator worker is alive"
            return _health(Health.ERROR, message, details)
        message = (
            f"Broker at {pipeline.control_endpoint} is up: {workers} worker"
            f"{'s' if workers != 1 else ''} alive, {len(status.channels)} channels running"
        )
        return _health(Health.OK, message, details)


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
