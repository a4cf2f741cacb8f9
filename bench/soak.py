"""Soak: many channels through the real plugin for a long time; memory and fds over time.

    python -m bench.soak [--minutes 60] [--channels 1000] [--every 30]

Starts a broker, two workers and the plugin (through its launcher), streams every
channel to a gRPC client the way Grafana would, and every `--every` seconds prints one
row: rows/s delivered, and each process's RSS and open file descriptors. A leak shows as
a column that keeps climbing. tests/test_soak.py runs a short version.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from bench.measure import rss_kib
from services.hostemu.host import Datasource
from services.hostemu.localpipeline import Pipeline, wait_for_workers
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin._proto import pluginv2_pb2_grpc


@dataclass(frozen=True)
class Sample:
    elapsed_s: float
    rows_per_s: float
    rss_mib: dict[str, float]
    fds: dict[str, int]


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _soak(
    address: str,
    paths: list[str],
    pids: dict[str, int],
    seconds: float,
    every: float,
    report: Callable[[Sample], None],
) -> list[Sample]:
    rows = 0
    context = Datasource().context()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pluginv2_pb2_grpc.StreamStub(channel)

        async def read(path: str) -> None:
            nonlocal rows
            async for packet in stub.RunStream(pb.RunStreamRequest(pluginContext=context, path=path)):
                rows += packet.data.count(b",") // 2 + 1  # about one comma per row and column pair

        readers = [asyncio.create_task(read(p)) for p in paths]
        samples: list[Sample] = []
        started = last = time.monotonic()
        counted = 0
        try:
            while (now := time.monotonic()) - started < seconds:
                await asyncio.sleep(max(0.0, every - (now - last)))
                now = time.monotonic()
                sample = Sample(
                    elapsed_s=now - started,
                    rows_per_s=(rows - counted) / (now - last),
                    rss_mib={name: rss_kib(pid) / 1024 for name, pid in pids.items()},
                    fds={name: open_fds(pid) for name, pid in pids.items()},
                )
                counted, last = rows, now
                samples.append(sample)
                report(sample)
        finally:
            for reader in readers:
                reader.cancel()
            outcomes = await asyncio.gather(*readers, return_exceptions=True)
        failures = [
            o for o in outcomes if isinstance(o, Exception) and not isinstance(o, asyncio.CancelledError)
        ]
        if failures:
            raise RuntimeError(f"{len(failures)} of {len(readers)} streams failed") from failures[0]
    return samples


def soak(minutes: float, channels: int, every: float, report: Callable[[Sample], None]) -> list[Sample]:
    pipeline = Pipeline(2)
    host = pipeline.plugin()
    try:
        wait_for_workers(host, 2)
        pids = {"broker": pipeline.broker.pid, "w1": pipeline.workers[0].pid, "w2": pipeline.workers[1].pid}
        pids["plugin"] = host.process.pid
        paths = [f"custom-{i}-{i + 1}-100" for i in range(channels)]
        return asyncio.run(_soak(host.address, paths, pids, minutes * 60, every, report))
    finally:
        host.stop()
        pipeline.close()


def print_row(sample: Sample) -> None:
    memory = "  ".join(f"{name} {mib:6.1f}" for name, mib in sample.rss_mib.items())
    fds = "  ".join(f"{name} {count:4d}" for name, count in sample.fds.items())
    print(
        f"{sample.elapsed_s:8.0f} s  {sample.rows_per_s:9.0f} rows/s  RSS MiB: {memory}  fds: {fds}",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--channels", type=int, default=1000)
    parser.add_argument("--every", type=float, default=30, help="seconds between rows")
    args = parser.parse_args(argv)
    soak(args.minutes, args.channels, args.every, print_row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
