"""The plugin's Prometheus metrics, served by CollectMetrics (Grafana: /metrics/plugins/<id>).

Three sources, one text:
- counters the servicers update as they send (`frames_sent`, `rows_sent`, `bytes_sent` by
  kind: `stream` packets, `initial` frames of SubscribeStream, `query` frames), drop rows
  (`rows_dropped` by reason) and answer (`queries`, `resource_requests`), plus the gauge of
  running streams, all in this process's own CollectorRegistry (never the global one);
- the broker connections' own counts, read at collection time (channels held, rows received,
  frames refused), with this process's CPU and memory;
- the broker's view, asked for at collection time with a short timeout, per broker:
  `zmqstream_broker_up` is 0 (and the rest absent) when a broker does not answer.

    zmqstream_plugin_frames_sent_total{kind}      zmqstream_broker_up{broker}
    zmqstream_plugin_rows_sent_total{kind}        zmqstream_broker_workers{broker}
    zmqstream_plugin_bytes_sent_total{kind}       zmqstream_broker_channels{broker}
    zmqstream_plugin_rows_dropped_total{reason}   zmqstream_broker_subscribers{broker}
    zmqstream_plugin_queries_total{status}        zmqstream_broker_plugins{broker}
    zmqstream_plugin_resource_requests_total{resource,code}
    zmqstream_plugin_streams_refused_total{call,budget}
    zmqstream_plugin_streams                      zmqstream_worker_channels{broker,worker}
    zmqstream_plugin_channels_held{broker}        zmqstream_worker_load{broker,worker}
    zmqstream_plugin_rows_received_total{broker}  zmqstream_worker_ticks_late_total{broker,worker}
    zmqstream_plugin_frames_refused_total{broker,reason}
                                                  zmqstream_worker_heartbeat_age_seconds{broker,worker}
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from services.common.protocol import StatusReply
from services.plugin.broker_connection import BrokerConnection, BrokerConnections, BrokerUnavailable

BROKER_TIMEOUT_S = 0.5
"""How long a scrape waits for each broker's status; Grafana waits on the whole scrape."""
SENT_KINDS = ("stream", "initial", "query")
DROP_REASONS = ("slow_consumer", "already_sent")
SENT_FAMILIES = (
    ("zmqstream_plugin_frames_sent", "Frames sent to Grafana"),
    ("zmqstream_plugin_rows_sent", "Rows sent to Grafana"),
    ("zmqstream_plugin_bytes_sent", "Frame bytes sent to Grafana"),
)
DROPPED_FAMILIES = (
    (
        "zmqstream_plugin_rows_dropped",
        "Rows not sent: a stream's queue overflowed (slow_consumer), or they were sent before",
    ),
)
QUERY_STATUSES = ("200", "400", "413", "429", "500")


class PluginMetrics:
    def __init__(self, brokers: BrokerConnections) -> None:
        self.brokers = brokers
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series (process-wide: ours)
        self.registry = CollectorRegistry()
        registry = self.registry
        self._sent = _Tallies("kind", SENT_KINDS, SENT_FAMILIES)
        self._dropped = _Tallies("reason", DROP_REASONS, DROPPED_FAMILIES)
        registry.register(self._sent)
        registry.register(self._dropped)
        self.queries = Counter(
            "zmqstream_plugin_queries", "QueryData queries answered", ["status"], registry=registry
        )
        self.resource_requests = Counter(
            "zmqstream_plugin_resource_requests",
            "CallResource requests",
            ["resource", "code"],
            registry=registry,
        )
        self.streams_refused = Counter(
            "zmqstream_plugin_streams_refused",
            "Streams refused by admission control (services.plugin.admission), by call and budget",
            ["call", "budget"],
            registry=registry,
        )
        self.streams = Gauge("zmqstream_plugin_streams", "RunStream calls running", registry=registry)
        for status in QUERY_STATUSES:
            self.queries.labels(status)
        ProcessCollector(namespace="zmqstream_plugin", registry=registry)
        registry.register(_ConnectionsCollector(brokers))

    def sent(self, kind: str, rows: int, size: int) -> None:
        totals = self._sent.totals[kind]
        totals[0] += 1
        totals[1] += rows
        totals[2] += size

    def dropped(self, reason: str, rows: int) -> None:
        if rows > 0:
            self._dropped.totals[reason][0] += rows

    async def exposition(self, timeout_s: float = BROKER_TIMEOUT_S) -> bytes:
        """The Prometheus text: this process's metrics, then each broker's view."""
        brokers = list(self.brokers.by_endpoint.values())
        statuses = await asyncio.gather(*(_status(broker, timeout_s) for broker in brokers))
        views = CollectorRegistry()
        views.register(
            _BrokerCollector(dict(zip((p.control_endpoint for p in brokers), statuses, strict=True)))
        )
        return bytes(generate_latest(self.registry) + generate_latest(views))


