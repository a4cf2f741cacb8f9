"""The plugin listens where only Grafana's user can reach it, and ends with its host."""

import contextlib
import grp
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from support import ROOT
from users import User

from services.hostemu.host import Datasource, PluginHost, data_query, grafana_env, parse_handshake
from services.packaging.bundle import write_launchers
from services.plugin import listen
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin._proto import pluginv2_pb2_grpc

CONNECT = "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1]); print('connected')"


def launch(tmp_path: Path, **env: str) -> PluginHost:
    """The plugin as Grafana launches it, with no broker: the transport is what is tested."""
    return PluginHost(write_launchers(tmp_path)[0], {"run_dir": str(tmp_path)}, env=env)


def socket_of(host: PluginHost) -> Path:
    assert host.address.startswith("unix:"), f"not a unix socket: {host.address}"
    return Path(host.address.removeprefix("unix:"))


def test_a_private_unix_socket_gone_after_shutdown(tmp_path: Path) -> None:
    host = launch(tmp_path)
    try:
        path = socket_of(host)
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert path.parent.parent == Path("/tmp")
        assert host.check_health().status == pb.CheckHealthResponse.ERROR  # answered: no broker here
    finally:
        host.stop()
    assert host.process.returncode == 0
    assert not path.parent.exists(), "the socket's folder outlived the plugin"


def test_another_user_cannot_connect(tmp_path: Path, stranger: User) -> None:
    host = launch(tmp_path)
    try:
        path = socket_of(host)
        mine = subprocess.run([sys.executable, "-c", CONNECT, str(path)], capture_output=True, text=True)
        assert mine.stdout.strip() == "connected", mine.stderr
        theirs = stranger.python(["-c", CONNECT, str(path)])
        assert theirs.returncode != 0
        assert "Permission denied" in theirs.stderr
    finally:
        host.stop()


def test_the_socket_lands_in_plugin_unix_socket_dir(tmp_path: Path) -> None:
    chosen = tmp_path / "sockets"
    chosen.mkdir()
    host = launch(tmp_path, PLUGIN_UNIX_SOCKET_DIR=str(chosen))
    try:
        assert socket_of(host).parent.parent == chosen
    finally:
        host.stop()
    assert list(chosen.iterdir()) == []


def test_without_a_socket_dir_it_prefers_grafanas_runtime_folder_to_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A packaged Grafana's private /tmp is aged out by systemd-tmpfiles; /run/grafana is not."""
    runtime = Path(listen.RUNTIME_FOLDER)
    if os.geteuid() != 0 or runtime.exists():
        pytest.skip("needs root and no /run/grafana of a real Grafana to borrow")
    monkeypatch.delenv("TMPDIR", raising=False)
    runtime.mkdir(mode=0o750, parents=True)
    try:
        host = launch(tmp_path)
        try:
            assert socket_of(host).parent.parent == runtime
        finally:
            host.stop()
        assert list(runtime.iterdir()) == []
    finally:
        runtime.rmdir()


