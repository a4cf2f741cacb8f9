"""Latency from tick to client at 1,000 frames/s (one channel ticking every millisecond)."""

from __future__ import annotations

import asyncio

from bench.harness import read_streams
from bench.measure import Result, percentile
from services.hostemu.localpipeline import Pipeline, wait_for_workers


def run(quick: bool) -> list[Result]:
    pipeline = Pipeline(1)
    host = pipeline.plugin()
    try:
        wait_for_workers(host, 1)
        stats, seconds = asyncio.run(read_streams(host.address, ["custom-0-1-1"], 1.5, 3 if quick else 10))
    finally:
        host.stop()
        pipeline.close()
    p50, p99 = percentile(stats.latencies_ms, 50), percentile(stats.latencies_ms, 99)
    return [
        Result("latency", "frames/s", stats.rows / seconds, "frames/s"),
        Result("latency", "p50 tick → client", p50, "ms"),
        Result("latency", "p99 tick → client", p99, "ms", "≤ 1", p99 <= 1),
    ]
