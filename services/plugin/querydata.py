"""QueryData: a query's channel over the panel's time range, as an Arrow frame.

Each query is answered on its own (one bad query never fails the others):
- the query model becomes a ChannelSpec (services.plugin.query), or the answer is a 400
  with the reason (errorSource `downstream`: the request, not the plugin, is at fault);
- the ticks stamped within the time range, cut at now (the stream has not sent later
  ones), then at most maxDataPoints of them by striding (services.plugin.history), so each
  value is exactly the value the live stream sent for that tick;
- one wide time series frame (time, then `value` per series, labelled series=<i> when
  there are several, with the query's field config: the same fields as the stream's,
  services.plugin.display), status 200. Alerting queries are answered the same way.

The values are computed in a worker thread, so a large query does not stall the streams
relayed on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc

from services.common.channels import ChannelSpec, Limits
from services.common.config import PluginSettings
from services.common.errors import InvalidChannel
from services.common.logs import fields
from services.plugin import arrow, display, history
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin._proto import pluginv2_pb2_grpc
from services.plugin.datasource import DatasourceConfig
from services.plugin.metrics import PluginMetrics
from services.plugin.query import parse_query

log = logging.getLogger("zmqstream.plugin.querydata")
MAX_POINTS = 50_000
"""Per series, whatever maxDataPoints says (Grafana alerting asks for 43,200 by default)."""


class DataService(pluginv2_pb2_grpc.DataServicer):
    def __init__(self, settings: PluginSettings, metrics: PluginMetrics) -> None:
        self.settings = settings
        self.metrics = metrics

    async def QueryData(
        self, request: pb.QueryDataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.QueryDataResponse:
        config = DatasourceConfig.from_context(request.pluginContext, self.settings)
        now_ns = time.time_ns()
        responses: dict[str, pb.DataResponse] = {}
        for query in request.queries:
            response, rows = await asyncio.to_thread(answer, query, config.limits, now_ns)
            responses[query.refId] = response
            self.metrics.queries.labels(str(response.status)).inc()
            if response.error:
                log.info("query refused", extra=fields(ref_id=query.refId, error=response.error))
            else:
                self.metrics.sent("query", rows, sum(len(frame) for frame in response.frames))
        return pb.QueryDataResponse(responses=responses)


def answer(query: pb.DataQuery, limits: Limits, now_ns: int) -> tuple[pb.DataResponse, int]:
    """The response to one query and how many rows it holds; never raises on bad input."""
    try:
        spec = parse_query(query.json, limits)
        shown = display.from_query(query.json)
        rows = history.values(spec, ticks_for(spec, query, now_ns))
    except InvalidChannel as exc:
        return pb.DataResponse(error=str(exc), status=400, errorSource="downstream"), 0
    except history.HistoryError as exc:
        return pb.DataResponse(error=str(exc), status=500, errorSource="plugin"), 0
    value_fields = [
        arrow.NumberField(field.name, column, field.labels, field.config)
        for field, column in zip(display.value_fields(spec, shown), rows.columns, strict=True)
    ]
    frame = arrow.time_series_file(rows.times_ns, value_fields, ref_id=query.refId)
    return pb.DataResponse(frames=[frame], status=200), len(rows)


def ticks_for(spec: ChannelSpec, query: pb.DataQuery, now_ns: int) -> range:
    """The ticks a query shows: within its time range, not after now, at most maxDataPoints."""
    start_ms, end_ms = query.timeRange.fromEpochMS, query.timeRange.toEpochMS
    if end_ms < start_ms:
        raise InvalidChannel(f"the time range ends ({end_ms} ms) before it starts ({start_ms} ms)")
    ticks = history.ticks_between(spec, start_ms * 1_000_000, min(end_ms * 1_000_000, now_ns))
    max_points = query.maxDataPoints if 0 < query.maxDataPoints < MAX_POINTS else MAX_POINTS
    return history.strided(ticks, max_points)
