"""Streams of event channels (`source-*`, `pub-*`): their rows keep their own times and types.

What differs from pure channels (services.plugin.servicers), and why:
- History cannot be recomputed: SubscribeStream's initial frame (the last WINDOW_NS /
  MAX_ROWS, or the rows after `{"after": ms}`) and RunStream's bridge come from the
  recorder (services.plugin.recorder). The Ledger works in times: a first subscriber is
  promised the last row the recorder gave, and RunStream's first packet holds the
  recorder's rows after what was promised or sent; the first live rows are bridged by
  asking it again for the rows between. So a late panel gets the recorded history, and no
  row twice. Live rows lost on the way (the recorder's Events sent while the broker
  restarts) are bridged the same way: the next Events' `prev` is later than the last row
  that came, or the broker connection saw a new broker or placement (EventQueue).
- A stream sends strictly increasing times (EventQueue.take drops and counts the rest),
  and a frame never mixes two schemas: rows of a new schema go out with a new schema.
- What fails is told in the panel: no recorder (a notice on the initial frame and on the
  stream, cleared once it is back), nothing published or sent yet (an info notice until
  the first row). A notice keeps the channel's last schema seen (EventStreams.schemas), so
  a panel subscribing while the recorder is down keeps its fields.

PublishStream writes rows into a published channel through the recorder. A datasource
opts in (jsonData `allowPublish: true`); the user must be an Editor or Admin; the path
must be a `pub-*` channel (another valid path is PERMISSION_DENIED, a malformed one
NOT_FOUND). The data is one JSON record `{"time": …, "<field>": value}` or a list of them
(time optional: now), at most MAX_PUBLISH_BYTES and MAX_PUBLISH_ROWS, and each datasource
at most PUBLISH_PER_S requests a second. Rows over their channel's budget wait for it
(at most PUBLISH_WAIT_S). Rows the plugin or the recorder refuses are PERMISSION_DENIED, no
recorder answering is NOT_FOUND; the reason is logged, is the response's data
(`{"error": "<reason>"}`) for a caller that reads it, and a refusal of the rows themselves
is shown on the channel's panels (services.plugin.refusals), since Grafana passes a
publisher nothing but the status.
An accepted publish answers OK with no data: the recorder's Events reach the stream like
any publisher's. Grafana (live.go, handleOnPublish) then lets Centrifuge publish the
client's own JSON into the channel as well, over the websocket (over HTTP it publishes
nothing). Panels read a Live message as a frame (`schema`, `data`) and ignore one
without those keys, so a record with a top-level `schema` or `data` key is refused:
Grafana would hand it to every panel of the channel as a broken frame.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from services.common.channels import PUBLISHED, Channel, EventChannel
from services.common.errors import ConfigError
from services.common.fields import TIME_KEY, Batch, InvalidRows, Schema, concat, from_records
from services.common.logs import fields
from services.plugin import backfill, eventframes, frames, labelled, notices
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin.broker_connection import BrokerConnection, BrokerConnections, TooManyBrokers
from services.plugin.datasource import DatasourceConfig
from services.plugin.display import Display
from services.plugin.metrics import PluginMetrics
from services.plugin.notices import StreamEnded
from services.plugin.queues import SubscriptionRefused
from services.plugin.recorder import RecorderClient, RecorderUnavailable
from services.plugin.refusals import Refusals

log = logging.getLogger("zmqstream.plugin.events")
EDITOR_ROLES = ("Editor", "Admin")
"""Org roles that may publish (Grafana's User.role); Viewer, None or no user may not."""
MAX_PUBLISH_BYTES = 64 * 1024
"""Grafana's own [live] message_size_limit default: a client cannot send more anyway."""
MAX_PUBLISH_ROWS = 1000
PUBLISH_PER_S = 20.0
"""Publish requests per second per datasource (a burst of as many is allowed)."""
PUBLISH_WAIT_S = 2.0
"""Longest a publish waits for its channel's rows-per-second budget (a burst is a second's worth)."""
MAX_BUCKETS = 1024
"""Datasources whose publish rate is tracked at once; the least recent is forgotten past it."""
GAP_TRIES = 4
"""Times the recorder is asked for the rows before a stream's live ones (its first, or the first
after some were lost on the way) before the stream goes on without them: each waits its timeout,
and a recorder can be slow to answer while the broker restarts."""
RETRY_S = 0.1
MAX_SCHEMAS = 10_000
"""Event channels whose last schema is remembered (a few hundred bytes each)."""


class EventStreams:
    def __init__(self, brokers: BrokerConnections, metrics: PluginMetrics, ledger: backfill.Ledger) -> None:
        self.brokers = brokers
        self.settings = brokers.settings
        self.metrics = metrics
        self.ledger = ledger
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.refusals = Refusals()
        self.schemas: OrderedDict[str, tuple[Schema, labelled.Labels]] = OrderedDict()
        """Each event channel's last schema (and labels) seen, least recent first: a panel keeps
        its fields when the recorder cannot answer (a frame of other fields would replace them)."""

    # -- SubscribeStream ---------------------------------------------------------------

    async def initial(
        self,
        key: backfill.StreamKey,
        channel: EventChannel,
        shown: Display,
        after_ms: int | None,
        recorder: RecorderClient,
    ) -> bytes:
        """The initial frame: recorded rows up to what a running stream sent (or now, promised);
        `recorder`: the datasource's broker's."""
        sent = self.ledger.running_end(key)
        to_ns = sent if sent != backfill.NOTHING else time.time_ns()
        from_ns = (after_ms + 1) * 1_000_000 if after_ms is not None else to_ns - backfill.WINDOW_NS
        batch, problem = await self._history(recorder, channel, from_ns, to_ns)
        if sent == backfill.NOTHING and batch.times:
            self.ledger.promise(key, batch.times[-1])
        elif sent == backfill.NOTHING and after_ms is not None and not problem and from_ns <= to_ns:
            # Nothing new: the subscriber's own last row is the floor; one it claims from the future
            # is not (the stream is shared: it would drop everyone's rows until then).
            self.ledger.promise(key, from_ns - 1)
        if batch.times:
            last, labels = labelled.runs(batch, shown.labels)[-1]  # one frame: the newest labels' rows
            self._remember(channel, last.schema, labels)
            data = eventframes.packet(last, labelled.frame_schema(last.schema, shown, labels))
        elif problem:  # the fields the panel last had: a frame of others would replace them
            data = notices.notice_packet(self._last_schema(channel, shown), notices.ERROR, problem)
        elif known := await self._latest_schema(recorder, channel, to_ns, shown):
            data = frames.schema_only(known)  # nothing new: the panel keeps its fields
        else:
            data = notices.notice_packet(
                labelled.frame_schema(None, shown), notices.INFO, _nothing_yet(channel)
            )
        self.metrics.sent("initial", len(batch), len(data))
        return data

    async def _latest_schema(
        self, recorder: RecorderClient, channel: EventChannel, to_ns: int, shown: Display
    ) -> dict[str, Any] | None:
        """The frame schema of the channel's last recorded row, None if it has none.

        A frame of other fields would replace the panel's (the browser keeps rows only
        while the fields stay the same), so a frame without rows still carries the schema.
        """
        try:
            batch, _ = await recorder.history(channel.path, 0, to_ns, 1)
        except RecorderUnavailable:
            return self._last_schema(channel, shown) if channel.path in self.schemas else None
        if not batch.times:
            return None
        last, labels = labelled.runs(batch, shown.labels)[-1]
        self._remember(channel, last.schema, labels)
        return labelled.frame_schema(last.schema, shown, labels)

    def _remember(self, channel: EventChannel, schema: Schema, labels: labelled.Labels) -> None:
        """The channel's schema as last seen, for when the recorder cannot tell it."""
        self.schemas[channel.path] = (schema, labels)
        self.schemas.move_to_end(channel.path)
        while len(self.schemas) > MAX_SCHEMAS:
            self.schemas.popitem(last=False)

    def _last_schema(self, channel: EventChannel, shown: Display) -> dict[str, Any]:
        """The frame schema of the channel's last schema seen (time alone if none was)."""
        schema, labels = self.schemas.get(channel.path, (None, ()))
        return labelled.frame_schema(schema, shown, labels)

    async def _history(
        self, recorder: RecorderClient, channel: EventChannel, from_ns: int, to_ns: int
    ) -> tuple[Batch, str]:
        """The recorder's rows of `channel` in [from_ns, to_ns] (at most backfill.MAX_ROWS), or
        none and why not ('' when it answered)."""
        if to_ns < from_ns:
            return Batch([], []), ""
        try:
            batch, _ = await recorder.history(channel.path, from_ns, to_ns, backfill.MAX_ROWS)
        except RecorderUnavailable as exc:
            log.warning("no history", extra=fields(channel=channel.path, error=str(exc)))
            return Batch([], []), f"no history for {channel.path}: {exc}"
        return batch, ""

    # -- RunStream ---------------------------------------------------------------------

    async def run(
        self, key: backfill.StreamKey, channel: EventChannel, shown: Display, broker: BrokerConnection
    ) -> AsyncGenerator[bytes, None]:
        """The packets of one stream, until cancelled; StreamEnded if its channel is refused."""
        queue = broker.hold_events(channel, on_drop=functools.partial(self.metrics.dropped, "slow_consumer"))
        floor = max(self.ledger.open(key), self.ledger.promised(key))
        sent_schema: tuple[Schema, labelled.Labels] | None = None
        notice = notices.PanelNotice(channel, self._last_schema(channel, shown))
        dropped_seen = 0
        refusal_seen = self.refusals.seen(channel.path)
        try:
            if queue.error:
                raise SubscriptionRefused(queue.error)
            # The first packet now: what the recorder has after what was promised or sent.
            start = floor + 1 if floor != backfill.NOTHING else time.time_ns() - backfill.WINDOW_NS
            recorder = broker.recorder
            batch, problem = await self._history(recorder, channel, start, time.time_ns())
            if not batch.times:
                if problem:  # the recorder did not answer: not asked again
                    known = self._last_schema(channel, shown) if channel.path in self.schemas else None
                else:
                    known = await self._latest_schema(recorder, channel, time.time_ns(), shown)
                if known is not None:
                    notice.frame_schema = known  # the panel's fields, for later notices
                if problem:
                    yield notice.troubled(problem)
                elif known is None:
                    notice.shown = _nothing_yet(channel)
                    yield notices.notice_packet(notice.frame_schema, notices.INFO, notice.shown)
            bridged = False
            outgoing = [batch]
            while True:
                for batch, labels in (
                    run for whole in outgoing for run in labelled.runs(whole, shown.labels)
                ):
                    if not batch.times:
                        continue
                    changed = (batch.schema, labels) != sent_schema
                    if changed:
                        self._remember(channel, batch.schema, labels)
                        notice.frame_schema = labelled.frame_schema(batch.schema, shown, labels)
                    frame_schema = notice.rows(queue.dropped_rows - dropped_seen)
                    dropped_seen = queue.dropped_rows
                    if changed and frame_schema is None:
                        frame_schema = notice.frame_schema
                    data = eventframes.packet(batch, frame_schema)
                    sent_schema = (batch.schema, labels)
                    floor = batch.times[-1]
                    self.ledger.sent(key, floor)
                    self.metrics.sent("stream", len(batch), len(data))
                    yield data
                if refused := self.refusals.since(channel.path, refusal_seen):
                    refusal_seen, notice.shown = refused  # cleared by the next rows (PanelNotice.rows)
                    yield notices.notice_packet(notice.frame_schema, notices.WARNING, notice.shown)
                if sent_schema is None:  # nothing sent yet: a new subscriber may have been promised more
                    floor = max(floor, self.ledger.promised(key))
                try:
                    taken = await queue.take(self.settings.max_rows_per_packet, floor)
                except TimeoutError:
                    outgoing = []
                    if queue.missed:  # rows may have been lost, and none came since: the recorder's
                        queue.missed = False
                        outgoing = [await self._recorded(recorder, channel, floor, time.time_ns(), GAP_TRIES)]
                    if outgoing and outgoing[0].times:
                        continue  # rows to send: not a stall
                    if told := await notice.stalled(broker, self.settings.broker_timeout_s):
                        yield told
                    continue
                self.metrics.dropped("already_sent", taken.repeated)
                outgoing = [taken.batch] if taken.batch is not None else []
                if taken.batch is not None and (taken.gap or not bridged):
                    # The first live rows, or the first after some were lost on the way (a broker
                    # restart): the recorded ones between the floor and them go first.
                    bridged = True
                    live = taken.batch
                    gap = await self._recorded(recorder, channel, floor, live.times[0] - 1, GAP_TRIES)
                    outgoing = [concat([gap, live])] if gap.schema == live.schema else [gap, live]
        except SubscriptionRefused as exc:
            raise StreamEnded(
                str(exc), notices.notice_packet(notice.frame_schema, notices.ERROR, str(exc))
            ) from None
        finally:
            broker.release(channel.path, queue)

    async def _recorded(
        self, recorder: RecorderClient, channel: EventChannel, floor: int, to_ns: int, tries: int = 1
    ) -> Batch:
        """The recorder's rows after `floor` (a stream's last sent) up to `to_ns`, asked up to `tries`
        times while it does not answer (busy while the broker restarts); none if it never does."""
        start = floor + 1 if floor != backfill.NOTHING else to_ns - backfill.WINDOW_NS
        for tried in range(1, tries + 1):
            batch, problem = await self._history(recorder, channel, start, to_ns)
            if not problem:
                break
            if tried < tries:
                await asyncio.sleep(RETRY_S)
        return batch

    # -- PublishStream -----------------------------------------------------------------

    async def publish(
        self, request: pb.PublishStreamRequest, channel: Channel, config: DatasourceConfig
    ) -> pb.PublishStreamResponse:
        """The answer to `request`: OK, or a refusal whose data says why (and logged)."""
        role = request.pluginContext.user.role
        why = ""
        if not config.allow_publish:
            why = f"datasource {config.uid} does not allow publishing (its setting allowPublish is off)"
        elif role not in EDITOR_ROLES:
            why = f"publishing needs the Editor or Admin role, the user's is {role or 'none'!r}"
        elif not isinstance(channel, EventChannel) or channel.kind != PUBLISHED:
            why = f"{channel.path} is not a published channel (pub-<name>): only those take rows"
        elif not self._admit(config.uid):
            why = f"datasource {config.uid} publishes more than {PUBLISH_PER_S:g} times a second"
        if why:
            return publish_refused(pb.PublishStreamResponse.PERMISSION_DENIED, request.path, why)
        try:
            batch = _rows(request.data)
            recorder = self.brokers.get(*config.broker).recorder
            reply = await recorder.publish(channel.path, batch)
            waited_s = 0.0
            while reply.wait_ms and waited_s + reply.wait_ms / 1000 <= PUBLISH_WAIT_S:
                waited_s += reply.wait_ms / 1000  # the channel's budget: the rows go in a moment
                await asyncio.sleep(reply.wait_ms / 1000)
                reply = await recorder.publish(channel.path, batch)
        except (TooManyBrokers, ConfigError) as exc:  # ConfigError: the datasource's broker or keys
            return publish_refused(
                pb.PublishStreamResponse.NOT_FOUND, request.path, str(exc), "publish failed"
            )
        except InvalidRows as exc:
            self.refusals.tell(channel.path, f"a publish into {channel.path} was refused: {exc}")
            return publish_refused(pb.PublishStreamResponse.PERMISSION_DENIED, request.path, str(exc))
        except RecorderUnavailable as exc:
            return publish_refused(
                pb.PublishStreamResponse.NOT_FOUND, request.path, str(exc), "publish failed"
            )
        if reply.error or reply.accepted != len(batch):
            why = reply.error[:300] or f"{reply.accepted} of {len(batch)} rows accepted"
            self.refusals.tell(
                channel.path, f"a publish into {channel.path} was refused by the recorder: {why}"
            )
            why = f"the recorder refused the rows: {why}"
            return publish_refused(pb.PublishStreamResponse.PERMISSION_DENIED, request.path, why)
        log.debug("published", extra=fields(path=request.path, rows=len(batch)))
        return pb.PublishStreamResponse(status=pb.PublishStreamResponse.OK)

    def _admit(self, uid: str) -> bool:
        """A token bucket per datasource: PUBLISH_PER_S a second, as many at once."""
        now = time.monotonic()
        tokens, at = self.buckets.pop(uid, (PUBLISH_PER_S, now))
        tokens = min(PUBLISH_PER_S, tokens + (now - at) * PUBLISH_PER_S)
        admitted = tokens >= 1
        self.buckets[uid] = (tokens - 1 if admitted else tokens, now)
        while len(self.buckets) > MAX_BUCKETS:
            self.buckets.popitem(last=False)
        return admitted


def publish_refused(
    status: pb.PublishStreamResponse.Status.ValueType, path: str, why: str, what: str = "publish refused"
) -> pb.PublishStreamResponse:
    """A PublishStream refusal: logged as `what`, and its reason in the data for the caller
    (`{"error": why}`; Grafana's own Live API answers its HTTP status text alone)."""
    log.warning(what, extra=fields(path=path[:200], error=why[:300]))
    return pb.PublishStreamResponse(status=status, data=orjson.dumps({"error": why}))


FRAME_KEYS = frozenset(("schema", "data"))
"""What Grafana's panels read in a Live message (StreamingDataFrame.push)."""


def _rows(data: bytes) -> Batch:
    """The rows a publish carries: one JSON record or a list of them; a missing time is now."""
    if len(data) > MAX_PUBLISH_BYTES:
        raise InvalidRows(f"{len(data):,} bytes, the limit is {MAX_PUBLISH_BYTES:,}")
    try:
        body: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRows(f"the data is not JSON: {exc}") from None
    records = body if isinstance(body, list) else [body]
    if not records:
        raise InvalidRows("no rows")
    if isinstance(body, dict) and FRAME_KEYS & body.keys():
        raise InvalidRows(
            f"a record with a top-level {' or '.join(sorted(FRAME_KEYS & body.keys()))!r} key: Grafana "
            "also publishes the data as sent to the channel's panels, which would read it as a frame; "
            "rename the field, or send a list of records"
        )
    now_ms = time.time_ns() / 1e6
    for index, record in enumerate(records):
        if isinstance(record, dict) and TIME_KEY not in record:
            record[TIME_KEY] = now_ms + index * 0.001  # 1 µs apart: times must increase
    return from_records(records, None, MAX_PUBLISH_ROWS)


def _nothing_yet(channel: EventChannel) -> str:
    if channel.kind == PUBLISHED:
        return (
            f"nothing recorded in {channel.path} yet: publish rows into it "
            f"(`zmqstream publish {channel.path}`); they show here as they arrive"
        )
    return f"nothing recorded from source {channel.name} yet: its rows show here as the source sends them"
