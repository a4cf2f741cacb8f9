"""Settings of every process: frozen dataclasses filled from flags, then env, then defaults.

Each field `foo_bar` is the flag `--foo-bar` and the variable `ZMQSTREAM_FOO_BAR`; its
help text is the field's metadata, so `--help` and the README table say the same thing.

The plugin is launched by Grafana, which (12.4 and later) passes it none of the host's
environment unless an admin lists it in `[plugins] forward_host_env_vars`. What reaches it
is grafana.ini's `[plugin.zmqstream-stream-datasource]` section, one `GF_PLUGIN_<KEY>`
variable per key. So the plugin reads `GF_PLUGIN_FOO_BAR` (grafana.ini `foo_bar`) first
and `ZMQSTREAM_FOO_BAR` after it; a datasource's jsonData and secureJsonData override both
(services.plugin.datasource).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

from services.common import rundir
from services.common.channels import Limits
from services.common.errors import ConfigError
from services.common.protocol import MAX_DATA_BYTES
from services.common.rundir import default_run_dir

ENV_PREFIX = "ZMQSTREAM_"
GRAFANA_INI_PREFIX = "GF_PLUGIN_"
"""Grafana's prefix for the keys of grafana.ini's `[plugin.<id>]` section, key upper-cased."""


def setting(default: Any, help: str, shown: str = "") -> Any:
    """A settings field with its help text.

    The default may be a zero-argument callable, computed per process; `shown` then says
    in words what it is, for --help and the README (or what an empty default stands for).
    """
    if callable(default):
        return dataclasses.field(default_factory=default, metadata={"help": help, "shown": shown})
    return dataclasses.field(default=default, metadata={"help": help, "shown": shown or f"{default!r}"})


def default_endpoint(name: str) -> str:
    return f"ipc://{default_run_dir()}/{name}"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base: how a settings class is read from argv and the environment."""

    ENV_PREFIXES: ClassVar[tuple[str, ...]] = (ENV_PREFIX,)
    """Where a field's variable is looked for, first match wins."""

    def __post_init__(self) -> None:
        """Subclasses check their fields here and call super()."""

    @classmethod
    def load(cls, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        prog = "zmqstream-" + cls.__name__.removesuffix("Settings").lower()
        parser = argparse.ArgumentParser(prog=prog, description=cls.__doc__)
        for field in dataclasses.fields(cls):
            parser.add_argument(
                "--" + field.name.replace("_", "-"),
                dest=field.name,
                default=None,
                help=f"{field.metadata['help']} "
                f"[env {' or '.join(cls.env_names(field.name))}, default {field.metadata['shown']}]",
            )
        parsed = vars(parser.parse_args(argv))
        values: dict[str, Any] = {}
        try:
            for field in dataclasses.fields(cls):
                raw = parsed[field.name]
                for name in cls.env_names(field.name) if raw is None else ():
                    raw = env.get(name)
                    if raw is not None:
                        break
                if raw is not None:
                    values[field.name] = _convert(field.name, raw, str(field.type))
            return cls(**values)
        except ConfigError as exc:
            parser.error(str(exc))  # exits 2 with the usage line and the message

    @classmethod
    def env_names(cls, field_name: str) -> list[str]:
        """The variables a field is read from, in order of precedence."""
        return [prefix + field_name.upper() for prefix in cls.ENV_PREFIXES]

    @classmethod
    def describe(cls) -> list[tuple[str, str, list[str], str, str]]:
        """(flag, grafana.ini key or '', env vars, default, help) per field, for documentation."""
        ini = GRAFANA_INI_PREFIX in cls.ENV_PREFIXES
        return [
            (
                "--" + f.name.replace("_", "-"),
                f.name if ini else "",
                cls.env_names(f.name),
                f.metadata["shown"],
                f.metadata["help"],
            )
            for f in dataclasses.fields(cls)
        ]


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _convert(name: str, raw: str, type_name: str) -> Any:
    try:
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            value = float(raw)
            if not math.isfinite(value):  # inf would crash a process that turns it into ns
                raise ValueError("not finite")
            return value
        if type_name == "bool":
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
    except ValueError as exc:
        raise ConfigError(f"{name}: {raw!r} is not a valid {type_name}") from exc
    return raw


def _positive(settings: object, *names: str) -> None:
    for name in names:
        if not getattr(settings, name) > 0:
            raise ConfigError(f"{name} must be positive, got {getattr(settings, name)!r}")


@dataclasses.dataclass(frozen=True)
class LimitSettings(Settings):
    """Channel limits, enforced alike by the broker and the plugin."""

    min_tick_ms: float = setting(1.0, "smallest tick interval a channel may ask for, ms")
    max_tick_ms: float = setting(3_600_000.0, "largest tick interval, ms")
    max_series: int = setting(10, "most series one channel may carry")

    @property
    def limits(self) -> Limits:
        return Limits(self.min_tick_ms, self.max_tick_ms, self.max_series)

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "min_tick_ms", "max_tick_ms", "max_series")
        if self.min_tick_ms > self.max_tick_ms:
            raise ConfigError("min_tick_ms is above max_tick_ms")


