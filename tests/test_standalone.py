"""Debug mode: a plugin started by hand, and the launcher Grafana runs attaching to it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support import ROOT, running_pipeline

from services.hostemu.host import PluginHost
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin.standalone import ADDRESS_FILE, PID_FILE


def wait_for(path: Path, present: bool, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while path.exists() != present:
        assert time.monotonic() < deadline, f"{path} {'never appeared' if present else 'was not removed'}"
        time.sleep(0.05)


def test_the_launched_plugin_attaches_to_a_standalone_one_and_lets_go_when_it_ends() -> None:
    with running_pipeline(1) as normal:
        plugin_dir = Path(normal.executable).parent  # holds the gpx_ launcher and the ipc sockets
        env = {**os.environ, "ZMQSTREAM_RUN_DIR": str(plugin_dir)}
        developer = subprocess.Popen(
            [sys.executable, "-m", "services.plugin", "--standalone", "--plugin-dir", str(plugin_dir)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for(plugin_dir / ADDRESS_FILE, present=True)
            address = (plugin_dir / ADDRESS_FILE).read_text().strip()
            assert int((plugin_dir / PID_FILE).read_text()) == developer.pid
            normal.process.wait(5)  # the copy Grafana had launched was evicted

            attached = PluginHost(normal.executable, {"run_dir": str(plugin_dir)})
            try:
                assert attached.address == address
                health = attached.check_health()
                assert health.status == pb.CheckHealthResponse.OK, health.message
                frame = attached.run_stream("custom-0-1-50").read_rows(3)
                assert len(frame.times_ns) >= 3

                developer.send_signal(signal.SIGINT)  # Ctrl-C in the developer's terminal
                assert developer.wait(5) == 0
                wait_for(plugin_dir / ADDRESS_FILE, present=False)
                assert attached.process.wait(5) == 0, "the launcher must exit so Grafana relaunches it"
            finally:
                attached.stop()
        finally:
            if developer.poll() is None:
                developer.kill()
                developer.wait()
            assert developer.stderr is not None
            developer.stderr.close()
