"""The plugin process: go-plugin's handshake, then pluginv2 over gRPC until told to stop.

Contract with Grafana (shared/docs/grafana-plugin-protocol.md §1): refuse to run without
the magic cookie; listen before printing anything; print exactly one line,
`1|2|tcp|127.0.0.1:<port>|grpc`, on stdout; log only to stderr as hclog JSON; exit
within go-plugin's 2 s after Shutdown or SIGTERM; ignore SIGINT, which Grafana's
terminal sends to the whole process group.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common.config import PluginSettings
from services.common.logs import fields, setup_logging
from services.plugin._proto import goplugin_pb2_grpc, pluginv2_pb2_grpc
from services.plugin.metrics import PluginMetrics
from services.plugin.pipeline import Pipelines
from services.plugin.querydata import DataService
from services.plugin.resources import ResourceService
from services.plugin.servicers import ControllerService, DiagnosticsService, StdioService, StreamService

log = logging.getLogger("zmqstream.plugin")
MAGIC_COOKIE = ("grafana_plugin_type", "datasource")
APP_PROTOCOL_VERSION = "2"
CORE_PROTOCOL_VERSION = "1"
MAX_RECEIVE_BYTES = 16 * 1024 * 1024
"""As the Go SDK: Grafana sends up to MaxInt32, grpcio accepts 4 MiB by default."""
SHUTDOWN_GRACE_S = 0.5


def check_launched_by_host(env: dict[str, str] | os._Environ[str]) -> str:
    """'' when the host's handshake environment is there, else what is wrong."""
    key, value = MAGIC_COOKIE
    if env.get(key) != value:
        return (
            "This is a Grafana plugin and is meant to be launched by Grafana, not by hand "
            f"(the environment lacks {key}={value}). To run the pipeline, use supervisord; "
            "to try the plugin without Grafana, run: python -m services.hostemu"
        )
    versions = env.get("PLUGIN_PROTOCOL_VERSIONS", APP_PROTOCOL_VERSION).split(",")
    if APP_PROTOCOL_VERSION not in versions:
        return (
            f"the host speaks plugin protocol versions {versions}; this plugin speaks {APP_PROTOCOL_VERSION}"
        )
    return ""


async def serve(settings: PluginSettings, stop: asyncio.Event) -> None:
    pipelines = Pipelines(settings)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)])
    metrics = PluginMetrics(pipelines)
    pluginv2_pb2_grpc.add_StreamServicer_to_server(StreamService(pipelines, settings, metrics), server)
    pluginv2_pb2_grpc.add_DiagnosticsServicer_to_server(
        DiagnosticsService(pipelines, settings, metrics), server
    )
    pluginv2_pb2_grpc.add_DataServicer_to_server(DataService(settings, metrics), server)
    pluginv2_pb2_grpc.add_ResourceServicer_to_server(ResourceService(pipelines, settings, metrics), server)
    goplugin_pb2_grpc.add_GRPCControllerServicer_to_server(ControllerService(stop.set), server)
    goplugin_pb2_grpc.add_GRPCStdioServicer_to_server(StdioService(), server)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]  # an import mypy cannot see
    await health_servicer.set("plugin", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    pipelines.get()  # connect to the default broker now, not at the first request
    handshake = f"{CORE_PROTOCOL_VERSION}|{APP_PROTOCOL_VERSION}|tcp|127.0.0.1:{port}|grpc"
    sys.stdout.write(handshake + "\n")
    sys.stdout.flush()
    sys.stdout = sys.stderr  # nothing else may ever reach the handshake pipe
    log.info("plugin serving", extra=fields(address=f"127.0.0.1:{port}", broker=settings.control_endpoint))
    await stop.wait()
    log.info("plugin stopping")
    await server.stop(SHUTDOWN_GRACE_S)
    await pipelines.close()


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging(os.environ.get("ZMQSTREAM_LOG_LEVEL", "INFO"))
    problem = check_launched_by_host(os.environ)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    settings = PluginSettings.load(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await serve(settings, stop)

    asyncio.run(run())
    log.info("plugin stopped")
    return 0
