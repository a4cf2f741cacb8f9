"""Source channels' rows, read from frames_out: only under the placement the broker tells
(services.common.fencing), times strictly after the last recorded, in the schema of the
channel's current instance; and their slots, freed for new channels when nobody watches them.

The recorder asks the broker for its status (StatusRequest) every heartbeat, and at once
when a frame comes for a channel whose placement it does not know yet, or of a newer epoch
than it was told (the channel moved, or the frame is forged); such frames wait (a few per
channel) for the answer, and are taken only if their epoch is then the placement. A frame
of an older epoch than told is refused at once: a forged or superseded epoch is never adopted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.common import protocol
from services.common.config import RecorderSettings
from services.common.fencing import Fence, fence
from services.common.fields import InvalidRows
from services.common.logs import fields
from services.recorder.intake import is_source
from services.recorder.publishing import Record
from services.recorder.ring import Rings
from services.recorder.store import Store

log = logging.getLogger("zmqstream.recorder")
WAITING_PER_CHANNEL = 64
"""Frames of one channel kept until the broker tells its placement; more are dropped."""
WAITING_CHANNELS = 256
"""Channels whose frames may wait for their placement at once."""
ASKED = "placements-"
"""The recorder's status requests are this and their number."""


@dataclass
class SourceRows:
    """What the recorder keeps of every `source-*` channel it reads."""

    settings: RecorderSettings
    rings: Rings
    store: Store | None
    record: Record
    ask_placements: Callable[[], None]
    """Ask the broker for its status now (the answer comes to `told`)."""
    placements: dict[str, int] = field(default_factory=dict)
    """Each source channel's epoch as the broker last told."""
    watched_at: dict[str, float] = field(default_factory=dict)
    """When each recorded source channel was last watched (monotonic): held by a plugin, or
    begun; the least recently watched of those nobody watches gives its slot up first."""
    waiting: dict[str, tuple[int, list[protocol.Events]]] = field(default_factory=dict)
    """Frames of each channel waiting for the broker's word, and the first status request sent
    after they came: an answer to an earlier one may not know their placement yet."""
    asks: int = 0
    """Status requests made so far (their ids count them: ASKED + number)."""
    source_epochs: dict[str, int] = field(default_factory=dict)
    """The epoch of each recorded source channel's last rows: a new one is a new instance."""

    def take(self, frame: bytes) -> None:
        """Record a source's Events frame, or keep it until its placement is told; InvalidRows
        says why its rows are dropped."""
        channel, message = protocol.decode_data(frame)
        if not isinstance(message, protocol.Events) or not message.times or not is_source(channel):
            return
        placement = self.placements.get(channel, 0)
        verdict = fence(placement, message.epoch)
        if verdict is Fence.REFUSE and message.epoch < placement:  # superseded: the broker said so
            raise InvalidRows(f"{channel}: epoch {message.epoch}, the placement is {placement}")
        if verdict is not Fence.TAKE or channel in self.waiting:  # in order behind those waiting
            self._wait(channel, message)  # untold, or newer than told: moved, or forged; the broker says
            return
        self._record(channel, message)

    def request(self) -> protocol.StatusRequest:
        """The next status request to send the broker (numbered: see `waiting`)."""
        self.asks += 1
        return protocol.StatusRequest(f"{ASKED}{self.asks}")

    def _wait(self, channel: str, message: protocol.Events) -> None:
        if channel not in self.waiting:
            if len(self.waiting) >= WAITING_CHANNELS:
                raise InvalidRows(
                    f"{channel}: no placement told, and {WAITING_CHANNELS} channels wait for theirs"
                )
            self.waiting[channel] = (self.asks + 1, [])
            self.ask_placements()
        waiting = self.waiting[channel][1]
        if len(waiting) >= WAITING_PER_CHANNEL:
            raise InvalidRows(f"{channel}: no placement told yet, {WAITING_PER_CHANNEL} frames wait for it")
        waiting.append(message)

    def told(self, status: protocol.StatusReply) -> list[str]:
        """The broker's placements and watchers of source channels: waiting frames are recorded or
        refused; why each refused one was, for the log."""
        now = time.monotonic()
        self.placements = {}
        for path, channel in status.channels.items():
            epoch = channel.get("epoch")
            if is_source(path) and type(epoch) is int:
                self.placements[path] = epoch
                if channel.get("subscribers") and path in self.rings.channels:
                    self.watched_at[path] = now
        answered = status.request_id.removeprefix(ASKED)
        number = int(answered) if answered.isascii() and answered.isdigit() else 0
        refused = []
        for path, (first, messages) in list(self.waiting.items()):
            if first > number:  # asked before these frames came: the next answer tells
                continue
            del self.waiting[path]
            for message in messages:
                placement = self.placements.get(path, 0)
                if fence(placement, message.epoch) is not Fence.TAKE:
                    refused.append(f"{path}: epoch {message.epoch}, the placement is {placement or 'none'}")
                    continue
                try:
                    self._record(path, message)
                except InvalidRows as exc:
                    refused.append(str(exc))
        return refused

    def _record(self, channel: str, message: protocol.Events) -> None:
        ring = self.rings.channels.get(channel)
        if ring is None:
            self._make_room(channel)
        # A worker whose clock runs ahead: its rows would make every correct one after them a step back.
        batch = message.batch.until(time.time_ns() + round(self.settings.max_clock_skew_ms * 1e6))
        if not len(batch):
            raise InvalidRows(f"{channel}: rows ahead of the recorder's clock")
        new_instance = message.epoch != self.source_epochs.get(channel, message.epoch)
        if ring is not None:
            batch = batch.after(ring.last_time)
            if len(batch) and batch.schema != ring.schema and new_instance:
                # A new instance of the source (moved to another worker) with other fields: its schema
                # from now on, as the plugin streams it; within one run, the worker enforces its schema.
                log.info(
                    "source schema changed", extra=fields(channel=channel, schema=batch.schema.describe())
                )
                self.rings.reschema(channel, batch.schema)
                if self.store is not None:
                    self.store.forget(channel)  # its rows of the old schema are not served again
            else:
                ring.schema.check(batch)  # InvalidRows: dropped, as the plugin drops them
        if len(batch):
            self.record(channel, batch, None)
            self.source_epochs[channel] = message.epoch
            if ring is None:
                self.watched_at[channel] = time.monotonic()

    def _make_room(self, channel: str) -> None:
        """A slot for a new source channel, freeing the least recently watched one nobody watches if
        sources have all theirs; InvalidRows if every one is watched."""
        if len(self.rings.channels) >= self.settings.max_channels:
            raise InvalidRows(f"{channel}: the recorder keeps at most {self.settings.max_channels} channels")
        # Any viewer can open source-<name>-<tick> for as many ticks as it likes: sources get half
        # the channels, so publishers always can begin theirs, and give up the ones nobody watches.
        sources_cap = max(1, self.settings.max_channels // 2)
        sources = [path for path in self.rings.channels if is_source(path)]
        if len(sources) < sources_cap:
            return
        now = time.monotonic()
        unwatched = [path for path in sources if path not in self.placements or not self._held(path, now)]
        if not unwatched:
            raise InvalidRows(
                f"{channel}: the recorder keeps at most {sources_cap} source channels, all watched"
            )
        freed = min(unwatched, key=lambda path: self.watched_at.get(path, 0.0))
        log.info("source channel released", extra=fields(channel=freed, for_channel=channel))
        self.rings.forget(freed)
        if self.store is not None:
            self.store.forget(freed)
        self.watched_at.pop(freed, None)
        self.source_epochs.pop(freed, None)

    def _held(self, path: str, now: float) -> bool:
        """Watched at the broker's last word (its status, once a heartbeat)."""
        return now - self.watched_at.get(path, 0.0) <= 2 * self.settings.worker_heartbeat_s
