"""The plugin's client of the recorder: history of event channels, and rows published through Grafana.

Each broker connection (services.plugin.broker_connection) owns one: its recorder is that
broker's, wherever the broker's Welcome says it serves (until one does, the default broker's
is at the plugin's `history_endpoint` and `publish_endpoint`; another broker's is unknown).
Two DEALERs, one to the history endpoint (HistoryRequest → HistoryReply) and one to the
publish endpoint (Publish → PublishReply), shared by every call through that broker. Each
request waits for its own reply (matched by request id) for at most `timeout_s`, and a
request that cannot be sent at once (no recorder connected: IMMEDIATE) fails at once:
nothing ever blocks a stream or a query. The sockets connect only once the recorder's ipc
folder exists and is one we trust (services.common.rundir, as for the broker); each call
tries again until then. With CURVE keys (the datasource's, else the plugin's
curve_client_secret and curve_server_public), both sockets use the broker connection's: the
recorder serves with the broker's key and admits the plugins in its --curve-authorized-dir.
A reply is hostile like any message: decoded and checked by
services.common.protocol, and one answering a request nobody waits for is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
import uuid
from typing import cast

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from services.common import probe, protocol, rundir
from services.common.config import PluginSettings
from services.common.errors import ConfigError, PipelineError
from services.common.fields import Batch
from services.common.logs import fields
from services.common.receive import Refusing
from services.common.security import ClientKeys, secure_client
from services.common.sockets import configure

log = logging.getLogger("zmqstream.plugin.recorder")
MAX_PENDING = 256
"""Requests waiting for the recorder at once, per socket; past it a call fails at once."""
CONNECT_GRACE_S = 0.5
"""A socket just connected, or reconnecting to a restarted recorder, is not up at once (even
over ipc): for this long, a request's send is retried (see _coming_up)."""
RETRY_S = 0.01
CURVE_HINT = (
    "the plugin's CURVE key (the datasource's, else grafana.ini curve_client_secret) must be in the "
    "recorder's --curve-authorized-dir for history, and in its --publish-authorized-dir to publish "
    "through Grafana"
)


HEALTH_CHANNEL = "pub-zmqstream.health"
"""What CheckHealth asks the recorder about: any answer (usually none recorded) means it is reachable."""
Endpoints = tuple[str, str]
"""A recorder's (history, publish) endpoints."""


class RecorderUnavailable(PipelineError):
    """No recorder answered (none runs, its folder is not ours, or it timed out): the message says which."""


