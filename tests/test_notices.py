"""A stream that cannot start or stalls says why in its panel, and CheckHealth names the cause.

The notice is a frame's `meta.notices`, read back by the host emulator's frame decoder as
the browser's StreamingDataFrame keeps it.
"""

import contextlib
import itertools
import os
import signal
import socket

import grpc
import pytest
from support import Pipeline, plugin_of

from services.hostemu.host import Datasource, LiveStream
from services.plugin._proto import pluginv2_pb2 as pb

WAIT_S = 8.0
"""The stall check runs at each of the plugin's heartbeats (1 s); a broker status asked then waits 0.8 s."""


def notice_text(stream: LiveStream) -> str:
    """Read until the panel shows a notice; its text."""
    with contextlib.suppress(TimeoutError, grpc.RpcError):  # a refused stream ends after its notice
        stream.read_notices(WAIT_S)
    assert stream.frame.notices, f"no notice after {stream.packets} packets"
    (notice,) = stream.frame.notices
    return str(notice["text"])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_broker_that_goes_away_is_named_in_the_panel_and_the_notice_clears_when_it_returns() -> None:
    pipeline = Pipeline(1)
    try:
        with plugin_of(pipeline) as host:
            stream = host.run_stream("custom-0-1-100")
            stream.read_rows(3)
            assert stream.frame.notices == []
            pipeline.stop_broker()
            text = notice_text(stream)
            assert f"no broker at {pipeline.control_endpoint}" in text, text
            assert "Is the broker running" in text or "Is it running?" in text
            health = host.check_health()
            assert health.status == pb.CheckHealthResponse.ERROR
            assert f"no broker at {pipeline.control_endpoint}" in health.message
            assert "supervisord" not in health.message

            rows = len(stream.frame.times_ns)
            pipeline.start_broker()
            stream.read_rows(rows + 3, timeout_s=WAIT_S)
            assert stream.frame.notices == [], "the notice must clear once rows come again"
            assert stream.frame.meta == {"typeVersion": [0, 0]}
            assert len(stream.frame.times_ns) >= rows + 3, "the rows shown before stay"
            times = stream.frame.times_ns
            assert all(a < b for a, b in itertools.pairwise(times)), "a tick sent twice or time going back"
            stream.cancel()
    finally:
        pipeline.close()


def test_a_misaddressed_broker_and_a_pipeline_without_workers_are_named() -> None:
    pipeline = Pipeline(0)
    try:
        host = pipeline.plugin()
        try:
            nowhere = f"tcp://127.0.0.1:{closed_port()}"
            misaddressed = Datasource(uid="elsewhere", json_data={"brokerAddress": nowhere})
            health = host.check_health(misaddressed)
            refused = (
                f"no broker at {nowhere}: connection refused. Is the broker running, and at this address?"
            )
            assert health.message.startswith(f"Broker unreachable: {refused}")
            assert "grafana.ini [plugin.zmqstream-stream-datasource] control_endpoint" in health.message
            stream = host.run_stream("custom-0-1-100", misaddressed)
            assert notice_text(stream).startswith(refused)
            stream.cancel()

            idle = host.run_stream("custom-0-1-100")
            text = notice_text(idle)
            assert f"the broker at {pipeline.control_endpoint} has no live generator worker" in text
            assert "Start the workers" in text
            idle.cancel()
            health = host.check_health().message
            assert "no generator worker is alive: start the workers where the broker runs" in health
            assert "supervisorctl start 'generator:*'" in health
        finally:
            host.stop()
    finally:
        pipeline.close()


def test_a_stream_refused_by_a_budget_says_which_in_the_panel_before_the_refusal() -> None:
    pipeline = Pipeline(1)
    try:
        with plugin_of(pipeline) as host:
            small = Datasource(uid="small", json_data={"maxValuesPerSecond": 5})
            stream = host.run_stream("custom-0-1-100", small)  # 10 values/s
            text = notice_text(stream)
            assert "datasource small streams 0 values/s of its budget of 5" in text, text
            assert stream.frame.notices[0]["severity"] == "error"
            with pytest.raises(grpc.RpcError) as refused:
                stream.read_packets(2)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        pipeline.close()


def test_a_channel_the_broker_refuses_says_why_in_the_panel() -> None:
    pipeline = Pipeline(1, broker_args=["--max-series", "2"])  # tighter than the plugin's 10
    try:
        with plugin_of(pipeline) as host:
            stream = host.run_stream("custom-0-1-100-uniform-5")
            text = notice_text(stream)
            assert "series 5 is outside [1, 2]" in text, text
    finally:
        pipeline.close()


def test_rows_late_while_the_pipeline_is_whole_are_said_in_the_panel_and_cleared_when_they_come() -> None:
    """A frozen worker the broker still counts alive (a long lease): the broker answers and has
    workers, yet no row comes; the panel says the rows are late (on main: silent)."""
    pipeline = Pipeline(1, ["--worker-lease-s", "30"])
    try:
        with plugin_of(pipeline) as host:
            stream = host.run_stream("custom-0-1-100")
            stream.read_rows(3)
            worker = pipeline.workers[0].pid
            os.kill(worker, signal.SIGSTOP)
            try:
                text = notice_text(stream)
            finally:
                os.kill(worker, signal.SIGCONT)
            assert "although the broker and its workers are up: the rows are late" in text, text
            rows = len(stream.frame.times_ns)
            stream.read_rows(rows + 3, timeout_s=WAIT_S)
            assert stream.frame.notices == [], "the notice must clear once rows come again"
            stream.cancel()
    finally:
        pipeline.close()
