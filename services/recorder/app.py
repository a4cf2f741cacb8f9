"""The recorder process: published channels, and the recent history of every event channel.

Event channels cannot be recomputed, so someone must keep their rows: this process.

- **Publish** (ROUTER `publish_endpoint`): a publisher's rows for `pub-<name>` are
  checked completely (services.recorder.intake) and a rate budget per channel; then
  recorded and sent on to frames_in as Events under this recorder's epoch, or refused
  with a reason and nothing changed.
- **Sources**: a SUB on the broker's frames_out reads every `source-*` channel's Events
  and records them (the newest epoch only, times strictly after the last recorded).
- **History** (ROUTER `history_endpoint`): the recorded rows of a time range.
- **Broker**: it heartbeats as a worker of role RECORDER listing its published channels
  under its epoch (its start time), so a panel holding `pub-x` is placed here.

Rows live in bounded rings (services.recorder.ring) and, with `record_dir`, in Arrow IPC
segments (services.recorder.segments) loaded back at start. One thread serves all; a
peer's messages cost at most PER_PEER_PER_TURN of a turn, so a flooding publisher waits
in its own queue: what it sent beyond its share waits for the next turn (at most
MAX_DEFERRED messages; past that it is refused unchecked), and a publisher that waits
for each reply, however fast, is never refused for its pace.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import msgpack
import zmq

from services.common import protocol, rundir
from services.common.channels import PUBLISHED
from services.common.config import RecorderSettings
from services.common.errors import PipelineError, ProtocolError
from services.common.fields import Batch, InvalidRows
from services.common.lifecycle import install_stop_handlers
from services.common.logs import fields, setup_logging
from services.common.security import ClientKeys, authorize, secure_client, secure_server, start_authenticator
from services.common.sockets import advertised, configure, host_of, reconnect
from services.recorder.intake import Budget, event_channel, is_source, publish_problem, size_problem
from services.recorder.ring import Rings
from services.recorder.segments import Store

log = logging.getLogger("zmqstream.recorder")
TURN_MS = 50
"""The longest a loop turn waits: how late a stop, a heartbeat or a flush can be."""
MESSAGES_PER_TURN = 256
"""Messages read from one socket per turn, so no socket starves the others."""
PER_PEER_PER_TURN = 16
"""Publishes or history requests checked per peer per turn; its others wait for the next turn."""
MAX_DEFERRED = 16
"""Messages of one peer waiting for a later turn; past them, its others are refused unchecked
(a publish) or dropped (a history request): a peer that far ahead is not waiting for answers."""
FLUSH_S = 1.0
"""How often accepted rows are written to the segments (what a crash may lose)."""
REQUEST_HWM = 16
"""Messages a peer may queue for us; with MAX_DATA_BYTES each, what one peer can hold of ours."""
REPLY_HWM = 4
"""Replies a peer may leave unread (a HistoryReply is up to MAX_CONTROL_BYTES)."""
REPLY_MARGIN = 64 * 1024
"""Room left under MAX_CONTROL_BYTES for a HistoryReply's envelope."""
LOG_EVERY = 1000
"""Refusals are logged first and then once per this many, not one line each."""
Answer = Callable[[list[bytes], bool], protocol.Message | None]
"""A request's frames, and whether its peer is past its share of the turn → the reply, if any."""


