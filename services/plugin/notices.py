"""Why a panel's stream is not moving, told in the panel: a data-frame notice on the stream.

Grafana shows a frame's `meta.notices` (severity and text, as the SDK's FrameMeta writes
them) on the panel. The browser's StreamingDataFrame takes a packet's schema meta when
the schema has one and keeps its old meta otherwise, and keeps its rows when the fields
are the same. So a notice goes out as a schema-only packet whose meta carries it, and is
cleared by the next packet whose schema has a meta without it; the rows stay.

A stream says why when:
- no row came between two of the broker connection's heartbeats (1 s) and the broker is known to
  be out of reach (no socket, permission denied, connection refused or lost, CURVE
  refused: services.plugin.link);
- no row came for longer than three ticks and the broker does not answer, or has no live
  generator worker;
- no row came for LATE_S more while the broker and its workers are up: the rows are late on
  their way (this plugin or the machine is overloaded, a worker is being replaced), said
  with how late this plugin's event loop runs, and cleared by the next rows;
- the plugin dropped rows because Grafana read slower than the channel ticked (the
  notice stays until DROPS_CLEAR_S pass without a drop);
- the stream was refused (a budget, the broker's limits, the datasource's settings): the
  notice goes out just before the refusal.

A notice of a missing part (broker, workers, recorder) is cleared as soon as the part is
back, not only by the next row: a published channel may stay quiet for long.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

from services.common import protocol
from services.common.channels import PUBLISHED, Channel, ChannelSpec
from services.common.wording import count
from services.plugin import frames
from services.plugin.broker_connection import BrokerConnection, BrokerUnavailable
from services.plugin.link import ADDRESS_HINT
from services.plugin.pacing import LoopLag

LATE_S = 1.0
"""A stream whose rows are this much later than its quiet time (three ticks), while the broker
and its workers are up, says its rows are late: within README's 3 s plus three ticks even
when the check runs a heartbeat (1 s) and a broker status (broker_timeout_s) after it."""
STATUS_REUSE_S = 1.0
"""A broker status asked for stalled streams serves every other one for this long."""
DROPS_CLEAR_S = 5.0
"""A dropped-rows notice is cleared after this long without a drop."""
INFO, ERROR, WARNING = "info", "error", "warning"


class StreamEnded(Exception):
    """The stream cannot go on (its channel was refused): `packet` tells the panel why."""

    def __init__(self, message: str, packet: bytes) -> None:
        super().__init__(message)
        self.packet = packet


_asked: weakref.WeakKeyDictionary[
    BrokerConnection, tuple[float, asyncio.Future[protocol.StatusReply | str]]
] = weakref.WeakKeyDictionary()


def notice_packet(frame_schema: dict[str, Any], severity: str, text: str) -> bytes:
    """A schema-only packet putting `text` on the panel (the stream's own schema: fields keep config)."""
    return frames.schema_only(_with_meta(frame_schema, [{"severity": severity, "text": text}]))


def _with_meta(frame_schema: dict[str, Any], notices: list[dict[str, str]]) -> dict[str, Any]:
    """The schema with `notices` in its meta, keeping the rest of its meta (a logs panel's type)."""
    meta: dict[str, Any] = {"typeVersion": [0, 0], **frame_schema.get("meta", {})}
    meta.pop("notices", None)
    if notices:
        meta["notices"] = notices
    rest = {key: value for key, value in frame_schema.items() if key != "meta"}
    return {"meta": meta, **rest}  # the SDK's key order: meta before fields


class PanelNotice:
    """The notice one stream's panel shows now, and when it changes."""

    def __init__(self, spec: Channel, frame_schema: dict[str, Any], lag: LoopLag | None = None) -> None:
        published = not isinstance(spec, ChannelSpec) and spec.kind == PUBLISHED
        # A published channel may rightly be quiet for long: only a missing broker or recorder is news.
        self.quiet_s = 0.0 if published else 3 * spec.tick_ns / 1e9
        self.late_s = None if published else self.quiet_s + LATE_S
        """Silence past which rows are late although the pipeline is whole (None: never said)."""
        self.lag = lag
        self.role = protocol.RECORDER if published else protocol.GENERATOR
        """Who must be alive for the channel to move: its recorder, or a generator worker."""
        self.frame_schema = frame_schema
        self.shown = ""
        self.trouble = False
        """What is shown is a missing part of the pipeline: cleared once it is back, rows or not."""
        self.last_row = time.monotonic()
        self.last_drop = 0.0

    def troubled(self, text: str) -> bytes:
        """The packet that shows `text`, an error that clears when the pipeline is whole again."""
        self.shown, self.trouble = text, True
        return notice_packet(self.frame_schema, ERROR, text)

    async def stalled(self, broker: BrokerConnection, timeout_s: float) -> bytes | None:
        """After a wait without rows: the packet that tells why, or that clears what was told
        once the broker, the workers or the recorder are back (None if nothing new to say)."""
        text = broker.problem()
        idle_s = time.monotonic() - self.last_row
        if not text and idle_s > self.quiet_s:
            text = await _broker_problem(broker, timeout_s, idle_s, self.role)
        if not text and self.late_s is not None and idle_s > self.late_s:
            text = self._late(time.monotonic() - self.last_row)
        if not text and self.trouble:
            self.shown, self.trouble = "", False
            return frames.schema_only(_with_meta(self.frame_schema, []))
        if not text or text == self.shown:
            return None
        return self.troubled(text)

    def _late(self, idle_s: float) -> str:
        """Why rows are late when the broker and its workers are up: this plugin, or the machine."""
        lag_s = self.lag.lag_s if self.lag is not None else 0.0
        where = (
            f"this plugin is overloaded (its event loop runs {lag_s:.2f} s late): "
            "fewer or slower streams help"
            if lag_s >= 0.05
            else "the machine or a worker is busy, or a worker is being replaced"
        )
        return (
            f"no rows for {idle_s:.0f} s although the broker and its workers are up: the rows are late, "
            f"{where}. They show here as soon as they come"
        )

    def rows(self, dropped: int) -> dict[str, Any] | None:
        """Rows are going out: the schema to send with them if the notice changes, else None."""
        now = time.monotonic()
        self.last_row = now
        text = self.shown
        if dropped:
            self.last_drop = now
            text = (
                f"{count(dropped, 'row')} dropped: Grafana reads this stream slower than it ticks, so the "
                "panel shows the newest rows only. Slow the tick, lower the series or show fewer panels"
            )
        elif self.shown and now - self.last_drop >= DROPS_CLEAR_S:
            text = ""
        if text == self.shown:
            return None
        self.shown, self.trouble = text, False
        notices = [{"severity": WARNING, "text": text}] if text else []
        return _with_meta(self.frame_schema, notices)


async def _broker_problem(broker: BrokerConnection, timeout_s: float, idle_s: float, role: str) -> str:
    """The broker's answer, asked once for every stalled stream of `broker` (a status names
    every channel: hundreds of streams stalled at once must not each ask for one)."""
    now = time.monotonic()
    asked = _asked.get(broker)
    if asked is None or now - asked[0] > STATUS_REUSE_S:
        asked = _asked[broker] = (now, asyncio.ensure_future(_ask(broker, timeout_s)))
    status = await asyncio.shield(asked[1])
    problem = status if isinstance(status, str) else missing_role(status, role, broker.control_endpoint)
    return f"no rows for {idle_s:.0f} s: {problem}" if problem else ""


async def _ask(broker: BrokerConnection, timeout_s: float) -> protocol.StatusReply | str:
    try:
        return await broker.status(timeout_s)
    except BrokerUnavailable as exc:
        return f"{exc}. {ADDRESS_HINT}"


def workers_of(status: protocol.StatusReply, role: str) -> int:
    """Live workers of `role` in a broker's status (a worker without a role is a generator)."""
    return sum(1 for worker in status.workers.values() if worker.get("role", protocol.GENERATOR) == role)


def missing_role(status: protocol.StatusReply, role: str, endpoint: str) -> str:
    """'' if the broker has a live worker of `role`, else what is missing and what to do."""
    if workers_of(status, role):
        return ""
    if role == protocol.RECORDER:
        return (
            f"the broker at {endpoint} has no live recorder, which carries published channels and "
            "keeps the history of event channels. Start it (supervisord starts it with the broker)"
        )
    return (
        f"the broker at {endpoint} has no live generator worker. "
        "Start the workers (supervisord starts them with the broker)"
    )
