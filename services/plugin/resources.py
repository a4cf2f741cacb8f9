"""CallResource: a small JSON API under /api/datasources/uid/<uid>/resources/ for the frontend.

    GET streams    → generators, sources and published channels with their fields
                     (services.plugin.catalog): what the query editor and variables list
    GET generators → {"generators": [{"name": "uniform", "description": "…"}, …]}
                     (without those marked `hidden = True`, such as the benchmarks' `burn`)
    GET sources    → {"sources": [{"name": "host"}, …]}: the built-in source and those installed
                     under the entry point group `zmqstream.sources` (names only: nothing is
                     loaded, the workers run them; this host's installation is assumed theirs)
    GET limits     → {"minTickMs": …, "maxTickMs": …, "maxSeries": …}  (this datasource's)
    GET channels   → the broker's view: {"broker", "endpoint", "plugins",
                     "channels": [{"path", "worker", "subscribers"}, …],
                     "workers": [{"id", "channels", "load", "ticksLate"}, …]}

Every answer is one CallResourceResponse (code, headers, body), JSON with
`Content-Type: application/json`: 404 `{"error": …}` for an unknown path, 405 (with
`Allow: GET`) for another method, 503 when the broker does not answer, 500 if a handler
fails, never a crashed call.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import orjson

from services.common.config import PluginSettings
from services.common.errors import ConfigError
from services.common.logs import fields
from services.plugin import catalog
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin._proto import pluginv2_pb2_grpc
from services.plugin.broker_connection import BrokerConnections, BrokerUnavailable, TooManyBrokers
from services.plugin.datasource import DatasourceConfig
from services.plugin.metrics import PluginMetrics
from services.plugin.specs import Specs
from services.sources import installed_names

log = logging.getLogger("zmqstream.plugin.resources")
Reply = tuple[int, Any]
Handler = Callable[[DatasourceConfig], Awaitable[Reply]]
JSON_HEADERS = {"Content-Type": ["application/json"]}


class ResourceService(pluginv2_pb2_grpc.ResourceServicer):
    def __init__(
        self, brokers: BrokerConnections, settings: PluginSettings, metrics: PluginMetrics, specs: Specs
    ) -> None:
        self.brokers = brokers
        self.settings = settings
        self.metrics = metrics
        self.specs = specs
        self.routes: dict[str, Handler] = {
            "streams": self.streams,
            "channels": self.channels,
            "generators": self.generators,
            "sources": self.sources,
            "limits": self.limits,
        }

    async def CallResource(
        self, request: pb.CallResourceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.CallResourceResponse]:
        name = request.path.strip("/")
        headers = dict(JSON_HEADERS)
        handler = self.routes.get(name)
        if handler is None:
            code, body = 404, {"error": f"no resource {name[:100]!r}; there are: {', '.join(self.routes)}"}
        elif request.method.upper() != "GET":
            code, body = 405, {"error": f"{request.method[:20]} is not allowed on {name}; use GET"}
            headers["Allow"] = ["GET"]
        else:
            code, body = await self._run(name, handler, request.pluginContext)
        self.metrics.resource_requests.labels(name if handler else "unknown", str(code)).inc()
        yield pb.CallResourceResponse(
            code=code,
            headers={key: pb.StringList(values=values) for key, values in headers.items()},
            body=orjson.dumps(body),
        )

    async def _run(self, name: str, handler: Handler, context: pb.PluginContext) -> Reply:
        try:
            return await handler(self.specs.config(context))
        except Exception as exc:
            log.exception("resource failed", extra=fields(resource=name))
            return 500, {"error": f"{name} failed: {exc}"}

    async def streams(self, config: DatasourceConfig) -> Reply:
        problems: list[str] = []
        try:
            broker = self.brokers.get(*config.broker)
            paths = list((await broker.status(self.settings.broker_timeout_s)).channels)
        except (BrokerUnavailable, TooManyBrokers, ConfigError) as exc:
            problems.append(f"broker unavailable, so no published channel is listed: {exc}")
            return 200, await catalog.streams([], None, problems)
        return 200, await catalog.streams(paths, broker.recorder, problems)

    async def generators(self, config: DatasourceConfig) -> Reply:
        return 200, {"generators": catalog.generators()}

    async def sources(self, config: DatasourceConfig) -> Reply:
        return 200, {"sources": [{"name": name} for name in sorted(installed_names())]}

    async def limits(self, config: DatasourceConfig) -> Reply:
        limits = config.limits
        return 200, {
            "minTickMs": limits.min_tick_ms,
            "maxTickMs": limits.max_tick_ms,
            "maxSeries": limits.max_series,
        }

    async def channels(self, config: DatasourceConfig) -> Reply:
        try:
            broker = self.brokers.get(*config.broker)
            status = await broker.status(self.settings.broker_timeout_s)
        except (BrokerUnavailable, TooManyBrokers, ConfigError) as exc:  # ConfigError: the CURVE keys
            return 503, {"error": f"broker unavailable: {exc}"}
        return 200, {
            "broker": status.broker,
            "endpoint": broker.control_endpoint,
            "plugins": status.plugins,
            "channels": [
                {"path": path, "worker": info.get("worker", ""), "subscribers": info.get("subscribers", 0)}
                for path, info in sorted(status.channels.items())
            ],
            "workers": [
                {
                    "id": worker,
                    "channels": info.get("channels", 0),
                    "load": info.get("load", 0),
                    "ticksLate": info.get("ticks_late", 0),
                }
                for worker, info in sorted(status.workers.items())
            ],
        }
