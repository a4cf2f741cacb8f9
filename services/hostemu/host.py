"""Launch and drive a backend plugin exactly as Grafana does (go-plugin client side).

- the executable runs in another working directory with exactly the environment
  Grafana 12.4+ gives it (`grafana_env`): Grafana's own variables, the plugin's
  grafana.ini section as GF_PLUGIN_<KEY>, go-plugin's magic cookie and PLUGIN_*, and of
  the host's environment only the proxy variables, TMPDIR and PLUGIN_UNIX_SOCKET_DIR;
  or, as for a plugin an admin lists in `[plugins] forward_host_env_vars` (and as Grafana
  before 12.4 did), the whole host environment too;
- the first stdout line must be the handshake, within 60 s (we default to less);
- stderr lines are parsed as hclog JSON and kept, as Grafana's plugin logger would;
- streams are cancelled by cancelling the RunStream call, as Grafana's stream manager
  does when the last subscriber leaves;
- stop() is go-plugin's Kill: Shutdown RPC, close the connection, wait 2 s, SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import orjson

from services.hostemu.dataframe import StreamingFrame
from services.plugin._proto import goplugin_pb2, goplugin_pb2_grpc, pluginv2_pb2_grpc
from services.plugin._proto import pluginv2_pb2 as pb

GRAFANA_ENV = {
    "grafana_plugin_type": "datasource",
    "PLUGIN_PROTOCOL_VERSIONS": "2",
    "PLUGIN_MIN_PORT": "10000",
    "PLUGIN_MAX_PORT": "25000",
    "GF_VERSION": "12.4.0",
    "GF_EDITION": "Open Source",
    "GF_ENTERPRISE_LICENSE_PATH": "",
    "GF_ENTERPRISE_APP_URL": "http://localhost:3000/",
}
PERMITTED_HOST_ENV = (
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "TMPDIR",
    "PLUGIN_UNIX_SOCKET_DIR",
)
"""What Grafana 12.4+ passes on from its host's environment (grafana pkg/plugins/envvars)."""
KILL_WAIT_S = 2.0


def grafana_env(
    settings: Mapping[str, str] | None = None,
    host_env: Mapping[str, str] | None = None,
    *,
    forward_host_env: bool = False,
) -> dict[str, str]:
    """The plugin's environment: `settings` are its grafana.ini `[plugin.<id>]` keys."""
    host = os.environ if host_env is None else host_env
    passed = dict(host) if forward_host_env else {k: v for k, v in host.items() if k in PERMITTED_HOST_ENV}
    ini = {f"GF_PLUGIN_{key.upper()}": value for key, value in (settings or {}).items()}
    return {**ini, **GRAFANA_ENV, **passed}


class HandshakeError(RuntimeError):
    """The plugin did not print a handshake Grafana would accept."""


@dataclass
class Datasource:
    uid: str = "zmqstream-test"
    json_data: Mapping[str, Any] = field(default_factory=dict)
    secure_json_data: Mapping[str, str] = field(default_factory=dict)
    """What the ConfigEditor's secret fields hold; Grafana sends them decrypted."""
    plugin_id: str = "zmqstream-stream-datasource"
    updated_ms: int = 1

    def context(self) -> pb.PluginContext:
        return pb.PluginContext(
            orgId=1,
            pluginId=self.plugin_id,
            user=pb.User(login="admin", name="admin", role="Admin"),
            dataSourceInstanceSettings=pb.DataSourceInstanceSettings(
                id=1,
                name="zmqstream",
                uid=self.uid,
                jsonData=orjson.dumps(dict(self.json_data)),
                decryptedSecureJsonData=dict(self.secure_json_data),
                lastUpdatedMS=self.updated_ms,
            ),
            pluginVersion="0.1.0",
            userAgent="Grafana/12.4.0 (linux; amd64)",
        )


def parse_handshake(line: str) -> str:
    """The address from a go-plugin handshake line, checked as go-plugin checks it."""
    parts = line.strip().split("|")
    if len(parts) < 4:
        raise HandshakeError(f"Unrecognized remote plugin message: {line!r}")
    core, app, network, address = parts[:4]
    protocol = parts[4] if len(parts) > 4 else "netrpc"
    if core != "1":
        raise HandshakeError(f"incompatible core API version {core!r}")
    if app != "2":
        raise HandshakeError(f"incompatible API version {app!r}")
    if network not in ("tcp", "unix"):
        raise HandshakeError(f"unknown network {network!r}")
    if protocol != "grpc":
        raise HandshakeError(f"unsupported plugin protocol {protocol!r}")
    if len(parts) > 5 and len(parts[5]) > 50:
        raise HandshakeError("the plugin sent a TLS certificate Grafana has no config for")
    return f"unix:{address}" if network == "unix" else address


