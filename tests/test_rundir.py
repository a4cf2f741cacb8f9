"""The run folder: another user's folder or symlink is refused by everyone; one broker per folder."""

import contextlib
import grp
import os
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from support import ROOT, stop
from users import User

from services.cli.status import fetch
from services.common import protocol
from services.common.errors import PipelineError
from services.hostemu.host import PluginHost
from services.packaging.bundle import write_launchers
from services.plugin._proto import pluginv2_pb2 as pb

FAKE_BROKER = "fake-broker"


@pytest.fixture
def folder_name() -> Iterator[Path]:
    """A fresh, unused name under /tmp, as predictable to others as /tmp/zmqstream-<uid>."""
    path = Path(tempfile.mktemp(prefix="zs-run-", dir="/tmp"))
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


def run_python(args: list[str], run_dir: Path, timeout_s: float = 20) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ZMQSTREAM_RUN_DIR": str(run_dir)}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s
    )


@contextlib.contextmanager
def running_broker(run_dir: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A broker on `run_dir`, once it has bound; stopped afterwards."""
    env = {**os.environ, "ZMQSTREAM_RUN_DIR": str(run_dir)}
    process = subprocess.Popen(
        [sys.executable, "-m", "services.broker", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 10
    while not (run_dir / "control").exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the broker did not bind"
        time.sleep(0.05)
    try:
        yield process
    finally:
        stop(process)
        process.communicate()


@contextlib.contextmanager
def fake_broker(run_dir: Path) -> Iterator[None]:
    """The hijacker's broker: binds in their folder and answers every StatusRequest."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    sock.bind(f"ipc://{run_dir}/control")
    answering = True

    def answer() -> None:
        while answering:
            if sock.poll(50):
                routing_id, *frames = sock.recv_multipart()
                message = protocol.decode(frames)
                if isinstance(message, protocol.StatusRequest):
                    worker = {"pid": 1, "channels": 0, "load": 0, "ticks_late": 0, "seen_s_ago": 0}
                    reply = protocol.StatusReply(message.request_id, FAKE_BROKER, {"w": worker}, {}, 0)
                    sock.send_multipart([routing_id, *protocol.encode(reply)])

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield
    finally:
        answering = False
        thread.join()
        sock.close()
        ctx.term()


def answers(run_dir: Path) -> bool:
    """Whether a broker answers a StatusRequest in `run_dir`, asked with no checks at all."""
    with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as sock:
        sock.linger = 0
        sock.connect(f"ipc://{run_dir}/control")
        sock.send_multipart(protocol.encode(protocol.StatusRequest("x")))
        return bool(sock.poll(2000))


def made_by(user: User, path: Path, mode: str = "700") -> None:
    result = user.run(["/bin/mkdir", "-m", mode, str(path)])
    assert result.returncode == 0, result.stderr


def test_another_users_folder_is_refused_by_broker_worker_cli_and_plugin(
    stranger: User, folder_name: Path, tmp_path: Path
) -> None:
    made_by(stranger, folder_name, "777")  # as a hijacker would: open to us, theirs
    expected = f"run folder {folder_name} is owned by uid {stranger.uid}, not you (uid 0)"

    broker = run_python(["-m", "services.broker"], folder_name)
    assert broker.returncode == 1
    assert expected in broker.stderr
    assert "Remove it or set ZMQSTREAM_RUN_DIR" in broker.stderr
    assert not (folder_name / "control").exists()

    with fake_broker(folder_name):
        assert answers(folder_name), "the fake broker does not answer: the test proves nothing"
        worker = run_python(["-m", "services.generator"], folder_name)
        assert worker.returncode == 2
        assert expected in worker.stderr

        status = run_python(["-m", "services.cli", "status", "--timeout", "1"], folder_name)
        assert status.returncode == 1
        assert expected in status.stderr

        host = PluginHost(write_launchers(tmp_path)[0], {"run_dir": str(folder_name)})
        try:
            health = host.check_health()
            assert health.status == pb.CheckHealthResponse.ERROR
            assert expected in health.message
            assert FAKE_BROKER not in health.message
            assert host.subscribe("custom-1-2-100").status == pb.SubscribeStreamResponse.OK
            stream = host.run_stream("custom-1-2-100")
            with pytest.raises(Exception, match="owned by uid"):
                stream.read_rows(1, timeout_s=5)
        finally:
            host.stop()


def test_a_planted_symlink_is_never_followed(stranger: User, folder_name: Path, tmp_path: Path) -> None:
    target = tmp_path / "roots-own"  # private and root's: only the link is the stranger's
    target.mkdir(mode=0o700)
    result = stranger.run(["/bin/ln", "-s", str(target), str(folder_name)])
    assert result.returncode == 0, result.stderr
    expected = f"run folder {folder_name} is a symlink or not a folder: refusing to use it"

    for args in (["-m", "services.broker"], ["-m", "services.common.rundir"]):
        refused = run_python(args, folder_name)
        assert refused.returncode == 1
        assert expected in refused.stderr
    assert list(target.iterdir()) == [], "something was written through the link"
    status = run_python(["-m", "services.cli", "status", "--timeout", "1"], folder_name)
    assert status.returncode == 1
    assert expected in status.stderr


def test_make_runs_step_makes_a_private_folder_and_tightens_our_own(folder_name: Path) -> None:
    assert run_python(["-m", "services.common.rundir"], folder_name).returncode == 0
    assert stat.S_IMODE(folder_name.stat().st_mode) == 0o700
    folder_name.chmod(0o755)  # what `mkdir -p` used to leave
    assert run_python(["-m", "services.common.rundir"], folder_name).returncode == 0
    assert stat.S_IMODE(folder_name.stat().st_mode) == 0o700
    folder_name.chmod(0o777)  # anyone may have planted something in it: not ours to trust
    refused = run_python(["-m", "services.common.rundir"], folder_name)
    assert refused.returncode == 1
    assert "is writable by others (mode 0777)" in refused.stderr


def test_a_second_broker_exits_and_the_first_keeps_serving(folder_name: Path) -> None:
    with running_broker(folder_name) as first:
        before = fetch(f"ipc://{folder_name}/control", 2).broker
        second = run_python(["-m", "services.broker"], folder_name)
        assert second.returncode == 1
        assert f"another broker (pid {first.pid}) owns run folder {folder_name}" in second.stderr
        assert fetch(f"ipc://{folder_name}/control", 2).broker == before


def test_socket_group_lets_its_members_in_and_no_one_else(
    grafana_user: User, stranger: User, folder_name: Path
) -> None:
    group = grp.getgrgid(grafana_user.groups[0]).gr_name
    with running_broker(folder_name, "--socket-group", group):
        info = folder_name.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o770, grafana_user.groups[0])
        for name in ("control", "frames-in", "frames-out"):
            info = (folder_name / name).stat()
            assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o660, grafana_user.groups[0])

        env = {"ZMQSTREAM_RUN_DIR": str(folder_name), "ZMQSTREAM_SOCKET_GROUP": group}
        member = grafana_user.python(["-m", "services.cli", "status", "--json"], env)
        assert member.returncode == 0, member.stderr
        assert '"broker"' in member.stdout

        outsider = stranger.python(["-m", "services.cli", "status", "--timeout", "1"], env)
        assert outsider.returncode == 1
        assert f"permission denied on ipc://{folder_name}/control" in outsider.stderr


