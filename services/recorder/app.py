"""The recorder process: published channels, and the recent history of every event channel.

Event channels cannot be recomputed, so someone must keep their rows: this process.

- **Publish** (ROUTER `publish_endpoint`, services.recorder.publishing): a publisher's rows
  for `pub-<name>` are checked completely (services.recorder.intake) and a rate budget per
  channel; then recorded and sent on to frames_in as Events under this recorder's epoch,
  or refused with a reason and nothing changed.
- **Sources** (services.recorder.sourcerows): a SUB on the broker's frames_out reads every
  `source-*` channel's Events and records them (only under the placement the broker's
  status tells, times strictly after the last recorded); a channel nobody watches gives
  its slot up to a new one.
- **History** (ROUTER `history_endpoint`, services.recorder.history): the recorded rows of
  a time range.
- **Broker**: it heartbeats as a worker of role RECORDER listing its published channels
  under its epoch (its start time), so a panel holding `pub-x` is placed here.

Rows live in bounded rings (services.recorder.ring) and, with `record_dir`, in a SQLite
store (services.recorder.store) loaded back at start: rows are stored before they are
acknowledged, and rows that cannot be stored are refused. One thread serves all, each
ROUTER peer its fair share of a turn (services.common.fairshare), so a flooding publisher
waits in its own queue, and a publisher that waits for each reply, however fast, is never
refused for its pace.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import zmq

from services.common import protocol, rundir
from services.common.channels import PUBLISHED
from services.common.config import RecorderSettings
from services.common.errors import PipelineError
from services.common.fairshare import FairShare, queued
from services.common.fields import Batch
from services.common.lifecycle import install_stop_handlers
from services.common.logs import fields, setup_logging
from services.common.receive import Refusing
from services.common.security import authorize, secure_client, secure_server, start_authenticator
from services.common.sockets import configure
from services.common.workerlink import WorkerLink
from services.recorder.history import History
from services.recorder.intake import event_channel
from services.recorder.publishing import Publishing
from services.recorder.ring import Rings
from services.recorder.sourcerows import SourceRows
from services.recorder.store import Applied, Store

log = logging.getLogger("zmqstream.recorder")
TURN_MS = 50
"""The longest a loop turn waits: how late a stop, a heartbeat or a flush can be."""
FLUSH_S = 1.0
"""How often the store is made durable against a machine crash (what one may lose), and pruned."""
REQUEST_HWM = 16
"""Messages a peer may queue for us; with MAX_DATA_BYTES each, what one peer can hold of ours."""
REPLY_HWM = 4
"""Replies a peer may leave unread (a HistoryReply is up to MAX_CONTROL_BYTES)."""
ASK_EVERY_S = 0.25
"""The broker's status is asked at most this often for frames waiting for their placement (each
answer lists every channel: a broker of 10,000 pays for it, so not at every frame)."""
LOG_EVERY = 1000
"""Refusals are logged first and then once per this many, not one line each."""


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
            )
            for channel, found in self.store.load(settings.ring_rows).items():
                self.rings.restore(channel, found.schema, found.last_ns, found.batches)
            log.info("history loaded", extra=fields(channels=len(self.rings.channels)))
        self.refused = 0
        self.share = FairShare()
        self.control_guard = Refusing(log, "control message")
        self.sources_guard = Refusing(log, "source rows", LOG_EVERY)

        def socket(kind: int, **options: int) -> zmq.Socket[bytes]:
            sock = configure(ctx.socket(kind), **options)
            self.sockets.append(sock)
            return sock

        self.link = WorkerLink(
            ctx, settings, worker=settings.recorder_id, role=protocol.RECORDER, send_hwm=10_000
        )
        keys = self.link.keys
        self.sockets += (self.link.control, self.link.frames)  # closed with the others
        self.control, self.frames = self.link.control, self.link.frames
        self.sources = socket(zmq.SUB, rcvhwm=10_000, max_message_bytes=protocol.MAX_DATA_BYTES)
        if keys:
            secure_client(self.sources, keys)
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
        self.link.endpoints = {  # as bound (a port 0 is the one chosen): the broker tells plugins
            "publish": self.publish.getsockopt_string(zmq.LAST_ENDPOINT),
            "history": self.history.getsockopt_string(zmq.LAST_ENDPOINT),
        }
        self.sources.connect(settings.frames_out_endpoint)
        self.sources.subscribe(b"source-")
        self.publishing = Publishing(
            settings, self.rings, self.epoch, self._record, self.frames.send, self.heartbeat, self._refusal
        )
        for channel, applied in self.store.applied() if self.store is not None else ():
            self.publishing.remember(channel, applied)
        self.asked_at = -ASK_EVERY_S
        self.ask_due = False
        self.source_rows = SourceRows(settings, self.rings, self.store, self._record, self.ask_placements)
        self.history_answers = History(self.rings, self._refusal)

    # -- the broker ------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Every published channel under this run's epoch: the broker places held ones here; and
        what it says of the source channels (their placements, who watches them)."""
        published = sorted(path for path in self.rings.channels if event_channel(path, PUBLISHED))
        self.link.heartbeat(tuple(published), lambda: dict.fromkeys(published, self.epoch))
        self.ask_placements(force=True)

    def ask_placements(self, force: bool = False) -> None:
        """Ask the broker's status now, or as soon as ASK_EVERY_S since the last ask allows."""
        now = time.monotonic()
        self.ask_due = not force and now - self.asked_at < ASK_EVERY_S
        if not self.ask_due:
            self.asked_at = now
            with contextlib.suppress(zmq.Again):  # a broker away: the next heartbeat asks again
                self.control.send_multipart(protocol.encode(self.source_rows.request()), zmq.NOBLOCK)

    def handle_control(self) -> None:
        for frames in queued(self.control.recv_multipart):
            with self.control_guard:
                message = protocol.decode(frames)
                if isinstance(message, protocol.Welcome) and self.link.welcome(message):
                    self.heartbeat()  # a new broker (or the first): tell it our channels now
                elif isinstance(message, protocol.StatusReply):
                    for refused in self.source_rows.told(message):
                        self._refusal("source rows refused", refused)

    # -- sources ---------------------------------------------------------------------

    def handle_sources(self) -> None:
        for frame in queued(self.sources.recv):
            with self.sources_guard:
                self.source_rows.take(frame)

    # -- common ----------------------------------------------------------------------

    def _record(self, channel: str, batch: Batch, applied: Applied | None) -> None:
        """Stored first (StoreError: nothing recorded, the caller refuses), then served."""
        if self.store is not None:
            self.store.write(channel, batch, applied)
        self.rings.add(channel, batch)

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
        while not stop.is_set() and not self.link.refused:
            now = time.monotonic()
            if self.ask_due and now - self.asked_at >= ASK_EVERY_S:
                self.ask_placements()
            if now >= next_heartbeat:
                self.heartbeat()
                next_heartbeat = now + heartbeat_s
            if self.store is not None and now >= next_flush:
                self.store.flush()
                next_flush = now + FLUSH_S
            behind = self.share.waiting(self.publish) or self.share.waiting(self.history)
            ready = dict(poller.poll(0 if behind else TURN_MS))
            if self.control in ready:
                self.handle_control()
            if self.sources in ready:
                self.handle_sources()
            if self.publish in ready or self.share.waiting(self.publish):
                self.share.serve(self.publish, self.publishing.answer)
            if self.history in ready or self.share.waiting(self.history):
                self.share.serve(self.history, self.history_answers.answer)

    def close(self) -> None:
        """Close the store and every socket (then ctx.term returns)."""
        if self.store is not None:
            self.store.close()
            self.store = None
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


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
    return 1 if recorder.link.refused else 0


def start(
    settings: RecorderSettings, ctx: zmq.Context[zmq.Socket[bytes]], teardown: contextlib.ExitStack
) -> Recorder:
    """Prepare the run folder, authentication and sockets; what to undo goes on `teardown`."""
    bound = (settings.publish_endpoint, settings.history_endpoint)
    teardown.enter_context(rundir.owned(bound, settings.socket_group, "recorder"))  # one per folder
    if settings.curve_server_secret:
        auth = start_authenticator(ctx, settings.curve_authorized_dir, domain="history")
        teardown.callback(auth.stop)
        authorize(auth, "publish", settings.publish_authorized_dir)
    recorder = Recorder(settings, ctx, teardown)
    rundir.share_sockets(bound, settings.socket_group)
    return recorder
