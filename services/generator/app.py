"""The generator worker process: runs the tickers the broker assigns and publishes rows.

One thread does everything: it sleeps precisely until the next deadline (zmq poll for
long waits so control messages are served, time.sleep for the last two milliseconds),
publishes what is due, and heartbeats its full channel list so a restarted broker can
adopt running channels.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence

import msgpack
import zmq

from services.common import protocol
from services.common.channels import UNCHECKED, parse_path
from services.common.config import WorkerSettings
from services.common.errors import PipelineError
from services.common.lifecycle import install_stop_handlers
from services.common.logs import fields, setup_logging
from services.common.security import secure_client
from services.common.sockets import advertised, configure, host_of
from services.generator.ticker import Scheduler
from services.generator.waveforms import registry

log = logging.getLogger("zmqstream.generator")
ROWS_HEADER = bytes((protocol.PROTOCOL_VERSION, protocol.MsgType.ROWS))
PRECISE_SLEEP_NS = 2_000_000
"""Below this the loop sleeps with time.sleep (~0.2 ms precise) instead of polling (~1 ms)."""
STOP_CHECK_NS = 100_000_000


class Worker:
    def __init__(self, settings: WorkerSettings, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        self.settings = settings
        self.control = configure(ctx.socket(zmq.DEALER))
        self.frames = configure(ctx.socket(zmq.PUB), sndhwm=settings.send_hwm)
        if settings.curve_client_secret:
            for sock in (self.control, self.frames):
                secure_client(sock, settings.curve_client_secret, settings.curve_server_public)
        self.control.connect(settings.control_endpoint)
        self.frames_endpoint = ""
        self.packer = msgpack.Packer()
        self.refused: set[str] = set()
        self.scheduler = Scheduler(
            self._publish,
            self._generator_failed,
            publish_interval_ns=round(settings.publish_interval_ms * 1_000_000),
            max_rows=settings.max_rows_per_message,
        )

    def _publish(self, channel: str, times_ns: list[int], columns: list[list[float]]) -> None:
        payload = self.packer.pack({"times_ns": times_ns, "columns": columns})
        self.frames.send_multipart((protocol.topic(channel), ROWS_HEADER, payload))

    def _generator_failed(self, channel: str, error: Exception) -> None:
        self.refused.add(channel)
        log.error("generator failed; channel stopped", extra=fields(channel=channel, error=repr(error)))

    def heartbeat(self) -> None:
        message = protocol.WorkerHeartbeat(
            worker=self.settings.worker_id,
            channels=self.scheduler.channels,
            pid=os.getpid(),
            ticks_late=self.scheduler.lateness.late,
        )
        self.control.send_multipart(protocol.encode(message))

    def handle_control(self) -> None:
        while self.control.poll(0):
            frames = self.control.recv_multipart()
            try:
                self._dispatch(protocol.decode(frames))
            except PipelineError as exc:
                log.warning("control message refused", extra=fields(error=str(exc)))

    def _dispatch(self, message: protocol.Message) -> None:
        match message:
            case protocol.Welcome(frames_endpoint=endpoint):
                self._publish_to(advertised(endpoint, host_of(self.settings.control_endpoint)))
            case protocol.StartTicker(channel=channel) if channel not in self.scheduler:
                self._start(channel)
            case protocol.StopTicker(channel=channel) if channel in self.scheduler:
                self.scheduler.stop(channel)
                log.info("ticker stopped", extra=fields(channel=channel))

    def _publish_to(self, endpoint: str) -> None:
        """(Re)connect the PUB socket to the broker's frames_in, as the Welcome names it."""
        if endpoint == self.frames_endpoint:
            return
        if self.frames_endpoint:
            self.frames.disconnect(self.frames_endpoint)
        self.frames.connect(endpoint)
        self.frames_endpoint = endpoint
        log.info("publishing frames", extra=fields(endpoint=endpoint))

    def _start(self, channel: str) -> None:
        if channel in self.refused:  # already logged; the broker re-asks on every heartbeat
            return
        spec = parse_path(channel, UNCHECKED)
        generator = registry().get(spec.generator)
        if generator is None:
            self.refused.add(channel)
            log.error("unknown generator", extra=fields(channel=channel))
            return
        self.scheduler.start(spec, generator, time.time_ns())
        log.info("ticker started", extra=fields(channel=channel))

    def run(self, stop: threading.Event) -> None:
        heartbeat_ns = round(self.settings.worker_heartbeat_s * 1e9)
        next_heartbeat = 0
        scheduler = self.scheduler
        while not stop.is_set():
            now = time.time_ns()
            if now >= next_heartbeat:
                self.heartbeat()
                next_heartbeat = now + heartbeat_ns
            scheduler.run_due(now)
            self.handle_control()
            deadline = scheduler.next_deadline()
            wake = min(next_heartbeat, now + STOP_CHECK_NS)
            if deadline is not None:
                wake = min(wake, deadline)
            remaining = wake - time.time_ns()
            if remaining > PRECISE_SLEEP_NS:
                self.control.poll((remaining - PRECISE_SLEEP_NS) // 1_000_000)
            elif remaining > 0:
                time.sleep(remaining / 1e9)

    def close(self) -> None:
        self.control.close()
        self.frames.close()


def main(argv: Sequence[str] | None = None) -> int:
    settings = WorkerSettings.load(argv)
    setup_logging()
    stop = install_stop_handlers()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    worker = Worker(settings, ctx)
    log.info("worker ready", extra=fields(worker=settings.worker_id, control=settings.control_endpoint))
    try:
        worker.run(stop)
    finally:
        worker.close()
        ctx.term()
        log.info("worker stopped", extra=fields(worker=settings.worker_id))
    return 0
