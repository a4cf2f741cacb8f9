"""Who the plugin is to Grafana. deploy/plugin/plugin.json says the same (a test checks)."""

from pathlib import Path

PLUGIN_ID = "zmqstream-stream-datasource"
EXECUTABLE = "gpx_zmqstream"
ARCHES = ("linux_amd64", "linux_arm64")
"""The `<os>_<arch>` suffixes Grafana may look for; the launcher is a shell script, so one fits all."""
PYTHON_PATH_FILE = "python.path"
"""Beside the launchers: the absolute path of the interpreter that runs the plugin."""


def launcher_name(arch: str) -> str:
    """The file Grafana execs on `arch`: `<executable>_<os>_<arch>`."""
    return f"{EXECUTABLE}_{arch}"


CHECKOUT_PLUGIN_DIR = Path(__file__).resolve().parents[2] / "build" / "plugins" / PLUGIN_ID
"""Where `make bundle` puts the plugin folder in a checkout (services.packaging.bundle)."""
