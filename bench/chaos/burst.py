"""The chaos run's burst: BURST stream opens at once against the plugin, as a dashboard of a
thousand panels opens (a thousand distinct paths: Grafana runs one RunStream per path, however
many panels show it), each subscribed then run, its first packet awaited, read on, cancelled.

Grafana is a Go process, so the burst runs in bench's Go client (`-burst`, bench/goclient) where
it is built; a Python client decoding a thousand streams would take a core of this 2-core
machine from the plugin it measures. Where it is not, this module is the client:
`python -m bench.chaos.burst ADDRESS PATHS_FILE`. Either prints the same raw figures as JSON, and
`outcome` and `timing` judge them; a process of its own, so the chaos run's viewers are not
starved while it reads a thousand streams.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import orjson

from bench.chaos.load import channel_of, display
from services.hostemu.host import Datasource
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin._proto import pluginv2_pb2_grpc

BURST = 1000
BURST_VARIANTS = 100
"""Of the burst's opens, display variants of one 1,000 values/s channel: as one channel they
fit the datasource's 50,000 values/s; as a hundred, twice over."""
VARIANT_CHANNEL = "custom-0-1-10-uniform-10"
FIRST_WAIT_S = 10.0
"""How long a SubscribeStream, and then a first packet, is waited for."""
HOLD_S = 2.0
"""How long a stream is read after its first packet."""
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
Figures = dict[str, Any]
"""Per path, in order: first_packet_s (from the burst's start; -1: none), error_notice (the
first packet is an error notice: a refusal), code (the gRPC status the call ended with while
read; 0: none); and took_s, client."""


def paths(seed: int) -> list[str]:
    """BURST_VARIANTS display variants of one channel, and 1 s channels of distinct ranges."""
    upper = random.Random(seed).randrange(1000, 2000)
    variants = [display(VARIANT_CHANNEL, f"v{i}") for i in range(BURST_VARIANTS)]
    return variants + [f"custom-0-{upper + i}-1000" for i in range(BURST - BURST_VARIANTS)]


def write(opened: list[str], file: Path) -> Path:
    """The paths to open, one a line: what either client reads."""
    file.write_text("".join(f"{path}\n" for path in opened))
    return file


def command(binary: Path | None, address: str, listed: Path) -> list[str]:
    """The burst of `listed`'s paths: in the Go client given its binary, else in this module."""
    if binary is None:
        return [sys.executable, "-m", "bench.chaos.burst", address, str(listed)]
    return [
        str(binary),
        *("-addr", address, "-uid", Datasource().uid, "-burst", str(listed)),
        *("-wait", f"{FIRST_WAIT_S:g}s", "-burst-read", f"{HOLD_S:g}s"),
    ]


def outcome(opened: list[str], figures: Figures) -> dict[str, int]:
    """Opens by kind (display variant, plain) and result: ok; refused (an error notice, then no status);
    silent (nothing within FIRST_WAIT_S); or the status the call ended with (a refusal's, or before
    any packet)."""
    counts: Counter[str] = Counter()
    for path, first, notice, code in zip(
        opened, figures["first_packet_s"], figures["error_notice"], figures["code"], strict=True
    ):
        kind = "variant" if channel_of(path) != path else "plain"
        if first >= 0 and not notice:
            result = "ok"
        elif code:
            result = CODE_NAMES.get(code, f"code {code}")
        else:
            result = "refused" if first >= 0 else "silent"
        counts[f"{kind}_{result}"] += 1
    return dict(counts)


def timing(figures: Figures) -> dict[str, float]:
    """How long the burst took, when its streams' first packets came from its start, and how many
    calls were never served (no packet and no status within FIRST_WAIT_S)."""
    served = sorted(s for s in figures["first_packet_s"] if s >= 0)
    ended = zip(figures["first_packet_s"], figures["code"], strict=True)
    unserved = sum(first < 0 and not code for first, code in ended)
    took = {"took_s": figures["took_s"], "unserved": float(unserved)}
    if not served:
        return took
    return took | {"first_packet_median_s": statistics.median(served), "last_first_packet_s": served[-1]}


async def open_all(address: str, opened: list[str]) -> Figures:
    """Open every path's RunStream at once (grpc.aio): the figures `outcome` and `timing` judge."""
    context = Datasource().context()
    first = [-1.0] * len(opened)
    notice = [False] * len(opened)
    code = [0] * len(opened)
    start = time.monotonic()
    async with grpc.aio.insecure_channel(address) as channel:
        stream = pluginv2_pb2_grpc.StreamStub(channel)

        async def one(i: int, path: str) -> None:
            try:
                async with asyncio.timeout(FIRST_WAIT_S):
                    await stream.SubscribeStream(pb.SubscribeStreamRequest(pluginContext=context, path=path))
            except (grpc.aio.AioRpcError, TimeoutError):
                pass  # RunStream says what is wrong
            call = stream.RunStream(pb.RunStreamRequest(pluginContext=context, path=path))
            try:
                async with asyncio.timeout(FIRST_WAIT_S):
                    async for packet in call:  # a refusal comes as an error notice, then the status
                        first[i] = time.monotonic() - start
                        notice[i] = b'"severity":"error"' in packet.data
                        break
                if first[i] >= 0:
                    async with asyncio.timeout(HOLD_S):
                        async for _ in call:
                            pass
            except grpc.aio.AioRpcError as error:
                code[i] = error.code().value[0]
            except TimeoutError:
                pass
            finally:
                call.cancel()

        await asyncio.gather(*(one(i, p) for i, p in enumerate(opened)))
    took = time.monotonic() - start
    return {
        "client": "Python, grpc.aio",
        "first_packet_s": first,
        "error_notice": notice,
        "code": code,
        "took_s": took,
    }


if __name__ == "__main__":
    listed = Path(sys.argv[2]).read_text().split()
    print(orjson.dumps(asyncio.run(open_all(sys.argv[1], listed))).decode())