class PluginHost:
    def __init__(
        self,
        executable: str | Path,
        settings: Mapping[str, str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        forward_host_env: bool = False,
        handshake_timeout_s: float = 20.0,
        cwd: str | Path = "/",
        own_mounts: bool = False,
    ) -> None:
        """Launch `executable` with its grafana.ini `settings`; `env` adds variables on top.

        `own_mounts`: the executable enters a mount namespace of its own (a sandbox with a
        private /tmp, as a packaged Grafana's plugins have), so its Unix socket is reached
        through /proc/<pid>/root, as Grafana inside the same sandbox would see it.
        """
        self.executable = str(Path(executable).resolve())
        full_env = {**grafana_env(settings, forward_host_env=forward_host_env), **(env or {})}
        self.process = subprocess.Popen(
            [self.executable],
            env=full_env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.logs: list[dict[str, Any]] = []
        self.stdout_extra: list[bytes] = []
        self._stderr = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr.start()
        try:
            self.address = parse_handshake(self._read_handshake(handshake_timeout_s))
            if own_mounts and self.address.startswith("unix:"):
                self.address = f"unix:/proc/{self.process.pid}/root{self.address.removeprefix('unix:')}"
        except BaseException:
            self.process.kill()
            self.process.wait()
            self._stderr.join(2)
            for pipe in (self.process.stdout, self.process.stderr):
                if pipe is not None:
                    pipe.close()
            raise
        self._stdout = threading.Thread(target=self._drain_stdout, daemon=True)
        self._stdout.start()
        self.channel = grpc.insecure_channel(
            self.address,
            options=[
                ("grpc.max_receive_message_length", 2**31 - 1),
                ("grpc.max_send_message_length", 2**31 - 1),
            ],
        )
        self.stream = pluginv2_pb2_grpc.StreamStub(self.channel)
        self.diagnostics = pluginv2_pb2_grpc.DiagnosticsStub(self.channel)
        self.data = pluginv2_pb2_grpc.DataStub(self.channel)
        self.resource = pluginv2_pb2_grpc.ResourceStub(self.channel)
        self.controller = goplugin_pb2_grpc.GRPCControllerStub(self.channel)

    def _read_handshake(self, timeout_s: float) -> str:
        assert self.process.stdout is not None
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append(self.process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout_s)
        if not result:
            raise HandshakeError(f"no handshake within {timeout_s:g} s")
        if not result[0]:
            self.process.wait(5)
            self._stderr.join(2)
            raise HandshakeError(
                f"plugin exited with {self.process.returncode} before the handshake: "
                + " | ".join(str(e.get("@message", e)) for e in self.logs[-5:])
            )
        return result[0].decode()

    def _drain_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.stdout_extra.append(line)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                entry = None
            if not isinstance(entry, dict) or not isinstance(entry.get("@message"), str):
                entry = {"@level": "debug", "@message": line, "json": False}
            self.logs.append(entry)

    # -- the calls Grafana makes -------------------------------------------------------

    def check_health(self, ds: Datasource | None = None, timeout_s: float = 10) -> pb.CheckHealthResponse:
        request = pb.CheckHealthRequest(pluginContext=(ds or Datasource()).context())
        response: pb.CheckHealthResponse = self.diagnostics.CheckHealth(request, timeout=timeout_s)
        return response

    def subscribe(
        self, path: str, ds: Datasource | None = None, timeout_s: float = 10, data: bytes = b""
    ) -> pb.SubscribeStreamResponse:
        """A Live subscription; `data` is the browser's subscribe payload (LiveChannelAddress.data)."""
        request = pb.SubscribeStreamRequest(
            pluginContext=(ds or Datasource()).context(), path=path, data=data
        )
        response: pb.SubscribeStreamResponse = self.stream.SubscribeStream(request, timeout=timeout_s)
        return response

    def run_stream(self, path: str, ds: Datasource | None = None) -> LiveStream:
        request = pb.RunStreamRequest(pluginContext=(ds or Datasource()).context(), path=path)
        return LiveStream(self.stream.RunStream(request))

    def query_data(
        self,
        queries: Sequence[pb.DataQuery],
        ds: Datasource | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 30,
    ) -> pb.QueryDataResponse:
        """QueryData as a panel (or, with headers {"FromAlert": "true"}, an alert rule) sends it."""
        request = pb.QueryDataRequest(
            pluginContext=(ds or Datasource()).context(), headers=dict(headers or {}), queries=list(queries)
        )
        response: pb.QueryDataResponse = self.data.QueryData(request, timeout=timeout_s)
        return response

    def call_resource(
        self,
        path: str,
        method: str = "GET",
        body: bytes = b"",
        ds: Datasource | None = None,
        timeout_s: float = 10,
    ) -> ResourceReply:
        """CallResource as Grafana proxies /api/datasources/uid/<uid>/resources/<path>."""
        request = pb.CallResourceRequest(
            pluginContext=(ds or Datasource()).context(), path=path, method=method, url=path, body=body
        )
        messages = list(self.resource.CallResource(request, timeout=timeout_s))
        if not messages:
            raise RuntimeError("CallResource answered nothing; Grafana would answer 500")
        first = messages[0]  # Grafana takes the status and headers from the first message only
        headers = {key.lower(): list(values.values) for key, values in first.headers.items()}
        return ResourceReply(first.code, headers, b"".join(m.body for m in messages))

    def collect_metrics(self, ds: Datasource | None = None, timeout_s: float = 10) -> str:
        """The Prometheus text Grafana serves at /metrics/plugins/<id>."""
        request = pb.CollectMetricsRequest(pluginContext=(ds or Datasource()).context())
        response: pb.CollectMetricsResponse = self.diagnostics.CollectMetrics(request, timeout=timeout_s)
        return response.metrics.prometheus.decode()

    def logs_at(self, level: str) -> list[dict[str, Any]]:
        return [e for e in self.logs if str(e.get("@level", "")).lower() == level]

    def stop(self) -> float:
        """go-plugin's Kill; returns the seconds the process took to exit."""
        started = time.monotonic()
        if self.process.poll() is None:
            with contextlib.suppress(grpc.RpcError):  # go-plugin ignores this error too
                self.controller.Shutdown(goplugin_pb2.Empty(), timeout=KILL_WAIT_S)
            self.channel.close()
            try:
                self.process.wait(KILL_WAIT_S)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGKILL)
                self.process.wait()
        else:
            self.channel.close()
        elapsed = time.monotonic() - started
        self._close_pipes()
        return elapsed

    def _close_pipes(self) -> None:
        """Close our ends of the pipes once the readers have seen EOF (no ResourceWarning)."""
        for reader, pipe in ((self._stdout, self.process.stdout), (self._stderr, self.process.stderr)):
            reader.join(2)
            if pipe is not None and not reader.is_alive():
                pipe.close()


@dataclass
class ResourceReply:
    code: int
    headers: dict[str, list[str]]
    """Lower-cased names, as HTTP headers compare."""
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def data_query(
    ref_id: str,
    model: Mapping[str, Any],
    from_ms: int,
    to_ms: int,
    *,
    max_data_points: int = 1000,
    interval_ms: int = 1000,
    ds: Datasource | None = None,
) -> pb.DataQuery:
    """A DataQuery as Grafana builds it: the panel's query model plus Grafana's own keys in `json`."""
    source = ds or Datasource()
    body = {
        **model,
        "refId": ref_id,
        "datasource": {"type": source.plugin_id, "uid": source.uid},
        "intervalMs": interval_ms,
        "maxDataPoints": max_data_points,
    }
    return pb.DataQuery(
        refId=ref_id,
        maxDataPoints=max_data_points,
        intervalMS=interval_ms,
        timeRange=pb.TimeRange(fromEpochMS=from_ms, toEpochMS=to_ms),
        json=orjson.dumps(body),
    )


class LiveStream:
    """One RunStream call, decoded packet by packet into a StreamingFrame."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.frame = StreamingFrame()
        self.packets = 0
        self.received_at: list[float] = []
        self.raw: list[bytes] = []
        self.viewers: list[StreamingFrame] = []

    def add_viewer(self, initial: bytes) -> StreamingFrame:
        """A later subscriber of this stream, as Grafana fans one RunStream out to every subscriber.

        Its frame starts from its SubscribeStream answer (`initial`) and then receives the
        packets read from now on, as the browser appends them.
        """
        frame = StreamingFrame()
        if initial:
            frame.push(initial)
        self.viewers.append(frame)
        return frame

    def packets_iter(self) -> Iterator[bytes]:
        for packet in self.call:
            self.packets += 1
            self.received_at.append(time.time())
            self.raw.append(packet.data)
            self.frame.push(packet.data)
            for viewer in self.viewers:
                viewer.push(packet.data)
            yield packet.data

    def read_rows(self, rows: int, timeout_s: float = 10) -> StreamingFrame:
        """Read packets until the frame holds `rows` rows (TimeoutError if they do not come)."""
        self._read_until(lambda: len(self.frame.times_ns) >= rows, f"{rows} rows", timeout_s)
        return self.frame

    def read_notices(self, timeout_s: float = 10) -> list[dict[str, Any]]:
        """Read until the panel would show a notice (meta.notices); TimeoutError if none comes."""
        self._read_until(lambda: bool(self.frame.notices), "a notice", timeout_s)
        return self.frame.notices

    def read_packets(self, packets: int, timeout_s: float = 10) -> list[bytes]:
        """Read until `packets` packets have come (TimeoutError if they do not); return them all."""
        self._read_until(lambda: self.packets >= packets, f"{packets} packets", timeout_s)
        return self.raw

    def _read_until(self, done: Callable[[], bool], what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        timer = threading.Timer(timeout_s, self.call.cancel)
        timer.start()
        try:
            for _ in self.packets_iter():
                if done():
                    return
        except grpc.RpcError:
            if time.monotonic() < deadline:
                raise
        finally:
            timer.cancel()
        raise TimeoutError(
            f"{what} not in within {timeout_s:g} s: {self.packets} packets, {len(self.frame.times_ns)} rows"
        )

    def cancel(self) -> None:
        self.call.cancel()
