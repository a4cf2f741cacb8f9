"""The generator worker process: runs the tickers and sources the broker assigns and publishes rows.

One thread does the tickers: it sleeps precisely until the next deadline (zmq poll for
long waits so control messages and sources' rows are served, time.sleep for the last two
milliseconds), publishes what is due, and heartbeats its full channel list so a
restarted broker can adopt running channels. Sources (services.sources, run by
services.generator.runner) are polled in threads of their own and hand their rows to this
one, so a source that blocks never delays a tick.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import cast

import zmq

from services.common import protocol
from services.common.channels import SOURCE, UNCHECKED, EventChannel, parse_channel
from services.common.config import WorkerSettings
from services.common.lifecycle import install_stop_handlers
from services.common.logs import fields, setup_logging
from services.common.receive import Refusing
from services.common.waveforms import registry
from services.common.workerlink import WorkerLink
from services.generator.runner import SourceChannels
from services.generator.ticker import Scheduler
from services.sources import registry as source_registry

log = logging.getLogger("zmqstream.generator")
PRECISE_SLEEP_NS = 2_000_000
"""Below this the loop sleeps with time.sleep (a few µs late, see tighten_timer_slack) instead of
polling the control socket (whole milliseconds)."""
STOP_CHECK_NS = 100_000_000
PR_SET_TIMERSLACK = 29
OUTBOX_FRAMES = 64
"""Frames held for one batched send at most: a long catch-up pass still sends as it goes."""
CONTROL_BUDGET_NS = 20_000_000
"""A loop turn serves control messages for at most this long, as the scheduler's pass does."""


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        ctx: zmq.Context[zmq.Socket[bytes]],
        source_cpus: frozenset[int] = frozenset(),
    ) -> None:
        """`source_cpus`: where the sources' threads run (empty: where this thread may)."""
        self.settings = settings
        self.link = WorkerLink(
            ctx, settings, worker=settings.worker_id, role=protocol.GENERATOR, send_hwm=settings.send_hwm
        )
        self.control, self.frames = self.link.control, self.link.frames
        self.guard = Refusing(log, "control message")
        self.outbox: list[bytes] = []
        self.refused: set[str] = set()
        self.scheduler = Scheduler(
            self._publish,
            self._generator_failed,
            publish_interval_ns=round(settings.publish_interval_ms * 1_000_000),
            max_rows=settings.max_rows_per_message,
        )
        self.sources = SourceChannels(
            source_registry, self._send_frame, max_rows=settings.max_rows_per_message, cpus=source_cpus
        )
        self.poller = zmq.Poller()
        """The control socket and the sources' waker: either ends a sleep."""
        self.poller.register(self.control, zmq.POLLIN)
        self.poller.register(self.sources.waker.fd, zmq.POLLIN)

    def _publish(self, channel: str, first_tick: int, epoch: int, columns: list[bytes]) -> None:
        self._send_frame(protocol.rows_frame(channel, first_tick, epoch, columns))

    def _send_frame(self, frame: bytes) -> None:
        self.outbox.append(frame)
        if len(self.outbox) >= OUTBOX_FRAMES:
            self.flush()

    def flush(self) -> None:
        """Send what one pass of the scheduler produced, back to back.

        Messages sent as they are made reach libzmq's I/O thread one by one, a system call
        each; sent together, they leave in a few batched writes. A pass is short (a few
        ticks, or OUTBOX_FRAMES at most), so the first message waits little for the last.
        """
        send = self.frames.send
        for frame in self.outbox:
            send(frame)  # PUB never blocks: beyond its high-water mark it drops
        self.outbox.clear()

    def _generator_failed(self, channel: str, error: Exception) -> None:
        self.refused.add(channel)
        log.error("generator failed; channel stopped", extra=fields(channel=channel, error=repr(error)))

    def _source_failed(self, channel: str, error: str) -> None:
        self.refused.add(channel)
        log.error("source failed to start; channel refused", extra=fields(channel=channel, error=error))

    def heartbeat(self) -> None:
        """Renew the lease; list the channels only if the broker may not know them yet."""
        self.link.heartbeat(
            (self.scheduler.version, self.sources.version),
            lambda: {**self.scheduler.channels, **self.sources.channels},
            self.scheduler.lateness.late,
        )

    def handle_control(self) -> None:
        """Serve queued control messages for at most CONTROL_BUDGET_NS; the rest wait for the next turn.

        10,000 StartTickers at once cost over a second, and a worker that long without a
        heartbeat is taken for dead.
        """
        give_up_at = time.monotonic_ns() + CONTROL_BUDGET_NS
        while cast(int, self.control.get(zmq.EVENTS)) & zmq.POLLIN:  # poll(0) builds a Poller per call
            if time.monotonic_ns() > give_up_at:
                return
            frames = self.control.recv_multipart()
            with self.guard:  # the tickers must go on
                self._dispatch(protocol.decode(frames))

    def _dispatch(self, message: protocol.Message) -> None:
        match message:
            case protocol.Welcome():
                if self.link.welcome(message):  # a new broker (or the first): tell it our channels now
                    self.heartbeat()
            case protocol.StartTicker(channel=channel, epoch=epoch):
                self._start(channel, epoch)
            case protocol.StopTicker(channel=channel, epoch=epoch):
                if self.scheduler.stop(channel, epoch):
                    log.info("ticker stopped", extra=fields(channel=channel, epoch=epoch))
                elif self.sources.stop(channel, epoch):
                    log.info("source stopped", extra=fields(channel=channel, epoch=epoch))

    def _start(self, channel: str, epoch: int) -> None:
        if channel in self.refused:  # already logged; the broker re-asks on every heartbeat
            return
        if self.scheduler.advance_epoch(channel, epoch) or self.sources.advance_epoch(channel, epoch):
            return  # running already (the broker re-placed it here)
        spec = parse_channel(channel, UNCHECKED)
        if isinstance(spec, EventChannel):
            self._start_source(spec, epoch)
            return
        generator = registry().get(spec.generator)
        if generator is None:
            self.refused.add(channel)
            log.error("unknown generator", extra=fields(channel=channel))
            return
        self.scheduler.start(spec, generator, time.time_ns(), epoch)
        log.info("ticker started", extra=fields(channel=channel, epoch=epoch))

    def _start_source(self, channel: EventChannel, epoch: int) -> None:
        """A source channel, on a thread of its own (a published one is the recorder's, not ours)."""
        if channel.kind != SOURCE:
            self.refused.add(channel.path)
            log.error("published channels are the recorder's, not ours", extra=fields(channel=channel.path))
            return
        if not self.sources.start(channel, epoch):
            self.refused.add(channel.path)
            log.error("unknown source", extra=fields(channel=channel.path))
            return
        log.info("source started", extra=fields(channel=channel.path, epoch=epoch))

    def run(self, stop: threading.Event) -> None:
        tighten_timer_slack()
        heartbeat_ns = round(self.settings.worker_heartbeat_s * 1e9)
        next_heartbeat = 0
        scheduler = self.scheduler
        while not stop.is_set() and not self.link.refused:
            now = time.time_ns()
            if now >= next_heartbeat:
                self.heartbeat()
                next_heartbeat = now + heartbeat_ns
            scheduler.run_due(now)
            self.flush()
            self.handle_control()
            behind = self.sources.drain(self._source_failed)
            self.flush()
            deadline = scheduler.next_deadline()
            wake = now if behind else min(next_heartbeat, now + STOP_CHECK_NS)
            if deadline is not None:
                wake = min(wake, deadline)
            remaining = wake - time.time_ns()
            if remaining > PRECISE_SLEEP_NS:
                self.poller.poll((remaining - PRECISE_SLEEP_NS) // 1_000_000)
            elif remaining > 0:
                time.sleep(remaining / 1e9)

    def close(self) -> None:
        self.sources.close()
        self.link.close()


def tighten_timer_slack() -> None:
    """Let time.sleep wake within microseconds of its deadline on Linux, not the default 50 µs
    later (prctl PR_SET_TIMERSLACK, this thread only); elsewhere, leave it be."""
    prctl = getattr(ctypes.CDLL(None), "prctl", None)
    if prctl is not None:
        prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)