class _Channel:
    """One DEALER to one recorder endpoint, with the replies it waits for."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        endpoint: str,
        settings: PluginSettings,
        what: str,
        keys: ClientKeys | None,
        broker: str,
    ) -> None:
        """`endpoint`: '' until the broker (at `broker`) says where its recorder is (`move`)."""
        self.endpoint = endpoint
        self.located = asyncio.Event()
        """Set once the endpoint is known."""
        if endpoint:
            self.located.set()
        self.settings = settings
        self.what = what
        self.broker = broker
        self.socket = configure(
            ctx.socket(zmq.DEALER),
            sndhwm=MAX_PENDING,
            rcvhwm=MAX_PENDING,
            max_message_bytes=protocol.MAX_CONTROL_BYTES,
        )
        self.socket.setsockopt(zmq.IMMEDIATE, 1)
        self.socket.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            secure_client(self.socket, keys)
        # Watched from before the first connect: a refused handshake may be its only event.
        self.monitor = self.socket.get_monitor_socket(
            probe.CURVE_FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
        )
        self.connected = False
        self.connected_at = self.lost_at = 0.0
        self.problem = ""
        self.pending: dict[str | int, asyncio.Future[protocol.Message]] = {}
        self.reader: asyncio.Task[None] | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.curve_refused = False

    def move(self, endpoint: str) -> None:
        """Ask `endpoint` from now on: where the broker says its recorder serves."""
        if endpoint == self.endpoint:
            return
        if self.connected:
            self.socket.disconnect(self.endpoint)
        log.info("recorder located", extra=fields(broker=self.broker, what=self.what, endpoint=endpoint))
        self.endpoint, self.connected, self.problem, self.curve_refused = endpoint, False, "", False
        self.located.set()

    def _connect(self) -> str:
        """'' once connected, else why not (not located yet, the folder is missing or not ours)."""
        if self.connected:
            return ""
        if not self.endpoint:
            return (
                f"the broker at {self.broker} has not said where its recorder is: none has joined it. "
                "Start that pipeline's recorder (make run starts one)"
            )
        folder = rundir.ipc_folder(self.endpoint)
        if folder is not None and not os.path.lexists(folder):
            return f"no recorder: its folder {folder} does not exist"
        try:
            rundir.check_endpoint(self.endpoint, self.settings.socket_group)
        except ConfigError as exc:
            if str(exc) != self.problem:
                log.error("recorder refused", extra=fields(endpoint=self.endpoint, error=str(exc)))
            self.problem = str(exc)
            return self.problem
        self.socket.connect(self.endpoint)
        self.connected = True
        self.connected_at = time.monotonic()
        if self.reader is None:
            self.reader = asyncio.create_task(self._read(), name=f"recorder-{self.what}")
            self.watcher = asyncio.create_task(self._watch(), name=f"recorder-{self.what}-monitor")
        return ""

    def _coming_up(self) -> bool:
        """Whether a connection may come within CONNECT_GRACE_S, so a request should wait for it.

        Over ipc: a recorder accepts connections on its socket (ours, just made or remade to a
        restarted recorder, is up within ~0.1 s). Over tcp: the socket connected, or lost its
        recorder, within the grace. Otherwise a request fails at once, saying why.
        """
        if self.endpoint.startswith("ipc://"):
            return probe.ipc_listening(self.endpoint)
        return time.monotonic() < max(self.connected_at, self.lost_at) + CONNECT_GRACE_S

    def _unreachable(self) -> str:
        """Why a request could not be sent: what the monitor saw, else the socket as it looks."""
        if self.curve_refused:
            return f"CURVE refused by the recorder at {self.endpoint}: {CURVE_HINT}"
        path = self.endpoint.removeprefix("ipc://")
        if self.endpoint.startswith("ipc://") and not os.path.exists(path):
            return f"no recorder at {self.endpoint}: {path} does not exist. Is the recorder running?"
        return f"no recorder is listening at {self.endpoint}: is the recorder running?"

    async def _watch(self) -> None:
        """Follow the socket's monitor: a refused CURVE handshake is said as such, not as silence."""
        try:
            while True:
                event = parse_monitor_message(await self.monitor.recv_multipart())["event"]
                if event == zmq.EVENT_DISCONNECTED:
                    self.lost_at = time.monotonic()
                else:
                    self.curve_refused = bool(event & probe.CURVE_FAILED)
        finally:
            self.socket.disable_monitor()
            self.monitor.close(linger=0)

    async def ask(
        self, message: protocol.Message, request_id: str | int, timeout_s: float
    ) -> protocol.Message:
        """The recorder's reply to `message`, or RecorderUnavailable saying why there is none.

        A broker connection just made names its recorder in its first Welcome: a request
        waits for it for at most CONNECT_GRACE_S.
        """
        if not self.endpoint:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.located.wait(), CONNECT_GRACE_S)
        why = self._connect()
        if why:
            raise RecorderUnavailable(why)
        if len(self.pending) >= MAX_PENDING:
            raise RecorderUnavailable(f"{MAX_PENDING} requests already wait for the recorder's {self.what}")
        future: asyncio.Future[protocol.Message] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        try:
            frames = protocol.encode(message)
            sent = self._send(frames)
            give_up_at = time.monotonic() + (CONNECT_GRACE_S if self._coming_up() else 0.0)
            while not sent and time.monotonic() < give_up_at:
                await asyncio.sleep(RETRY_S)
                sent = self._send(frames)
            if not sent:
                raise RecorderUnavailable(self._unreachable())
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise RecorderUnavailable(
                f"the recorder at {self.endpoint} did not answer within {timeout_s:g} s"
            ) from None
        finally:
            self.pending.pop(request_id, None)

    def _send(self, frames: list[bytes]) -> bool:
        """Sent now, or False (no recorder connected: IMMEDIATE), as BrokerConnection._send does."""
        sent = cast("asyncio.Future[object]", self.socket.send_multipart(frames, flags=zmq.NOBLOCK))
        return sent.done() and sent.exception() is None

    async def _read(self) -> None:
        guard = Refusing(log, "recorder reply")
        while True:
            frames = await self.socket.recv_multipart()
            with guard:
                message = protocol.decode(frames)
                request_id = getattr(message, "request_id", None)
                future = self.pending.get(request_id) if isinstance(request_id, str | int) else None
                if future is not None and not future.done():
                    future.set_result(message)

    async def close(self) -> None:
        for task in (self.reader, self.watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.watcher is None:  # never connected: the monitor was never read
            self.socket.disable_monitor()
            self.monitor.close(linger=0)
        self.socket.close()


class RecorderClient:
    """The recorder of one broker (at `broker`), reached with that broker connection's `keys`."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        settings: PluginSettings,
        broker: str,
        keys: ClientKeys | None,
        endpoints: Endpoints = ("", ""),
        pinned: bool = False,
    ) -> None:
        """`endpoints`: (history, publish) until the broker says where its recorder is ('', '': unknown),
        or for good if `pinned`."""
        self.pinned = pinned
        self.timeout_s = settings.broker_timeout_s
        history, publish = endpoints
        self.history_channel = _Channel(ctx, history, settings, "history", keys, broker)
        self.publish_channel = _Channel(ctx, publish, settings, "publish", keys, broker)
        self._ids = itertools.count(1)

    def locate(self, history: str, publish: str) -> None:
        """Where the broker says its recorder serves, from its Welcome (unless pinned)."""
        if self.pinned:
            return
        self.history_channel.move(history)
        self.publish_channel.move(publish)

    async def history(
        self, channel: str, from_ns: int, to_ns: int, max_rows: int, spread: bool = False
    ) -> tuple[Batch, bool]:
        """The recorded rows of `channel` in [from_ns, to_ns], at most the last `max_rows` (with
        `spread`, evenly spaced ones), and whether there were more; RecorderUnavailable if no
        recorder answers or it says no."""
        request_id = uuid.uuid4().hex
        request = protocol.HistoryRequest(request_id, channel, from_ns, to_ns, max_rows, spread)
        reply = await self.history_channel.ask(request, request_id, self.timeout_s)
        if not isinstance(reply, protocol.HistoryReply) or reply.channel != channel:
            raise RecorderUnavailable(f"the recorder answered a history request with {type(reply).__name__}")
        if reply.error == protocol.NOT_RECORDED + channel:  # nothing yet: news for the panel, not a failure
            return Batch([], []), False
        if reply.error:
            raise RecorderUnavailable(f"the recorder: {reply.error[:300]}")
        batch = Batch(reply.times, reply.columns)
        # Its range and count are the recorder's promise; a peer that breaks it is cut back to it.
        if batch.times and (batch.times[0] < from_ns or batch.times[-1] > to_ns):
            batch = batch.until(to_ns).after(from_ns - 1)
        return batch.last(max_rows), reply.truncated

    async def problem(self, timeout_s: float) -> str:
        """'' if the recorder answers a history request within `timeout_s`, else why not (CheckHealth)."""
        request_id = uuid.uuid4().hex
        request = protocol.HistoryRequest(request_id, HEALTH_CHANNEL, 0, 0, 1)
        try:
            await self.history_channel.ask(request, request_id, timeout_s)
        except RecorderUnavailable as exc:
            return str(exc)
        return ""

    async def publish(self, channel: str, batch: Batch) -> protocol.PublishReply:
        """The recorder's answer to rows published into `channel`; RecorderUnavailable without one."""
        request_id = next(self._ids)
        request = protocol.Publish(request_id, channel, batch.times, batch.columns)
        reply = await self.publish_channel.ask(request, request_id, self.timeout_s)
        if not isinstance(reply, protocol.PublishReply):
            raise RecorderUnavailable(f"the recorder answered a publish with {type(reply).__name__}")
        return reply

    async def close(self) -> None:
        await self.history_channel.close()
        await self.publish_channel.close()
