"""The plugin's connection to one broker: a control DEALER and a frames SUB, in asyncio.

Every RunStream of the process shares it. `hold(channel)` gives a stream its own bounded
RowQueue; the first holder of a channel subscribes the SUB socket and tells the broker,
the last one's release undoes both. A heartbeat re-sends the full set of held channels
every `heartbeat_s`, which renews the lease and rebuilds a restarted broker's view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import zmq
import zmq.asyncio

from services.common import protocol
from services.common.config import PluginSettings
from services.common.errors import PipelineError, ProtocolError
from services.common.logs import fields
from services.common.security import secure_client
from services.common.sockets import advertised, configure, host_of

log = logging.getLogger("zmqstream.plugin.pipeline")
FRAMES_PER_TURN = 1000
"""Messages read per event-loop turn at most, so a flood cannot starve the gRPC side."""


class BrokerUnavailable(PipelineError):
    """The broker did not answer in time."""


class SubscriptionRefused(PipelineError):
    """The broker refused a channel (a limit, or a path it cannot run)."""


class TooManyBrokers(PipelineError):
    """A new broker address past the plugin's cap on open broker connections."""


@dataclass(slots=True)
class RowQueue:
    """Rows waiting for one stream; beyond `max_rows` the oldest batches are dropped."""

    max_rows: int
    on_drop: Callable[[int], None] = lambda rows: None
    """Told at once how many rows were dropped, so metrics move even while the client stalls."""
    batches: deque[tuple[list[int], list[list[float]]]] = field(default_factory=deque)
    rows: int = 0
    dropped_rows: int = 0
    error: str = ""
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, times_ns: list[int], columns: list[list[float]]) -> None:
        self.batches.append((times_ns, columns))
        self.rows += len(times_ns)
        while self.rows > self.max_rows and len(self.batches) > 1:
            dropped, _ = self.batches.popleft()
            self.rows -= len(dropped)
            self.dropped_rows += len(dropped)
            self.on_drop(len(dropped))
        self.ready.set()

    def fail(self, error: str) -> None:
        self.error = error
        self.ready.set()

    async def take(self, max_rows: int) -> tuple[list[int], list[list[float]]]:
        """Wait for rows, then return everything queued (up to `max_rows`) as one batch."""
        while not self.batches:
            if self.error:
                raise SubscriptionRefused(self.error)
            self.ready.clear()
            await self.ready.wait()
        times, columns = self.batches.popleft()
        while self.batches and len(times) + len(self.batches[0][0]) <= max_rows:
            more_times, more_columns = self.batches.popleft()
            times = times + more_times
            columns = [a + b for a, b in zip(columns, more_columns, strict=True)]
        self.rows -= len(times)
        return times, columns


