"""The system install (deploy/install.sh) with the plugin in a packaged Grafana's sandbox.

deploy/install.sh installs into a temporary root outside /home and /root; supervisord runs
the installed pipeline as the install's system user; the plugin is launched as Grafana
12.4+ launches it (services.hostemu), as a `grafana`-like user inside the sandbox of
grafana-server.service (tests/sandbox.py: private /tmp, /home and /root hidden, only root
and that user mapped, umask 0027). Everything a panel needs must work through it.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
import sandbox
from support import ROOT, query_model
from users import SYSTEM_PYTHON, User, created_user

from services.hostemu.dataframe import StreamingFrame
from services.hostemu.host import Datasource, PluginHost, data_query
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin.identity import PLUGIN_ID, PYTHON_PATH_FILE, launcher_name

INSTALL = ROOT / "deploy" / "install.sh"
PIPELINE_USER = "zspipeline"
PUBLISHER = Datasource(uid="publisher", json_data={"allowPublish": True})


@dataclass(frozen=True)
class Installed:
    root: Path
    venv: Path
    run_dir: Path
    plugin: Path
    group: str
    grafana: User
    output: str

    def as_pipeline(self) -> dict[str, Any]:
        """subprocess arguments that run a program as the install's user, as its service does."""
        entry = pwd.getpwnam(PIPELINE_USER)
        return {
            "user": entry.pw_uid,
            "group": entry.pw_gid,
            "extra_groups": [grp.getgrnam(self.group).gr_gid],
            "env": {"PATH": "/usr/bin:/bin"},
            "cwd": "/",
        }


def install_env(root: Path, group: str) -> dict[str, str]:
    return {
        **os.environ,
        "ZMQSTREAM_INSTALL_PREFIX": f"{root}/opt/zmqstream",
        "ZMQSTREAM_INSTALL_RUN_DIR": f"{root}/run/zmqstream",
        "ZMQSTREAM_INSTALL_DATA_DIR": f"{root}/var/lib/zmqstream",
        "ZMQSTREAM_INSTALL_LOG_DIR": f"{root}/var/log/zmqstream",
        "ZMQSTREAM_INSTALL_PLUGINS_DIR": f"{root}/var/lib/grafana/plugins",
        "ZMQSTREAM_INSTALL_CONF_DIR": f"{root}/etc/zmqstream",
        "ZMQSTREAM_INSTALL_UNIT_DIR": f"{root}/etc/systemd/system",
        "ZMQSTREAM_INSTALL_USER": PIPELINE_USER,
        "ZMQSTREAM_INSTALL_GROUP": group,
        "ZMQSTREAM_INSTALL_PYTHON": SYSTEM_PYTHON,
        "ZMQSTREAM_INSTALL_WORKERS": "1",
        "ZMQSTREAM_INSTALL_START": "0",
    }


