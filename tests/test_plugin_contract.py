"""The plugin process as Grafana sees it: launch, handshake, logs, health, stop."""

import collections
import os
import re
import signal
import subprocess
import sys
import time

import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import ROOT, Pipeline

from services.hostemu.host import PluginHost
from services.plugin._proto import pluginv2_pb2 as pb

BURST = 3000
"""More RunStream calls at once than grpcio queues by default (1,000 some cancelled, 3,000 all)."""
HCLOG_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)")
BAD_PATHS = {
    "letters": "custom-a-b-c",
    "tick 0": "custom-1-2-0",
    "negative tick": "custom-1-2--5",
    "lower above upper": "custom-20-10-100",
    "lower equals upper": "custom-5-5-100",
    "NaN": "custom-NaN-1-100",
    "exponent": "custom-1e3-1e4-100",
    "10 KB": "custom-1-2-" + "1" * 10_240,
    "unknown generator": "custom-0-1-100-nosuch-1",
    "too many series": "custom-0-1-100-sine-99",
    "not ours": "other-1-2-3",
    "empty": "",
}


def test_started_by_hand_it_explains_itself_and_exits_1() -> None:
    env = {k: v for k, v in os.environ.items() if k != "grafana_plugin_type"}
    result = subprocess.run(
        [sys.executable, "-m", "services.plugin"], cwd=ROOT, env=env, capture_output=True, timeout=30
    )
    assert result.returncode == 1
    assert result.stdout == b""
    assert b"meant to be launched by Grafana" in result.stderr


def test_handshake_health_and_nothing_else_on_stdout(host: PluginHost) -> None:
    assert re.fullmatch(r"unix:/tmp/plugin\w+/plugin\.sock", host.address)
    health = host.check_health()
    assert health.status == pb.CheckHealthResponse.OK
    assert "2 workers alive" in health.message
    assert orjson.loads(health.jsonDetails)["workers"] == 2
    service = health_pb2_grpc.HealthStub(host.channel)
    reply = service.Check(health_pb2.HealthCheckRequest(service="plugin"), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    host.run_stream("custom-0-1-50").read_rows(3)
    assert host.stdout_extra == [], "only the handshake line may reach stdout"


def test_stderr_is_hclog_json_that_go_plugin_parses(host: PluginHost) -> None:
    host.subscribe("custom-a-b-c")
    host.run_stream("custom-0-1-50").read_rows(2)
    deadline = time.monotonic() + 5
    while not host.logs_at("warn") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host.logs, "the plugin logged nothing"
    for entry in host.logs:
        assert entry.get("json") is not False, f"not JSON: {entry['@message']}"
        assert all(isinstance(entry[key], str) for key in ("@level", "@message", "@timestamp"))
        assert entry["@level"] in {"trace", "debug", "info", "warn", "error"}
        assert HCLOG_TIMESTAMP.fullmatch(entry["@timestamp"]), entry["@timestamp"]
    refusal = next(e for e in host.logs_at("warn") if e["@message"] == "subscription refused")
    assert "custom-<lower>-<upper>" in refusal["error"]


@pytest.mark.parametrize("path", BAD_PATHS.values(), ids=BAD_PATHS.keys())
def test_bad_paths_are_not_found_and_the_plugin_stays_up(host: PluginHost, path: str) -> None:
    assert host.subscribe(path).status == pb.SubscribeStreamResponse.NOT_FOUND
    with pytest.raises(grpc.RpcError) as refused:
        host.run_stream(path).read_rows(1)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details()
    assert host.process.poll() is None
    assert host.check_health().status == pb.CheckHealthResponse.OK


def test_initial_data_then_schema_once_then_data_only(host: PluginHost) -> None:
    initial = orjson.loads(host.subscribe("custom-10-20-100").data)
    assert [f["name"] for f in initial["schema"]["fields"]] == ["time", "value"]
    stream = host.run_stream("custom-10-20-100")
    first, *rest = (orjson.loads(raw) for raw in stream.read_packets(3))
    assert set(first) == {"schema", "data"}
    assert all(set(packet) == {"data"} for packet in rest)
    stream.cancel()


def test_shutdown_rpc_ends_the_process_well_within_two_seconds(pipeline: Pipeline) -> None:
    host = pipeline.plugin()
    stream = host.run_stream("custom-0-1-50")
    stream.read_rows(2)
    elapsed = host.stop()
    assert host.process.returncode == 0
    assert elapsed < 1.5, f"exit took {elapsed:.2f} s; go-plugin SIGKILLs after 2 s"


def test_sigterm_stops_it_and_sigint_does_not(pipeline: Pipeline) -> None:
    host = pipeline.plugin()
    try:
        host.process.send_signal(signal.SIGINT)  # Ctrl-C in Grafana's terminal reaches the plugin too
        time.sleep(0.3)
        assert host.process.poll() is None
        assert host.check_health().status == pb.CheckHealthResponse.OK
        host.process.send_signal(signal.SIGTERM)
        assert host.process.wait(2) == 0
    finally:
        host.stop()


def burst(host: PluginHost) -> list[grpc.Call]:
    """BURST RunStreams opened at once, as Grafana does after a restart; bad paths, so the plugin
    answers each at once (grpcio cancelled the ones it held past 1,000-3,000 before the plugin took them)."""
    return [host.stream.RunStream(pb.RunStreamRequest(path=f"custom-{i}-burst")) for i in range(BURST)]


def test_a_burst_of_run_streams_all_reach_the_plugin(host: PluginHost) -> None:
    codes = collections.Counter(call.code() for call in burst(host))
    assert codes == {grpc.StatusCode.INVALID_ARGUMENT: BURST}


def test_run_streams_held_while_the_plugin_cannot_take_them_still_reach_it(host: PluginHost) -> None:
    calls = burst(host)
    calls[0].code()  # the plugin is taking them; the others wait in grpcio's queue
    host.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(31)  # grpcio cancelled a call its event loop had not taken in 30 s
    finally:
        host.process.send_signal(signal.SIGCONT)
    codes = collections.Counter(call.code() for call in calls)
    assert codes == {grpc.StatusCode.INVALID_ARGUMENT: BURST}
