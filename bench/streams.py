"""Packets per second across many concurrent streams, against a bare grpcio server.

The baseline is the same gRPC service streaming prebuilt packets as fast as it can,
measured with the same client in the same run: what grpcio alone allows here. The
pipeline is offered more rows than one plugin can send packet by packet, so its figure is
the plugin's limit, not the offered load. CPU per packet of each server process shows how
much of the gap is the plugin's own work and how much is the machine being shared with
the workers and the broker (the client needs the same CPU in both runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc

from bench.harness import StreamStats, read_streams
from bench.measure import Result, cpu_seconds
from services.common.channels import UNCHECKED, ChannelSpec, parse_channel
from services.hostemu.localpipeline import Pipeline, wait_for_workers
from services.plugin import frames
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin._proto import pluginv2_pb2_grpc
from services.plugin.app import MAX_QUEUED_CALLS, QUEUED_CALL_WAIT_S
from services.plugin.servicers import Context

OFFERED_ROWS_PER_S = 20_000
"""Beyond what one plugin's gRPC stream carries packet by packet, whatever the stream count."""


class Prebuilt(pluginv2_pb2_grpc.StreamServicer):
    """The same Stream service doing nothing but send one prebuilt packet, again and again."""

    PACKET = pb.StreamPacket(data=frames.packet([1_700_000_000_000_000_000], [[0.5]]))

    async def SubscribeStream(
        self, request: pb.SubscribeStreamRequest, context: Context
    ) -> pb.SubscribeStreamResponse:
        return pb.SubscribeStreamResponse()

    async def PublishStream(
        self, request: pb.PublishStreamRequest, context: Context
    ) -> pb.PublishStreamResponse:
        return pb.PublishStreamResponse()

    async def RunStream(
        self, request: pb.RunStreamRequest, context: Context
    ) -> AsyncIterator[pb.StreamPacket]:
        while True:
            yield self.PACKET


class WokenAtItsTicks(Prebuilt):
    """The prebuilt packet at each tick of the stream's channel: channels tick at their own
    phase of the interval (services.common.channels), so the packets of many streams come
    spread through it, as the plugin's rows do (bench many)."""

    async def RunStream(
        self, request: pb.RunStreamRequest, context: Context
    ) -> AsyncIterator[pb.StreamPacket]:
        spec = parse_channel(request.path, UNCHECKED)
        if not isinstance(spec, ChannelSpec):
            raise ValueError(f"{request.path!r} is not a generator channel")
        while True:
            yield self.PACKET
            now = time.time_ns()
            await asyncio.sleep((spec.tick_time(spec.last_tick(now) + 1) - now) / 1e9)


