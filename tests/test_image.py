"""What the Docker image builds, built from a fresh clone without Docker: deploy/build-plugin.sh
(the Dockerfile's own step) makes the stubs, installs the package (not editable) and the
plugin folder; the plugin then serves Grafana from another working directory, in Grafana
12.4+'s environment, with the clone gone: only the installed copy is left to import.
"""

import shutil
import subprocess
from pathlib import Path

import pytest
from support import ROOT, Pipeline, wait_for_workers

from services.hostemu.host import PluginHost
from services.plugin.identity import PLUGIN_ID, launcher_name


@pytest.fixture(scope="module")
def plugin_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scratch = tmp_path_factory.mktemp("image")
    clone = scratch / "src"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    assert not (clone / "services" / "plugin" / "_proto").exists(), "a fresh clone has no stubs"
    venv, plugins = scratch / "venv", scratch / "plugins"
    build = subprocess.run(
        ["sh", "deploy/build-plugin.sh", str(venv), str(plugins), "--backend-only"],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    shutil.rmtree(clone)
    return plugins / PLUGIN_ID


def test_the_image_build_from_a_fresh_clone_serves_grafana(plugin_folder: Path, tmp_path: Path) -> None:
    (installed,) = (plugin_folder.parent.parent / "venv").glob("lib/python*/site-packages/services")
    assert (installed / "plugin" / "_proto" / "pluginv2_pb2.py").exists()
    pipeline = Pipeline(1)
    try:
        host = PluginHost(
            plugin_folder / launcher_name("linux_amd64"), {"run_dir": str(pipeline.run_dir)}, cwd=tmp_path
        )
        try:
            wait_for_workers(host, 1)
            stream = host.run_stream("custom-0-1-50")
            assert len(stream.read_rows(3).times_ns) >= 3
            stream.cancel()
        finally:
            host.stop()
    finally:
        pipeline.close()
