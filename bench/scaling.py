"""Generator-bound work with 1 worker and with 2: how much faster the second one makes it."""

from __future__ import annotations

from bench.harness import RawPlugin
from bench.measure import Result
from services.common.waveforms import registry
from services.hostemu.localpipeline import Pipeline

CHANNELS = 200
TICK_MS = 10  # 20,000 ticks/s offered at ~100 µs each: twice what two cores can do


def rows_per_second(workers: int, seconds: float) -> float:
    pipeline = Pipeline(workers)
    plugin = RawPlugin.on(pipeline)
    try:
        plugin.hold([f"custom-{i}-{i + 1}-{TICK_MS}-burn-1" for i in range(CHANNELS)])
        plugin.wait_running(CHANNELS)
        plugin.count_rows(1.0)
        rows, _, _ = plugin.count_rows(seconds)
    finally:
        plugin.close()
        pipeline.close()
    return rows / seconds


def run(quick: bool) -> list[Result]:
    if "burn" not in registry():
        return [Result("scaling", "skipped: pip install -e bench/generators", float("nan"), "")]
    seconds = 3 if quick else 8
    one, two = rows_per_second(1, seconds), rows_per_second(2, seconds)
    ratio = two / one
    return [
        Result("scaling", "burn ticks/s, 1 worker", one, "ticks/s"),
        Result("scaling", "burn ticks/s, 2 workers", two, "ticks/s"),
        Result("scaling", "2 workers / 1 worker", ratio, "x", "≥ 1.8", ratio >= 1.8),
    ]
