"""The Grafana side of deploy/ agrees with the code: ids, provisioning, dashboard queries."""

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common.channels import SOURCE, ChannelSpec, EventChannel, Limits
from services.common.waveforms import registry
from services.packaging.bundle import PLUGIN_JSON
from services.plugin.identity import EXECUTABLE, PLUGIN_ID, launcher_name
from services.sources import registry as sources

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PLUGIN = json.loads(PLUGIN_JSON.read_text())


def load(relative: str) -> Any:
    return yaml.safe_load((DEPLOY / relative).read_text())


def test_plugin_json_declares_a_streaming_backend() -> None:
    assert re.fullmatch(r"[a-z0-9-]+-datasource", PLUGIN["id"])
    assert PLUGIN["type"] == "datasource"
    assert PLUGIN["backend"] is True
    assert PLUGIN["streaming"] is True
    assert PLUGIN["alerting"] is True
    assert (PLUGIN["id"], PLUGIN["executable"]) == (PLUGIN_ID, EXECUTABLE)
    assert launcher_name("linux_amd64") == f"{PLUGIN['executable']}_linux_amd64"


def test_compose_allows_exactly_our_unsigned_plugin_and_publishes_only_grafana() -> None:
    compose = load("docker-compose.yaml")
    grafana = compose["services"]["grafana"]
    assert grafana["environment"]["GF_PLUGINS_ALLOW_LOADING_UNSIGNED_PLUGINS"] == PLUGIN["id"]
    assert grafana["ports"] == ["127.0.0.1:3000:3000"], "Grafana on this machine only"
    assert "ports" not in compose["services"]["pipeline"]


def test_compose_gives_anonymous_users_no_more_than_viewing() -> None:
    grafana = load("docker-compose.yaml")["services"]["grafana"]["environment"]
    assert grafana.get("GF_AUTH_ANONYMOUS_ENABLED") in (None, "false") or (
        grafana.get("GF_AUTH_ANONYMOUS_ORG_ROLE") == "Viewer"
    )


def test_the_plugin_gets_its_run_folder_from_its_grafana_ini_section() -> None:
    """Grafana 12.4+ hands the plugin only `[plugin.<id>]` keys: the broker's folder must be one."""
    compose = load("docker-compose.yaml")
    section = "GF_PLUGIN_" + PLUGIN_ID.upper().replace("-", "_")  # Grafana's env name for [plugin.<id>]
    grafana = compose["services"]["grafana"]["environment"]
    assert not [name for name in grafana if name.startswith("ZMQSTREAM_")], "they never reach the plugin"
    assert (
        grafana[f"{section}_RUN_DIR"] == compose["services"]["pipeline"]["environment"]["ZMQSTREAM_RUN_DIR"]
    )
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    # an environment override applies only to a key the ini lists: the image lists each one set here
    for name in grafana:
        if name.startswith(section + "_"):
            assert f"\\n{name.removeprefix(section + '_').lower()} = " in dockerfile, name


def test_provisioned_datasource_is_ours() -> None:
    (datasource,) = load("provisioning/datasources/zmqstream.yaml")["datasources"]
    assert datasource["type"] == PLUGIN["id"]
    assert set(datasource["jsonData"]) <= {"brokerAddress", "minTickMs", "maxSeries", "maxChannels"}


def test_dashboard_queries_are_valid_channels_of_the_provisioned_datasource() -> None:
    (datasource,) = load("provisioning/datasources/zmqstream.yaml")["datasources"]
    dashboard = json.loads((DEPLOY / "provisioning/dashboards/zmqstream.json").read_text())
    targets = [t for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(targets) >= 4
    assert {"kind": "source", "source": "host", "tickInterval": 1000}.items() <= targets[-1].items()
    for target in targets:
        assert target["datasource"] == {"type": PLUGIN["id"], "uid": datasource["uid"]}
        if target.get("kind") == "source":  # the query JSON of the plan for issue 15
            EventChannel(SOURCE, target["source"], target["tickInterval"]).check(Limits())
            assert target["source"] in sources()
            continue
        spec = ChannelSpec(
            target["lowerLimit"],
            target["upperLimit"],
            target["tickInterval"],
            target["generator"],
            target["series"],
        )
        spec.check(Limits())
        assert spec.generator in registry()


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="no Docker client with the compose plugin on this machine",
)
def test_docker_compose_config_validates() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(DEPLOY / "docker-compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_compose_keeps_the_recorders_data_in_a_volume_and_logs_at_info() -> None:
    compose = load("docker-compose.yaml")
    pipeline = compose["services"]["pipeline"]
    record_dir = pipeline["environment"]["ZMQSTREAM_RECORD_DIR"]
    mounts = dict(volume.split(":")[::-1] for volume in pipeline["volumes"])
    assert any(record_dir.startswith(target + "/") for target in mounts)
    assert all(mounts[t] in compose["volumes"] for t in mounts if record_dir.startswith(t + "/"))
    grafana = compose["services"]["grafana"]["environment"]
    assert grafana["GF_PLUGIN_ZMQSTREAM_STREAM_DATASOURCE_LOG_LEVEL"] == "INFO"
    assert "GF_LOG_FILTERS" not in grafana


def test_build_plugin_checks_its_inputs_before_making_anything(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"  # a checkout whose frontend was never built
    (checkout / "services/packaging/protos").mkdir(parents=True)
    (checkout / "deploy/plugin").mkdir(parents=True)
    shutil.copy(DEPLOY.parent / "pyproject.toml", checkout)
    shutil.copy(PLUGIN_JSON, checkout / "deploy/plugin/plugin.json")
    venv, plugins = tmp_path / "venv", tmp_path / "plugins"
    result = subprocess.run(
        ["sh", str(DEPLOY / "build-plugin.sh"), str(venv), str(plugins)],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 1
    assert "frontend/dist/module.js is missing: build the frontend first (make frontend)" in result.stderr
    assert not venv.exists()
    assert not plugins.exists()
