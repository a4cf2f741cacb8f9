"""Cost growth: CPU per channel from 10 to 10,000 channels, memory per idle channel."""

from __future__ import annotations

import time

from bench.harness import RawPlugin
from bench.measure import Result, cpu_seconds, rss_kib
from services.hostemu.localpipeline import Pipeline

TICK_MS = 1000
IDLE_TICK_MS = 3_600_000


def measure(channels: int, tick_ms: int, seconds: float) -> tuple[float, float]:
    """(CPU seconds per second, KiB per channel) of the broker and the worker holding `channels`."""
    pipeline = Pipeline(1)
    plugin = RawPlugin.on(pipeline)
    pids = [pipeline.broker.pid, pipeline.workers[0].pid]
    try:
        plugin.wait_running(0)
        time.sleep(0.5)
        rss_before = sum(rss_kib(pid) for pid in pids)
        plugin.hold([f"custom-{i}-{i + 1}-{tick_ms}" for i in range(channels)])
        plugin.wait_running(channels)
        plugin.count_rows(1.0)
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        plugin.count_rows(seconds)
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
        rss_after = sum(rss_kib(pid) for pid in pids)
    finally:
        plugin.close()
        pipeline.close()
    return cpu / seconds, (rss_after - rss_before) / max(channels, 1)


def run(quick: bool) -> list[Result]:
    seconds = 3 if quick else 5
    sizes = (100, 1000, 2000) if quick else (100, 1000, 10_000)
    idle_cpu, _ = measure(0, TICK_MS, seconds)  # heartbeats and polling: what no channel costs
    per_channel = {n: (measure(n, TICK_MS, seconds)[0] - idle_cpu) / n * 1e6 for n in sizes}
    _, idle_kib = measure(2_000 if quick else 10_000, IDLE_TICK_MS, 1)
    results = [
        Result("cost", f"CPU per channel at {n} channels (1 Hz)", us, "µs/s") for n, us in per_channel.items()
    ]
    # CPU time is counted in 10 ms steps: below ~1,000 channels the figure is mostly rounding.
    growth = per_channel[sizes[-1]] / per_channel[1000]
    results += [
        Result(
            "cost",
            f"CPU per channel, {sizes[-1]} vs 1000 channels",
            growth,
            "x",
            "≤ 1.5 (flat)",
            growth <= 1.5,
        ),
        Result("cost", "memory per idle channel", idle_kib, "KiB", "≤ 10", idle_kib <= 10),
    ]
    return results
