"""The gRPC services Grafana calls: pluginv2 Stream and Diagnostics, go-plugin's controller.

A stream's life: SubscribeStream checks the path (NOT_FOUND with the reason logged if it
is bad) and answers the schema; RunStream holds the channel in the pipeline and relays
its rows as JSON frames, all rows queued since the last packet in one packet, so a
channel faster than the gRPC stream costs more rows per packet, not more packets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import grpc
import orjson

from services.common.channels import ChannelSpec, parse_path
from services.common.config import PluginSettings
from services.common.errors import InvalidChannel
from services.common.logs import fields
from services.generator.waveforms import registry
from services.plugin import frames
from services.plugin._proto import goplugin_pb2, goplugin_pb2_grpc, pluginv2_pb2_grpc
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin.datasource import DatasourceConfig
from services.plugin.pipeline import BrokerUnavailable, Pipelines, SubscriptionRefused

log = logging.getLogger("zmqstream.plugin")
Health = pb.CheckHealthResponse.HealthStatus


class StreamService(pluginv2_pb2_grpc.StreamServicer):
    def __init__(self, pipelines: Pipelines, settings: PluginSettings) -> None:
        self.pipelines = pipelines
        self.settings = settings

    def _spec(self, context: pb.PluginContext, path: str) -> tuple[ChannelSpec, DatasourceConfig]:
        config = DatasourceConfig.from_context(context, self.settings.limits)
        spec = parse_path(path, config.limits)
        if spec.generator not in registry():
            raise InvalidChannel(f"unknown generator {spec.generator!r}; known: {', '.join(registry())}")
        return spec, config

    async def SubscribeStream(
        self, request: pb.SubscribeStreamRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubscribeStreamResponse:
        try:
            spec, _ = self._spec(request.pluginContext, request.path)
        except InvalidChannel as exc:
            log.warning("subscription refused", extra=fields(path=request.path[:200], error=str(exc)))
            return pb.SubscribeStreamResponse(status=pb.SubscribeStreamResponse.NOT_FOUND)
        return pb.SubscribeStreamResponse(
            status=pb.SubscribeStreamResponse.OK, data=frames.schema_only(frames.schema(spec))
        )

    async def PublishStream(
        self, request: pb.PublishStreamRequest, context: grpc.aio.ServicerContext
    ) -> pb.PublishStreamResponse:
        log.info("publish denied", extra=fields(path=request.path[:200]))
        return pb.PublishStreamResponse(status=pb.PublishStreamResponse.PERMISSION_DENIED)

    async def RunStream(
        self, request: pb.RunStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamPacket]:
        try:
            spec, config = self._spec(request.pluginContext, request.path)
        except InvalidChannel as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        channel = spec.path
        pipeline = self.pipelines.get(config.broker_address)
        queue = pipeline.hold(channel)
        log.info("stream started", extra=fields(path=request.path, channel=channel))
        frame_schema: dict[str, object] | None = frames.schema(spec)
        last_ns = -1
        try:
            while True:
                times, columns = await queue.take(self.settings.max_rows_per_packet)
                if times[0] <= last_ns:  # a moved ticker may repeat: never send time backwards
                    keep = next((i for i, t in enumerate(times) if t > last_ns), len(times))
                    times, columns = times[keep:], [column[keep:] for column in columns]
                    if not times:
                        continue
                last_ns = times[-1]
                yield pb.StreamPacket(data=frames.packet(times, columns, frame_schema))
                frame_schema = None
        except SubscriptionRefused as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        finally:
            pipeline.release(channel, queue)
            log.info("stream stopped", extra=fields(channel=channel, dropped_rows=queue.dropped_rows))


class DiagnosticsService(pluginv2_pb2_grpc.DiagnosticsServicer):
    def __init__(self, pipelines: Pipelines, settings: PluginSettings) -> None:
        self.pipelines = pipelines
        self.settings = settings

    async def CheckHealth(
        self, request: pb.CheckHealthRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckHealthResponse:
        config = DatasourceConfig.from_context(request.pluginContext, self.settings.limits)
        pipeline = self.pipelines.get(config.broker_address)
        try:
            status = await pipeline.status(self.settings.broker_timeout_s)
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

    async def Shutdown(self, request: goplugin_pb2.Empty, context: grpc.aio.ServicerContext) -> goplugin_pb2.Empty:
        log.info("shutdown requested by the host")
        self.on_shutdown()
        return goplugin_pb2.Empty()


class StdioService(goplugin_pb2_grpc.GRPCStdioServicer):
    """Held open and silent: our logs already reach the host on stderr."""

    async def StreamStdio(self, request: object, context: grpc.aio.ServicerContext) -> None:
        await asyncio.Event().wait()  # until the host hangs up, which cancels this
