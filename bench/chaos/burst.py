"""python -m bench.chaos.burst ADDRESS SEED: BURST stream opens at once against the plugin at ADDRESS.

As a dashboard of a thousand panels opens: a thousand distinct paths (Grafana runs one
RunStream per path, however many panels show it), each subscribed then run. A process of
its own, so the chaos run's viewers are not starved while it decodes a thousand streams.
Prints its outcome as JSON: opens by kind (variant, plain) and result.
"""

from __future__ import annotations

import asyncio
import random
import sys

import grpc
import orjson

from bench.chaos.load import display
from services.hostemu.host import Datasource
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin._proto import pluginv2_pb2_grpc

BURST = 1000
BURST_VARIANTS = 100
"""Of the burst's opens, display variants of one 1,000 values/s channel: as one channel they
fit the datasource's 50,000 values/s; as a hundred, twice over."""
VARIANT_CHANNEL = "custom-0-1-10-uniform-10"
HOLD_S = 2.0


def paths(seed: int) -> list[str]:
    """BURST_VARIANTS display variants of one channel, and 1 s channels of distinct ranges."""
    upper = random.Random(seed).randrange(1000, 2000)
    variants = [display(VARIANT_CHANNEL, f"v{i}") for i in range(BURST_VARIANTS)]
    return variants + [f"custom-0-{upper + i}-1000" for i in range(BURST - BURST_VARIANTS)]


async def open_all(address: str, paths: list[str]) -> dict[str, int]:
    """Open every path's RunStream at once, wait for its first packet, read on for HOLD_S, cancel."""
    context = Datasource().context()
    outcome: dict[str, int] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        stream = pluginv2_pb2_grpc.StreamStub(channel)

        async def one(path: str) -> None:
            kind = "variant" if path.startswith(VARIANT_CHANNEL) else "plain"
            result = "silent"
            try:
                async with asyncio.timeout(10):
                    await stream.SubscribeStream(pb.SubscribeStreamRequest(pluginContext=context, path=path))
            except (grpc.aio.AioRpcError, TimeoutError):
                pass  # RunStream says what is wrong
            call = stream.RunStream(pb.RunStreamRequest(pluginContext=context, path=path))
            try:
                async with asyncio.timeout(10):
                    async for first in call:  # a refusal comes as an error notice, then the status
                        result = "refused" if b'"severity":"error"' in first.data else "ok"
                        break
                if result == "ok":
                    async with asyncio.timeout(HOLD_S):
                        async for _ in call:
                            pass
                elif result == "refused":
                    async with asyncio.timeout(HOLD_S):
                        async for _ in call:  # the status that follows the notice
                            pass
            except grpc.aio.AioRpcError as error:
                result = error.code().name if result != "ok" else result
            except TimeoutError:
                pass
            finally:
                call.cancel()
            key = f"{kind}_{result}"
            outcome[key] = outcome.get(key, 0) + 1

        await asyncio.gather(*(one(p) for p in paths))
    return outcome


if __name__ == "__main__":
    print(orjson.dumps(asyncio.run(open_all(sys.argv[1], paths(int(sys.argv[2]))))).decode())
