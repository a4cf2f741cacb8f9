"""Source channels' rows, read from frames_out: the newest epoch only, times strictly after the last
recorded, in the schema of the channel's current instance."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from services.common import protocol
from services.common.config import RecorderSettings
from services.common.fields import InvalidRows
from services.common.logs import fields
from services.recorder.intake import is_source
from services.recorder.publishing import Record
from services.recorder.ring import Rings
from services.recorder.segments import Store

log = logging.getLogger("zmqstream.recorder")


@dataclass
class SourceRows:
    """What the recorder keeps of every `source-*` channel it reads."""

    settings: RecorderSettings
    rings: Rings
    store: Store | None
    record: Record
    source_epochs: dict[str, int] = field(default_factory=dict)
    source_channels: int = field(init=False)
    """Source channels recorded (a channel is kept for good): at most half of max_channels."""

    def __post_init__(self) -> None:
        self.source_channels = sum(map(is_source, self.rings.channels))

    def take(self, frame: bytes) -> None:
        """Record a source's Events frame; InvalidRows says why its rows are dropped."""
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
            self.record(channel, batch)
            self.source_channels += ring is None
