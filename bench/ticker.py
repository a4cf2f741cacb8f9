"""Ticker lateness with 10,000 channels x 10 Hz on one worker, and whether any tick is skipped.

Run twice: as deployed by default (every thread free to run anywhere), and with the
worker's ticker thread on a CPU of its own (`--ticker-cpu 1`; the broker, libzmq's I/O
threads and this reader kept on CPU 0, as `taskset` would). On a 2-core machine the
worker, the broker and a reader of all 100k messages/s need about 1.7 cores, so in the
first run the ticker often waits for a CPU, and that wait is its lateness.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from bench.harness import RawPlugin
from bench.measure import Result, percentile
from services.hostemu.localpipeline import Pipeline

TICK_MS = 100
TICKER_CPU = 1


def _threads(pid: int) -> list[int]:
    return [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]


@contextlib.contextmanager
def kept_on_cpu0(pids: list[int]) -> Iterator[None]:
    """Every thread of `pids` on CPU 0 for the block, then back where it was."""
    threads = [tid for pid in pids for tid in _threads(pid)]
    before = {tid: os.sched_getaffinity(tid) for tid in threads}
    for tid in threads:
        os.sched_setaffinity(tid, {0})
    try:
        yield
    finally:
        for tid, cpus in before.items():
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(tid, cpus)


def measure(channels: int, seconds: float, own_cpu: bool) -> tuple[float, float, float, int]:
    """(ticks/s, share of ticks over 1 ms late, p99 due → subscriber ms, ticks skipped)."""
    pipeline = Pipeline(1, worker_args=["--ticker-cpu", str(TICKER_CPU)] if own_cpu else [])
    plugin = RawPlugin.on(pipeline)
    try:
        plugin.hold([f"custom-{i}-{i + 1}-{TICK_MS}" for i in range(channels)])
        plugin.wait_running(channels)
        pinned = [os.getpid(), pipeline.broker.pid] if own_cpu else []
        with kept_on_cpu0(pinned):
            plugin.count_rows(3.0)  # settle: a worker starts 10,000 tickers over ~2 s, 20 ms of them a turn
            before = late_ticks(plugin)
            started = time.monotonic()
            rows, skipped, arrivals_ms = plugin.count_rows(seconds, tick_ns=TICK_MS * 1_000_000)
            elapsed = time.monotonic() - started
            late = late_ticks(plugin) - before
    finally:
        plugin.close()
        pipeline.close()
    return rows / elapsed, late / max(rows, 1), percentile(arrivals_ms, 99), skipped


def late_ticks(plugin: RawPlugin) -> int:
    """The one worker's count of ticks published over its lateness budget."""
    workers = plugin.status().workers
    if not workers:
        raise RuntimeError("the broker presumed the worker dead: is the machine busy with something else?")
    return int(next(iter(workers.values()))["ticks_late"] or 0)


def run(quick: bool) -> list[Result]:
    channels = 2_000 if quick else 10_000
    seconds = 3 if quick else 10
    rate, shared_late, shared_p99, shared_skipped = measure(channels, seconds, own_cpu=False)
    results = [
        Result("ticker", f"ticks/s, {channels} channels x 10 Hz", rate, "ticks/s"),
        Result("ticker", "ticks run over 1 ms after their due time, no pinning", shared_late * 100, "%"),
        Result("ticker", "p99 due time → subscriber, no pinning", shared_p99, "ms"),
    ]
    skipped = shared_skipped
    if {0, TICKER_CPU} <= os.sched_getaffinity(0):
        _, own_late, own_p99, own_skipped = measure(channels, seconds, own_cpu=True)
        skipped += own_skipped
        results += [
            Result(
                "ticker",
                "ticks run over 1 ms after their due time, ticker thread on its own CPU",
                own_late * 100,
                "%",
                "≤ 1 (p99 ≤ 1 ms)",
                own_late <= 0.01,
            ),
            Result("ticker", "p99 due time → subscriber, ticker thread on its own CPU", own_p99, "ms"),
        ]
    results.append(Result("ticker", "ticks skipped (both runs)", skipped, "ticks", "0", skipped == 0))
    return results
