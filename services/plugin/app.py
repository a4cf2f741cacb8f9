"""The plugin process: go-plugin's handshake, then pluginv2 over gRPC until told to stop.

Contract with Grafana (shared/docs/grafana-plugin-protocol.md §1): refuse to run without
the magic cookie; listen before printing anything (on a private Unix socket, see
services.plugin.listen); print exactly one line, `1|2|unix|<path>|grpc`, on stdout; log
only to stderr as hclog JSON; exit within go-plugin's 2 s after Shutdown or SIGTERM;
ignore SIGINT, which Grafana's terminal sends to the whole process group.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common.config import PluginSettings
from services.common.errors import ConfigError
from services.common.logs import fields, setup_logging
from services.common.waveforms import registry as generators
from services.plugin import orphan, standalone
from services.plugin._proto import goplugin_pb2_grpc, pluginv2_pb2_grpc
from services.plugin.broker_connection import BrokerConnections
from services.plugin.identity import CHECKOUT_PLUGIN_DIR, PLUGIN_ID
from services.plugin.listen import SERVER_OPTIONS, Listener, listen
from services.plugin.metrics import PluginMetrics
from services.plugin.querydata import DataService
from services.plugin.resources import ResourceService
from services.plugin.servicers import ControllerService, DiagnosticsService, StdioService, StreamService
from services.plugin.specs import Specs

log = logging.getLogger("zmqstream.plugin")
MAGIC_COOKIE = ("grafana_plugin_type", "datasource")
APP_PROTOCOL_VERSION = "2"
CORE_PROTOCOL_VERSION = "1"
MAX_RECEIVE_BYTES = 16 * 1024 * 1024
"""As the Go SDK: Grafana sends up to MaxInt32, grpcio accepts 4 MiB by default."""
MAX_QUEUED_CALLS = 100_000
"""Calls grpcio may hold before the event loop takes them: past its default (1,000, then more at
random up to 3,000) it cancels them, and Grafana opens every panel's RunStream at once (#22)."""
QUEUED_CALL_WAIT_S = 3600
"""How long a call may wait for the event loop to take it: grpcio cancels it after 30 s, less than
10,000 RunStreams opened at once took on a busy machine (Grafana would only open it again)."""
YOUNG_COLLECTION_ALLOCATIONS = 10_000
"""Objects allocated (net of those freed) between two young collections (Python's default: 700)."""
SHUTDOWN_GRACE_S = 0.2
"""What running calls get to finish after Shutdown: go-plugin kills at 2 s, we aim for 1 s in all."""


def check_launched_by_host(env: dict[str, str] | os._Environ[str]) -> str:
    """'' when the host's handshake environment is there, else what is wrong."""
    key, value = MAGIC_COOKIE
    if env.get(key) != value:
        return (
            "This is a Grafana plugin and is meant to be launched by Grafana, not by hand "
            f"(the environment lacks {key}={value}). To run the pipeline, use supervisord; "
            "to watch a channel without Grafana, run: zmqstream watch custom-10-20-100"
        )
    versions = env.get("PLUGIN_PROTOCOL_VERSIONS", APP_PROTOCOL_VERSION).split(",")
    if APP_PROTOCOL_VERSION not in versions:
        return (
            f"the host speaks plugin protocol versions {versions}; this plugin speaks {APP_PROTOCOL_VERSION}"
        )
    return ""


def build_server(
    settings: PluginSettings, stop: asyncio.Event, *, host_controls: bool
) -> tuple[grpc.aio.Server, BrokerConnections]:
    """The gRPC server with every pluginv2 service; go-plugin's own ones when a host controls us."""
    brokers = BrokerConnections(settings)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            ("grpc.server.max_pending_requests", MAX_QUEUED_CALLS),
            ("grpc.server.max_pending_requests_hard_limit", MAX_QUEUED_CALLS),
            ("grpc.server_max_unrequested_time_in_server", QUEUED_CALL_WAIT_S),
            *SERVER_OPTIONS,
        ]
    )
    metrics = PluginMetrics(brokers)
    specs = Specs(settings)  # one table for every service: a datasource's settings are read once
    pluginv2_pb2_grpc.add_StreamServicer_to_server(StreamService(brokers, settings, metrics, specs), server)
    pluginv2_pb2_grpc.add_DiagnosticsServicer_to_server(
        DiagnosticsService(brokers, settings, metrics, specs), server
    )
    pluginv2_pb2_grpc.add_DataServicer_to_server(DataService(settings, metrics, brokers, specs), server)
    pluginv2_pb2_grpc.add_ResourceServicer_to_server(
        ResourceService(brokers, settings, metrics, specs), server
    )
    if host_controls:
        goplugin_pb2_grpc.add_GRPCControllerServicer_to_server(ControllerService(stop.set), server)
        goplugin_pb2_grpc.add_GRPCStdioServicer_to_server(StdioService(), server)
    return server, brokers


