"""Stream start at scale: a dashboard of many panels (or many viewers) opened at once.

With the Go client (bench/goclient), as Grafana restarts with many open panels: SubscribeStream
for every `custom-0-<i>-50` channel, 32 at a time, then every RunStream at once; per stream
the time from its RunStream call to its first packet, streams that sent nothing, rows out
of order, the plugin's CPU per stream started; then the steady 20,000 rows/s those
channels make, with the plugin's CPU and the client's.

Without Go, the Python client opens every stream at the same instant (RunStream alone,
then SubscribeStream + RunStream); the figure is, per stream, the time from that instant
to its first live packet. The channels tick every second.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from bench import goclient
from bench.measure import Result, percentile
from services.hostemu.host import Datasource
from services.hostemu.localpipeline import Pipeline, wait_for_workers
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin._proto import pluginv2_pb2_grpc

TICK_MS = 1000
WAIT_S = 20.0
"""How long a stream may take to send its first packet before it counts as silent."""


async def first_packets(address: str, paths: list[str], *, subscribe: bool) -> list[float]:
    """Seconds from the common start to each stream's first packet (inf: none came)."""
    context = Datasource().context()
    loop = asyncio.get_running_loop()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pluginv2_pb2_grpc.StreamStub(channel)
        await channel.channel_ready()
        started = loop.time()

        async def one(path: str) -> float:
            if subscribe:
                await stub.SubscribeStream(pb.SubscribeStreamRequest(pluginContext=context, path=path))
            call = stub.RunStream(pb.RunStreamRequest(pluginContext=context, path=path))
            try:
                async for _ in call:
                    return loop.time() - started
            except grpc.aio.AioRpcError:
                pass
            finally:
                call.cancel()
            return float("inf")

        tasks = [asyncio.create_task(one(path)) for path in paths]
        done, pending = await asyncio.wait(tasks, timeout=WAIT_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return [task.result() if task in done else float("inf") for task in tasks]


GO_TICK_MS = 50
"""1,000 channels at 50 ms: the 20,000 rows/s of the streams scenario."""


def run(quick: bool) -> list[Result]:
    count = 200 if quick else 1000
    client = goclient.client()
    if client.binary is not None:
        return run_go(client.binary, count, 3 if quick else 8)
    return [Result("start", f"client: {client.label}", 0, ""), *run_python(count)]


def run_go(binary: Path, count: int, seconds: float) -> list[Result]:
    """Grafana's order through go-plugin, then the steady window (module docstring)."""
    args = ["-n", str(count), "-paths", f"custom-0-{{i}}-{GO_TICK_MS}", "-tick-ms", str(GO_TICK_MS)]
    figures = goclient.run_pipeline(binary, 2, [*args, "-seconds", f"{seconds}s"])
    firsts = goclient.arrived(figures["first_packet_s"])
    p99 = percentile(firsts, 99) if len(firsts) == count else float("inf")
    slowest = max(firsts, default=float("inf")) if len(firsts) == count else float("inf")
    per_stream_us = 1e6 * figures["start_plugin_cpu_s"] / count
    window = figures["window_s"]
    how = f"Go client, SubscribeStream (32 at a time) then RunStream x {count}"
    return [
        Result("start", f"{how}: first packet after RunStream, median", percentile(firsts, 50), "s"),
        Result("start", "first packet after RunStream, p99", p99, "s", "≤ 0.5", p99 <= 0.5),
        Result("start", "first packet after RunStream, slowest", slowest, "s", "≤ 1", slowest <= 1.0),
        Result("start", "first SubscribeStream → last first packet", figures["start_s"], "s"),
        Result("start", "silent streams", figures["silent"], "streams", "0", figures["silent"] == 0),
        Result(
            "start",
            "streams with rows out of order",
            figures["out_of_order"],
            "streams",
            "0",
            figures["out_of_order"] == 0,
        ),
        Result("start", "plugin CPU per stream started", per_stream_us, "µs", "≤ 300", per_stream_us <= 300),
        Result("start", "client CPU per stream started", 1e6 * figures["start_client_cpu_s"] / count, "µs"),
        Result(
            "start",
            f"steady rows/s ({count * 1000 // GO_TICK_MS:,} offered)",
            figures["rows"] / seconds,
            "rows/s",
        ),
        Result("start", "steady plugin CPU", figures["plugin_cpu_s"] / window, "cores"),
        Result("start", "steady client CPU (Go)", figures["client_cpu_s"] / window, "cores"),
        Result("start", "steady p99 tick → client", figures["latency_ms"].get("p99", float("nan")), "ms"),
        goclient.failures("start", figures),
    ]


def run_python(count: int) -> list[Result]:
    paths = [f"custom-{i}-{i + 1}-{TICK_MS}" for i in range(count)]
    results = []
    for subscribe, how in ((False, "RunStream"), (True, "SubscribeStream + RunStream")):
        pipeline = Pipeline(2)
        host = pipeline.plugin()
        try:
            wait_for_workers(host, 2)
            delays = asyncio.run(first_packets(host.address, paths, subscribe=subscribe))
        finally:
            host.stop()
            pipeline.close()
        arrived = [d for d in delays if d != float("inf")]
        p99 = percentile(arrived, 99) if len(arrived) == count else float("inf")
        slowest = max(delays)
        results += [
            Result("start", f"{how} x {count} at once: first packet, median", percentile(arrived, 50), "s"),
            Result("start", f"{how}: first packet, p99", p99, "s", "≤ 0.5", p99 <= 0.5),
            Result("start", f"{how}: first packet, slowest", slowest, "s", "≤ 1", slowest <= 1.0),
            Result(
                "start", f"{how}: silent streams", count - len(arrived), "streams", "0", len(arrived) == count
            ),
        ]
    return results
