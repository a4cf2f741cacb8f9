"""The installable zip: its layout, and its launcher serving Grafana once set up."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support import running_pipeline

from services.hostemu.host import HandshakeError, PluginHost
from services.packaging.package import package
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin.identity import PLUGIN_ID, PYTHON_PATH_FILE, launcher_name


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zip built and unpacked as `grafana cli` would, into a plugins folder."""
    out = tmp_path_factory.mktemp("package")
    archive = package(out, backend_only=True)
    plugins = tmp_path_factory.mktemp("plugins")
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        assert all(name.startswith(f"{PLUGIN_ID}/") for name in names)
        zf.extractall(plugins)
        for info in zf.infolist():  # zipfile drops modes on extract; grafana cli keeps them
            (plugins / info.filename).chmod(info.external_attr >> 16 & 0o777)
    return plugins / PLUGIN_ID


def test_the_zip_holds_everything_the_host_needs(installed: Path) -> None:
    launcher = installed / launcher_name("linux_amd64")
    assert launcher.stat().st_mode & 0o111, "the launcher must stay executable"
    assert (installed / "plugin.json").exists()
    assert not (installed / PYTHON_PATH_FILE).exists(), "the host's interpreter is set up there, not here"
    (wheel,) = (installed / "python").glob("zmqstream-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert {"services/plugin/app.py", "services/plugin/_proto/pluginv2_pb2.py"} <= set(zf.namelist())
    subprocess.run(["sh", "-n", str(installed / "setup-python.sh")], check=True)


def test_the_launcher_explains_a_missing_setup(installed: Path) -> None:
    with pytest.raises(HandshakeError, match=r"setup-python\.sh"):
        PluginHost(installed / launcher_name("linux_amd64"))


def test_once_set_up_the_packaged_launcher_serves_grafana(installed: Path) -> None:
    (installed / PYTHON_PATH_FILE).write_text(sys.executable + "\n")  # what setup-python.sh writes
    try:
        with running_pipeline(1) as reference:
            run_dir = str(Path(reference.executable).parent)
            host = PluginHost(installed / launcher_name("linux_amd64"), {"run_dir": run_dir})
            try:
                health = host.check_health()
                assert health.status == pb.CheckHealthResponse.OK, health.message
            finally:
                host.stop()
    finally:
        (installed / PYTHON_PATH_FILE).unlink()
