"""`zmqstream status` and `watch` never hang: each says what is wrong, in time, and exits 1."""

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import zmq
from support import ROOT, Pipeline, wait_for_workers

from services.cli.status import render
from services.common import protocol
from services.common.security import create_keys
from services.packaging.bundle import write_launchers

TIMEOUT_S = 1.0
Run = tuple[subprocess.CompletedProcess[str], float]


def zmqstream(*args: str, env: dict[str, str] | None = None) -> Run:
    """The command line as a user runs it, and how long it took."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, time.monotonic() - started


def status(endpoint: str, *extra: str) -> Run:
    return zmqstream("status", "--control-endpoint", endpoint, "--timeout", str(TIMEOUT_S), *extra)


def test_no_socket_file_is_no_broker(tmp_path: Path) -> None:
    result, _ = status(f"ipc://{tmp_path}/control")
    assert result.returncode == 1
    assert f"no broker at ipc://{tmp_path}/control" in result.stderr


def test_a_socket_nobody_listens_on_is_no_broker(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as stale:  # what a broker killed with -9 leaves
        stale.bind(str(tmp_path / "control"))
    result, elapsed = status(f"ipc://{tmp_path}/control")
    assert result.returncode == 1
    assert f"no broker at ipc://{tmp_path}/control: connection refused" in result.stderr
    assert elapsed < 5


def test_a_closed_tcp_port_is_no_broker_not_a_hang() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result, elapsed = status(f"tcp://127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"no broker at tcp://127.0.0.1:{port}: connection refused" in result.stderr
    print(f"\n[figure] zmqstream status with no broker on tcp: exit 1 after {elapsed:.2f} s")
    assert elapsed < 5


def test_a_silent_peer_is_reported_after_the_timeout(tmp_path: Path) -> None:
    with zmq.Context() as ctx, ctx.socket(zmq.ROUTER) as silent:
        silent.linger = 0
        silent.bind(f"ipc://{tmp_path}/control")
        result, elapsed = status(f"ipc://{tmp_path}/control")
    assert result.returncode == 1
    assert f"the broker at ipc://{tmp_path}/control did not answer within 1 s" in result.stderr
    print(f"\n[figure] zmqstream status --timeout 1 against a silent peer: exit 1 after {elapsed:.2f} s")
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 3


@contextlib.contextmanager
def curve_broker(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    keys = tmp_path / "keys"
    create_keys(keys, ["broker", "friend", "intruder"])
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "friend.key").write_bytes((keys / "friend.key").read_bytes())
    pipeline = Pipeline(
        0, ["--curve-server-secret", str(keys / "broker.key_secret"), "--curve-authorized-dir", str(allowed)]
    )
    try:
        deadline = time.monotonic() + 10
        while not (pipeline.run_dir / "control").exists():
            assert time.monotonic() < deadline, "the broker did not bind"
            time.sleep(0.05)
        yield pipeline.control_endpoint, keys
    finally:
        pipeline.close()


def test_curve_refusal_is_named(tmp_path: Path) -> None:
    with curve_broker(tmp_path) as (endpoint, keys):
        server = ["--curve-server-public", str(keys / "broker.key")]
        friend, _ = status(endpoint, "--curve-client-secret", str(keys / "friend.key_secret"), *server)
        assert friend.returncode == 0, friend.stderr
        for name, args in (
            ("an unknown key", ["--curve-client-secret", str(keys / "intruder.key_secret"), *server]),
            ("no CURVE at all", []),
        ):
            result, elapsed = status(endpoint, *args)
            assert result.returncode == 1, name
            assert f"CURVE refused by the broker at {endpoint}" in result.stderr, (name, result.stderr)
            print(f"\n[figure] zmqstream status with {name}: CURVE refusal named after {elapsed:.2f} s")
            assert elapsed < TIMEOUT_S + 3, name


def test_watch_says_why_there_is_nothing_to_watch(tmp_path: Path) -> None:
    shim = write_launchers(tmp_path)[0]
    no_broker = f"ipc://{tmp_path}/nothing/control"
    result, elapsed = zmqstream(
        "watch", "custom-1-2-100", "--plugin", str(shim), "--control-endpoint", no_broker
    )
    assert result.returncode == 1
    assert f"zmqstream watch: Broker unreachable: no broker at {no_broker}: " in result.stderr
    assert (
        "the run folder " + str(tmp_path / "nothing") + " does not exist as this process sees it"
        in result.stderr
    )
    assert elapsed < 15

    missing, _ = zmqstream("watch", "custom-1-2-100", "--plugin", str(tmp_path / "gpx_nothing"))
    assert missing.returncode == 1
    assert "cannot start the plugin" in missing.stderr


def test_watch_without_workers_and_with_them() -> None:
    pipeline = Pipeline(0)
    try:
        shim = str(write_launchers(pipeline.run_dir)[0])
        env = {"ZMQSTREAM_RUN_DIR": str(pipeline.run_dir)}
        idle, _ = zmqstream("watch", "custom-1-2-100", "--plugin", shim, env=env)
        assert idle.returncode == 1
        assert "no generator worker is alive" in idle.stderr

        pipeline.workers.append(pipeline.start("w1", ["-m", "services.generator", "--worker-id", "w1"]))
        host = pipeline.plugin()
        try:
            wait_for_workers(host, 1)
        finally:
            host.stop()
        ok, _ = zmqstream("watch", "custom-1-2-20", "--plugin", shim, "--rows", "10", "--plain", env=env)
        assert ok.returncode == 0, ok.stderr
        assert "rows/s" in ok.stdout

        hourly = "custom-1-2-3600000"  # its next tick is (almost surely) more than a second away
        silent, _ = zmqstream("watch", hourly, "--plugin", shim, "--plain", "--timeout", "1", env=env)
        assert silent.returncode == 1
        assert f"no rows of {hourly} for 1 s" in silent.stderr
    finally:
        pipeline.close()


def test_the_top_level_help_is_one_line_per_command() -> None:
    (result, _) = zmqstream("--help", env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    for command in ("status", "watch", "publish", "keys"):
        assert sum(line.startswith(f"zmqstream {command}") for line in lines) == 1, command
        (entry,) = [i for i, line in enumerate(lines) if line.split()[:1] == [command]]
        assert len(lines[entry].split()) > 2, f"{command}'s help is on its own line"
        assert not lines[entry + 1].startswith(" " * 10), f"{command}'s help wraps"


def test_status_counts_read_as_english() -> None:
    worker: dict[str, protocol.Scalar] = {
        "pid": 1,
        "channels": 1,
        "load": 10.0,
        "ticks_late": 0,
        "seen_s_ago": 0.1,
    }
    channel: dict[str, protocol.Scalar] = {"worker": "w1", "subscribers": 1, "epoch": 1}
    reply = protocol.StatusReply("r", "b1", {"w1": worker}, {"custom-0-1-100": channel}, 1)
    assert render(reply).splitlines()[0] == "broker b1: 1 worker, 1 channel, 1 plugin connection"


def test_every_command_takes_run_dir_and_its_variable(tmp_path: Path) -> None:
    shim = str(write_launchers(tmp_path)[0])
    folder = tmp_path / "elsewhere"
    expected = f"no broker at ipc://{folder}/control"
    by_flag, _ = zmqstream("status", "--timeout", str(TIMEOUT_S), "--run-dir", str(folder))
    by_variable, _ = zmqstream("status", "--timeout", str(TIMEOUT_S), env={"ZMQSTREAM_RUN_DIR": str(folder)})
    watched, _ = zmqstream("watch", "custom-1-2-100", "--plugin", shim, "--run-dir", str(folder))
    for result in (by_flag, by_variable, watched):
        assert result.returncode == 1
        assert expected in result.stderr, result.stderr
    for command in ("status", "watch", "publish"):
        helped, _ = zmqstream(command, "--help")
        assert "--run-dir" in helped.stdout, command
        assert "ZMQSTREAM_RUN_DIR" in helped.stdout, command
