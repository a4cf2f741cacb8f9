"""A panel of a published channel across a recorder going away and coming back: it keeps its
fields, its notice clears with the recorder's return, and the first rows after a restart are
on time. Real broker, worker, recorder and plugin (tests/support.py, services.hostemu)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from recording import now_ms, wait_for_recorder
from support import Pipeline, plugin_of

from services.hostemu.dataframe import StreamingFrame
from services.hostemu.host import LiveStream, PluginHost
from services.publish import Publisher

WAIT_S = 15.0
"""The broker calls a silent recorder dead after its worker timeout; the stall check runs each second."""


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    pipeline = Pipeline(1, recorder=True)
    try:
        wait_for_recorder(pipeline)
        yield pipeline
    finally:
        pipeline.close()


@pytest.fixture(scope="module")
def host(pipeline: Pipeline) -> Iterator[PluginHost]:
    with plugin_of(pipeline) as host:
        yield host


@pytest.fixture
def recorder_restarts(pipeline: Pipeline) -> Iterator[None]:
    """The test stops and starts the recorder; it runs again after the test whatever happened."""
    yield
    if pipeline.recorder is None or pipeline.recorder.poll() is not None:
        pipeline.start_recorder()
    wait_for_recorder(pipeline)


def publish(pipeline: Pipeline, channel: str, *values: float) -> None:
    with Publisher(pipeline.publish_endpoint) as publisher:
        start = now_ms()
        publisher.publish(
            channel, [{"time": start + i, "temp": v, "door": "shut"} for i, v in enumerate(values)]
        )


def reading(stream: LiveStream) -> threading.Thread:
    """Read the stream's packets into stream.frame until it is cancelled."""

    def read() -> None:
        with contextlib.suppress(grpc.RpcError):
            for _ in stream.packets_iter():
                pass

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def until(done: object, what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.05)


def temps(stream: LiveStream) -> list[float]:
    """The panel's temp column so far ([] before its schema came)."""
    return stream.frame.column("temp") if "temp" in stream.frame.names else []


def restart_recorder(pipeline: Pipeline) -> None:
    pipeline.stop_recorder()
    pipeline.start_recorder()
    wait_for_recorder(pipeline)


def epoch_refusals(host: PluginHost) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(host.collect_metrics())
        for sample in family.samples
        if sample.name == "zmqstream_plugin_frames_refused_total" and sample.labels["reason"] == "epoch"
    )


def test_a_panel_subscribing_while_the_recorder_is_down_keeps_its_fields(
    pipeline: Pipeline, host: PluginHost, recorder_restarts: None
) -> None:
    """On main the answer was a time-only schema, and Grafana dropped every value field."""
    publish(pipeline, "pub-kept.fields", 21.5)
    first = StreamingFrame()
    first.push(host.subscribe("pub-kept.fields").data)
    assert first.names == ["time", "temp", "door"]
    pipeline.stop_recorder()
    again = StreamingFrame()
    again.push(host.subscribe("pub-kept.fields").data)
    assert again.names == ["time", "temp", "door"]
    assert "no history for pub-kept.fields" in again.notices[0]["text"]


def test_the_recorders_notice_clears_when_it_is_back_before_any_row(
    pipeline: Pipeline, host: PluginHost, recorder_restarts: None
) -> None:
    """On main the error notice stayed until the next row, however long nobody published."""
    publish(pipeline, "pub-notice.clears", 1.0)
    stream = host.run_stream("pub-notice.clears")
    reading(stream)
    try:
        until(lambda: temps(stream) == [1.0], "the recorded row")
        pipeline.stop_recorder()
        until(lambda: "no live recorder" in str(stream.frame.notices), "the notice naming the recorder")
        assert stream.frame.names == ["time", "temp", "door"]
        pipeline.start_recorder()
        until(lambda: stream.frame.notices == [], "the notice cleared")
        assert temps(stream) == [1.0], "the rows shown before stay"
    finally:
        stream.cancel()


def test_the_first_rows_after_a_recorder_restart_are_relayed_not_refused(
    pipeline: Pipeline, host: PluginHost, recorder_restarts: None
) -> None:
    """A restarted recorder's first rows outran its Placement: on main they were refused ("epoch")
    and reached the panel 3 s later. Now they are held until the placement is told, and relayed."""
    publish(pipeline, "pub-restarted", 1.0)
    stream = host.run_stream("pub-restarted")
    reading(stream)
    try:
        until(lambda: temps(stream) == [1.0], "the recorded row")
        restart_recorder(pipeline)
        refused = epoch_refusals(host)
        publish(pipeline, "pub-restarted", 2.0, 3.0)
        until(lambda: temps(stream) == [1.0, 2.0, 3.0], "the rows after the restart")
        assert epoch_refusals(host) == refused
    finally:
        stream.cancel()