class Pipeline:
    def __init__(self, ctx: zmq.asyncio.Context, control_endpoint: str, settings: PluginSettings) -> None:
        self.control_endpoint = control_endpoint
        self.settings = settings
        self.control = configure(ctx.socket(zmq.DEALER), sndhwm=10_000, rcvhwm=10_000)
        self.control.setsockopt(zmq.IMMEDIATE, 1)  # fail fast instead of queueing for a dead broker
        # A plain socket, watched with loop.add_reader (see _drain_frames), not zmq.asyncio's.
        self.frames: zmq.Socket[bytes] = configure(zmq.Socket(ctx, zmq.SUB), rcvhwm=100_000)
        if settings.curve_client_secret:
            for sock in (self.control, self.frames):
                secure_client(sock, settings.curve_client_secret, settings.curve_server_public)
        self.control.connect(control_endpoint)
        self.frames_endpoint = ""
        self.broker = ""
        self.holders: dict[str, list[RowQueue]] = {}
        self.refusals: dict[str, str] = {}
        self.pending_status: dict[str, asyncio.Future[protocol.StatusReply]] = {}
        self.rows_received = 0
        self.decode_errors = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._heartbeats(), name="heartbeats"),
            asyncio.create_task(self._read_control(), name="control"),
        ]
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.frames.FD, self._drain_frames)
        self._frames_touched()

    async def close(self) -> None:
        self._loop.remove_reader(self.frames.FD)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.control.close()
        self.frames.close()

    # -- streams -------------------------------------------------------------------

    def hold(self, channel: str, on_drop: Callable[[int], None] = lambda rows: None) -> RowQueue:
        queue = RowQueue(self.settings.stream_queue_rows, on_drop)
        queues = self.holders.setdefault(channel, [])
        queues.append(queue)
        if len(queues) == 1:
            self.refusals.pop(channel, None)
            self.frames.subscribe(protocol.topic(channel))
            self._frames_touched()
            self._send(protocol.Subscribe(self.settings.plugin_id, channel))
        return queue

    def release(self, channel: str, queue: RowQueue) -> None:
        queues = self.holders.get(channel, [])
        if queue in queues:
            queues.remove(queue)
        if not queues and channel in self.holders:
            del self.holders[channel]
            self.frames.unsubscribe(protocol.topic(channel))
            self._frames_touched()
            self._send(protocol.Unsubscribe(self.settings.plugin_id, channel))

    # -- status --------------------------------------------------------------------

    async def status(self, timeout_s: float) -> protocol.StatusReply:
        if self.control.closed:  # closed as idle (Pipelines) while a caller still held it
            raise BrokerUnavailable(f"the connection to the broker at {self.control_endpoint} was closed")
        request_id = uuid.uuid4().hex
        future: asyncio.Future[protocol.StatusReply] = asyncio.get_running_loop().create_future()
        self.pending_status[request_id] = future
        try:
            if not self._send(protocol.StatusRequest(request_id)):
                raise BrokerUnavailable(f"no connection to the broker at {self.control_endpoint}")
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise BrokerUnavailable(
                f"the broker at {self.control_endpoint} did not answer within {timeout_s:g} s"
            ) from None
        finally:
            self.pending_status.pop(request_id, None)

    # -- loops ---------------------------------------------------------------------

    def _send(self, message: protocol.Message) -> bool:
        """Send now or report failure, through zmq.asyncio's own non-blocking path.

        zmq.asyncio settles a NOBLOCK send at once; its future holds Again when the broker
        is not connected, and reading it here keeps it from being reported as unobserved.
        A send on a plain view of this socket is no alternative: it can swallow the wake-up
        that zmq.asyncio's pending receive waits for, and the broker's replies then sit unread.
        """
        # zmq.asyncio returns an asyncio.Future; its stubs only say Awaitable.
        sent = cast(
            "asyncio.Future[object]", self.control.send_multipart(protocol.encode(message), flags=zmq.NOBLOCK)
        )
        return sent.done() and sent.exception() is None

    async def _heartbeats(self) -> None:
        while True:
            held = [channel for channel in self.holders if channel not in self.refusals]
            self._send(protocol.PluginHeartbeat(self.settings.plugin_id, held))
            await asyncio.sleep(self.settings.plugin_heartbeat_s)

    async def _read_control(self) -> None:
        while True:
            frames = await self.control.recv_multipart()
            try:
                self._on_control(protocol.decode(frames))
            except PipelineError as exc:
                log.warning("control message refused", extra=fields(error=str(exc)))

    def _on_control(self, message: protocol.Message) -> None:
        match message:
            case protocol.Welcome(frames_endpoint=endpoint, broker=broker):
                endpoint = advertised(endpoint, host_of(self.control_endpoint))
                if endpoint != self.frames_endpoint:
                    if self.frames_endpoint:
                        self.frames.disconnect(self.frames_endpoint)
                    self.frames.connect(endpoint)
                    self.frames_endpoint = endpoint
                    self._frames_touched()
                if broker != self.broker:
                    if self.broker:
                        log.warning("broker restarted", extra=fields(broker=broker))
                    self.broker = broker
            case protocol.SubscribeReply(channel=channel, error=error) if error:
                log.warning("broker refused channel", extra=fields(channel=channel, error=error))
                self.refusals[channel] = error
                for queue in self.holders.get(channel, []):
                    queue.fail(error)
            case protocol.StatusReply(request_id=request_id):
                future = self.pending_status.get(request_id)
                if future is not None and not future.done():
                    future.set_result(message)

    def _drain_frames(self) -> None:
        """Take every queued message, straight from the event loop's reader callback.

        No task and no future per wake-up: an await per message costs more than the message.
        The socket's file descriptor is edge-triggered: it signals a change, not "messages
        are queued". So a drain runs until Again, or, past FRAMES_PER_TURN (the streams need
        their turn too), schedules itself again; and any other call on the socket, which may
        take the signal for itself, is followed by a drain (_frames_touched).
        """
        receive = self.frames.recv
        for _ in range(FRAMES_PER_TURN):
            try:
                frame = receive(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._on_rows(frame)
        self._frames_touched()

    def _frames_touched(self) -> None:
        self._loop.call_soon(self._drain_frames)

    def _on_rows(self, frame: bytes) -> None:
        try:
            channel, rows = protocol.decode_rows(frame)
            _check_shape(rows)
        except PipelineError as exc:
            self.decode_errors += 1
            log.warning("frame refused", extra=fields(error=str(exc)))
            return
        self.rows_received += len(rows.times_ns)
        for queue in self.holders.get(channel, ()):
            queue.put(rows.times_ns, rows.columns)


def _check_shape(rows: protocol.Rows) -> None:
    length = len(rows.times_ns)
    if rows.columns:
        for column in rows.columns:  # a loop, not any(): this runs for every message
            if len(column) != length:
                break
        else:
            return
    raise ProtocolError("Rows columns do not match the times")


class Pipelines:
    """One Pipeline per broker address; datasources may name different brokers.

    Each connection costs file descriptors, and any datasource may name any address, so
    they are bounded: a connection other than the default one is closed once no stream
    holds it and nothing used it for `broker_idle_s`, and a new address past `max_brokers`
    open connections is refused (TooManyBrokers, saying so) until one closes.
    """

    def __init__(self, settings: PluginSettings) -> None:
        self.settings = settings
        self.ctx = zmq.asyncio.Context()
        self.by_endpoint: dict[str, Pipeline] = {}
        self.last_used: dict[str, float] = {}
        self.started = time.monotonic()
        self._closer: asyncio.Task[None] | None = None

    def get(self, endpoint: str = "") -> Pipeline:
        endpoint = endpoint or self.settings.control_endpoint
        pipeline = self.by_endpoint.get(endpoint)
        if pipeline is None:
            if len(self.by_endpoint) >= self.settings.max_brokers:
                raise TooManyBrokers(
                    f"the plugin already has its maximum of {self.settings.max_brokers} broker "
                    f"connections open, so it cannot connect to {endpoint[:200]} now; one closes after "
                    f"{self.settings.broker_idle_s:g} s unused: point datasources at fewer brokers "
                    "or raise the plugin's max_brokers"
                )
            pipeline = self.by_endpoint[endpoint] = Pipeline(self.ctx, endpoint, self.settings)
            pipeline.start()
            if self._closer is None:
                self._closer = asyncio.create_task(self._close_idle(), name="close-idle-brokers")
        self.last_used[endpoint] = time.monotonic()
        return pipeline

    async def _close_idle(self) -> None:
        while True:
            await asyncio.sleep(self.settings.broker_idle_s / 2)
            now = time.monotonic()
            for endpoint, pipeline in list(self.by_endpoint.items()):
                if endpoint == self.settings.control_endpoint:
                    continue
                if pipeline.holders or pipeline.pending_status:
                    self.last_used[endpoint] = now
                elif now - self.last_used[endpoint] >= self.settings.broker_idle_s:
                    del self.by_endpoint[endpoint], self.last_used[endpoint]
                    log.info("idle broker connection closed", extra=fields(endpoint=endpoint))
                    await pipeline.close()

    async def close(self) -> None:
        if self._closer is not None:
            self._closer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._closer
        for pipeline in self.by_endpoint.values():
            await pipeline.close()
        self.ctx.term()