def test_a_plugin_started_first_does_not_connect_into_a_folder_planted_later(
    stranger: User, folder_name: Path, tmp_path: Path
) -> None:
    host = PluginHost(write_launchers(tmp_path)[0], {"run_dir": str(folder_name)})
    try:
        assert (
            f"the run folder {folder_name} does not exist" in host.check_health().message
        )  # nothing there yet
        made_by(stranger, folder_name, "777")
        with fake_broker(folder_name):
            assert answers(folder_name)
            time.sleep(1.5)  # a plugin heartbeat (1 s) has come by since
            health = host.check_health()
            assert health.status == pb.CheckHealthResponse.ERROR
            assert f"is owned by uid {stranger.uid}" in health.message
    finally:
        host.stop()


def test_every_process_takes_run_dir_without_the_variable(folder_name: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ZMQSTREAM_RUN_DIR"}
    flags = ["--run-dir", str(folder_name)]
    processes = [
        subprocess.Popen([sys.executable, "-m", module, *flags], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        for module in ("services.broker", "services.recorder", "services.generator")
    ]
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                roles = sorted(
                    w.get("role", "generator")
                    for w in fetch(f"ipc://{folder_name}/control", 1).workers.values()
                )
            except PipelineError:
                roles = []
            if roles == ["generator", "recorder"]:
                break
            assert time.monotonic() < deadline, roles
            time.sleep(0.1)
        assert (folder_name / "publish").exists()
    finally:
        for process in processes:
            stop(process)