def install(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """deploy/install.sh as a hardened root runs it (umask 027: nothing readable by others unless made so)."""
    return subprocess.run(
        ["bash", str(INSTALL)], env=env, umask=0o027, capture_output=True, text=True, timeout=600
    )


def sandbox_usable() -> str:
    """Why the sandbox cannot be built here, or ''."""
    if os.geteuid() != 0:
        return "needs root to build the sandbox and create users"
    probe = subprocess.run(["unshare", "--user", "--mount", "true"], capture_output=True, text=True)
    return "" if probe.returncode == 0 else f"user namespaces unusable here: {probe.stderr.strip()}"


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    reason = sandbox_usable()
    if reason:
        pytest.skip(reason)
    with created_user("zsgrafanad") as grafana:
        group = grp.getgrgid(grafana.gid).gr_name  # its own group, as the packaged grafana's
        root = Path(tempfile.mkdtemp(prefix="zmqstream-sandbox-", dir="/opt"))
        root.chmod(0o755)
        try:
            result = install(install_env(root, group))
            assert result.returncode == 0, result.stdout + result.stderr
            again = install(install_env(root, group))  # idempotent: an upgrade is the same command
            assert again.returncode == 0, again.stdout + again.stderr
            assert f"user {PIPELINE_USER} exists" in again.stdout
            assert "made " not in again.stdout  # the venv is kept
            venv = root / "opt/zmqstream/venv"
            yield Installed(
                root,
                venv,
                root / "run/zmqstream",
                root / "var/lib/grafana/plugins" / PLUGIN_ID,
                group,
                grafana,
                result.stdout,
            )
        finally:
            subprocess.run(["userdel", PIPELINE_USER], check=False, capture_output=True)
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pipeline(installed: Installed) -> Iterator[Path]:
    """supervisord with the installed conf, as the pipeline's user; yields its log."""
    log = installed.root / "supervisord.out"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(installed.venv / "bin/supervisord"),
                "-c",
                str(installed.root / "etc/zmqstream/supervisord.conf"),
            ],
            **installed.as_pipeline(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not all((installed.run_dir / name).exists() for name in ("control", "publish", "history")):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield log
    finally:
        process.terminate()
        process.wait(20)


@pytest.fixture(scope="module")
def grafana_plugin(installed: Installed, pipeline: Path) -> Iterator[PluginHost]:
    host = sandboxed_plugin(installed, {"run_dir": str(installed.run_dir), "socket_group": installed.group})
    try:
        deadline = time.monotonic() + 20
        while "a recorder is alive" not in (health := host.check_health()).message:
            assert time.monotonic() < deadline, health.message
            time.sleep(0.3)
        yield host
    finally:
        host.stop()


def sandboxed_plugin(installed: Installed, settings: dict[str, str]) -> PluginHost:
    wrapper = sandbox.wrapper(
        installed.root,
        installed.grafana.uid,
        installed.grafana.gid,
        installed.plugin / launcher_name("linux_amd64"),
        SYSTEM_PYTHON,
    )
    return PluginHost(wrapper, settings, own_mounts=True)


def test_the_install_puts_everything_where_a_sandboxed_grafana_can_run_it(installed: Installed) -> None:
    python = (installed.plugin / PYTHON_PATH_FILE).read_text().strip()
    assert python == str(installed.venv / "bin/python")
    assert not os.path.realpath(python).startswith(("/home/", "/root/"))
    info = installed.run_dir.stat()
    assert (info.st_mode & 0o777, info.st_gid) == (0o770, grp.getgrnam(installed.group).gr_gid)
    assert PIPELINE_USER in grp.getgrnam(installed.group).gr_mem
    conf = (installed.root / "etc/zmqstream/supervisord.conf").read_text()
    assert f"command={installed.venv}/bin/zmqstream-broker" in conf
    unit = (installed.root / "etc/systemd/system/zmqstream.service").read_text()
    assert f"User={PIPELINE_USER}" in unit
    assert f"SupplementaryGroups={installed.group}" in unit
    assert f"run_dir = {installed.run_dir}" in installed.output
    assert f"socket_group = {installed.group}" in installed.output
    assert "not editable" not in installed.output
    assert not list(installed.venv.glob("lib/python3*/site-packages/__editable__*"))


def test_a_normal_start_logs_no_crit_line_and_each_line_once(
    pipeline: Path, grafana_plugin: PluginHost
) -> None:
    lines = [line for line in pipeline.read_text().splitlines() if not line.startswith("{")]
    assert any("spawned: 'broker'" in line for line in lines), lines
    assert not [line for line in lines if " CRIT " in line]
    assert len(lines) == len(set(lines)), lines


def test_streams_and_querydata_work_through_the_sandbox(grafana_plugin: PluginHost) -> None:
    health = grafana_plugin.check_health()
    assert health.status == pb.CheckHealthResponse.OK
    assert "is up: 1 worker alive" in health.message, health.message
    stream = grafana_plugin.run_stream("custom-10-20-100")
    try:
        frame = stream.read_rows(5)
    finally:
        stream.cancel()
    assert all(10 <= value <= 20 for value in frame.values[1][-5:])
    now_ms = time.time_ns() // 1_000_000
    query = data_query("A", query_model(10, 20, 1000), now_ms - 10_000, now_ms)
    response = grafana_plugin.query_data([query]).responses["A"]
    assert response.status == 200, response.error
    table = pa.ipc.open_file(pa.py_buffer(response.frames[0])).read_all()
    assert table.num_rows >= 9


def test_published_history_and_publishstream_work_through_the_sandbox(
    installed: Installed, grafana_plugin: PluginHost
) -> None:
    start_ms = time.time_ns() // 1_000_000 - 5_000
    lines = "".join(orjson.dumps({"time": start_ms + i, "temp": float(i)}).decode() + "\n" for i in range(3))
    published = subprocess.run(
        [
            str(installed.venv / "bin/zmqstream"),
            "publish",
            "pub-room",
            "--run-dir",
            str(installed.run_dir),
            "--socket-group",
            installed.group,
        ],
        input=lines,
        **installed.as_pipeline(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert published.returncode == 0, published.stderr
    context = PUBLISHER.context()
    context.user.role = "Editor"
    request = pb.PublishStreamRequest(
        pluginContext=context, path="pub-room", data=orjson.dumps({"time": start_ms + 10, "temp": 10.0})
    )
    assert grafana_plugin.stream.PublishStream(request, timeout=10).status == pb.PublishStreamResponse.OK
    history = StreamingFrame()
    history.push(grafana_plugin.subscribe("pub-room").data)
    assert history.column("temp") == [0.0, 1.0, 2.0, 10.0]
    now_ms = time.time_ns() // 1_000_000
    query = data_query("A", {"kind": "published", "channel": "room"}, start_ms - 1000, now_ms)
    response = grafana_plugin.query_data([query]).responses["A"]
    assert response.status == 200, response.error
    table = pa.ipc.open_file(pa.py_buffer(response.frames[0])).read_all()
    assert table.column("temp").to_pylist() == [0.0, 1.0, 2.0, 10.0]


def test_the_readmes_old_tmp_setting_is_explained_not_asked_about(
    installed: Installed, pipeline: Path
) -> None:
    # The pipeline's folder as `make run` makes it: in the host's /tmp, which the sandbox hides.
    old = Path(f"/tmp/zmqstream-{pwd.getpwnam(PIPELINE_USER).pw_uid}")
    old.mkdir(mode=0o700)
    os.chown(old, pwd.getpwnam(PIPELINE_USER).pw_uid, -1)
    host = sandboxed_plugin(installed, {"run_dir": str(old), "socket_group": installed.group})
    try:
        health = host.check_health()
    finally:
        host.stop()
        old.rmdir()
    assert health.status == pb.CheckHealthResponse.ERROR
    assert f"the run folder {old} does not exist as this process sees it" in health.message
    assert "private /tmp" in health.message
    assert "run_dir = /run/zmqstream" in health.message
    assert "Grafana installed as a service" in health.message
    assert "Is it running" not in health.message


def test_the_install_refuses_a_python_under_a_home_folder_and_a_missing_group(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the install runs as root")
    home_python = Path(tempfile.mkdtemp(prefix="zs-pyenv-", dir="/root")) / "python3"
    try:
        home_python.write_text("#!/bin/sh\nexit 0\n")
        home_python.chmod(0o755)
        env = {**install_env(tmp_path, "root"), "ZMQSTREAM_INSTALL_PYTHON": str(home_python)}
        refused = install(env)
        assert refused.returncode == 1
        assert f"Python {home_python} is {home_python}, under a home folder" in refused.stderr
        assert "Grafana's user cannot execute it and ProtectHome hides it" in refused.stderr
    finally:
        shutil.rmtree(home_python.parent)
    no_group = install(install_env(tmp_path, "zs-no-such-group"))
    assert no_group.returncode == 1
    assert "there is no group zs-no-such-group: install Grafana first" in no_group.stderr
    assert not (tmp_path / "opt").exists()  # refused before anything was made


def test_the_checks_the_install_prints_answer(installed: Installed, grafana_plugin: PluginHost) -> None:
    checks = [line.split(" -- ", 1)[1].split() for line in installed.output.splitlines() if " -- " in line]
    checks = [argv for argv in checks if argv[0].startswith(str(installed.venv))]
    assert len(checks) == 2, installed.output  # zmqstream status, supervisorctl status
    for argv in checks:
        result = subprocess.run(argv, **installed.as_pipeline(), capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "recorder" in result.stdout
