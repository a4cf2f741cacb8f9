"""The plugin's connection to one broker: a control DEALER and a frames SUB, in asyncio.

Every RunStream of the process shares it. `hold(spec)` gives a stream its own RowQueue,
bounded in bytes; the first holder of a channel subscribes the SUB socket and tells the
broker, the last one's release undoes both. A heartbeat re-sends the full set of held
channels every `heartbeat_s`, which renews the lease and rebuilds a restarted broker's view.
The broker's Welcome says where its frames and its recorder are: each connection owns that
recorder's client (services.plugin.recorder), with the connection's CURVE keys, so a
datasource naming another broker reads and publishes at that broker's recorder. Closing
says Goodbye: the broker releases the channels at once, with no lease to wait out.

Rows are checked where they enter (`_on_rows`): a data frame that does not decode, has
the wrong number of series for its channel, carries an epoch other than the placement
the broker last told (a superseded or forged ticker), or stamps ticks ahead of this
clock by more than `max_clock_skew_ms` is dropped, counted by reason and logged (at most
once per reason and LOG_EVERY_S); every other frame and stream goes on. Events of a newer
epoch than the placement told are held (EARLY_ROWS) until the broker names that placement
and then relayed: a restarted recorder's first rows outrun its Placement, and are on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import zmq
import zmq.asyncio

from services.common import protocol, rundir
from services.common.channels import ChannelSpec, EventChannel
from services.common.config import PluginSettings
from services.common.errors import ConfigError, PipelineError
from services.common.fencing import Fence, fence
from services.common.fields import Batch
from services.common.logs import fields
from services.common.receive import Refusing
from services.common.security import ClientKeys, secure_client
from services.common.sockets import advertised, configure, endpoint_problem, host_of
from services.plugin.link import Link
from services.plugin.queues import EventQueue, RowQueue
from services.plugin.recorder import Endpoints, RecorderClient

log = logging.getLogger("zmqstream.plugin.broker_connection")
FRAMES_PER_TURN = 1000
"""Messages read per event-loop turn at most, so a flood cannot starve the gRPC side."""
LOG_EVERY_S = 10.0
"""Refused frames are counted always, logged at most this often per reason."""
REFUSAL_REASONS = ("malformed", "epoch", "shape", "future")
EARLY_ROWS = 10_000
"""Rows of an event channel's next placement held until the broker names it (then relayed)."""
SUBSCRIBE_ALL_AT = 64
"""Held channels from which the frames socket subscribes to every topic, not channel by channel:
a dashboard's 1,000 channels cost one subscription, not 1,000 (each a call here, a message
up to the broker and on to every worker). Frames of channels not held are dropped (_placed).
Below half of it, the channels are subscribed one by one again."""
TELL_AFTER_S = 0.02
"""How long the broker's Subscribe waits for more channels held (the panels of a dashboard
come a few ms apart): a pure channel's first packet is recomputed, so no panel waits for it.
An event channel is told at once (with those waiting): its rows that come before the broker
names their placement are dropped, and nothing recomputes them."""
UNWELCOMED_BEAT_S = 0.05
"""How often a connection heartbeats before the broker's first Welcome."""


class BrokerUnavailable(PipelineError):
    """The broker did not answer in time."""


class UntrustedBroker(BrokerUnavailable):
    """The broker's ipc folder could have been made by another user: not used."""


class TooManyBrokers(PipelineError):
    """A new broker address past the plugin's cap on open broker connections."""


@dataclass(slots=True)
class Held:
    """A channel this plugin holds: its spec, the streams' queues, and the placement relayed."""

    spec: ChannelSpec | EventChannel
    queues: list[RowQueue | EventQueue] = field(default_factory=list)
    """All of the channel's kind: RowQueues for a pure channel (hold), EventQueues for an event one."""
    epoch: int = 0
    """The placement whose rows are relayed (0: none told yet)."""
    early: list[tuple[int, Batch]] = field(default_factory=list)
    """Events of a newer epoch than the placement, held until the broker names it (a restarted
    recorder's first rows outrun its Placement) or another placement drops them."""