async def add_health(server: grpc.aio.Server) -> None:
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]  # an import mypy cannot see
    await health_servicer.set("plugin", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)


def print_handshake(network: str, address: str) -> None:
    """go-plugin's one stdout line; afterwards stdout is stderr, so nothing else can reach the host."""
    sys.stdout.write(f"{CORE_PROTOCOL_VERSION}|{APP_PROTOCOL_VERSION}|{network}|{address}|grpc\n")
    sys.stdout.flush()
    sys.stdout = sys.stderr


async def serve(
    settings: PluginSettings, stop: asyncio.Event, *, bind: str = "", plugin_dir: Path | None = None
) -> None:
    """Serve until `stop`: for the host (handshake on stdout), or standalone (announced in `plugin_dir`)."""
    standalone_mode = plugin_dir is not None
    server, brokers = build_server(settings, stop, host_controls=not standalone_mode)
    await add_health(server)
    if plugin_dir is None:
        listener = listen(server, os.environ)
        if listener.folder is not None:
            orphan.remove_at_forced_exit(listener.folder)
    else:  # Grafana attaches to the TCP address written in standalone.txt
        port = server.add_insecure_port(bind or "127.0.0.1:0")
        listener = Listener("tcp", f"127.0.0.1:{port}" if not bind or bind.endswith(":0") else bind)
    announcing = (
        standalone.announced(plugin_dir, listener.address) if plugin_dir else contextlib.nullcontext()
    )
    try:
        await server.start()
        with contextlib.suppress(ConfigError):  # unusable CURVE key files: CheckHealth and streams say so
            brokers.get()  # connect to the default broker now, not at the first request
        with announcing:
            if plugin_dir is None:
                print_handshake(listener.network, listener.address)
            else:
                evicted = standalone.evict_launched_copies(plugin_dir)
                log.info(
                    "standalone plugin serving",
                    extra=fields(address=listener.address, folder=str(plugin_dir), evicted=evicted),
                )
            log.info(
                "plugin serving", extra=fields(address=listener.address, broker=settings.control_endpoint)
            )
            # Installed generators are found now (~0.1 s of entry-point scanning), not by the
            # first of a dashboard's streams while the others wait behind it.
            generators()
            await stop.wait()
            log.info("plugin stopping")
            await server.stop(SHUTDOWN_GRACE_S)
            await brokers.close()
    finally:
        listener.close()


def collect_less() -> None:
    """Python's cycle collector, tuned for a process that makes and drops objects per packet.

    Every object alive now (modules: gRPC, protobuf, Arrow, numpy) is frozen out of its scans,
    and a young collection waits for YOUNG_COLLECTION_ALLOCATIONS instead of 700: with 1,000
    streams at 20,000 rows/s the collector took 6 % of the plugin's CPU (1.7 % tuned), with
    3,000 streams 10-20 %, mostly full scans of every stream's objects while streams start.
    Packets' objects are freed by reference counting; few cycles are left for it to find.
    """
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_ALLOCATIONS, *gc.get_threshold()[1:])


def main(argv: Sequence[str] | None = None) -> int:
    modes = argparse.ArgumentParser(add_help=False)
    modes.add_argument(
        "--standalone", action="store_true", help="serve for Grafana to attach to (debug mode)"
    )
    modes.add_argument("--plugin-dir", type=Path, help="the plugin folder Grafana loads (standalone mode)")
    known, rest = modes.parse_known_args(argv)
    plugin_dir = known.plugin_dir or Path(os.environ.get(standalone.PLUGIN_DIR_ENV) or CHECKOUT_PLUGIN_DIR)
    if not known.standalone:
        problem = check_launched_by_host(os.environ)
        if problem:
            print(problem, file=sys.stderr)
            return 1
    settings = PluginSettings.load(rest)
    setup_logging(settings.log_level.upper())
    host_pid = 0 if known.standalone else orphan.die_with_parent()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        if known.standalone:  # a developer's terminal: Ctrl-C stops it
            loop.add_signal_handler(signal.SIGINT, stop.set)
            bind = os.environ.get(standalone.address_env(PLUGIN_ID), "")
            await serve(settings, stop, bind=bind, plugin_dir=plugin_dir)
            return
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        orphan.watch_parent(host_pid, lambda: loop.call_soon_threadsafe(stop.set))
        address = standalone.attached_address(plugin_dir, PLUGIN_ID, os.environ)
        if address:
            print_handshake("tcp", address)
            from_files = not os.environ.get(standalone.address_env(PLUGIN_ID))
            await standalone.point_host_at(address, plugin_dir, stop, from_files=from_files)
        else:
            await serve(settings, stop)

    collect_less()
    try:
        asyncio.run(run())
    except ConfigError as exc:
        log.error("cannot serve", extra=fields(error=str(exc)))
        return 1
    log.info("plugin stopped")
    return 0
