"""CollectMetrics through the real plugin: Prometheus text that parses, and counters that move."""

import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import dead_broker_datasource, query_model, running_pipeline

from services.hostemu.host import PluginHost, data_query


@pytest.fixture(scope="module")
def host() -> Iterator[PluginHost]:
    with running_pipeline() as plugin:
        yield plugin


def scrape(host: PluginHost, **kwargs: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape, by (name, sorted labels); parsing fails on malformed text."""
    samples = {}
    for family in text_string_to_metric_families(host.collect_metrics(**kwargs)):  # type: ignore[arg-type]
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_the_text_parses_and_names_every_family(host: PluginHost) -> None:
    families = {f.name: f.type for f in text_string_to_metric_families(host.collect_metrics())}
    expected = {
        "zmqstream_plugin_frames_sent": "counter",
        "zmqstream_plugin_rows_sent": "counter",
        "zmqstream_plugin_bytes_sent": "counter",
        "zmqstream_plugin_rows_dropped": "counter",
        "zmqstream_plugin_streams": "gauge",
        "zmqstream_plugin_channels_held": "gauge",
        "zmqstream_plugin_rows_received": "counter",
        "zmqstream_broker_up": "gauge",
        "zmqstream_broker_workers": "gauge",
        "zmqstream_broker_channels": "gauge",
        "zmqstream_broker_subscribers": "gauge",
        "zmqstream_worker_ticks_late": "counter",
        "zmqstream_plugin_process_cpu_seconds": "counter",
    }
    assert {name: families.get(name) for name in expected} == expected


def test_counters_move_with_streams_queries_and_subscriptions(host: PluginHost) -> None:
    before = scrape(host)
    path = "custom-0-1-20-uniform-2"
    host.subscribe(path)
    stream = host.run_stream(path)
    stream.read_rows(20)
    during = scrape(host)
    stream.cancel()
    end = time.time_ns() // 1_000_000
    host.query_data([data_query("A", query_model(0, 1, 100), end - 10_000, end)])
    after = scrape(host)

    broker = next(labels for (name, labels) in during if name == "zmqstream_broker_up")
    assert value(during, "zmqstream_broker_up", **dict(broker)) == 1
    assert value(during, "zmqstream_broker_workers", **dict(broker)) == 1
    assert value(during, "zmqstream_broker_channels", **dict(broker)) >= 1
    assert value(during, "zmqstream_broker_subscribers", **dict(broker)) >= 1
    assert value(during, "zmqstream_plugin_streams") >= 1
    assert value(during, "zmqstream_plugin_channels_held", **dict(broker)) >= 1
    assert value(during, "zmqstream_worker_ticks_late_total", worker="w1", **dict(broker)) >= 0

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("zmqstream_plugin_frames_sent_total", kind="initial") == 1
    assert moved("zmqstream_plugin_rows_sent_total", kind="initial") == 1000
    assert moved("zmqstream_plugin_frames_sent_total", kind="stream") >= 1
    assert moved("zmqstream_plugin_rows_sent_total", kind="stream") >= 20
    assert moved("zmqstream_plugin_bytes_sent_total", kind="stream") > 0
    assert moved("zmqstream_plugin_frames_sent_total", kind="query") == 1
    assert moved("zmqstream_plugin_rows_sent_total", kind="query") in (100, 101)
    assert moved("zmqstream_plugin_queries_total", status="200") == 1
    assert moved("zmqstream_plugin_rows_received_total", broker=dict(broker)["broker"]) > 0
    assert value(after, "zmqstream_plugin_rows_dropped_total", reason="slow_consumer") >= 0


def test_a_broker_that_does_not_answer_is_down_and_the_scrape_still_answers(host: PluginHost) -> None:
    started = time.monotonic()
    samples = scrape(host, ds=dead_broker_datasource())
    assert time.monotonic() - started < 2
    ups = {
        dict(labels)["broker"]: v for (name, labels), v in samples.items() if name == "zmqstream_broker_up"
    }
    assert ups["ipc:///tmp/zs-nobody-listens/control"] == 0
    assert sorted(ups.values()) == [0, 1]  # the default broker is still up