class BrokerConnection:
    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        control_endpoint: str,
        settings: PluginSettings,
        keys: ClientKeys | None = None,
        recorder: Endpoints = ("", ""),
        pinned: bool = False,
        plugin_id: str = "",
    ) -> None:
        """`keys`: a datasource's own CURVE keys; else the plugin's settings say (or CURVE is off).
        `recorder`: its recorder's (history, publish) endpoints until the broker's Welcome names
        them; `pinned`: for good (the plugin's settings name them). `plugin_id`: the name the
        broker knows this connection by (default: the plugin's)."""
        self.control_endpoint = control_endpoint
        self.settings = settings
        self.plugin_id = plugin_id or settings.plugin_id
        if keys is None and settings.curve_client_secret:  # before any socket: this may fail
            keys = ClientKeys.from_files(settings.curve_client_secret, settings.curve_server_public)
        self.control = configure(ctx.socket(zmq.DEALER), sndhwm=10_000, rcvhwm=10_000)
        self.control.setsockopt(zmq.IMMEDIATE, 1)  # fail fast instead of queueing for a dead broker
        # A plain socket, watched with loop.add_reader (see _drain_frames), not zmq.asyncio's.
        self.frames: zmq.Socket[bytes] = configure(
            zmq.Socket(ctx, zmq.SUB), rcvhwm=10_000, max_message_bytes=protocol.MAX_DATA_BYTES
        )
        if keys is not None:
            for sock in (self.control, self.frames):
                secure_client(sock, keys)
        self.recorder = RecorderClient(ctx, settings, control_endpoint, keys, recorder, pinned)
        """This broker's recorder: history of its event channels, rows published into them."""
        self.link = Link(control_endpoint, settings.socket_group, self.control, keys is not None)
        self.connected = False
        self.untrusted = ""
        """Why this broker is not used ('' when it is): its folder is not one we trust."""
        self._connect()
        self.frames_endpoint = ""
        self.broker = ""
        self.holders: dict[str, Held] = {}
        self._by_topic: dict[bytes, Held] = {}
        """`holders` by the topic of their frames (the path's bytes): what a data frame is looked up by."""
        self.subscribed: set[str] = set()
        """Channels the frames socket subscribes to by their own topic."""
        self.subscribed_all = False
        """Whether it subscribes to every topic (SUBSCRIBE_ALL_AT)."""
        self._telling: dict[str, None] = {}
        """Channels newly held, told to the broker together TELL_AFTER_S after the first (_tell)."""
        self._untold: set[str] = set()
        """Channels whose Subscribe found no broker: told again at its Welcome."""
        self._drain_pending = False
        self.refusals: dict[str, str] = {}
        self.pending_status: dict[str, asyncio.Future[protocol.StatusReply]] = {}
        self.rows_received = 0
        self.frames_refused = dict.fromkeys(REFUSAL_REASONS, 0)
        self._logged_at = dict.fromkeys(REFUSAL_REASONS, -LOG_EVERY_S)
        self._skew_ns = round(settings.max_clock_skew_ms * 1_000_000)
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop

    def _connect(self) -> None:
        """Connect once the broker's ipc folder exists and is one we trust; heartbeats retry.

        A folder that does not exist yet is not connected into, since whoever makes it
        first would own what we reach; once checked, the sticky bit of /tmp keeps it ours.
        """
        folder = rundir.ipc_folder(self.control_endpoint)
        if folder is not None and not os.path.lexists(folder):
            return
        untrusted = _untrusted(self.control_endpoint, self.settings)
        if untrusted and untrusted != self.untrusted:
            log.error("broker refused", extra=fields(endpoint=self.control_endpoint, error=untrusted))
        self.untrusted = untrusted
        if not untrusted:
            self.control.connect(self.control_endpoint)
            self.connected = True

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._heartbeats(), name="heartbeats"),
            asyncio.create_task(self._read_control(), name="control"),
            asyncio.create_task(self.link.watch(), name="link"),
        ]
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.frames.FD, self._drain_frames)
        self._frames_touched()

    async def close(self) -> None:
        """Say goodbye (the broker releases our channels now, with no lease to wait out), then close."""
        self._loop.remove_reader(self.frames.FD)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.connected:
            self._send(protocol.Goodbye(self.plugin_id))  # sent within the socket's linger
        await self.recorder.close()
        self.control.close()
        self.frames.close()

    # -- streams -------------------------------------------------------------------

    def hold(self, spec: ChannelSpec, on_drop: Callable[[int], None] = lambda rows: None) -> RowQueue:
        queue = RowQueue(self.settings.stream_queue_bytes, on_drop, series=spec.series)
        self._hold(spec, queue)
        return queue

    def hold_events(
        self, channel: EventChannel, on_drop: Callable[[int], None] = lambda rows: None
    ) -> EventQueue:
        """As `hold`, for an event channel: its Events go to an EventQueue."""
        queue = EventQueue(self.settings.stream_queue_bytes, on_drop)
        # Rows published while the subscription is on its way reach neither the queue nor the
        # stream's first history ask: missed, so a heartbeat with no rows asks the recorder again.
        queue.missed = True
        self._hold(channel, queue)
        return queue

    def _hold(self, spec: ChannelSpec | EventChannel, queue: RowQueue | EventQueue) -> None:
        channel = spec.path
        if self.untrusted:
            queue.fail(self.untrusted)
            return
        held = self.holders.get(channel)
        if held is None:
            held = self.holders[channel] = self._by_topic[channel.encode()] = Held(spec)
            self.refusals.pop(channel, None)
            self._subscribe_frames(channel)
            if not self._telling:
                asyncio.get_running_loop().call_later(TELL_AFTER_S, self._tell)
            self._telling[channel] = None
            if isinstance(spec, EventChannel):  # its rows cannot be recomputed: told now (TELL_AFTER_S)
                self._tell()
        held.queues.append(queue)

    def _tell(self) -> None:
        """Subscribe the channels held since the last call in one message: a send per channel was
        most of what a RunStream's start cost here (zmq.asyncio's future and poller per send)."""
        channels, self._telling = list(self._telling), {}
        if self.control.closed:  # closed as idle meanwhile (BrokerConnections): nobody to tell
            return
        for at in range(0, len(channels), protocol.MAX_SUBSCRIBE_CHANNELS):
            batch = channels[at : at + protocol.MAX_SUBSCRIBE_CHANNELS]
            sent = self._sending(protocol.Subscribe(self.plugin_id, batch[0], batch[1:]))
            sent.add_done_callback(functools.partial(self._failed_to_tell, batch))  # untold only if it fails

    def _failed_to_tell(self, batch: list[str], sent: asyncio.Future[object]) -> None:
        if sent.cancelled() or sent.exception() is not None:  # no broker yet: told at its Welcome
            self._untold.update(batch)

    def release(self, channel: str, queue: RowQueue | EventQueue) -> None:
        held = self.holders.get(channel)
        if held is None or queue not in held.queues:
            return
        held.queues.remove(queue)
        if not held.queues:
            del self.holders[channel], self._by_topic[channel.encode()]
            self._unsubscribe_frames(channel)
            if channel in self._telling:  # released before the broker was told: nothing to undo
                del self._telling[channel]
            else:
                self._send(protocol.Unsubscribe(self.plugin_id, channel))

    def _subscribe_frames(self, channel: str) -> None:
        """Have the frames socket receive a newly held channel: by its topic, or with every topic."""
        if self.subscribed_all:
            return
        if len(self.holders) >= SUBSCRIBE_ALL_AT:
            self.frames.subscribe(b"")
            self.subscribed_all = True
        else:
            self.frames.subscribe(protocol.topic(channel))
            self.subscribed.add(channel)
        self._frames_touched()

    def _unsubscribe_frames(self, channel: str) -> None:
        """Undo _subscribe_frames for a released channel; back to topics when few are held."""
        if channel in self.subscribed:
            self.subscribed.remove(channel)
            self.frames.unsubscribe(protocol.topic(channel))
        if self.subscribed_all and len(self.holders) < SUBSCRIBE_ALL_AT // 2:
            for held in self.holders.keys() - self.subscribed:
                self.frames.subscribe(protocol.topic(held))
                self.subscribed.add(held)
            self.frames.unsubscribe(b"")
            self.subscribed_all = False
        self._frames_touched()

    # -- status --------------------------------------------------------------------

    def problem(self) -> str:
        """'' unless this broker is known to be out of reach; else why, and what to do (see link)."""
        return self.untrusted or self.link.problem()

    async def status(self, timeout_s: float) -> protocol.StatusReply:
        if self.untrusted:
            raise UntrustedBroker(self.untrusted)
        if self.control.closed:  # closed as idle (BrokerConnections) while a caller still held it
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
        """Whether the message went out at once (_sending); reading its future's outcome here
        keeps a failure from being reported as unobserved."""
        sent = self._sending(message)
        return sent.done() and sent.exception() is None

    def _sending(self, message: protocol.Message) -> asyncio.Future[object]:
        """The message's send, through zmq.asyncio's own non-blocking path.

        zmq.asyncio settles a NOBLOCK send at once, unless it is queued behind another send:
        then later. Its future holds Again when the broker is not connected. A send on a
        plain view of this socket is no alternative: it can swallow the wake-up that
        zmq.asyncio's pending receive waits for, and the broker's replies then sit unread.
        """
        # zmq.asyncio returns an asyncio.Future; its stubs only say Awaitable.
        return cast(
            "asyncio.Future[object]", self.control.send_multipart(protocol.encode(message), flags=zmq.NOBLOCK)
        )

    async def _heartbeats(self) -> None:
        while True:
            if not self.connected:
                self._connect()
            known = {c: held.epoch for c, held in self.holders.items() if c not in self.refusals}
            self._send(protocol.PluginHeartbeat(self.plugin_id, known))
            for held in self.holders.values():
                for queue in held.queues:
                    queue.check_stall()
            # Until the first Welcome (where frames and the recorder are), again soon: a send
            # before the connection is up fails (IMMEDIATE), and a query would wait a whole beat.
            await asyncio.sleep(self.settings.plugin_heartbeat_s if self.broker else UNWELCOMED_BEAT_S)

    async def _read_control(self) -> None:
        guard = Refusing(log, "control message")
        while True:
            frames = await self.control.recv_multipart()
            with guard:
                self._on_control(protocol.decode(frames))

    def _on_control(self, message: protocol.Message) -> None:
        match message:
            case protocol.Welcome(frames_endpoint=endpoint, broker=broker, recorder=recorder):
                host = host_of(self.control_endpoint)
                if "history" in recorder and "publish" in recorder:  # this broker's recorder, as we reach it
                    history, publish = (advertised(recorder[name], host) for name in ("history", "publish"))
                    self.recorder.locate(history, publish)
                endpoint = advertised(endpoint, host)
                untrusted = _untrusted(endpoint, self.settings)
                if untrusted:
                    log.error("frames endpoint refused", extra=fields(endpoint=endpoint, error=untrusted))
                elif endpoint != self.frames_endpoint:
                    if self.frames_endpoint:
                        self.frames.disconnect(self.frames_endpoint)
                    self.frames.connect(endpoint)
                    self.frames_endpoint = endpoint
                    self._frames_touched()
                if broker != self.broker:
                    if self.broker:
                        log.warning("broker restarted", extra=fields(broker=broker))
                        for each in self.holders.values():  # Events sent while it was away are lost
                            _missed(each)
                    # A broker adds only MAX_SUBSCRIBE_CHANNELS new channels per heartbeat: a restarted
                    # one is told every held channel, a first one those whose Subscribe found no broker.
                    untold = self.holders.keys() if self.broker else self._untold & self.holders.keys()
                    self._untold.clear()
                    self.broker = broker
                    if untold:
                        self._telling.update(dict.fromkeys(c for c in untold if c not in self.refusals))
                        self._tell()
            case protocol.SubscribeReply(channel=channel, error=error) if error:
                log.warning("broker refused channel", extra=fields(channel=channel, error=error))
                self.refusals[channel] = error
                if held := self.holders.get(channel):
                    for queue in held.queues:
                        queue.fail(error)
            case (
                protocol.SubscribeReply(channel=channel, epoch=epoch)
                | protocol.Placement(channel=channel, epoch=epoch)
            ) if epoch and channel in self.holders:
                self._placement(self.holders[channel], epoch)
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
        self._drain_pending = False
        receive = self.frames.recv
        for _ in range(FRAMES_PER_TURN):
            try:
                frame = receive(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                self._on_rows(frame)
            except Exception:  # a bug of ours on some frame: the drain, and every stream, must go on
                self._refuse("malformed", "a frame failed to process")
                log.exception("frame failed")
        self._frames_touched()

    def _frames_touched(self) -> None:
        """Drain soon (once, however many calls touched the socket in this turn)."""
        if not self._drain_pending:
            self._drain_pending = True
            self._loop.call_soon(self._drain_frames)

    def _on_rows(self, frame: bytes) -> None:
        """A data frame into its streams' queues: Rows of a held channel under its placement on a
        path with one object made per frame (the values' bytes); anything else by _on_other."""
        end = frame.find(protocol.TOPIC_END)
        rows = end >= 0 and frame[end + 1 : end + 3] == protocol.ROWS_HEADER
        held = self._by_topic.get(frame[:end]) if rows else None
        if held is None:
            self._on_other(frame, end)
            return
        spec = held.spec
        try:
            first_tick, epoch, series, ticks = protocol.rows_head(frame, end + 3)
        except PipelineError as exc:
            self._refuse("malformed", str(exc))
            return
        if epoch != held.epoch or not epoch:  # not Fence.TAKE: refused, or no placement told yet
            self._placed(spec.path, epoch)
            return
        if isinstance(spec, EventChannel):
            self._refuse("shape", f"{spec.path}: Rows for an event channel")
            return
        if series != spec.series:
            self._refuse("shape", f"{spec.path}: {series} series, the channel has {spec.series}")
            return
        last_ns = spec.tick_time(first_tick + ticks - 1)
        if last_ns - time.time_ns() > self._skew_ns and self._ahead(
            spec.path, last_ns
        ):  # one call per frame less
            return
        self.rows_received += ticks
        values = frame[end + 3 + protocol.ROWS_HEAD_BYTES :]
        for queue in cast("list[RowQueue]", held.queues):  # a pure channel's, as checked above
            queue.put(first_tick, values)

    def _on_other(self, frame: bytes, end: int) -> None:
        """A data frame off _on_rows' path: Events, a frame of a channel not held, or one decode refuses."""
        if frame[end + 1 : end + 3] == protocol.ROWS_HEADER:  # of a channel not held: dropped
            try:
                protocol.decode_rows(frame)
            except PipelineError as exc:
                if self._held_topic(frame, end):
                    self._refuse("malformed", str(exc))
        elif self._held_topic(frame, end):
            self._on_data(frame)

    def _held_topic(self, frame: bytes, end: int) -> bool:
        """Whether a frame is of a channel held, as far as refusing it goes: subscribed to every
        topic (SUBSCRIBE_ALL_AT), other plugins' channels arrive too, and are passed over as a
        topic filter would pass them over (not counted as refused). Checked only off the Rows
        fast path, whose frames of channels not held _placed drops anyway."""
        return not self.subscribed_all or frame[:end].decode(errors="replace") in self.holders

    def _on_data(self, frame: bytes) -> None:
        """A data frame other than Rows: Events of an event channel (checked to every value by
        decode_data) into its queues, fenced by epoch and clock like Rows."""
        try:
            channel, message = protocol.decode_data(frame)
        except PipelineError as exc:
            self._refuse("malformed", str(exc))
            return
        early = self.holders.get(channel)
        if early is not None and early.epoch and message.epoch > early.epoch:
            if (
                isinstance(message, protocol.Events)
                and isinstance(early.spec, EventChannel)
                and message.times
                and not self._ahead(channel, message.times[-1])
            ):
                self._keep_early(early, channel, message)
            return
        held = self._placed(channel, message.epoch)
        if held is None:
            return
        if not isinstance(message, protocol.Events) or not isinstance(held.spec, EventChannel):
            self._refuse(
                "shape", f"{channel}: {type(message).__name__} for a channel that does not carry them"
            )
            return
        batch = message.batch
        if not batch.times:
            return
        if self._ahead(channel, batch.times[-1]):
            return
        self.rows_received += len(batch)
        for queue in cast("list[EventQueue]", held.queues):  # an event channel's, as checked above
            queue.put(batch, message.prev)

    def _keep_early(self, held: Held, channel: str, message: protocol.Events) -> None:
        """Hold Events of a newer placement than the one told, at most EARLY_ROWS of them."""
        held.early.append((message.epoch, message.batch))
        while sum(len(batch) for _, batch in held.early) > EARLY_ROWS:
            epoch, _ = held.early.pop(0)
            self._refuse(
                "epoch", f"{channel}: epoch {epoch} was never placed (the placement is {held.epoch})"
            )

    def _placement(self, held: Held, epoch: int) -> None:
        """The broker names the channel's placement: relay its rows, with those that came before it."""
        if held.epoch and epoch != held.epoch:  # a moved channel: rows between the two may be lost
            _missed(held)
        held.epoch = epoch
        early = held.early
        held.early = [(later, batch) for later, batch in early if later > epoch]  # still to be told
        for batch_epoch, batch in early:
            if batch_epoch < epoch:
                self._refuse("epoch", f"{held.spec.path}: epoch {batch_epoch}, the placement is {epoch}")
            if batch_epoch != epoch:
                continue
            self.rows_received += len(batch)
            for queue in cast("list[EventQueue]", held.queues):
                queue.put(batch)

    def _placed(self, channel: str, epoch: int) -> Held | None:
        """The held channel whose frames of `epoch` are relayed; None for a channel not held (released
        a moment ago, or nobody's business) or another epoch (refused, unless the broker has told no
        placement yet: the stream bridges those rows from history)."""
        held = self.holders.get(channel)
        if held is None:
            return None
        verdict = fence(held.epoch, epoch)
        if verdict is Fence.REFUSE:
            self._refuse("epoch", f"{channel}: epoch {epoch}, the placement is {held.epoch}")
        return held if verdict is Fence.TAKE else None

    def _ahead(self, channel: str, last_ns: int) -> bool:
        """Whether a frame's last row is further ahead of this clock than max_clock_skew_ms (refused)."""
        ahead_ns = last_ns - time.time_ns()
        if ahead_ns <= self._skew_ns:
            return False
        self._refuse("future", f"{channel}: a row {ahead_ns / 1e9:.3f} s ahead of this clock")
        return True

    def _refuse(self, reason: str, detail: str) -> None:
        self.frames_refused[reason] += 1
        now = time.monotonic()
        if now - self._logged_at[reason] >= LOG_EVERY_S:
            self._logged_at[reason] = now
            log.warning(
                "frame refused",
                extra=fields(reason=reason, error=detail[:300], refused=self.frames_refused[reason]),
            )


def _missed(held: Held) -> None:
    """Rows of `held` may have been lost on the way: its event streams ask the recorder for them."""
    for queue in held.queues:
        if isinstance(queue, EventQueue):
            queue.missed = True


def _untrusted(endpoint: str, settings: PluginSettings) -> str:
    """'' if `endpoint` may be connected to, else why not (services.common.rundir)."""
    try:
        rundir.check_endpoint(endpoint, settings.socket_group)
    except ConfigError as exc:
        return str(exc)
    return ""


Curve = tuple[str, str]
"""A datasource's (plugin secret key, broker public key) as entered; ("", "") for the plugin's own."""
BrokerKey = tuple[str, Curve]


class BrokerConnections:
    """One BrokerConnection per broker address and keys; datasources may name different brokers.

    Each connection costs file descriptors, and any datasource may name any address, so
    they are bounded: a connection other than the default one is closed once no stream
    holds it and nothing used it for `broker_idle_s`, and a new address past `max_brokers`
    open connections is refused (TooManyBrokers, saying so) until one closes.
    """

    def __init__(self, settings: PluginSettings) -> None:
        self.settings = settings
        self.ctx = zmq.asyncio.Context()
        self.by_endpoint: dict[BrokerKey, BrokerConnection] = {}
        self.last_used: dict[BrokerKey, float] = {}
        self.started = time.monotonic()
        self._closer: asyncio.Task[None] | None = None
        self._connections = itertools.count(1)

    def get(self, endpoint: str = "", curve: Curve = ("", "")) -> BrokerConnection:
        """The connection to `endpoint` (default: the plugin's), with a datasource's `curve` keys if any.

        ConfigError if the address or keys are unusable (TooManyBrokers is one too), saying what to do.
        """
        endpoint = endpoint or self.settings.control_endpoint
        if problem := endpoint_problem(endpoint):
            own = endpoint == self.settings.control_endpoint
            where, default = (
                ("grafana.ini control_endpoint", "the run_dir's broker")
                if own
                else ("Broker address", "the plugin's own broker")
            )
            raise ConfigError(
                f"{where} {endpoint[:200]!r} is not a ZeroMQ endpoint: {problem}. Write tcp://host:port "
                f"or ipc:///path/to/control, or leave it empty for {default}"
            )
        key = (endpoint, curve)
        broker = self.by_endpoint.get(key)
        if broker is None:
            if len(self.by_endpoint) >= self.settings.max_brokers:
                raise TooManyBrokers(
                    f"the plugin already has its maximum of {self.settings.max_brokers} broker "
                    f"connections open, so it cannot connect to {endpoint[:200]} now; one closes after "
                    f"{self.settings.broker_idle_s:g} s unused: point datasources at fewer brokers "
                    "or raise the plugin's max_brokers"
                )
            recorder = self._recorder_of(endpoint)
            # A name of its own: two connections to one broker (its address spelled two ways, or
            # two datasources' keys) are two holders to it, not one whose holdings flap each beat.
            plugin_id = f"{self.settings.plugin_id}.{next(self._connections)}"
            broker = BrokerConnection(self.ctx, endpoint, self.settings, _keys(curve), *recorder, plugin_id)
            self.by_endpoint[key] = broker
            broker.start()
            if self._closer is None:
                self._closer = asyncio.create_task(self._close_idle(), name="close-idle-brokers")
        self.last_used[key] = time.monotonic()
        return broker

    def _recorder_of(self, endpoint: str) -> tuple[Endpoints, bool]:
        """Where the recorder of the broker at `endpoint` is until it says, and whether to keep to it.

        The plugin's own broker: its recorder settings, kept if grafana.ini names them (not the
        run folder's sockets). Another broker: unknown until its Welcome.
        """
        if endpoint != self.settings.control_endpoint:
            return ("", ""), False
        own = (self.settings.history_endpoint, self.settings.publish_endpoint)
        return own, own != tuple(f"ipc://{self.settings.run_dir}/{name}" for name in ("history", "publish"))

    async def _close_idle(self) -> None:
        while True:
            await asyncio.sleep(self.settings.broker_idle_s / 2)
            now = time.monotonic()
            for key, broker in list(self.by_endpoint.items()):
                if key == (self.settings.control_endpoint, ("", "")):
                    continue
                if broker.holders or broker.pending_status:
                    self.last_used[key] = now
                elif now - self.last_used[key] >= self.settings.broker_idle_s:
                    del self.by_endpoint[key], self.last_used[key]
                    log.info("idle broker connection closed", extra=fields(endpoint=broker.control_endpoint))
                    await broker.close()

    async def close(self) -> None:
        if self._closer is not None:
            self._closer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._closer
        for broker in self.by_endpoint.values():
            await broker.close()
        self.ctx.term()


def _keys(curve: Curve) -> ClientKeys | None:
    """A datasource's CURVE keys, checked; None when it has none (the plugin's settings apply)."""
    if curve == ("", ""):
        return None
    if not all(curve):
        raise ConfigError(
            "the datasource has only one of its two CURVE keys: in its settings, set both the plugin's "
            "secret key and the broker's public key, or reset both"
        )
    return ClientKeys.from_text(*curve)
