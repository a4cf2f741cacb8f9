"""Real processes for the issue-4 integration tests: a broker, workers and the plugin via its shim.

Temporary: tests/helpers.py and tests/conftest.py (fixtures `pipeline`, `plugin`) were not
there when these tests were written; fold this into them and delete it once they are.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from services.hostemu.host import Datasource, PluginHost
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin.bundle import write_launchers

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 20.0


@contextlib.contextmanager
def running_pipeline(
    workers: int = 1,
    plugin_env: Mapping[str, str] | None = None,
    broker_args: Sequence[str] = (),
    worker_args: Sequence[str] = (),
) -> Iterator[PluginHost]:
    """A broker, `workers` workers (w1, w2, …) and the plugin launched as Grafana does; torn down after."""
    run_dir = tempfile.mkdtemp(prefix="zs", dir="/tmp")
    env = {**os.environ, "ZMQSTREAM_RUN_DIR": run_dir, "PYTHONUNBUFFERED": "1"}
    processes: list[subprocess.Popen[bytes]] = []
    host: PluginHost | None = None
    try:
        commands = [["-m", "services.broker", *broker_args]]
        commands += [
            ["-m", "services.generator", "--worker-id", f"w{i + 1}", *worker_args] for i in range(workers)
        ]
        for index, command in enumerate(commands):
            log = open(Path(run_dir) / f"process-{index}.log", "wb")  # noqa: SIM115 - closed with the process
            processes.append(
                subprocess.Popen(
                    [sys.executable, *command], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
            log.close()
        shim = write_launchers(Path(run_dir))[0]
        host = PluginHost(shim, env={"ZMQSTREAM_RUN_DIR": run_dir, **(plugin_env or {})})
        wait_for_workers(host, workers)
        yield host
    finally:
        if host is not None:
            host.stop()
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(run_dir, ignore_errors=True)


def wait_for_workers(host: PluginHost, workers: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    message = ""
    while time.monotonic() < deadline:
        health = host.check_health()
        message = health.message
        if health.status == pb.CheckHealthResponse.OK and f"{workers} worker" in message:
            return
        time.sleep(0.1)
    raise TimeoutError(f"the pipeline did not come up within {READY_TIMEOUT_S:g} s: {message}")


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