async def _status(broker: BrokerConnection, timeout_s: float) -> StatusReply | None:
    try:
        return await broker.status(timeout_s)
    except BrokerUnavailable:
        return None


class _Tallies:
    """Counters by one label as plain ints, read when scraped: sent() runs for every packet and
    dropped() for every batch a slow stream sheds, and a prometheus_client Counter takes a lock
    on each increment (~1 µs)."""

    def __init__(self, label: str, keys: Iterable[str], families: tuple[tuple[str, str], ...]) -> None:
        self.label = label
        self.families = families
        self.totals = {key: [0] * len(families) for key in keys}

    def collect(self) -> Iterable[Metric]:
        families = [CounterMetricFamily(name, text, labels=[self.label]) for name, text in self.families]
        for key, totals in self.totals.items():
            for family, total in zip(families, totals, strict=True):
                family.add_metric([key], total)
        return families


class _ConnectionsCollector:
    """The broker connections' counts, read when scraped."""

    def __init__(self, brokers: BrokerConnections) -> None:
        self.brokers = brokers

    def collect(self) -> Iterable[Metric]:
        held = GaugeMetricFamily(
            "zmqstream_plugin_channels_held", "Channels this plugin holds", labels=["broker"]
        )
        received = CounterMetricFamily(
            "zmqstream_plugin_rows_received", "Rows received from the broker", labels=["broker"]
        )
        refused = CounterMetricFamily(
            "zmqstream_plugin_frames_refused",
            "Data frames dropped where they entered: malformed, another epoch than the placement's, "
            "wrong series count (shape), ticks ahead of the clock (future)",
            labels=["broker", "reason"],
        )
        for broker in list(self.brokers.by_endpoint.values()):
            endpoint = broker.control_endpoint
            held.add_metric([endpoint], len(broker.holders))
            received.add_metric([endpoint], broker.rows_received)
            for reason, count in broker.frames_refused.items():
                refused.add_metric([endpoint, reason], count)
        return [held, received, refused]


class _BrokerCollector:
    """One scrape's broker status replies (None: that broker did not answer)."""

    def __init__(self, statuses: Mapping[str, StatusReply | None]) -> None:
        self.statuses = statuses

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "zmqstream_broker_up", "1 if the broker answered this scrape", labels=["broker"]
        )
        totals = {
            name: GaugeMetricFamily(f"zmqstream_broker_{name}", text, labels=["broker"])
            for name, text in (
                ("workers", "Generator workers alive"),
                ("channels", "Channels running"),
                ("subscribers", "Subscriptions over all channels (one per plugin holding a channel)"),
                ("plugins", "Plugin processes alive"),
            )
        }
        per_worker: list[GaugeMetricFamily | CounterMetricFamily] = [
            GaugeMetricFamily(
                "zmqstream_worker_channels", "Channels on the worker", labels=["broker", "worker"]
            ),
            GaugeMetricFamily(
                "zmqstream_worker_load",
                "Rows per second times series, over the worker's channels",
                labels=["broker", "worker"],
            ),
            CounterMetricFamily(
                "zmqstream_worker_ticks_late",
                "Ticks published later than the worker's lateness budget, since it started",
                labels=["broker", "worker"],
            ),
            GaugeMetricFamily(
                "zmqstream_worker_heartbeat_age_seconds",
                "Seconds since the broker last heard from the worker",
                labels=["broker", "worker"],
            ),
        ]
        keys = ("channels", "load", "ticks_late", "seen_s_ago")
        for broker, status in self.statuses.items():
            up.add_metric([broker], 0 if status is None else 1)
            if status is None:
                continue
            subscribers = sum(_number(channel, "subscribers") for channel in status.channels.values())
            totals["workers"].add_metric([broker], len(status.workers))
            totals["channels"].add_metric([broker], len(status.channels))
            totals["subscribers"].add_metric([broker], subscribers)
            totals["plugins"].add_metric([broker], status.plugins)
            for worker, info in status.workers.items():
                for family, key in zip(per_worker, keys, strict=True):
                    family.add_metric([broker, str(worker)], _number(info, key))
        return [up, *totals.values(), *per_worker]


def _number(info: Any, key: str) -> float:
    """A number from a status entry (msgpack from another process): 0 if absent or not a number."""
    value = info.get(key) if isinstance(info, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0.0
    return float(value)
