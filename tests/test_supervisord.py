"""The real supervisord.conf: it runs the pipeline, restarts what dies, and stops it all."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ROOT

from services.cli.status import fetch
from services.common.errors import PipelineError
from services.hostemu.host import PluginHost
from services.packaging.bundle import write_launchers
from services.plugin.identity import CHECKOUT_PLUGIN_DIR, PLUGIN_ID

SUPERVISORD = Path(ROOT) / ".venv" / "bin" / "supervisord"
STOPPED = re.compile(r" INFO stopped: (\S+) \(")
"""supervisord's log line when a program has stopped."""


class Supervised:
    def __init__(self) -> None:
        self.run_dir = Path(tempfile.mkdtemp(prefix="zs", dir="/tmp"))
        env = {**os.environ, "ZMQSTREAM_RUN_DIR": str(self.run_dir), "ZMQSTREAM_WORKERS": "2"}
        self.log = open(self.run_dir / "supervisord.out", "wb")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [
                str(SUPERVISORD),
                "-c",
                str(ROOT / "supervisord.conf"),
                "--user",
                str(os.getuid()),
            ],  # as make run
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.control = f"ipc://{self.run_dir}/control"

    def worker_pids(self) -> dict[str, int]:
        return {w: int(info["pid"]) for w, info in fetch(self.control, 2).workers.items()}

    def wait_for(self, names: list[str]) -> None:
        """Until the broker knows exactly these workers (generators and the recorder)."""
        deadline = time.monotonic() + 20
        while True:
            try:
                if sorted(self.worker_pids()) == names:
                    return
            except PipelineError:
                pass  # the broker is not up yet
            assert time.monotonic() < deadline, f"the pipeline did not come up: {names}"
            time.sleep(0.1)

    def descendants(self) -> list[int]:
        """Every live process started with this run dir in its environment (our children)."""
        mark = f"ZMQSTREAM_RUN_DIR={self.run_dir}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != self.process.pid:
                try:
                    if mark in (entry / "environ").read_bytes().split(b"\0"):
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in self.descendants():
            os.kill(pid, signal.SIGKILL)
        self.log.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)


@pytest.fixture
def supervised() -> Iterator[Supervised]:
    supervised = Supervised()
    try:
        yield supervised
    finally:
        supervised.close()


def test_supervisord_runs_restarts_and_stops_the_pipeline(supervised: Supervised) -> None:
    host = PluginHost(write_launchers(supervised.run_dir)[0], {"run_dir": str(supervised.run_dir)})
    try:
        supervised.wait_for(["generator_00", "generator_01", "recorder"])
        stream = host.run_stream("custom-10-20-100")
        assert len(stream.read_rows(3).times_ns) >= 3

        victim = supervised.worker_pids()["generator_00"]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while supervised.worker_pids().get("generator_00") in (None, victim):
            assert time.monotonic() < deadline, "supervisord did not restart the killed worker"
            time.sleep(0.1)
        stream.cancel()
    finally:
        host.stop()

    children = supervised.descendants()
    assert len(children) >= 4, f"expected broker, recorder and 2 workers, found {children}"
    started = time.monotonic()
    supervised.process.send_signal(signal.SIGTERM)
    assert supervised.process.wait(5) == 0
    while (left := supervised.descendants()) and time.monotonic() - started < 5:
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    print(f"\n[figure] SIGTERM to supervisord: everything gone after {elapsed:.2f} s")
    assert not left, f"orphans: {left}"
    assert elapsed < 5
    supervised.log.flush()
    log = (supervised.run_dir / "supervisord.out").read_text()
    stopped = STOPPED.findall(log)
    assert sorted(stopped) == ["broker", "generator_00", "generator_01", "recorder"], stopped
    assert stopped[-1] == "broker", f"the broker must stop last: {stopped}"
    assert stopped[-2] == "recorder", (
        f"the recorder must stop after the generators, before the broker: {stopped}"
    )


def test_make_runs_start_is_quiet_then_says_where_everything_is(supervised: Supervised) -> None:
    ready = subprocess.run(
        [sys.executable, "-m", "services.install.ready", "--timeout", "30"],
        cwd=ROOT,
        env={**os.environ, "ZMQSTREAM_RUN_DIR": str(supervised.run_dir), "ZMQSTREAM_WORKERS": "2"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ready.returncode == 0, ready.stderr
    said = ready.stdout
    assert f"zmqstream ready: 2 generator workers and the recorder, sockets in {supervised.run_dir}" in said
    assert f"plugin folder  {CHECKOUT_PLUGIN_DIR}" in said
    assert f"[plugin.{PLUGIN_ID}] run_dir = {supervised.run_dir}" in said
    assert "make stop" in said
    supervised.log.flush()
    lines = [
        line for line in (supervised.run_dir / "supervisord.out").read_text().splitlines() if line[:1] != "{"
    ]
    assert any("spawned: 'broker'" in line for line in lines), lines
    assert not [line for line in lines if " CRIT " in line], lines
    assert len(lines) == len(set(lines)), "a supervisord line printed twice"
    ctl = subprocess.run(
        [
            str(SUPERVISORD.with_name("supervisorctl")),
            "-c",
            str(ROOT / "supervisord.conf"),
            "status",
            "broker",
        ],
        env={**os.environ, "ZMQSTREAM_RUN_DIR": str(supervised.run_dir)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "RUNNING" in ctl.stdout, ctl.stdout + ctl.stderr
