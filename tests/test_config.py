"""Settings: flags over environment over defaults, and clear refusals of values that make no sense."""

import dataclasses

import pytest

from services.common.channels import Limits
from services.common.config import (
    ALL_SETTINGS,
    BrokerSettings,
    PluginSettings,
    WorkerSettings,
    default_endpoint,
    env_name,
    markdown_table,
)
from services.common.errors import ConfigError


def refusal(capsys: pytest.CaptureFixture[str], argv: list[str], env: dict[str, str] | None = None) -> str:
    """What the process prints when it refuses its settings (argparse exits with 2)."""
    with pytest.raises(SystemExit) as exited:
        BrokerSettings.load(argv, env or {})
    assert exited.value.code == 2
    return capsys.readouterr().err


def test_defaults_apply_when_nothing_is_set() -> None:
    settings = BrokerSettings.load([], {})
    assert (settings.plugin_lease_s, settings.worker_lease_s, settings.max_channels) == (3.0, 0.6, 10_000)
    assert settings.limits == Limits()


def test_the_environment_overrides_defaults_and_flags_override_both() -> None:
    env = {"ZMQSTREAM_PLUGIN_LEASE_S": "1.5", "ZMQSTREAM_MAX_CHANNELS": "7"}
    assert BrokerSettings.load([], env).plugin_lease_s == 1.5
    settings = BrokerSettings.load(["--plugin-lease-s", "0.25"], env)
    assert (settings.plugin_lease_s, settings.max_channels) == (0.25, 7)


def test_each_field_is_a_flag_and_a_variable_of_the_same_name() -> None:
    assert env_name("worker_lease_s") == "ZMQSTREAM_WORKER_LEASE_S"
    for cls in ALL_SETTINGS:
        for flag, _, envs, _, help_text in cls.describe():
            assert envs[-1] == "ZMQSTREAM_" + flag.removeprefix("--").replace("-", "_").upper()
            assert help_text


def test_the_plugin_reads_grafana_ini_keys_before_its_own_variables() -> None:
    """Grafana 12.4+ passes `[plugin.<id>]` keys as GF_PLUGIN_<KEY> and nothing of its host's env."""
    env = {"GF_PLUGIN_MAX_BROKERS": "5", "ZMQSTREAM_MAX_BROKERS": "9", "ZMQSTREAM_BROKER_IDLE_S": "2"}
    settings = PluginSettings.load([], env)
    assert (settings.max_brokers, settings.broker_idle_s) == (5, 2.0)
    assert PluginSettings.load(["--max-brokers", "3"], env).max_brokers == 3
    for _, ini, envs, _, _ in PluginSettings.describe():
        assert envs == [f"GF_PLUGIN_{ini.upper()}", f"ZMQSTREAM_{ini.upper()}"]


def test_the_plugin_finds_its_broker_in_its_run_folder_unless_told_the_endpoint() -> None:
    settings = PluginSettings.load([], {"GF_PLUGIN_RUN_DIR": "/run/zs", "GF_PLUGIN_LOG_LEVEL": "debug"})
    assert (settings.control_endpoint, settings.log_level) == ("ipc:///run/zs/control", "debug")
    told = {"GF_PLUGIN_RUN_DIR": "/run/zs", "GF_PLUGIN_CONTROL_ENDPOINT": "tcp://broker:5570"}
    assert PluginSettings.load([], told).control_endpoint == "tcp://broker:5570"


def test_a_bad_log_level_says_which_ones_exist(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        PluginSettings.load([], {"GF_PLUGIN_LOG_LEVEL": "loud"})
    assert "log_level must be one of DEBUG, INFO, WARNING, ERROR, got 'loud'" in capsys.readouterr().err


def test_endpoint_defaults_live_in_the_run_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZMQSTREAM_RUN_DIR", "/tmp/zs-config-test")
    assert default_endpoint("control") == "ipc:///tmp/zs-config-test/control"
    settings = BrokerSettings.load([], {})
    assert settings.frames_in_endpoint == "ipc:///tmp/zs-config-test/frames-in"
    assert settings.frames_out_endpoint == "ipc:///tmp/zs-config-test/frames-out"
    monkeypatch.delenv("ZMQSTREAM_RUN_DIR")
    assert default_endpoint("control").startswith("ipc:///tmp/zmqstream-")


def test_per_process_defaults_are_computed_per_process() -> None:
    assert PluginSettings.load([], {}).plugin_id != PluginSettings.load([], {}).plugin_id
    assert WorkerSettings.load(["--worker-id", "w7"], {}).worker_id == "w7"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-channels", "many"], "max_channels: 'many' is not a valid int"),
        (["--max-channels", "1.5"], "max_channels: '1.5' is not a valid int"),
        (["--plugin-lease-s", "soon"], "plugin_lease_s: 'soon' is not a valid float"),
        (["--plugin-lease-s", "nan"], "plugin_lease_s: 'nan' is not a valid float"),
        (["--plugin-lease-s", "inf"], "plugin_lease_s: 'inf' is not a valid float"),
        (["--worker-lease-s", "0"], "worker_lease_s must be positive, got 0.0"),
        (["--max-channels", "-1"], "max_channels must be positive, got -1"),
        (["--min-tick-ms", "10", "--max-tick-ms", "5"], "min_tick_ms is above max_tick_ms"),
        (
            ["--curve-server-secret", "broker.key_secret"],
            "curve_server_secret and curve_authorized_dir go together",
        ),
        (["--no-such-flag", "1"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_nonsense_is_refused_with_the_usage_line_and_the_reason(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    err = refusal(capsys, argv)
    assert err.startswith("usage: zmqstream-broker")
    assert message in err


def test_a_bad_environment_variable_is_refused_like_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert "worker_lease_s: 'fast' is not a valid float" in refusal(
        capsys, [], {"ZMQSTREAM_WORKER_LEASE_S": "fast"}
    )


def test_an_infinite_heartbeat_cannot_reach_a_worker(capsys: pytest.CaptureFixture[str]) -> None:
    """A worker turns its intervals into integer nanoseconds; infinity used to crash it there."""
    with pytest.raises(SystemExit):
        WorkerSettings.load(["--publish-interval-ms", "inf"], {})
    assert "publish_interval_ms: 'inf' is not a valid float" in capsys.readouterr().err


def test_help_names_every_variable_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        PluginSettings.load(["--help"], {})
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for field in dataclasses.fields(PluginSettings):
        assert f"GF_PLUGIN_{field.name.upper()} or {env_name(field.name)}" in text
    assert "default ipc://<run_dir>/control" in text


def test_the_readme_table_has_a_row_per_setting() -> None:
    table = markdown_table().splitlines()
    rows = sum(len(dataclasses.fields(cls)) for cls in ALL_SETTINGS)
    assert len(table) == 2 + rows
    assert "| broker | `--plugin-lease-s` |  | `ZMQSTREAM_PLUGIN_LEASE_S` | 3.0 |" in markdown_table()
    assert (
        "| plugin | `--max-brokers` | `max_brokers` | `GF_PLUGIN_MAX_BROKERS`, `ZMQSTREAM_MAX_BROKERS` |"
        in (markdown_table())
    )


def test_an_unknown_socket_group_is_refused_with_what_to_do() -> None:
    with pytest.raises(ConfigError, match="there is no group 'no-such-group-zs'"):
        BrokerSettings(socket_group="no-such-group-zs")
