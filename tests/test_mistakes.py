"""Mistakes named where the user looks: Save & test (CheckHealth), the panel, the broker's log.

Each test makes one mistake a user makes (keys in grafana.ini the broker does not take, a
Broker address mistyped or naming no host, a dashboard past its budget) or a normal exit,
and reads the text the user would read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from recording import recording_pipeline
from support import ROOT, Pipeline, authorized, curve_client, plugin_of
from test_security import curve_pipeline

from services.common.channels import UNCHECKED, ChannelSpec, parse_channel
from services.common.security import create_keys
from services.hostemu.dataframe import StreamingFrame
from services.hostemu.host import Datasource, PluginHost
from services.plugin import backfill
from services.plugin._proto import pluginv2_pb2 as pb

ERROR = pb.CheckHealthResponse.ERROR
CLI = [sys.executable, "-m", "services.cli"]


@pytest.fixture(scope="module")
def curved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, Path]]:
    pipeline, keys = curve_pipeline(tmp_path_factory.mktemp("curve"))
    try:
        yield pipeline, keys
    finally:
        pipeline.close()


def health_of(pipeline: Pipeline, settings: dict[str, str], ds: Datasource | None = None) -> str:
    """What Save & test says through a plugin with these grafana.ini keys (an error, asserted)."""
    host = pipeline.plugin(settings)
    try:
        health = host.check_health(ds)
        assert health.status == ERROR, health.message
        return health.message
    finally:
        host.stop()


def test_curve_keys_from_grafana_ini_the_broker_refuses_say_curve_refused(
    curved: tuple[Pipeline, Path],
) -> None:
    pipeline, keys = curved
    intruder = {
        "curve_client_secret": str(keys / "intruder.key_secret"),
        "curve_server_public": str(keys / "broker.key"),
    }
    assert f"CURVE refused by the broker at {pipeline.control_endpoint}" in health_of(pipeline, intruder)
    # No keys at all, for a broker that asks for them: the same refusal, not "is it running?".
    assert f"CURVE refused by the broker at {pipeline.control_endpoint}" in health_of(pipeline, {})


def test_curve_key_files_missing_from_grafana_ini_are_named() -> None:
    missing = {
        "curve_client_secret": "/nonexistent/plugin.key_secret",
        "curve_server_public": "/nonexistent/b.key",
    }
    pipeline = Pipeline(0)
    try:
        message = health_of(pipeline, missing)
        assert "/nonexistent/plugin.key_secret" in message
    finally:
        pipeline.close()


BEAT = {"plugin_heartbeat_s": "0.1"}
"""Plugins beat five times per lease of the broker below: one presumed dead left without a word."""


@pytest.fixture(scope="module")
def plain() -> Iterator[Pipeline]:
    pipeline = Pipeline(1, ["--plugin-lease-s", "0.5"])
    try:
        yield pipeline
    finally:
        pipeline.close()


@pytest.fixture
def host(plain: Pipeline) -> Iterator[PluginHost]:
    with plugin_of(plain, BEAT) as host:
        yield host


def test_a_mistyped_broker_address_fails_save_and_test_with_the_reason(
    host: PluginHost, plain: Pipeline
) -> None:
    typo = Datasource(uid="typo", json_data={"brokerAddress": "tpc://broker:5570"})
    health = host.check_health(typo)
    assert health.status == ERROR
    assert "Broker address 'tpc://broker:5570' is not a ZeroMQ endpoint" in health.message
    assert "tcp://host:port" in health.message
    for address in ("tcp://broker", "tcp://:5570", "ipc://"):
        answer = host.check_health(Datasource(uid="odd", json_data={"brokerAddress": address}))
        assert f"Broker address {address!r} is not a ZeroMQ endpoint" in answer.message
    # The plugin's own, from grafana.ini: named as such, and the plugin still starts to say so.
    message = health_of(plain, {"control_endpoint": "tpc://broker:5570"})
    assert "grafana.ini control_endpoint 'tpc://broker:5570' is not a ZeroMQ endpoint" in message


def test_a_broker_host_that_does_not_resolve_says_cannot_resolve(host: PluginHost) -> None:
    nowhere = Datasource(uid="nowhere", json_data={"brokerAddress": "tcp://no-such-broker.invalid:5570"})
    health = host.check_health(nowhere)
    assert health.status == ERROR
    assert "cannot resolve no-such-broker.invalid" in health.message
    assert "connection refused" not in health.message
    status = subprocess.run(
        [*CLI, "status", "--control-endpoint", "tcp://no-such-broker.invalid:5570"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert status.returncode == 1
    assert "cannot resolve no-such-broker.invalid" in status.stderr


def test_a_stream_past_its_budget_says_why_in_the_panel(host: PluginHost) -> None:
    tight = Datasource(uid="tight", json_data={"maxChannels": 1})
    held = host.run_stream("custom-0-1-100", tight)
    try:
        held.read_rows(1)
        answer = host.subscribe("custom-0-1-200", tight)
        assert answer.status == pb.SubscribeStreamResponse.OK  # not a bare 403: the reason reaches the panel
        panel = StreamingFrame()
        panel.push(answer.data)
        (notice,) = panel.notices
        assert notice["severity"] == "error"
        assert "datasource tight" in notice["text"]
        assert "1 channel" in notice["text"]
    finally:
        held.cancel()


def broker_log(pipeline: Pipeline) -> str:
    return (pipeline.run_dir / "broker.log").read_text()


def left_without_a_warning(pipeline: Pipeline, plugins_before: int, plugin_said: str = "") -> None:
    """The broker logged one more 'plugin left', and no plugin presumed dead, even past its lease.

    Failing, it shows what the broker logged of plugins and `plugin_said` (the plugin's stderr):
    a watch's goodbye went missing once in a full run and never in 20 runs alone."""
    deadline = time.monotonic() + 5
    while broker_log(pipeline).count('"plugin left"') <= plugins_before:
        if time.monotonic() > deadline:
            of_plugins = [line for line in broker_log(pipeline).splitlines() if "plugin" in line]
            raise AssertionError(
                "the plugin left without a goodbye; the broker's lines of plugins, last 10:\n"
                + "\n".join(of_plugins[-10:])
                + f"\nthe plugin's stderr, last 2,000 characters:\n{plugin_said[-2000:]}"
            )
        time.sleep(0.05)
    time.sleep(1.0)  # twice the lease: a plugin that left without a word is presumed dead by now
    assert "presumed dead" not in broker_log(pipeline)


def test_a_plugin_that_exits_cleanly_says_goodbye(plain: Pipeline) -> None:
    before = broker_log(plain).count('"plugin left"')
    with plugin_of(plain, BEAT) as host:
        host.run_stream("custom-0-1-50").read_rows(2)
    left_without_a_warning(plain, before)


def test_zmqstream_watch_says_goodbye(plain: Pipeline) -> None:
    """Watched for 20 live rows (a second), so the broker surely knows the plugin: a plugin that
    leaves before its first heartbeat or Subscribe went out has no one to say goodbye to. The
    rows SubscribeStream answers count too: with `--rows 20` the watch ended on those, before
    any RunStream, and under load its plugin left before the broker knew it (1 run in 7)."""
    spec = parse_channel("custom-0-1-50", UNCHECKED)
    assert isinstance(spec, ChannelSpec)
    rows = backfill.window(spec) + 20
    before = broker_log(plain).count('"plugin left"')
    watch = subprocess.run(
        [*CLI, "watch", spec.path, "--rows", str(rows), "--plain", "--run-dir", str(plain.run_dir)],
        cwd=ROOT,
        env={**os.environ, "ZMQSTREAM_PLUGIN_HEARTBEAT_S": BEAT["plugin_heartbeat_s"]},  # watch forwards it
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert watch.returncode == 0, watch.stderr
    left_without_a_warning(plain, before, watch.stderr)


def test_a_recorder_that_refuses_the_plugins_key_is_named_by_save_and_test(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    create_keys(keys, ["broker", "w1", "recorder", "plugin"])
    server = ["--curve-server-secret", str(keys / "broker.key_secret")]
    allowed = authorized(keys, tmp_path / "allowed", ["w1", "recorder", "plugin"])
    askers = authorized(keys, tmp_path / "askers", ["recorder"])  # not the plugin
    recorder_args = [*server, "--curve-authorized-dir", str(askers), "--publish-authorized-dir", str(askers)]
    with recording_pipeline(
        [*recorder_args, *curve_client(keys, "recorder")],
        [*server, "--curve-authorized-dir", str(allowed)],
        curve_client(keys, "w1"),
        (str(keys / "plugin.key_secret"), str(keys / "broker.key")),
    ) as pipeline:
        settings = {"curve_client_secret": str(keys / "plugin.key_secret")}
        with plugin_of(pipeline, {**settings, "curve_server_public": str(keys / "broker.key")}) as host:
            health = host.check_health()
            assert health.status == pb.CheckHealthResponse.OK  # streams of generators work
            assert "a recorder is alive, but the plugin cannot ask it: CURVE refused by the recorder" in (
                health.message
            )
