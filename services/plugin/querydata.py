"""QueryData: a query's channel over the panel's time range, as an Arrow frame.

Each query is answered on its own (one bad query never fails the others):
- the query model becomes a ChannelSpec (services.plugin.query), or the answer is a 400
  with the reason (errorSource `downstream`: the request, not the plugin, is at fault),
  as it is for a time range Grafana's int64 nanoseconds cannot hold;
- the ticks stamped within the time range, cut at now (the stream has not sent later
  ones), then at most maxDataPoints of them by striding (services.plugin.recomputed), so each
  value is exactly the value the live stream sent for that tick;
- its values (ticks times series) must fit the request's budget and the plugin's budget of
  values in flight, or the answer is a 413 (request) or 429 (plugin) saying both figures
  and how to narrow the query: memory stays bounded whatever a viewer sends;
- one wide time series frame (time, then `value` per series, labelled series=<i> when
  there are several, with the query's field config: the same fields as the stream's,
  services.plugin.display), status 200. Alerting queries are answered the same way.

Event channels (`kind` source or published, services.plugin.query) cannot be recomputed:
their rows in the range (at most maxDataPoints of them, evenly spaced rows over the whole
range, its first and last row included) come from the recorder, in one
frame of typed, nullable fields (services.plugin.arrow.event_frame_file). When no recorder
answers, or it holds no rows yet, the frame is empty and its notice says so (status 200:
the panel still streams on).

The values are computed in a worker thread, one query at a time, so a large query does
not stall the streams relayed on the event loop, and a request's peak is its answers so
far plus the one being built; a small answer of the built-in generator (INLINE_POINTS) is
computed on the loop, where the hand-off would cost more than the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from array import array
from typing import Any

import grpc
import numpy as np
from numpy.typing import NDArray

from services.common.channels import ChannelSpec, EventChannel, Limits
from services.common.config import PluginSettings
from services.common.errors import ConfigError, InvalidChannel
from services.common.fields import Batch
from services.common.logs import fields
from services.common.waveforms import channel_seed
from services.common.wording import count
from services.plugin import arrow, bulk, display, eventframes, labelled, notices, recomputed
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin._proto import pluginv2_pb2_grpc
from services.plugin.broker_connection import BrokerConnections, TooManyBrokers
from services.plugin.datasource import DatasourceConfig
from services.plugin.metrics import PluginMetrics
from services.plugin.query import parse_any_query, parse_query
from services.plugin.recorder import RecorderUnavailable
from services.plugin.specs import Specs

log = logging.getLogger("zmqstream.plugin.querydata")
MAX_POINTS = 50_000
"""Per series, whatever maxDataPoints says (Grafana alerting asks for 43,200 by default)."""
CHUNK_TICKS = 5_000
"""Ticks computed at once as Python floats before they are packed (see packed_values)."""
INLINE_POINTS = 10_000
"""Values of the built-in generator answered on the event loop itself (about 0.3 ms for a
panel's 1,000): a thread's hand-off costs more than that, and a dashboard opens hundreds."""
EARLIEST_MS = -(2**63) // 1_000_000 + 1
"""The first millisecond whose nanoseconds fit Grafana's int64 times (1677-09-21)."""


class OverBudget(Exception):
    """A query that would take the request or the plugin past its points budget."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class DataService(pluginv2_pb2_grpc.DataServicer):
    def __init__(
        self, settings: PluginSettings, metrics: PluginMetrics, brokers: BrokerConnections, specs: Specs
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.brokers = brokers
        """Event channels' history comes from the recorder of the datasource's broker."""
        self.specs = specs
        self.points_in_flight = 0
        """Values of the answers being built or held by running QueryData calls: memory, bounded."""

    async def QueryData(
        self, request: pb.QueryDataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.QueryDataResponse:
        config = self.specs.config(request.pluginContext)
        now_ns = time.time_ns()
        responses: dict[str, pb.DataResponse] = {}
        held = 0
        try:
            for query in request.queries:
                try:
                    channel = parse_any_query(query.json, config.limits)
                except InvalidChannel as exc:
                    channel = None
                    response, rows = refusal(400, str(exc)), 0
                if isinstance(channel, EventChannel):
                    response, rows, points = await self._events(config, channel, query, now_ns, held)
                    held += points
                    self.points_in_flight += points
                if channel is None or isinstance(channel, EventChannel):
                    responses[query.refId] = response
                    self._count(query, response, rows)
                    continue
                try:
                    spec, ticks = plan(query, config.limits, now_ns)
                    shown = display.from_query(query.json)
                    points = len(ticks) * spec.series
                    self._check_budget(points, held)
                except InvalidChannel as exc:
                    response, rows = refusal(400, str(exc)), 0
                except OverBudget as exc:
                    response, rows = refusal(exc.status, str(exc)), 0
                else:
                    held += points
                    self.points_in_flight += points
                    # One query at a time, so the request's peak is its answers plus one being built.
                    if points <= INLINE_POINTS and bulk.handles(spec, ticks):
                        response, rows = answer(spec, ticks, query.refId, shown)
                    else:
                        response, rows = await asyncio.to_thread(answer, spec, ticks, query.refId, shown)
                responses[query.refId] = response
                self._count(query, response, rows)
        finally:
            self.points_in_flight -= held
        return pb.QueryDataResponse(responses=responses)

    async def _events(
        self, config: DatasourceConfig, channel: EventChannel, query: pb.DataQuery, now_ns: int, held: int
    ) -> tuple[pb.DataResponse, int, int]:
        """An event channel's recorded rows in the query's range, as typed frames (one per set of
        labels, services.plugin.labelled); and the rows and values (rows times fields) they hold."""
        try:
            from_ns, to_ns = _range_ns(query, now_ns)
            shown = display.from_query(query.json)
        except InvalidChannel as exc:
            return refusal(400, str(exc)), 0, 0
        max_rows = query.maxDataPoints if 0 < query.maxDataPoints < MAX_POINTS else MAX_POINTS
        text = ""
        try:
            recorder = self.brokers.get(*config.broker).recorder
            batch, truncated = await recorder.history(channel.path, from_ns, to_ns, max_rows, spread=True)
        except (RecorderUnavailable, TooManyBrokers, ConfigError) as exc:  # ConfigError: its broker or keys
            log.warning("no history", extra=fields(channel=channel.path, error=str(exc)))
            batch, truncated, text = None, False, f"no history for {channel.path}: {exc}"
        points = 0
        if batch is not None:
            points = len(batch) * max(1, len(batch.columns))
            try:
                self._check_budget(points, held)
            except OverBudget as exc:
                return refusal(exc.status, str(exc)), 0, 0
            if not batch.times:
                text = f"nothing recorded in {channel.path} in this time range"
        meta: dict[str, Any] = {"typeVersion": [0, 0]}
        if text:
            meta["notices"] = [{"severity": notices.ERROR if batch is None else notices.INFO, "text": text}]
        elif truncated:
            meta["notices"] = [
                {
                    "severity": notices.INFO,
                    "text": f"{count(len(batch or ()), 'row')} evenly spaced over the range (maxDataPoints)",
                }
            ]
        meta.update(labelled.meta(shown))
        answered = []
        for rows, labels in labelled.groups(batch or Batch([], []), shown.labels):
            configs = {c.name: eventframes.field_config(c.name, c.kind, shown) for c in rows.columns}
            frame = await asyncio.to_thread(
                arrow.event_frame_file,
                rows.times,
                rows.columns,
                ref_id=query.refId,
                configs=configs,
                meta=meta,
                labels=dict(labels),
            )
            answered.append(frame)
        return pb.DataResponse(frames=answered, status=200), len(batch or ()), points

    def _check_budget(self, points: int, held: int) -> None:
        per_request, in_flight = self.settings.max_points_per_request, self.settings.max_points_in_flight
        if held + points > per_request:
            raise OverBudget(
                413,
                f"this query needs {points:,} values (ticks times series) and the request has "
                f"{per_request - held:,} left of its budget of {per_request:,}: narrow the time range, "
                "lower maxDataPoints or the series, or spread the queries over several panels",
            )
        if self.points_in_flight + points > in_flight:
            raise OverBudget(
                429,
                f"this query needs {points:,} values and the plugin already holds "
                f"{self.points_in_flight:,} of the {in_flight:,} it answers at once: retry in a "
                "moment, or narrow the time range or lower maxDataPoints",
            )

    def _count(self, query: pb.DataQuery, response: pb.DataResponse, rows: int) -> None:
        self.metrics.queries.labels(str(response.status)).inc()
        if response.error:
            log.info("query refused", extra=fields(ref_id=query.refId, error=response.error))
        else:
            self.metrics.sent("query", rows, sum(len(frame) for frame in response.frames))


def refusal(status: int, error: str) -> pb.DataResponse:
    """The answer to a query the request got wrong (errorSource `downstream`)."""
    return pb.DataResponse(error=error, status=status, errorSource="downstream")


def plan(query: pb.DataQuery, limits: Limits, now_ns: int) -> tuple[ChannelSpec, range]:
    """The channel a query asks for and the ticks it shows; InvalidChannel says what is wrong."""
    spec = parse_query(query.json, limits)
    return spec, ticks_for(spec, query, now_ns)


def answer(
    spec: ChannelSpec, ticks: range, ref_id: str, shown: display.Display = display.DEFAULT
) -> tuple[pb.DataResponse, int]:
    """The response holding `ticks` of `spec` and how many rows it holds; never raises on bad input."""
    try:
        times, columns = packed_values(spec, ticks)
    except recomputed.RecomputeError as exc:
        return pb.DataResponse(error=str(exc), status=500, errorSource="plugin"), 0
    value_fields = [
        arrow.NumberField(field.name, column, field.labels, field.config)
        for field, column in zip(display.value_fields(spec, shown), columns, strict=True)
    ]
    frame = arrow.time_series_file(times, value_fields, ref_id=ref_id)
    return pb.DataResponse(frames=[frame], status=200), len(times)


def packed_values(spec: ChannelSpec, ticks: range) -> tuple[NDArray[np.int64], list[NDArray[np.float64]]]:
    """recomputed.values of `ticks` as packed arrays, which Arrow takes without reading them value by value.

    A Python float in a list costs 32 bytes, a packed one 8: a 500,000-value query peaks
    at a few MB more than its answer instead of four times it. The built-in generator is
    computed in bulk straight into them (services.plugin.bulk: 1,000 points in 0.2 ms
    instead of 0.9 ms through lists); any other CHUNK_TICKS at a time.
    """
    if bulk.handles(spec, ticks):
        return bulk.time_array(spec, ticks), bulk.column_arrays(spec, channel_seed(spec.path), ticks)
    times: array[int] = array("q")
    columns = [array("d") for _ in range(spec.series)]
    for start in range(0, len(ticks), CHUNK_TICKS):
        rows = recomputed.values(spec, ticks[start : start + CHUNK_TICKS])
        times.extend(rows.times_ns)
        for column, values in zip(columns, rows.columns, strict=True):
            column.extend(values)
    return np.frombuffer(times, dtype=np.int64), [np.frombuffer(c, dtype=np.float64) for c in columns]


def _range_ns(query: pb.DataQuery, now_ns: int) -> tuple[int, int]:
    """A query's time range in ns, cut at now; InvalidChannel if Grafana's int64 times cannot hold it."""
    start_ms, end_ms = query.timeRange.fromEpochMS, query.timeRange.toEpochMS
    if end_ms < start_ms:
        raise InvalidChannel(f"the time range ends ({end_ms} ms) before it starts ({start_ms} ms)")
    if start_ms < EARLIEST_MS:
        raise InvalidChannel(
            f"the time range starts ({start_ms} ms) before 1677-09-21, which Grafana cannot "
            "represent: choose a later start"
        )
    return start_ms * 1_000_000, min(end_ms * 1_000_000, now_ns)


def ticks_for(spec: ChannelSpec, query: pb.DataQuery, now_ns: int) -> range:
    """The ticks a query shows: within its time range, not after now, at most maxDataPoints."""
    ticks = recomputed.ticks_between(spec, *_range_ns(query, now_ns))
    max_points = query.maxDataPoints if 0 < query.maxDataPoints < MAX_POINTS else MAX_POINTS
    return recomputed.strided(ticks, max_points)
