"""Publishers' rows: a Publish checked completely and against its channel's budget, then recorded
and sent on to frames_in under the recorder's epoch, or refused with a reason and nothing changed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgpack

from services.common import protocol
from services.common.config import RecorderSettings
from services.common.errors import ProtocolError
from services.common.fairshare import MAX_DEFERRED, PER_PEER_PER_TURN
from services.common.fields import Batch
from services.common.logs import fields
from services.common.wording import count
from services.recorder.intake import Budget, publish_problem, size_problem
from services.recorder.ring import Rings

log = logging.getLogger("zmqstream.recorder")
Record = Callable[[str, Batch], None]
"""record(channel, batch): into the ring, and the segments if any."""


@dataclass
class Publishing:
    """Answers Publish messages: all rows recorded and sent on, or none and why."""

    settings: RecorderSettings
    rings: Rings
    epoch: int
    record: Record
    send: Callable[[bytes], None]
    """A frame to frames_in."""
    begun: Callable[[], None]
    """A new channel exists: tell the broker."""
    refusal: Callable[[str, str], None]
    """refusal(what, why): counted and logged."""
    budgets: dict[str, Budget] = field(default_factory=dict)

    def answer(self, frames: list[bytes], over_share: bool) -> protocol.PublishReply:
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
            self.refusal("publish refused", reply.error)
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
            one = len(batch) == 1
            over = f"{count(len(batch), 'row')} now {'is' if one else 'are'} over it"
            retry = "send it again later" if one else "send them again later, or fewer at once"
            limit = f"{channel} accepts at most {count(rate, 'row')}/s (bursts of {count(rate, 'row')})"
            problem = f"{limit}: {over}; {retry}"
        if problem:
            told = ring.schema if ring is not None and batch.schema != ring.schema else None
            return protocol.PublishReply(message.request_id, 0, problem, dict(told.fields) if told else {})
        budget.take(len(batch))
        self.budgets[channel] = budget
        self.record(channel, batch)
        self.send(protocol.events_frame(channel, self.epoch, batch))
        if ring is None:
            log.info("published channel begun", extra=fields(channel=channel, schema=batch.schema.describe()))
            self.begun()  # the broker may place a held channel here at once
        return protocol.PublishReply(message.request_id, len(batch))


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
