"""The gRPC services Grafana calls: pluginv2 Stream and Diagnostics, go-plugin's controller.

A stream's life: SubscribeStream checks the path (NOT_FOUND with the reason logged if it
is bad; display options after the channel, services.plugin.display, shape the frames, but
the channel held is the canonical one) and answers the schema with the channel's history;
RunStream relays the channel's rows as they come. Both calls first ask admission control
(services.plugin.admission) whether the datasource and the plugin have room for the
channel; past their budgets SubscribeStream answers OK with the reason as the panel's error
notice (a refused status reaches the panel as a bare 403) and RunStream sends the notice and
ends RESOURCE_EXHAUSTED (Grafana tries again, so the panel moves once there is room); the
reason is logged and counted. Then the channel's kind chooses
who answers: services.plugin.rowstreams for pure channels (history recomputed),
services.plugin.eventstreams for event channels (history recorded). Whatever keeps a
stream from starting or moving is also told in its panel, as a frame notice
(services.plugin.notices).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import orjson

from services.common import protocol
from services.common.channels import Channel, EventChannel
from services.common.config import PluginSettings
from services.common.errors import ConfigError, InvalidChannel
from services.common.logs import fields
from services.common.protocol import StatusReply
from services.common.wording import count
from services.plugin import backfill, eventframes, frames, notices
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
from services.plugin.eventstreams import EventStreams, publish_refused
from services.plugin.link import ADDRESS_HINT
from services.plugin.metrics import PluginMetrics
from services.plugin.notices import StreamEnded
from services.plugin.rowstreams import RowStreams
from services.plugin.specs import Specs

log = logging.getLogger("zmqstream.plugin")
Health = pb.CheckHealthResponse.HealthStatus
RECONNECT_POLL_S = 0.05
"""How often CheckHealth asks again while a new broker connection comes up."""
Context = grpc.aio.ServicerContext[Any, Any]


def stream_key(context: pb.PluginContext, path: str) -> backfill.StreamKey:
    """What Grafana runs one RunStream for: the channel `<org>/ds/<uid>/<path>`."""
    return (context.orgId, context.dataSourceInstanceSettings.uid, path)


class StreamService(pluginv2_pb2_grpc.StreamServicer):
    def __init__(
        self, brokers: BrokerConnections, settings: PluginSettings, metrics: PluginMetrics, specs: Specs
    ) -> None:
        self.brokers = brokers
        self.settings = settings
        self.metrics = metrics
        self.specs = specs
        self.ledger = backfill.Ledger()
        self.admission = Admission(settings.max_values_per_s)
        self.rows = RowStreams(brokers, metrics, self.ledger)
        self.events = EventStreams(brokers, metrics, self.ledger)

    def _spec(self, context: pb.PluginContext, path: str) -> tuple[Channel, Display, DatasourceConfig]:
        """The canonical channel a Live path streams, the frames' display options, the datasource."""
        config = self.specs.config(context)
        spec, shown = self.specs.channel(path, config.limits)
        return spec, shown, config

    def _refusal(self, call: str, spec: Channel, shown: Display, config: DatasourceConfig) -> Refusal | None:
        """Admission control (services.plugin.admission), each refusal counted by call and budget."""
        refusal = self.admission.refusal(
            config.uid, spec, config.max_channels, config.max_values_per_s, shown
        )
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
        if refusal := self._refusal("subscribe", spec, shown, config):
            # OK with the reason as the panel's notice: Grafana shows a refused status as a bare 403.
            log.warning("subscription refused", extra=fields(path=request.path, error=refusal.reason))
            return _told(spec, shown, refusal.reason)
        try:
            after_ms = backfill.after_of(request.data)
        except InvalidChannel as exc:
            log.warning("subscription refused", extra=fields(path=request.path, error=str(exc)))
            return pb.SubscribeStreamResponse(status=pb.SubscribeStreamResponse.NOT_FOUND)
        key = stream_key(request.pluginContext, request.path)
        if isinstance(spec, EventChannel):
            try:
                recorder = self.brokers.get(*config.broker).recorder  # the datasource's broker's
            except (TooManyBrokers, ConfigError) as exc:  # ConfigError: the datasource's broker or keys
                log.warning("subscription refused", extra=fields(path=request.path, error=str(exc)))
                return _told(spec, shown, str(exc))
            data = await self.events.initial(key, spec, shown, after_ms, recorder)
        else:
            data = await self.rows.initial(key, spec, shown, after_ms)
        return pb.SubscribeStreamResponse(status=pb.SubscribeStreamResponse.OK, data=data)

    async def PublishStream(
        self, request: pb.PublishStreamRequest, context: Context
    ) -> pb.PublishStreamResponse:
        """Rows into a published channel, through the recorder (services.plugin.eventstreams)."""
        try:
            channel, _, config = self._spec(request.pluginContext, request.path)
        except InvalidChannel as exc:
            return publish_refused(pb.PublishStreamResponse.NOT_FOUND, request.path, str(exc))
        return await self.events.publish(request, channel, config)

    async def RunStream(
        self, request: pb.RunStreamRequest, context: Context
    ) -> AsyncIterator[pb.StreamPacket]:
        try:
            spec, shown, config = self._spec(request.pluginContext, request.path)
        except InvalidChannel as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        key = stream_key(request.pluginContext, request.path)
        try:
            broker = self.brokers.get(*config.broker)
        except (TooManyBrokers, ConfigError) as exc:  # ConfigError: the datasource's CURVE keys
            budget = "brokers" if isinstance(exc, TooManyBrokers) else "settings"
            self.metrics.streams_refused.labels("run", budget).inc()
            log.warning("stream refused", extra=fields(path=request.path, error=str(exc)))
            yield pb.StreamPacket(data=_told_packet(spec, shown, str(exc)))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        if refusal := self._refusal("run", spec, shown, config):
            log.warning("stream refused", extra=fields(path=request.path, error=refusal.reason))
            yield pb.StreamPacket(data=_told_packet(spec, shown, refusal.reason))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal.reason)
        self.admission.enter(config.uid, spec, shown)
        self.metrics.streams.inc()
        if isinstance(spec, EventChannel):
            stream = self.events.run(key, spec, shown, broker)
        else:
            stream = self.rows.run(key, spec, shown, broker)
        try:
            async with contextlib.aclosing(stream):  # its channel released before the stream counts as left
                async for data in stream:
                    yield pb.StreamPacket(data=data)
        except StreamEnded as exc:
            yield pb.StreamPacket(data=exc.packet)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        finally:
            self.admission.leave(config.uid, spec, shown)
            self.ledger.close(key)
            self.metrics.streams.dec()


