"""Publishers' rows: a Publish checked completely and against its channel's budget, then recorded
and sent on to frames_in under the recorder's epoch, or refused with a reason and nothing changed.

Over the budget alone, the reply says when the same rows will be taken (or how many at most
go at once), so a publisher paces itself instead of losing rows. A publisher's batch sent
again with the same sequence number (its reply lost) is answered as before, not applied twice,
also after a restart when the recorder has a record folder (services.recorder.store keeps it).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
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
from services.recorder.store import MAX_PUBLISHERS, Applied, StoreError

log = logging.getLogger("zmqstream.recorder")
Record = Callable[[str, Batch, Applied | None], None]
"""record(channel, batch, applied): into the store if any, with the publisher's batch it is
(StoreError: nothing recorded), then the ring."""


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
    sequences: OrderedDict[tuple[str, str], Applied] = field(default_factory=OrderedDict)
    """(publisher, channel) → its last applied batch, least recent first (~200 bytes each)."""

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
        if reply.error and not reply.wait_ms:  # a wait is pacing, not a refusal
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
        if message.publisher and message.sequence:
            again = self._retried(message)
            if again is not None:
                return again
        ring = self.rings.channels.get(channel)
        now_ns = time.time_ns()
        batch = Batch(message.times, message.columns)
        if message.stamp:  # on arrival, strictly increasing, as Grafana stamps what is pushed to it
            first = max(now_ns, ring.last_time + 1) if ring is not None else now_ns
            batch = Batch(list(range(first, first + len(batch))), batch.columns)
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
        if problem:
            told = ring.schema if ring is not None and batch.schema != ring.schema else None
            return protocol.PublishReply(message.request_id, 0, problem, dict(told.fields) if told else {})
        now = time.monotonic()
        rate = self.settings.max_rows_per_s
        budget = self.budgets.get(channel) or Budget(rate, rate, now)
        if not budget.allows(len(batch), now):
            return _over_budget(message.request_id, channel, len(batch), rate, budget)
        prev = ring.last_time if ring is not None else 0  # tells a reader that missed rows before these
        applied = (
            Applied(message.publisher, message.sequence, len(batch))
            if message.publisher and message.sequence
            else None
        )
        try:
            self.record(channel, batch, applied)
        except StoreError as exc:
            return protocol.PublishReply(message.request_id, 0, str(exc))
        budget.take(len(batch))
        self.budgets[channel] = budget
        if applied is not None:
            self.remember(channel, applied)  # recorded: a copy of it now changes nothing
        self.send(protocol.events_frame(channel, self.epoch, batch, prev))
        if ring is None:
            log.info("published channel begun", extra=fields(channel=channel, schema=batch.schema.describe()))
            self.begun()  # the broker may place a held channel here at once
        return protocol.PublishReply(message.request_id, len(batch))

    def _retried(self, message: protocol.Publish) -> protocol.PublishReply | None:
        """The answer to a batch this publisher sent before (its reply lost), else None: apply it."""
        key = (message.publisher, message.channel)
        last = self.sequences.get(key)
        if last is None or message.sequence > last.sequence:
            return None
        self.sequences.move_to_end(key)
        if message.sequence == last.sequence:
            return protocol.PublishReply(message.request_id, last.accepted)  # applied once already
        return protocol.PublishReply(
            message.request_id,
            0,
            f"batch {message.sequence} of publisher {message.publisher[:64]!r} is older than its last "
            f"applied one ({last.sequence}) in {message.channel}: a stale retry, its answer was given before",
        )

    def remember(self, channel: str, applied: Applied) -> None:
        """A publisher's last applied batch in `channel`, so that sending it again changes nothing."""
        key = (applied.publisher, channel)
        self.sequences[key] = applied
        self.sequences.move_to_end(key)
        while len(self.sequences) > MAX_PUBLISHERS:
            self.sequences.popitem(last=False)


def _over_budget(
    request_id: int, channel: str, rows: int, rate: float, budget: Budget
) -> protocol.PublishReply:
    """A refusal for the rows-per-second budget alone: when to send the same rows, or how many at most."""
    burst = max(1, int(rate))
    limit = f"{channel} accepts at most {count(rate, 'row')}/s (bursts of {count(burst, 'row')})"
    if rows > burst:
        return protocol.PublishReply(
            request_id,
            0,
            f"{limit}: {count(rows, 'row')} can never go at once; send at most {burst} at a time",
            most_rows=burst,
        )
    wait_ms = max(1, math.ceil(budget.wait_s(rows) * 1000))
    over = f"{count(rows, 'row')} now {'is' if rows == 1 else 'are'} over it for {wait_ms} ms"
    retry = "send it again then" if rows == 1 else "send them again then"
    return protocol.PublishReply(
        request_id,
        0,
        f"{limit}: {over}; {retry} (zmqstream publish and Publisher wait by themselves)",
        wait_ms=wait_ms,
    )


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
