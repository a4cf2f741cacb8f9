"""A pipeline of real processes on this machine: a broker and generator workers, in a fresh
run dir of ipc sockets, plus the plugin launched through its gpx_ launcher as Grafana
would. The tests, the benchmarks and anyone trying zmqstream without supervisord use it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from services.hostemu.host import Datasource, PluginHost
from services.packaging.bundle import ROOT, write_launchers
from services.plugin._proto import pluginv2_pb2 as pb

READY_TIMEOUT_S = 20.0


class Pipeline:
    """A broker, workers w1…wN and, if asked, a recorder as real processes, ipc sockets in a fresh run dir."""

    def __init__(
        self,
        workers: int,
        broker_args: Sequence[str] = (),
        worker_args: Sequence[str] = (),
        *,
        recorder: bool = False,
        recorder_args: Sequence[str] = (),
    ) -> None:
        self.run_dir = Path(tempfile.mkdtemp(prefix="zs", dir="/tmp"))
        self.env = {**os.environ, "ZMQSTREAM_RUN_DIR": str(self.run_dir), "PYTHONUNBUFFERED": "1"}
        self.broker_args = list(broker_args)
        self.broker = self.start("broker", ["-m", "services.broker", *broker_args])
        self.workers = [
            self.start(f"w{i + 1}", ["-m", "services.generator", "--worker-id", f"w{i + 1}", *worker_args])
            for i in range(workers)
        ]
        self.recorder_args = list(recorder_args)
        self.recorder: subprocess.Popen[bytes] | None = self.start_recorder() if recorder else None
        self.control_endpoint = f"ipc://{self.run_dir}/control"
        self.publish_endpoint = f"ipc://{self.run_dir}/publish"
        self.history_endpoint = f"ipc://{self.run_dir}/history"

    def start(self, name: str, command: Sequence[str]) -> subprocess.Popen[bytes]:
        with open(self.run_dir / f"{name}.log", "ab") as log:
            return subprocess.Popen(
                [sys.executable, *command], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def restart_broker(self) -> None:
        """SIGTERM the broker, wait for it, start a new one on the same endpoints."""
        self.stop_broker()
        self.start_broker()

    def stop_broker(self) -> None:
        stop(self.broker)

    def start_broker(self) -> None:
        self.broker = self.start("broker", ["-m", "services.broker", *self.broker_args])

    def start_recorder(self) -> subprocess.Popen[bytes]:
        """The recorder (id `recorder`), with `recorder_args`; `self.recorder` is the one to stop."""
        self.recorder = self.start("recorder", ["-m", "services.recorder", *self.recorder_args])
        return self.recorder

    def stop_recorder(self) -> None:
        if self.recorder is not None:
            stop(self.recorder)

    def plugin(
        self, settings: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None
    ) -> PluginHost:
        """The plugin as Grafana 12.4+ launches it, told the run folder by its grafana.ini section.

        `env`: variables of the host's that Grafana passes on (PLUGIN_UNIX_SOCKET_DIR, TMPDIR).
        """
        shim = write_launchers(self.run_dir)[0]
        return PluginHost(shim, {"run_dir": str(self.run_dir), **(settings or {})}, env=env)

    def close(self) -> None:
        recorder = [self.recorder] if self.recorder is not None else []
        for process in [*self.workers, *recorder, self.broker]:
            stop(process)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def stop(process: subprocess.Popen[bytes], timeout_s: float = 5) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for_workers(
    host: PluginHost, workers: int, ds: Datasource | None = None, *, recorder: bool = False
) -> None:
    """Until CheckHealth counts `workers` workers (and, with `recorder`, a recorder alive)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    message = ""
    while time.monotonic() < deadline:
        health = host.check_health(ds)
        message = health.message
        if (
            health.status == pb.CheckHealthResponse.OK
            and f"{workers} worker" in message
            and (not recorder or "no recorder" not in message)
        ):
            return
        time.sleep(0.1)
    raise TimeoutError(f"the pipeline did not come up within {READY_TIMEOUT_S:g} s: {message}")
