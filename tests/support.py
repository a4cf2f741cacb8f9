"""Real processes for integration tests: a broker, workers and the plugin launched via its shim.

`Pipeline` owns the processes (so a test can kill a worker or restart the broker);
`running_pipeline` is the short form that yields just the plugin host.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from services.hostemu.host import Datasource, PluginHost
from services.hostemu.localpipeline import ROOT, Pipeline, stop, wait_for_workers

__all__ = [
    "ROOT",
    "Pipeline",
    "dead_broker_datasource",
    "memory_kib",
    "plugin_of",
    "query_model",
    "running_pipeline",
    "stop",
    "streams_refused",
    "wait_for_workers",
]


@contextlib.contextmanager
def plugin_of(pipeline: Pipeline, settings: Mapping[str, str] | None = None) -> Iterator[PluginHost]:
    """A plugin process on `pipeline` (`settings`: its grafana.ini keys), once it sees every worker."""
    host = pipeline.plugin(settings)
    try:
        wait_for_workers(host, len(pipeline.workers))
        yield host
    finally:
        host.stop()


@contextlib.contextmanager
def running_pipeline(
    workers: int = 1,
    plugin_settings: Mapping[str, str] | None = None,
    broker_args: Sequence[str] = (),
    worker_args: Sequence[str] = (),
) -> Iterator[PluginHost]:
    """A broker, `workers` workers (w1, w2, …) and the plugin launched as Grafana does; torn down after."""
    pipeline = Pipeline(workers, broker_args, worker_args)
    try:
        with plugin_of(pipeline, plugin_settings) as host:
            yield host
    finally:
        pipeline.close()


def query_model(
    lower: float, upper: float, tick_ms: float, generator: str = "uniform", series: int = 1
) -> dict:  # type: ignore[type-arg]
    """The frontend's query model for a channel."""
    return {
        "lowerLimit": lower,
        "upperLimit": upper,
        "tickInterval": tick_ms,
        "generator": generator,
        "series": series,
    }


def dead_broker_datasource() -> Datasource:
    """A datasource whose brokerAddress answers nothing."""
    return Datasource(uid="no-broker", json_data={"brokerAddress": "ipc:///tmp/zs-nobody-listens/control"})


def memory_kib(pid: int, key: str = "VmRSS") -> int:
    """A process's resident memory now, or with key="VmHWM" the most it ever had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise LookupError(f"no {key} for {pid}")


def streams_refused(metrics: str) -> dict[tuple[str, str], float]:
    """zmqstream_plugin_streams_refused_total from a CollectMetrics text, by (call, budget)."""
    return {
        (sample.labels["call"], sample.labels["budget"]): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "zmqstream_plugin_streams_refused_total"
    }


def suffix(options: bytes) -> str:
    """Display options as the frontend appends them to a Live path."""
    return "/display=" + base64.urlsafe_b64encode(options).decode().rstrip("=")