class Recorder:
    def __init__(
        self,
        settings: RecorderSettings,
        ctx: zmq.Context[zmq.Socket[bytes]],
        teardown: contextlib.ExitStack,
    ) -> None:
        """Load the disk's history, make the sockets; `teardown` closes what exists if a later step fails."""
        self.settings = settings
        self.epoch = time.time_ns()
        """One epoch per run: every published channel's placement while this process lives."""
        self.rings = Rings(settings.ring_rows, settings.ring_bytes, settings.ring_total_bytes)
        self.store: Store | None = None
        self.sockets: list[zmq.Socket[bytes]] = []
        teardown.callback(self.close)
        if settings.record_dir:
            self.store = Store(
                Path(settings.record_dir),
                keep_s=settings.record_keep_s,
                max_bytes=settings.record_max_bytes,
                segment_s=settings.segment_s,
                segment_bytes=settings.segment_bytes,
            )
            for channel, batches in self.store.load(settings.ring_rows).items():
                for batch in batches:
                    self.rings.add(channel, batch)
            log.info("history loaded", extra=fields(channels=len(self.rings.channels)))
        self.source_channels = sum(map(is_source, self.rings.channels))
        """Source channels recorded (a channel is kept for good): at most half of max_channels."""
        self.budgets: dict[str, Budget] = {}
        self.source_epochs: dict[str, int] = {}
        self.refused = 0
        self.deferred: dict[zmq.Socket[bytes], dict[bytes, deque[list[bytes]]]] = {}
        """Per ROUTER, per peer: messages beyond its share of a turn, for the next (serve)."""
        self.frames_endpoint = ""

        keys = None
        if settings.curve_client_secret:
            keys = ClientKeys.from_files(settings.curve_client_secret, settings.curve_server_public)

        def socket(kind: int, **options: int) -> zmq.Socket[bytes]:
            sock = configure(ctx.socket(kind), **options)
            self.sockets.append(sock)
            return sock

        self.control = socket(zmq.DEALER)
        self.control.setsockopt(zmq.IMMEDIATE, 1)
        self.frames = socket(zmq.PUB, sndhwm=10_000)
        self.sources = socket(zmq.SUB, rcvhwm=10_000, max_message_bytes=protocol.MAX_DATA_BYTES)
        for sock in (self.control, self.frames, self.sources) if keys else ():
            secure_client(sock, keys)  # type: ignore[arg-type]
        # A PublishReply is small: many may wait; a HistoryReply is up to 8 MiB: few may.
        self.publish = socket(
            zmq.ROUTER, sndhwm=256, rcvhwm=REQUEST_HWM, max_message_bytes=protocol.MAX_DATA_BYTES
        )
        self.history = socket(
            zmq.ROUTER, sndhwm=REPLY_HWM, rcvhwm=REQUEST_HWM, max_message_bytes=protocol.MAX_REQUEST_BYTES
        )
        if settings.curve_server_secret:
            for sock, domain in ((self.publish, b"publish"), (self.history, b"history")):
                secure_server(sock, settings.curve_server_secret)
                sock.zap_domain = domain
        self.publish.bind(settings.publish_endpoint)
        self.history.bind(settings.history_endpoint)
        self.control.connect(settings.control_endpoint)
        self.sources.connect(settings.frames_out_endpoint)
        self.sources.subscribe(b"source-")

    # -- the broker ------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Every published channel under this run's epoch: the broker places held ones here."""
        offered = {
            path: self.epoch for path in self.rings.channels if event_channel(path, PUBLISHED) is not None
        }
        message = protocol.WorkerHeartbeat(
            worker=self.settings.recorder_id, channels=offered, pid=os.getpid(), role=protocol.RECORDER
        )
        with contextlib.suppress(zmq.Again):  # no broker yet: the next heartbeat tells it all
            self.control.send_multipart(protocol.encode(message), zmq.NOBLOCK)

    def handle_control(self) -> None:
        for _ in range(MESSAGES_PER_TURN):
            try:
                frames = self.control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                message = protocol.decode(frames)
            except ProtocolError as exc:
                log.warning("control message refused", extra=fields(error=str(exc)[:300]))
                continue
            if not isinstance(message, protocol.Welcome):
                continue
            endpoint = advertised(message.frames_endpoint, host_of(self.settings.control_endpoint))
            if endpoint != self.frames_endpoint:  # the frames_in its Welcome names, once per broker
                self.frames_endpoint = reconnect(self.frames, self.frames_endpoint, endpoint)
                log.info("publishing frames", extra=fields(endpoint=endpoint))

    # -- publishers ------------------------------------------------------------------

    def _answer_publish(self, frames: list[bytes], over_share: bool) -> protocol.PublishReply:
        try:
            if over_share:
                reply = protocol.PublishReply(
                    _request_id(frames),
                    0,
                    f"more than {PER_PEER_PER_TURN + MAX_DEFERRED} publishes sent without waiting for "
                    "their replies: wait for each reply before the next",
                )
            else:
                reply = self._publish(frames)
        except Exception:  # a bug of ours on some input: that message fails, the recorder goes on
            log.exception("publish failed")
            reply = protocol.PublishReply(0, 0, "the recorder failed on this publish (see its log)")
        if reply.error:
            self._refusal("publish refused", reply.error)
        return reply

    def _publish(self, frames: list[bytes]) -> protocol.PublishReply:
        too_big = size_problem(sum(len(frame) for frame in frames), self.settings.max_publish_bytes)
        if too_big:
            return protocol.PublishReply(_request_id(frames), 0, too_big)
        try:
            message = protocol.expect(frames, protocol.Publish)
        except ProtocolError as exc:
            return protocol.PublishReply(_request_id(frames), 0, f"not a valid Publish: {exc}")
        channel = message.channel
        batch = Batch(message.times, message.columns)
        ring = self.rings.channels.get(channel)
        now_ns = time.time_ns()
        problem = publish_problem(
            channel,
            batch,
            schema=ring.schema if ring else None,
            last_time=ring.last_time if ring else None,
            now_ns=now_ns,
            skew_ns=round(self.settings.max_clock_skew_ms * 1e6),
        )
        if not problem and ring is None and len(self.rings.channels) >= self.settings.max_channels:
            problem = (
                f"the recorder keeps at most {self.settings.max_channels} channels: publish to one it "
                "has, or raise its --max-channels"
            )
        now = time.monotonic()
        rate = self.settings.max_rows_per_s
        budget = self.budgets.get(channel) or Budget(rate, rate, now)
        if not problem and not budget.allows(len(batch), now):
            problem = (
                f"{channel} accepts at most {rate:g} rows/s (bursts of {rate:g} rows): "
                f"these {len(batch)} rows are over it; send them again later, or fewer at once"
            )
        if problem:
            told = ring.schema if ring is not None and batch.schema != ring.schema else None
            return protocol.PublishReply(message.request_id, 0, problem, dict(told.fields) if told else {})
        budget.take(len(batch))
        self.budgets[channel] = budget
        self._record(channel, batch)
        self.frames.send(protocol.events_frame(channel, self.epoch, batch))
        if ring is None:
            log.info("published channel begun", extra=fields(channel=channel, schema=batch.schema.describe()))
            self.heartbeat()  # the broker may place a held channel here at once
        return protocol.PublishReply(message.request_id, len(batch))

    def _record(self, channel: str, batch: Batch) -> None:
        self.rings.add(channel, batch)
        if self.store is not None:
            self.store.write(channel, batch)

    # -- sources ---------------------------------------------------------------------

    def handle_sources(self) -> None:
        for _ in range(MESSAGES_PER_TURN):
            try:
                frame = self.sources.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                self._source_rows(frame)
            except PipelineError as exc:
                self._refusal("source rows dropped", str(exc))

    def _source_rows(self, frame: bytes) -> None:
        channel, message = protocol.decode_data(frame)
        if not isinstance(message, protocol.Events) or not message.times or not is_source(channel):
            return
        ring = self.rings.channels.get(channel)
        if ring is None and len(self.rings.channels) >= self.settings.max_channels:
            raise InvalidRows(f"{channel}: the recorder keeps at most {self.settings.max_channels} channels")
        # Any viewer can open source-<name>-<tick> for as many ticks as it likes, and a channel is
        # kept for good: sources get half the channels, so publishers always can begin theirs.
        sources_cap = max(1, self.settings.max_channels // 2)
        if ring is None and self.source_channels >= sources_cap:
            raise InvalidRows(f"{channel}: the recorder keeps at most {sources_cap} source channels")
        recorded_epoch = self.source_epochs.get(channel, 0)
        if message.epoch < recorded_epoch:  # a worker its channel moved away from
            return
        # A worker whose clock runs ahead: its rows would make every correct one after them a step back.
        batch = message.batch.until(time.time_ns() + round(self.settings.max_clock_skew_ms * 1e6))
        if not len(batch):
            raise InvalidRows(f"{channel}: rows ahead of the recorder's clock")
        self.source_epochs[channel] = message.epoch  # kept for recorded channels only: bounded
        if ring is not None:
            batch = batch.after(ring.last_time)
            if len(batch) and batch.schema != ring.schema and message.epoch > recorded_epoch:
                # A new instance of the source (moved to another worker) with other fields: its schema
                # from now on, as the plugin streams it; within one run, the worker enforces its schema.
                log.info(
                    "source schema changed", extra=fields(channel=channel, schema=batch.schema.describe())
                )
                self.rings.reschema(channel, batch.schema)
                if self.store is not None:
                    self.store.reschema(channel, batch.schema)
            else:
                ring.schema.check(batch)  # InvalidRows: dropped, as the plugin drops them
        if len(batch):
            self._record(channel, batch)
            self.source_channels += ring is None

    # -- history ---------------------------------------------------------------------

    def _answer_history(self, frames: list[bytes], over_share: bool) -> protocol.HistoryReply | None:
        if over_share:
            return None  # a peer asking this fast is not waiting for answers
        try:
            return self._history(frames)
        except Exception:
            log.exception("history request failed")
            return _history_error("", "", "the recorder failed on this request (see its log)")

    def _history(self, frames: list[bytes]) -> protocol.HistoryReply:
        try:
            request = protocol.expect(frames, protocol.HistoryRequest)
        except ProtocolError as exc:
            self._refusal("history request refused", str(exc))
            return _history_error("", "", f"not a valid HistoryRequest: {exc}")
        channel = request.channel
        if event_channel(channel) is None:
            return _history_error(
                request.request_id, channel, f"{channel[:120]!r} is not an event channel (source-… or pub-…)"
            )
        if request.max_rows < 1:
            return _history_error(request.request_id, channel, "max_rows must be at least 1")
        found = self.rings.query(
            channel, request.from_ns, request.to_ns, min(request.max_rows, protocol.MAX_ROWS)
        )
        if found is None:
            return _history_error(request.request_id, channel, f"{protocol.NOT_RECORDED}{channel}")
        batch, truncated = found
        while True:  # keep the reply under what a client's socket accepts
            reply = protocol.HistoryReply(
                request.request_id, channel, batch.times, batch.columns, truncated=truncated
            )
            if (
                len(batch) <= 1
                or sum(map(len, protocol.encode(reply))) < protocol.MAX_CONTROL_BYTES - REPLY_MARGIN
            ):
                return reply
            batch, truncated = batch.last(len(batch) // 2), True

    # -- common ----------------------------------------------------------------------

    def serve(self, sock: zmq.Socket[bytes], answer: Answer) -> None:
        """Answer what is queued on a ROUTER, at most PER_PEER_PER_TURN messages of each peer in full.

        libzmq reads the peers round-robin, so a flooding peer gets its share of a turn and
        no more. What a peer sent beyond its share waits for the next turn, served first
        (at most MAX_DEFERRED; beyond, its messages are not even checked).
        """
        served: dict[bytes, int] = {}
        waiting = self.deferred.setdefault(sock, {})
        for routing_id, queue in list(waiting.items()):
            while queue and served.get(routing_id, 0) < PER_PEER_PER_TURN:
                served[routing_id] = served.get(routing_id, 0) + 1
                self._answer(sock, routing_id, answer(queue.popleft(), False))
            if not queue:
                del waiting[routing_id]
        for _ in range(MESSAGES_PER_TURN):
            try:
                routing_id, *frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if served.get(routing_id, 0) < PER_PEER_PER_TURN:
                served[routing_id] = served.get(routing_id, 0) + 1
                self._answer(sock, routing_id, answer(frames, False))
                continue
            queue = waiting.setdefault(routing_id, deque())
            if len(queue) < MAX_DEFERRED:
                queue.append(frames)
            else:
                self._answer(sock, routing_id, answer(frames, True))

    @property
    def behind(self) -> bool:
        """Whether messages wait for a later turn (the next one then starts at once)."""
        return any(self.deferred.get(sock) for sock in (self.publish, self.history))

    def _answer(self, sock: zmq.Socket[bytes], routing_id: bytes, reply: protocol.Message | None) -> None:
        if reply is not None:
            self._reply(sock, routing_id, reply)

    def _reply(self, sock: zmq.Socket[bytes], routing_id: bytes, message: protocol.Message) -> None:
        with contextlib.suppress(zmq.Again):  # a peer that does not read loses its replies
            sock.send_multipart([routing_id, *protocol.encode(message)], zmq.NOBLOCK)

    def _refusal(self, what: str, error: str) -> None:
        self.refused += 1
        if self.refused % LOG_EVERY == 1:
            log.warning(what, extra=fields(error=error[:300], refused=self.refused))

    def run(self, stop: threading.Event) -> None:
        poller = zmq.Poller()
        for sock in (self.control, self.sources, self.publish, self.history):
            poller.register(sock, zmq.POLLIN)
        heartbeat_s = self.settings.worker_heartbeat_s
        next_heartbeat = next_flush = 0.0
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_heartbeat:
                self.heartbeat()
                next_heartbeat = now + heartbeat_s
            if self.store is not None and now >= next_flush:
                self.store.flush()
                next_flush = now + FLUSH_S
            ready = dict(poller.poll(0 if self.behind else TURN_MS))
            if self.control in ready:
                self.handle_control()
            if self.sources in ready:
                self.handle_sources()
            if self.publish in ready or self.deferred.get(self.publish):
                self.serve(self.publish, self._answer_publish)
            if self.history in ready or self.deferred.get(self.history):
                self.serve(self.history, self._answer_history)

    def close(self) -> None:
        """Write what is pending to the segments, close every socket (then ctx.term returns)."""
        if self.store is not None:
            self.store.close()
            self.store = None
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


def _request_id(frames: list[bytes]) -> int:
    """The request id of a Publish we will not check (too large, or past its peer's share); else 0.

    Only the msgpack is read (C code, bounded by the socket's message limit), none of the
    per-value checks that make a Publish costly.
    """
    if len(frames) != 2 or frames[0] != bytes((protocol.PROTOCOL_VERSION, protocol.MsgType.PUBLISH)):
        return 0
    try:
        body = msgpack.unpackb(frames[1])
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return 0
    request_id = body.get("request_id") if isinstance(body, dict) else None
    return request_id if type(request_id) is int and -(2**63) <= request_id < 2**63 else 0


def _history_error(request_id: str, channel: str, error: str) -> protocol.HistoryReply:
    return protocol.HistoryReply(request_id, channel, [], [], error=error)


def main(argv: Sequence[str] | None = None) -> int:
    settings = RecorderSettings.load(argv)
    setup_logging()
    stop = install_stop_handlers()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    with contextlib.ExitStack() as teardown:  # in reverse: the recorder, the authenticator, the context
        teardown.callback(ctx.term)
        try:
            recorder = start(settings, ctx, teardown)
        except (zmq.ZMQError, PipelineError, OSError) as exc:
            log.error("cannot start", extra=fields(error=str(exc)))
            return 1
        log.info(
            "recorder ready",
            extra=fields(
                publish=settings.publish_endpoint, history=settings.history_endpoint, epoch=recorder.epoch
            ),
        )
        recorder.run(stop)
    log.info("recorder stopped")
    return 0


def start(
    settings: RecorderSettings, ctx: zmq.Context[zmq.Socket[bytes]], teardown: contextlib.ExitStack
) -> Recorder:
    """Prepare the run folder, authentication and sockets; what to undo goes on `teardown`."""
    bound = (settings.publish_endpoint, settings.history_endpoint)
    for folder in {f for f in map(rundir.ipc_folder, bound) if f is not None}:
        rundir.prepare(folder, settings.socket_group)
    if settings.curve_server_secret:
        auth = start_authenticator(ctx, settings.curve_authorized_dir, domain="history")
        teardown.callback(auth.stop)
        authorize(auth, "publish", settings.publish_authorized_dir)
    recorder = Recorder(settings, ctx, teardown)
    rundir.share_sockets(bound, settings.socket_group)
    return recorder