def test_an_unusable_socket_dir_is_said_in_words(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    env = {**grafana_env(), "PLUGIN_UNIX_SOCKET_DIR": str(missing)}
    result = subprocess.run(
        [str(write_launchers(tmp_path)[0])], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"cannot make the plugin's socket folder in {missing}" in result.stderr


def test_plugin_unix_socket_group_lets_the_group_in(tmp_path: Path, grafana_user: User) -> None:
    group = grp.getgrgid(grafana_user.groups[0])
    host = launch(tmp_path, PLUGIN_UNIX_SOCKET_GROUP=group.gr_name)
    try:
        path = socket_of(host)
        info = path.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o660, group.gr_gid)
        member = grafana_user.python(["-c", CONNECT, str(path)])
        assert member.stdout.strip() == "connected", member.stderr
    finally:
        host.stop()


def test_tcp_only_when_the_path_is_too_long_and_then_in_the_port_range(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        low = taken.getsockname()[1]
        host = launch(
            tmp_path,
            PLUGIN_UNIX_SOCKET_DIR=str(deep),
            PLUGIN_MIN_PORT=str(low),
            PLUGIN_MAX_PORT=str(low + 20),
        )
        try:
            address, port = host.address.rsplit(":", 1)
            assert address == "127.0.0.1"
            assert low < int(port) <= low + 20, "the taken port was not skipped, or the range not kept"
            assert host.check_health().status == pb.CheckHealthResponse.ERROR  # answered
        finally:
            host.stop()
    assert list(deep.iterdir()) == []


def gone(pid: int) -> bool:
    """Exited (a zombie no one reaps counts: it runs no more)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


GRAFANA = (
    "import subprocess, sys\n"
    "plugin = subprocess.Popen(sys.argv[1:])\n"
    "print(plugin.pid, flush=True)\n"
    "plugin.wait()\n"
)
"""A host that launches the plugin, prints its pid, and can be killed with -9 (no Shutdown)."""


def kill_host_and_time_the_plugin(
    tmp_path: Path, load: Callable[[str], None] = lambda address: None
) -> float:
    """Seconds from the host's kill -9 until the plugin is gone; `load` runs on its address first."""
    host = subprocess.Popen(
        [sys.executable, "-c", GRAFANA, str(write_launchers(tmp_path)[0])],
        cwd=ROOT,
        env=grafana_env({"run_dir": str(tmp_path)}),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert host.stdout is not None
    with host.stdout:
        plugin = int(host.stdout.readline())
        address = parse_handshake(host.stdout.readline())
        path = Path(address.removeprefix("unix:"))
        assert path.exists()
        load(address)
        host.kill()
        host.wait()
        killed = time.monotonic()
        while not gone(plugin):
            assert time.monotonic() - killed < 30, "the plugin outlived its host"
            time.sleep(0.01)
    assert not path.parent.exists(), "its socket's folder is left"
    return time.monotonic() - killed


@pytest.mark.timeout(60)
def test_it_exits_when_its_host_is_killed(tmp_path: Path) -> None:
    """Grafana killed with -9 sends no Shutdown: the plugin must notice on its own."""
    elapsed = kill_host_and_time_the_plugin(tmp_path)
    print(f"\n[figure] plugin exit after its host was killed with -9: {elapsed:.2f} s")
    assert elapsed < 3


@pytest.mark.timeout(90)
def test_a_saturated_plugin_exits_soon_after_its_host_is_killed(tmp_path: Path) -> None:
    """Busy with QueryData from eight clients, it must still end within 0.5 s of its host
    (it lived 2 s here before, 16-21 s under a stream flood); 1.5 s leaves room for a shared machine."""
    stop = threading.Event()
    query = data_query("A", {"tickInterval": 1}, 0, 3_600_000, max_data_points=200_000)

    def flood(address: str) -> None:
        def client() -> None:
            with grpc.insecure_channel(address) as channel:
                data = pluginv2_pb2_grpc.DataStub(channel)
                request = pb.QueryDataRequest(pluginContext=Datasource().context(), queries=[query])
                while not stop.is_set():
                    with contextlib.suppress(grpc.RpcError):
                        data.QueryData(request, timeout=5)

        for _ in range(8):
            threading.Thread(target=client, daemon=True).start()
        time.sleep(3)  # saturated by now

    try:
        elapsed = kill_host_and_time_the_plugin(tmp_path, flood)
    finally:
        stop.set()
    print(f"\n[figure] saturated plugin's exit after its host was killed with -9: {elapsed:.2f} s")
    assert elapsed < 1.5


def test_a_parent_gone_before_the_kernel_was_asked_is_noticed_too() -> None:
    """PR_SET_PDEATHSIG misses a parent that died before the call; the getppid thread does not,
    and it ends the process even if the main thread never lets the orderly stop run."""
    busy = (
        "import os, time\n"
        "from services.plugin import orphan\n"
        "orphan.watch_parent(os.getppid() + 1, lambda: None)\n"  # not our parent
        "while True: pass\n"
    )
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", busy], cwd=ROOT, timeout=10, check=True)
    assert time.monotonic() - started < 0.5 + 2, "and the interpreter's start"
