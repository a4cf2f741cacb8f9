"""History answers: the recorded rows of an event channel in a time range, under what a client's
socket accepts."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from services.common import protocol
from services.common.errors import ProtocolError
from services.recorder.intake import event_channel
from services.recorder.ring import Rings

log = logging.getLogger("zmqstream.recorder")
REPLY_MARGIN = 64 * 1024
"""Room left under MAX_CONTROL_BYTES for a HistoryReply's envelope."""


@dataclass
class History:
    """Answers HistoryRequests from the rings."""

    rings: Rings
    refusal: Callable[[str, str], None]
    """refusal(what, why): a request that was not even a HistoryRequest, counted and logged."""

    def answer(self, frames: list[bytes], over_share: bool) -> protocol.HistoryReply | None:
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
            self.refusal("history request refused", str(exc))
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


def _history_error(request_id: str, channel: str, error: str) -> protocol.HistoryReply:
    return protocol.HistoryReply(request_id, channel, [], [], error=error)