def _both_or_neither(settings: object, first: str, second: str) -> None:
    if bool(getattr(settings, first)) != bool(getattr(settings, second)):
        raise ConfigError(f"{first} and {second} go together: set both or neither")


@dataclasses.dataclass(frozen=True)
class CurveClientSettings(Settings):
    """CURVE keys of a process that connects to the broker (see services.common.security)."""

    curve_client_secret: str = setting("", "this process's CURVE .key_secret file (off when empty)")
    curve_server_public: str = setting("", "the broker's public CURVE .key file")

    def __post_init__(self) -> None:
        super().__post_init__()
        _both_or_neither(self, "curve_client_secret", "curve_server_public")


@dataclasses.dataclass(frozen=True)
class RunDirSettings(Settings):
    """The run folder of a pipeline's ipc sockets, and who may use them besides their owner.

    Every `*_endpoint` field left empty is the ipc socket of that name in `run_dir`
    (`frames_in_endpoint`: `ipc://<run_dir>/frames-in`); see services.common.rundir.
    """

    run_dir: str = setting(
        default_run_dir,
        "the pipeline's folder of ipc sockets (one pipeline per folder)",
        "/tmp/zmqstream-<uid>",
    )
    socket_group: str = setting(
        "", "group allowed in the run folder and its ipc sockets, e.g. grafana (default: owner only)"
    )

    SHARES_SOCKETS: ClassVar[bool] = True
    """A pipeline process, whose user must then belong to the socket group (the plugin only connects)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for field in dataclasses.fields(self):
            if field.name.endswith("_endpoint") and not getattr(self, field.name):
                socket = field.name.removesuffix("_endpoint").replace("_", "-")
                object.__setattr__(self, field.name, f"ipc://{self.run_dir}/{socket}")  # still constructing
        if self.socket_group:
            rundir.group_id(self.socket_group)
            if self.SHARES_SOCKETS:
                rundir.require_member(self.socket_group)


@dataclasses.dataclass(frozen=True)
class PipelineSettings(RunDirSettings):
    """Which pipeline a process belongs to: a worker or recorder joins only its own pipeline's broker."""

    pipeline: str = setting(
        "",
        "this pipeline's name: workers and the recorder join only a broker of the same one "
        "(give every host the same one across hosts)",
        "the run folder",
    )

    @property
    def pipeline_name(self) -> str:
        """The name a broker announces: --pipeline, else its run folder (one pipeline per folder)."""
        return self.pipeline or os.path.realpath(self.run_dir)

    def joined_pipeline(self, control_endpoint: str) -> str:
        """The name a worker insists on ('': any): --pipeline, else over ipc its run folder."""
        return self.pipeline_name if self.pipeline or control_endpoint.startswith("ipc://") else ""


@dataclasses.dataclass(frozen=True)
class BrokerSettings(LimitSettings, PipelineSettings):
    """The broker: subscription accounting, ticker placement, frame forwarding."""

    control_endpoint: str = setting("", "ROUTER the workers and plugins talk to", "ipc://<run_dir>/control")
    frames_in_endpoint: str = setting("", "XSUB the workers publish to", "ipc://<run_dir>/frames-in")
    frames_out_endpoint: str = setting("", "XPUB the plugins subscribe to", "ipc://<run_dir>/frames-out")
    advertise_host: str = setting(
        "", "host put in advertised tcp endpoints bound to * (default: the client's own)"
    )
    plugin_lease_s: float = setting(3.0, "a silent plugin's subscriptions are released after")
    worker_lease_s: float = setting(0.6, "a silent worker's channels move after (3 heartbeats)")
    max_channels: int = setting(10_000, "most channels the broker runs at once")
    curve_server_secret: str = setting("", "the broker's CURVE .key_secret file (off when empty)")
    curve_authorized_dir: str = setting("", "folder of the public .key files of allowed peers")

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "plugin_lease_s", "worker_lease_s", "max_channels")
        _both_or_neither(self, "curve_server_secret", "curve_authorized_dir")


