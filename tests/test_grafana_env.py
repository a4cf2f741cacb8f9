"""The plugin runs in Grafana 12.4+'s environment: its grafana.ini section, nothing of the host's."""

from pathlib import Path

import pytest
from support import Pipeline, wait_for_workers

from services.hostemu.host import PERMITTED_HOST_ENV, PluginHost
from services.packaging.bundle import write_launchers
from services.plugin._proto import pluginv2_pb2 as pb


@pytest.fixture(scope="module")
def pipeline() -> "Pipeline":
    pipeline = Pipeline(1)  # its run folder is a fresh one in /tmp, never the default
    yield pipeline
    pipeline.close()


def environ(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in entries if entry)


def test_control_endpoint_in_grafana_ini_alone_gives_a_healthy_datasource_and_a_moving_stream(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZMQSTREAM_RUN_DIR", "/nonexistent")  # the host's: must not reach the plugin
    host = PluginHost(write_launchers(pipeline.run_dir)[0], {"control_endpoint": pipeline.control_endpoint})
    try:
        wait_for_workers(host, 1)
        passed = environ(host.process.pid)
        assert passed["GF_PLUGIN_CONTROL_ENDPOINT"] == pipeline.control_endpoint
        assert not {"PATH", "HOME", "PYTHONPATH", "ZMQSTREAM_RUN_DIR"} & passed.keys()
        own = {
            "grafana_plugin_type",
            "PWD",
            "ZMQSTREAM_PLUGIN_DIR",
            *PERMITTED_HOST_ENV,
        }  # PWD, DIR: the launcher's
        assert {name for name in passed if not name.startswith(("GF_", "PLUGIN_"))} <= own
        stream = host.run_stream("custom-10-20-50")
        frame = stream.read_rows(5)
        assert all(10 <= v <= 20 for v in frame.column("value"))
        stream.cancel()
    finally:
        host.stop()


def test_the_hosts_variables_do_not_reach_the_plugin_unless_forwarded(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZMQSTREAM_RUN_DIR", str(pipeline.run_dir))
    shim = write_launchers(pipeline.run_dir)[0]
    restricted = PluginHost(shim)
    try:
        health = restricted.check_health()
        assert health.status == pb.CheckHealthResponse.ERROR
        assert str(pipeline.run_dir) not in health.message
    finally:
        restricted.stop()
    forwarded = PluginHost(
        shim, forward_host_env=True
    )  # `[plugins] forward_host_env_vars`, or Grafana < 12.4
    try:
        wait_for_workers(forwarded, 1)
    finally:
        forwarded.stop()