def _stream_schema(spec: Channel, shown: Display) -> dict[str, Any]:
    """The schema a stream of `spec` starts with (an event channel's fields come with its rows)."""
    return eventframes.schema(None, shown) if isinstance(spec, EventChannel) else frames.schema(spec, shown)


def _told(spec: Channel, shown: Display, reason: str) -> pb.SubscribeStreamResponse:
    """A subscription that cannot stream: OK, its initial frame an error notice saying why (the
    stream Grafana then runs is refused alike, and tried again while the reason lasts)."""
    return pb.SubscribeStreamResponse(
        status=pb.SubscribeStreamResponse.OK, data=_told_packet(spec, shown, reason)
    )


def _told_packet(spec: Channel, shown: Display, reason: str) -> bytes:
    """The error notice of a stream that cannot start, in its own schema (built only then)."""
    return notices.notice_packet(_stream_schema(spec, shown), notices.ERROR, reason)


class DiagnosticsService(pluginv2_pb2_grpc.DiagnosticsServicer):
    def __init__(
        self, brokers: BrokerConnections, settings: PluginSettings, metrics: PluginMetrics, specs: Specs
    ) -> None:
        self.brokers = brokers
        self.settings = settings
        self.metrics = metrics
        self.specs = specs

    async def CollectMetrics(
        self, request: pb.CollectMetricsRequest, context: Context
    ) -> pb.CollectMetricsResponse:
        """Prometheus text (services.plugin.metrics), the datasource's broker included if it names one."""
        config = self.specs.config(request.pluginContext)
        with contextlib.suppress(TooManyBrokers, ConfigError):  # the metrics of the brokers connected
            self.brokers.get(*config.broker)
        text = await self.metrics.exposition()
        return pb.CollectMetricsResponse(metrics=pb.CollectMetricsResponse.Payload(prometheus=text))

    async def CheckHealth(self, request: pb.CheckHealthRequest, context: Context) -> pb.CheckHealthResponse:
        config = self.specs.config(request.pluginContext)
        try:
            broker = self.brokers.get(*config.broker)
        except (TooManyBrokers, ConfigError) as exc:  # ConfigError: the datasource's CURVE keys
            return _health(Health.ERROR, f"Broker not asked: {exc}", {})
        deadline = time.monotonic() + self.settings.broker_timeout_s
        try:
            status = await _status(broker, self.settings.broker_timeout_s)
        except UntrustedBroker as exc:
            return _health(Health.ERROR, str(exc), {"endpoint": broker.control_endpoint})
        except BrokerUnavailable as exc:
            return _health(Health.ERROR, _unreachable(broker, exc), {"endpoint": broker.control_endpoint})
        workers = notices.workers_of(status, protocol.GENERATOR)
        recorders = notices.workers_of(status, protocol.RECORDER)
        details = {
            "broker": status.broker,
            "endpoint": broker.control_endpoint,
            "workers": workers,
            "recorders": recorders,
            "channels": len(status.channels),
            "plugins": status.plugins,
        }
        recorder = "no recorder is alive (published channels and the history of source channels need one)"
        if recorders:  # alive for the broker; and can this plugin ask it (its address, its CURVE keys)?
            left_s = max(0.05, deadline - time.monotonic())
            why = await broker.recorder.problem(left_s)
            recorder = "a recorder is alive" + (f", but the plugin cannot ask it: {why}" if why else "")
        if workers == 0:
            message = (
                f"Broker at {broker.control_endpoint} is up, but no generator worker is alive: start the "
                "workers where the broker runs (supervisord starts them with it; `supervisorctl start "
                "'generator:*'` starts them again, and a worker that stops at once says why in its log)"
            )
            return _health(Health.ERROR, message, details)
        running = sum(1 for info in status.channels.values() if info.get("subscribers"))
        message = (
            f"Broker at {broker.control_endpoint} is up: {count(workers, 'worker')} alive, "
            f"{count(running, 'channel')} running; {recorder}"
        )
        return _health(Health.OK, message, details)


async def _status(broker: BrokerConnection, timeout_s: float) -> StatusReply:
    """The broker's status within `timeout_s`, retried while a connection is still being made.

    A new connection (a datasource's first check) is not up at once, and the reason it
    never comes up (refused, CURVE) is known only a moment later: ask again until either.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await broker.status(max(0.01, deadline - time.monotonic()))
        except BrokerUnavailable:
            if broker.problem() or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(RECONNECT_POLL_S)


def _unreachable(broker: BrokerConnection, error: BrokerUnavailable) -> str:
    """The real cause when it is known (services.plugin.link), else where the address came from."""
    problem = broker.problem()
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