@dataclasses.dataclass(frozen=True)
class WorkerSettings(CurveClientSettings, PipelineSettings):
    """A generator worker: runs tickers and publishes their rows."""

    control_endpoint: str = setting("", "the broker's ROUTER", "ipc://<run_dir>/control")
    worker_id: str = setting(lambda: f"{os.uname().nodename}-{os.getpid()}", "name shown by the broker")
    worker_heartbeat_s: float = setting(0.2, "how often a worker reports to the broker")
    publish_interval_ms: float = setting(
        1.0, "a channel faster than this sends its ticks in batches this far apart"
    )
    max_rows_per_message: int = setting(1000, "most ticks one Rows message carries")
    send_hwm: int = setting(10_000, "messages queued for the broker before drops")
    ticker_cpu: int = setting(-1, "pin the ticker thread to this CPU, its I/O thread off it (-1: none)")

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "worker_heartbeat_s", "publish_interval_ms", "max_rows_per_message", "send_hwm")
        rundir.check_endpoint(self.control_endpoint, self.socket_group)  # before any connect
        usable = os.sched_getaffinity(0)
        if self.ticker_cpu != -1 and self.ticker_cpu not in usable:
            raise ConfigError(f"ticker_cpu must be -1 or one of {sorted(usable)}, got {self.ticker_cpu}")


MAX_RECORDED_CHANNELS = 10_000
"""A recorder heartbeat listing this many published channels is ~0.8 MiB, under the broker's 1 MiB."""