def pin_ticker_thread(ctx: zmq.Context[zmq.Socket[bytes]], cpu: int) -> frozenset[int]:
    """Give the ticker thread `cpu` and keep libzmq's I/O thread on the other CPUs; return those.

    The ticker is late whenever another thread holds its CPU; on a busy machine that is
    most of its lateness (see BENCHMARKS.md). Must run before the first socket exists,
    since libzmq starts its I/O thread then. Threads started later by this one (the
    sources') would inherit its one CPU: they are given the others.
    """
    others = frozenset(os.sched_getaffinity(0) - {cpu})
    for other in sorted(others):
        ctx.set(zmq.THREAD_AFFINITY_CPU_ADD, other)
    os.sched_setaffinity(0, {cpu})  # on Linux: this thread only
    log.info("ticker thread pinned", extra=fields(cpu=cpu))
    return others


def main(argv: Sequence[str] | None = None) -> int:
    settings = WorkerSettings.load(argv)
    setup_logging()
    stop = install_stop_handlers()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    source_cpus: frozenset[int] = frozenset()
    if settings.ticker_cpu != -1:
        source_cpus = pin_ticker_thread(ctx, settings.ticker_cpu)
    worker = Worker(settings, ctx, source_cpus)
    # Installed generators and sources are found now, not at the first StartTicker: scanning
    # the entry points takes ~0.1 s, which would stall every ticker in a burst of starts.
    registry()
    source_registry()
    log.info("worker ready", extra=fields(worker=settings.worker_id, control=settings.control_endpoint))
    try:
        worker.run(stop)
    finally:
        worker.close()
        ctx.term()
        log.info("worker stopped", extra=fields(worker=settings.worker_id))
    return 1 if worker.link.refused else 0
