"""Ticker lateness with 10,000 channels x 10 Hz on one worker, and whether any tick is skipped."""

from __future__ import annotations

import time

from bench.harness import RawPlugin
from bench.measure import Result, percentile
from services.hostemu.localpipeline import Pipeline

TICK_MS = 100


def run(quick: bool) -> list[Result]:
    channels = 2_000 if quick else 10_000
    seconds = 3 if quick else 10
    pipeline = Pipeline(1)
    plugin = RawPlugin(pipeline.control_endpoint, str(pipeline.run_dir))
    try:
        plugin.hold([f"custom-{i}-{i + 1}-{TICK_MS}" for i in range(channels)])
        plugin.wait_running(channels)
        plugin.count_rows(1.0)  # settle
        before = next(iter(plugin.status().workers.values()))["ticks_late"]
        started = time.monotonic()
        rows, skipped, arrivals_ms = plugin.count_rows(seconds, tick_ns=TICK_MS * 1_000_000)
        elapsed = time.monotonic() - started
        late = next(iter(plugin.status().workers.values()))["ticks_late"] - before
    finally:
        plugin.close()
        pipeline.close()
    late_share = late / max(rows, 1)
    return [
        Result("ticker", f"ticks/s, {channels} channels x 10 Hz", rows / elapsed, "ticks/s"),
        Result(
            "ticker",
            "share of ticks run over 1 ms after their due time (worker's clock)",
            late_share * 100,
            "%",
            "≤ 1 (p99 ≤ 1 ms)",
            late_share <= 0.01,
        ),
        Result(
            "ticker", "p99 due time → subscriber (adds the broker hop)", percentile(arrivals_ms, 99), "ms"
        ),
        Result("ticker", "ticks skipped", skipped, "ticks", "0", skipped == 0),
    ]
