"""The pipeline under test: real processes that faults kill, stop and restart by name."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

from services.hostemu.localpipeline import Pipeline, stop, wait_for_workers

WORKERS = 3
DISK_BYTES = 48 * 1024 * 1024
"""The record folder's tmpfs (root only): small, so a full disk is quick to make."""
PLUGIN_SETTINGS = {"plugin_lease_s": "3"}


class Cluster:
    """A broker, WORKERS generator workers, the recorder with a record folder, and the plugin
    as Grafana launches it. `host` is the current plugin host; a restart replaces it."""

    def __init__(self, plugin_settings: Mapping[str, str] = PLUGIN_SETTINGS) -> None:
        """Everything started, or (if any part does not come up) everything stopped again and the
        record folder given back before the error goes on: a failed start leaves no process behind."""
        self.disk = Path(tempfile.mkdtemp(prefix="zschaos", dir="/tmp"))
        self.tmpfs = _mount_tmpfs(self.disk)
        self.record_dir = self.disk / "record"
        self.plugin_settings = plugin_settings
        self.pipeline = Pipeline(WORKERS, recorder=True, recorder_args=["--record-dir", str(self.record_dir)])
        self.lock = threading.Lock()
        """Held while a process is replaced: readers of `host` or `process()` wait for the new one."""
        try:
            self.host = self.pipeline.plugin(plugin_settings)
        except BaseException:
            self._release()
            raise
        try:
            wait_for_workers(self.host, WORKERS, recorder=True)  # the load starts on a whole pipeline
        except BaseException:
            self.close()
            raise

    def names(self) -> list[str]:
        return ["broker", *(f"w{i + 1}" for i in range(WORKERS)), "recorder", "plugin"]

    def process(self, name: str) -> subprocess.Popen[bytes]:
        if name == "broker":
            return self.pipeline.broker
        if name == "recorder":
            assert self.pipeline.recorder is not None
            return self.pipeline.recorder
        if name == "plugin":
            return self.host.process
        return self.pipeline.workers[int(name[1:]) - 1]

    def pids(self) -> dict[str, int]:
        return {name: self.process(name).pid for name in self.names()}

    def signal(self, name: str, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process(name).pid, signum)

    def start(self, name: str) -> None:
        """A new process in place of `name`'s, which must have exited (as supervisord would)."""
        with self.lock:
            if name == "broker":
                self.pipeline.start_broker()
            elif name == "recorder":
                self.pipeline.start_recorder()
            elif name == "plugin":
                old = self.host
                self.host = self.pipeline.plugin(self.plugin_settings)
                old.stop()
            else:
                index = int(name[1:]) - 1
                self.pipeline.workers[index] = self.pipeline.start(
                    name, ["-m", "services.generator", "--worker-id", name]
                )

    def kill9(self, name: str) -> None:
        self.signal(name, signal.SIGKILL)
        self.process(name).wait()

    def restart_broker(self) -> None:
        with self.lock:
            self.pipeline.restart_broker()

    def close(self) -> float:
        """Stop everything; the plugin's Shutdown time in seconds (go-plugin kills at 2 s)."""
        shutdown_s = self.host.stop()
        self._release()
        return shutdown_s

    def _release(self) -> None:
        """Stop every process but the plugin, and give back the record folder (and its tmpfs)."""
        for name in self.names():
            if name != "plugin":
                stop(self.process(name))
        self.pipeline.close()
        if self.tmpfs:
            subprocess.run(["umount", "-l", str(self.disk)], check=False)
        shutil.rmtree(self.disk, ignore_errors=True)


def _mount_tmpfs(folder: Path) -> bool:
    """A small tmpfs on `folder` when we are root (the disk_full fault needs one); False otherwise."""
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0
