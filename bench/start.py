"""Stream start at scale: a dashboard of many panels (or many viewers) opened at once.

Every stream is opened as Grafana opens one for its first subscriber: SubscribeStream (the
initial frame of history), then RunStream. All of them at the same instant, on a running
pipeline; the figure is, per stream, the time from that instant to its first live packet.
A stream with no packet by the end is silent. The channels tick every 100 ms, so a fresh
ticker's first row is due within 100 ms of its placement.
"""

from __future__ import annotations

import asyncio

import grpc

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


def run(quick: bool) -> list[Result]:
    count = 200 if quick else 1000
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