@dataclasses.dataclass(frozen=True)
class RecorderSettings(CurveClientSettings, PipelineSettings):
    """The recorder: published channels, and the recent history of every event channel."""

    control_endpoint: str = setting("", "the broker's ROUTER", "ipc://<run_dir>/control")
    frames_out_endpoint: str = setting(
        "", "the broker's XPUB, where source channels' rows are read", "ipc://<run_dir>/frames-out"
    )
    publish_endpoint: str = setting("", "ROUTER publishers send rows to", "ipc://<run_dir>/publish")
    history_endpoint: str = setting("", "ROUTER plugins ask for history on", "ipc://<run_dir>/history")
    recorder_id: str = setting("recorder", "name shown by the broker")
    worker_heartbeat_s: float = setting(0.2, "how often the recorder reports to the broker")
    curve_server_secret: str = setting(
        "", "CURVE .key_secret file the publish and history sockets serve with (the broker's; off when empty)"
    )
    curve_authorized_dir: str = setting("", "folder of the public .key files allowed to ask for history")
    publish_authorized_dir: str = setting("", "folder of the public .key files allowed to publish")
    ring_rows: int = setting(100_000, "rows kept in memory per channel; the oldest go first")
    ring_bytes: int = setting(16 * 1024 * 1024, "bytes kept in memory per channel; the oldest rows go first")
    ring_total_bytes: int = setting(
        256 * 1024 * 1024, "bytes kept in memory across all channels; the oldest rows go first"
    )
    max_channels: int = setting(
        1000,
        "most channels the recorder keeps, source channels at most half of them (one nobody watches "
        "gives its slot to a new one); publishing to a new one past it fails",
    )
    max_rows_per_s: float = setting(
        1000.0, "rows per second one published channel accepts (bursts of one second's worth)"
    )
    max_publish_bytes: int = setting(1024 * 1024, "largest Publish message accepted, bytes")
    max_clock_skew_ms: float = setting(
        1000.0, "rows stamped further ahead of the recorder's clock are refused"
    )
    record_dir: str = setting("", "folder of the recorder's SQLite store of rows (off when empty)")
    record_keep_s: float = setting(3600.0, "seconds of rows kept on disk, and loaded back at start")
    record_max_bytes: int = setting(1024 * 1024 * 1024, "bytes of rows kept on disk; the oldest go first")

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(
            self,
            "worker_heartbeat_s",
            "ring_rows",
            "ring_bytes",
            "ring_total_bytes",
            "max_channels",
            "max_rows_per_s",
            "max_publish_bytes",
            "record_keep_s",
            "record_max_bytes",
        )
        if self.max_channels > MAX_RECORDED_CHANNELS:  # its heartbeat lists them: under the broker's 1 MiB
            raise ConfigError(
                f"max_channels must be at most {MAX_RECORDED_CHANNELS}, got {self.max_channels}"
            )
        if self.max_publish_bytes > MAX_DATA_BYTES // 2:
            raise ConfigError(
                f"max_publish_bytes must be at most {MAX_DATA_BYTES // 2} (frames stay under 4 MiB)"
            )
        if self.max_clock_skew_ms < 0:
            raise ConfigError(f"max_clock_skew_ms must not be negative, got {self.max_clock_skew_ms!r}")
        _both_or_neither(self, "curve_server_secret", "curve_authorized_dir")
        _both_or_neither(self, "curve_server_secret", "publish_authorized_dir")
        for endpoint in (self.control_endpoint, self.frames_out_endpoint):
            rundir.check_endpoint(endpoint, self.socket_group)  # before any connect


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclasses.dataclass(frozen=True)
class PluginSettings(LimitSettings, CurveClientSettings, RunDirSettings):
    """The gRPC plugin process Grafana launches."""

    ENV_PREFIXES = (GRAFANA_INI_PREFIX, ENV_PREFIX)
    SHARES_SOCKETS = False

    control_endpoint: str = setting(
        "",
        "the broker's ROUTER, unless the datasource's brokerAddress names another",
        "ipc://<run_dir>/control",
    )
    history_endpoint: str = setting(
        "", "the recorder's ROUTER answering history of event channels", "ipc://<run_dir>/history"
    )
    publish_endpoint: str = setting(
        "", "the recorder's ROUTER taking rows published through Grafana", "ipc://<run_dir>/publish"
    )
    log_level: str = setting("INFO", "the plugin's log level: " + ", ".join(LOG_LEVELS))
    plugin_id: str = setting(lambda: uuid.uuid4().hex[:12], "name the broker knows it by", "random")
    plugin_heartbeat_s: float = setting(1.0, "how often a plugin renews its lease")
    max_brokers: int = setting(64, "most broker connections open at once (datasources may name others)")
    broker_idle_s: float = setting(
        10.0, "a broker connection other than the default one closes after this long unused"
    )
    broker_timeout_s: float = setting(
        0.8, "how long CheckHealth waits for the broker (under 1 s: Grafana's health check never hangs)"
    )
    max_channels_per_datasource: int = setting(1000, "most channels one datasource streams at once")
    max_values_per_s: float = setting(
        100_000.0, "most values per second (rows/s times series) all streams carry; new ones past it refused"
    )
    max_values_per_s_per_datasource: float = setting(
        50_000.0, "most values per second the streams of one datasource carry; new ones past it refused"
    )
    stream_queue_bytes: int = setting(
        4 * 1024 * 1024, "bytes of values one stream may hold for a slow Grafana before the oldest drop"
    )
    max_clock_skew_ms: float = setting(
        250.0, "rows stamped further ahead of the plugin's clock are refused as forged"
    )
    max_rows_per_packet: int = setting(10_000, "most rows one StreamPacket carries")
    max_points_per_request: int = setting(
        2_000_000, "most values (ticks times series) one QueryData answers; queries past it get a 413"
    )
    max_points_in_flight: int = setting(
        8_000_000, "most values all QueryData requests being answered hold at once; past it a 429"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(
            self,
            "plugin_heartbeat_s",
            "max_brokers",
            "broker_idle_s",
            "broker_timeout_s",
            "stream_queue_bytes",
            "max_rows_per_packet",
            "max_points_per_request",
            "max_points_in_flight",
            "max_values_per_s",
            "max_values_per_s_per_datasource",
        )
        if self.max_clock_skew_ms < 0:
            raise ConfigError(f"max_clock_skew_ms must not be negative, got {self.max_clock_skew_ms!r}")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")


ALL_SETTINGS: tuple[type[Settings], ...] = (BrokerSettings, WorkerSettings, RecorderSettings, PluginSettings)


def markdown_table() -> str:
    """Every setting of every process, one row each: the README's configuration table."""
    rows = [
        "| process | flag | grafana.ini key | environment variables (first wins) | default | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for cls in ALL_SETTINGS:
        process = cls.__name__.removesuffix("Settings").lower()
        for flag, ini, envs, default, text in cls.describe():
            key = f"`{ini}`" if ini else ""
            names = ", ".join(f"`{name}`" for name in envs)
            rows.append(f"| {process} | `{flag}` | {key} | {names} | {default} | {text} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
