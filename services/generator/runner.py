"""A worker's source channels: a thread per source polls it, the main thread publishes its rows.

A source may block (a device read, an HTTP call), so it never runs in the thread that
publishes the tickers' rows. Its own thread polls it on a drift-free grid (poll k at
k * tick since the Unix epoch; polls a slow source misses are skipped, never run back to
back), stamps records that have no time, orders them by time and turns them into a typed
batch (fields.from_records, the first batch fixing the channel's schema), then hands the
batch over (services.generator.handoff). Converting there, not in the main thread, keeps a
source's 1,000 rows of 64 fields from holding up every ticker for the tens of
milliseconds they take (the GIL switches threads every 5 ms). The main thread keeps the
channel's times strictly increasing and publishes Events under the channel's current
epoch, which it alone changes.

Nothing a source does stops the worker: a poll that raises or returns garbage is logged
at most every LOG_EVERY_S per channel and tried again; a batch that changes a field's
kind is dropped with the field named, and the channel goes on with its schema.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.common import fields as typed
from services.common import protocol
from services.common.channels import EventChannel
from services.common.fields import Batch, InvalidRows, Schema
from services.common.logs import fields
from services.generator.handoff import Handoff, Waker
from services.generator.placements import Placements
from services.sources import SourceClass

log = logging.getLogger("zmqstream.sources")
QUEUE_BYTES = 4 * 1024 * 1024
"""Rows one source may have waiting for the main thread; past it the oldest batches drop."""
MAX_AHEAD_NS = 250_000_000
"""Rows stamped further ahead of the worker's clock are dropped: one such row would make
every later, correct row look like a step back (the plugin's default clock skew, too)."""
LOG_EVERY_S = 10.0
CLOSE_WAIT_S = 0.5
"""How long stopping waits for sources to close: a stop (SIGTERM) must end the worker within a
second, and a source blocked in poll() may never return (its thread is a daemon)."""
DRAIN_BUDGET_NS = 10_000_000
"""The main thread converts rows for at most this long per turn, then serves the tickers."""
RECORD_BYTES = 64
"""What a record costs beyond its values, for the hand-off's bound."""
VALUE_BYTES = 16


class Throttle:
    """Says yes at most once every `every_s`: one log line per reason, not one per poll."""

    def __init__(self, every_s: float = LOG_EVERY_S) -> None:
        self.every_s = every_s
        self._last = -every_s

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return False
        self._last = now
        return True

    def log(self, level: int, message: str, **values: Any) -> None:
        if self.ready():
            log.log(level, message, extra=fields(**values))


@dataclass(frozen=True, slots=True)
class Polled:
    """One poll's records, each with a time, in strictly increasing time order."""

    records: list[dict[str, Any]]
    dropped: int
    """Records of this poll dropped for a time not after the one before them."""


def prepare(records: Any, polled_at_ns: int, max_rows: int) -> tuple[Polled, int]:
    """A poll's result as Polled and its size in bytes; InvalidRows says what is wrong with it.

    Checked only as far as holding it safely needs (records are maps of scalars, at most
    `max_rows`); the main thread's from_records checks the rest.
    """
    if records is None:
        return Polled([], 0), 0
    if isinstance(records, Mapping | str | bytes):
        raise InvalidRows(f"poll() must return a list of records, got {type(records).__name__}")
    try:
        taken = list(itertools.islice(records, max_rows + 1))
    except TypeError:
        raise InvalidRows(f"poll() must return a list of records, got {type(records).__name__}") from None
    if len(taken) > max_rows:
        raise InvalidRows(f"poll() returned more than {max_rows} records")
    stamp = polled_at_ns / 1_000_000
    kept: list[dict[str, Any]] = []
    previous = -1
    size = 0
    for number, record in enumerate(taken, 1):
        if not isinstance(record, Mapping):
            raise InvalidRows(f"record {number}: expected a map, got {type(record).__name__}")
        row = dict(record)
        row.setdefault(typed.TIME_KEY, stamp)
        try:
            time_ns = typed.parse_time(row[typed.TIME_KEY])
        except InvalidRows as exc:
            raise InvalidRows(f"record {number}: {exc}") from None
        if time_ns <= previous:
            continue
        previous = time_ns
        size += RECORD_BYTES
        for key, value in row.items():
            if not isinstance(key, str):
                raise InvalidRows(f"record {number}: field names must be strings, got {type(key).__name__}")
            typed.kind_of(value)  # a scalar, or InvalidRows
            size += len(key) + (len(value) if isinstance(value, str) else VALUE_BYTES)
        kept.append(row)
    return Polled(kept, len(taken) - len(kept)), size


class SourceThread(threading.Thread):
    """Makes the source, polls it every tick until stopped, then closes it."""

    def __init__(
        self,
        channel: EventChannel,
        make: SourceClass,
        handoff: Handoff[Batch],
        waker: Waker,
        max_rows: int,
        cpus: frozenset[int] = frozenset(),
    ) -> None:
        super().__init__(name=f"source {channel.path}", daemon=True)
        self.cpus = cpus
        self.channel = channel
        self.make = make
        self.handoff = handoff
        self.waker = waker
        self.max_rows = max_rows
        self.stopping = threading.Event()
        self.failed = ""
        """Why the source could not be made; the main thread refuses the channel."""
        self.poll_errors = 0
        self.polls_done = 0
        self.schema: Schema | None = None
        self.batches_refused = 0
        """Batches that did not fit the channel's schema."""
        self.rows_dropped = 0
        """Rows of a poll whose time was not after the row before them."""
        self._errors_log = Throttle()
        self._refused_log = Throttle()

    def run(self) -> None:
        if self.cpus:  # off a pinned ticker's CPU, which this thread inherited
            os.sched_setaffinity(0, self.cpus)
        try:
            source = self.make(self.channel)
        except Exception as exc:
            self.failed = repr(exc)[:300]
            self.waker.wake()
            return
        try:
            self._poll_every_tick(source)
        finally:
            close = getattr(source, "close", None)
            try:
                if callable(close):
                    close()
            except Exception as exc:
                log.error(
                    "source failed to close", extra=fields(channel=self.channel.path, error=repr(exc)[:300])
                )

    def _poll_every_tick(self, source: Any) -> None:
        tick_ns = max(1, self.channel.tick_ns)
        due = (time.time_ns() // tick_ns + 1) * tick_ns
        while not self.stopping.wait(max(0.0, (due - time.time_ns()) / 1e9)):
            try:
                self._poll(source)
            except Exception:  # a bug of ours on some input: this source's loop must go on
                if self._errors_log.ready():
                    log.exception("source rows failed", extra=fields(channel=self.channel.path))
            self.polls_done += 1
            # The next slot of the grid after now: a poll that overran skips the slots it missed.
            due = max(due + tick_ns, (time.time_ns() // tick_ns + 1) * tick_ns)

    def _poll(self, source: Any) -> None:
        """Poll once and hand over what came back as a batch of the channel's schema."""
        try:
            polled, size = prepare(source.poll(), time.time_ns(), self.max_rows)
        except Exception as exc:
            self.poll_errors += 1
            self._errors_log.log(
                logging.ERROR,
                "source poll failed; trying again next tick",
                channel=self.channel.path,
                error=repr(exc)[:300],
                failures=self.poll_errors,
            )
            return
        self.rows_dropped += polled.dropped
        if not polled.records:
            return
        try:
            batch = typed.from_records(polled.records, self.schema, self.max_rows)
        except InvalidRows as exc:
            self.batches_refused += 1
            self._refused_log.log(
                logging.ERROR,
                "source rows refused: they do not fit the channel's schema",
                channel=self.channel.path,
                error=str(exc)[:300],
                schema=self.schema.describe() if self.schema else "",
                batches_refused=self.batches_refused,
            )
            return
        if self.schema is None:
            self.schema = batch.schema
        self.handoff.put(batch, size)


@dataclass(slots=True)
class Running:
    channel: EventChannel
    epoch: int
    thread: SourceThread
    handoff: Handoff[Batch]
    last_ns: int = -1
    """The time of the last row published: later rows only."""
    rows_dropped: int = 0
    """Rows whose time was not after the channel's last, or too far ahead."""
    drops_logged: int = 0
    dropped_log: Throttle = field(default_factory=Throttle)


class SourceChannels(Placements[Running]):
    """The source channels one worker runs, from StartTicker to StopTicker, seen from its main thread."""

    def __init__(
        self,
        sources: Callable[[], Mapping[str, SourceClass]],
        send: Callable[[bytes], None],
        *,
        max_rows: int,
        queue_bytes: int = QUEUE_BYTES,
        cpus: frozenset[int] = frozenset(),
    ) -> None:
        super().__init__()
        self._sources = sources
        self.cpus = cpus
        self._send = send
        self.max_rows = max_rows
        self.queue_bytes = queue_bytes
        self.waker = Waker()

    def start(self, channel: EventChannel, epoch: int) -> bool:
        """Run a source channel under `epoch`; False if no source has its name."""
        if self.advance_epoch(channel.path, epoch):
            return True
        make = self._sources().get(channel.name)
        if make is None:
            return False
        handoff: Handoff[Batch] = Handoff(self.queue_bytes, self.waker)
        thread = SourceThread(channel, make, handoff, self.waker, self.max_rows, self.cpus)
        self._place(channel.path, Running(channel, epoch, thread, handoff))
        thread.start()
        return True

    def stop(self, path: str, epoch: int | None = None) -> bool:
        """Stop a channel (only if it runs under `epoch` or older, when given); its thread closes the source.

        A poll under way finishes first, in its thread; its rows are never published.
        """
        running = self._unplace(path, epoch)
        if running is None:
            return False
        running.thread.stopping.set()
        return True

    def drain(self, refuse: Callable[[str, str], None]) -> bool:
        """Publish what the sources handed over; True if time ran out with some left.

        `refuse(path, why)` is told of a source that could not be made; its channel stops.
        Costs nothing (no system call) while no source has handed anything over.
        """
        if not self.waker.pending:
            return False
        self.waker.clear()
        give_up_at = time.monotonic_ns() + DRAIN_BUDGET_NS
        for path, running in list(self._placed.items()):
            if time.monotonic_ns() > give_up_at:
                self.waker.wake()  # the rest at the next turn
                return True
            if running.thread.failed:
                self.stop(path)
                refuse(path, running.thread.failed)
                continue
            for batch in running.handoff.take():
                self._publish(running, batch)
        return False

    def _publish(self, running: Running, batch: Batch) -> None:
        path = running.channel.path
        fresh = batch.after(running.last_ns).until(time.time_ns() + MAX_AHEAD_NS)
        running.rows_dropped += len(batch) - len(fresh)
        thread = running.thread
        drops = running.rows_dropped + thread.rows_dropped + running.handoff.dropped
        if drops > running.drops_logged and running.dropped_log.ready():
            running.drops_logged = drops
            log.warning(
                "source rows dropped: times not after the last or too far ahead, or over the queue's bytes",
                extra=fields(
                    channel=path,
                    rows=running.rows_dropped + thread.rows_dropped,
                    batches_over_queue_bytes=running.handoff.dropped,
                ),
            )
        if not fresh.times:
            return
        running.last_ns = fresh.times[-1]
        self._send_within_limit(path, running.epoch, fresh)

    def _send_within_limit(self, path: str, epoch: int, batch: Batch) -> None:
        """Events frames no larger than a socket accepts (halves of the batch until they fit)."""
        frame = protocol.events_frame(path, epoch, batch)
        if len(frame) <= protocol.MAX_DATA_BYTES or len(batch) == 1:
            self._send(frame)
            return
        middle = len(batch) // 2
        self._send_within_limit(path, epoch, batch.rows(0, middle))
        self._send_within_limit(path, epoch, batch.rows(middle, len(batch)))

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Stop every source; wait up to `wait_s` in all for their threads to close them."""
        threads = [running.thread for running in self._placed.values()]
        for path in list(self._placed):
            self.stop(path)
        give_up_at = time.monotonic() + wait_s
        for thread in threads:
            thread.join(max(0.0, give_up_at - time.monotonic()))
        if not any(thread.is_alive() for thread in threads):  # else a late wake() could hit a reused fd
            self.waker.close()