def _serve_baseline(port_out: multiprocessing.Queue, at_ticks: bool) -> None:  # type: ignore[type-arg]
    async def serve() -> None:
        # The plugin's limits on queued calls (services.plugin.app): 10,000 streams at once.
        server = grpc.aio.server(
            options=[
                ("grpc.server.max_pending_requests", MAX_QUEUED_CALLS),
                ("grpc.server.max_pending_requests_hard_limit", MAX_QUEUED_CALLS),
                ("grpc.server_max_unrequested_time_in_server", QUEUED_CALL_WAIT_S),
            ]
        )
        servicer = WokenAtItsTicks() if at_ticks else Prebuilt()
        pluginv2_pb2_grpc.add_StreamServicer_to_server(servicer, server)
        port_out.put(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await server.wait_for_termination()  # until the process is terminated

    asyncio.run(serve())


@contextlib.contextmanager
def bare_server(at_ticks: bool = False) -> Iterator[tuple[int, int]]:
    """(port, pid) of a bare grpcio server of the Stream service in a process of its own:
    prebuilt packets as fast as it can send them, or at the ticks of each stream's channel."""
    spawn = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[int] = spawn.Queue()
    server = spawn.Process(target=_serve_baseline, args=(queue, at_ticks), daemon=True)
    server.start()
    try:
        yield queue.get(timeout=30), server.pid or 0
    finally:
        server.terminate()
        with contextlib.suppress(Exception):
            server.join(5)


async def _read_with_cpu(
    address: str, paths: list[str], warmup_s: float, seconds: float, server_pid: int
) -> tuple[StreamStats, float]:
    """What read_streams counts, and the server process's CPU seconds over the same window."""
    before: list[float] = []
    stats, _ = await read_streams(
        address,
        paths,
        warmup_s,
        seconds,
        latency=False,
        on_window=lambda: before.append(cpu_seconds(server_pid)),
    )
    return stats, cpu_seconds(server_pid) - before[0]


def _plugin_run(paths: list[str], seconds: float, env: dict[str, str]) -> tuple[StreamStats, float]:
    """The plugin on a pipeline of two workers, read as the bare server was."""
    pipeline = Pipeline(2)
    host = pipeline.plugin(env=env)
    try:
        wait_for_workers(host, 2)
        return asyncio.run(_read_with_cpu(host.address, paths, 2.0, seconds, host.process.pid))
    finally:
        host.stop()
        pipeline.close()


def _too_long_for_a_socket() -> str:
    """A folder whose socket path would not fit sockaddr_un: the plugin falls back to TCP, as
    go-plugin does where it cannot use a Unix socket."""
    folder = Path(tempfile.gettempdir()) / ("zs-tcp-" + "x" * 100)
    folder.mkdir(mode=0o700, exist_ok=True)
    return str(folder)


def run(quick: bool) -> list[Result]:
    count = 200 if quick else 1000
    seconds = 3 if quick else 8
    tick_ms = count * 1000 / OFFERED_ROWS_PER_S
    paths = [f"custom-{i}-{i + 1}-{tick_ms:g}" for i in range(count)]
    with bare_server() as (port, pid):
        bare, bare_cpu = asyncio.run(_read_with_cpu(f"127.0.0.1:{port}", paths, 1.0, seconds, pid))
    ours, our_cpu = _plugin_run(paths, seconds, {})
    over_tcp, tcp_cpu = _plugin_run(paths, seconds, {"PLUGIN_UNIX_SOCKET_DIR": _too_long_for_a_socket()})
    ratio = ours.packets / max(bare.packets, 1)
    bare_us, our_us, tcp_us = (
        1e6 * cpu / max(stats.packets, 1)
        for cpu, stats in ((bare_cpu, bare), (our_cpu, ours), (tcp_cpu, over_tcp))
    )
    return [
        Result("streams", f"packets/s, {count} streams, bare grpcio", bare.packets / seconds, "packets/s"),
        Result("streams", f"packets/s, {count} streams, zmqstream", ours.packets / seconds, "packets/s"),
        Result("streams", "zmqstream / bare grpcio", ratio, "x", "≥ 0.8", ratio >= 0.8),
        Result(
            "streams",
            f"rows/s carried by zmqstream ({OFFERED_ROWS_PER_S:,} offered)",
            ours.rows / seconds,
            "rows/s",
        ),
        Result("streams", "server CPU per packet, bare grpcio", bare_us, "µs"),
        Result("streams", "server CPU per packet, zmqstream plugin", our_us, "µs"),
        Result(
            "streams",
            "plugin CPU per packet / bare grpcio's",
            our_us / bare_us,
            "x",
            "≤ 1.3",
            our_us <= 1.3 * bare_us,
        ),
        Result("streams", "plugin CPU per row carried", 1e6 * our_cpu / max(ours.rows, 1), "µs"),
        Result("streams", "packets/s, zmqstream over loopback TCP", over_tcp.packets / seconds, "packets/s"),
        Result("streams", "plugin CPU per packet over loopback TCP", tcp_us, "µs"),
        Result("streams", "Unix socket / TCP, packets/s", ours.packets / max(over_tcp.packets, 1), "x"),
        Result(
            "streams", "zmqstream streams that sent nothing", ours.silent, "streams", "0", ours.silent == 0
        ),
        Result(
            "streams",
            "streams that failed (either server): "
            + (", ".join(sorted(set(bare.failed + ours.failed))) or "none"),
            len(bare.failed) + len(ours.failed),
            "streams",
            "0",
            not bare.failed and not ours.failed,
        ),
    ]
