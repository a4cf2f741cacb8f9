"""Faults on real processes: nothing lost, nothing repeated, and the figures printed.

Every test streams a channel through the real plugin while something dies, and checks
the rows Grafana would get: strictly increasing times, one row per tick (gaps are
recomputed from the deterministic generators), values in range.
"""

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import grpc
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import Pipeline, memory_kib, plugin_of, stop, wait_for_workers

from services.cli.status import fetch
from services.hostemu.host import LiveStream, PluginHost
from services.plugin._proto import pluginv2_pb2 as pb

TICK_MS = 20
TARGET = f"custom-0-1-{TICK_MS}"
STARVED_STREAMS = 200


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    pipeline = Pipeline(2, broker_args=["--plugin-lease-s", "1.5", "--min-tick-ms", "0.01"])
    try:
        yield pipeline
    finally:
        pipeline.close()


class Reader:
    """Reads a stream in a thread, noting when each packet arrived and its newest tick."""

    def __init__(self, stream: LiveStream) -> None:
        self.stream = stream
        self.arrivals: list[tuple[float, int]] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for _ in self.stream.packets_iter():
                self.arrivals.append((time.time(), self.stream.frame.times_ns[-1]))
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.error = exc

    def first_arrival_after(self, instant: float, timeout_s: float = 10) -> float:
        """When the first row ticked later than `instant` arrived (both wall clock)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for received, newest_ns in list(self.arrivals):
                if newest_ns > instant * 1e9:
                    return received
            time.sleep(0.01)
        raise TimeoutError(f"no row ticked after {instant} within {timeout_s} s")

    def close(self) -> None:
        self.stream.cancel()
        self.thread.join(5)
        assert self.error is None, self.error


def assert_every_tick_once(stream: LiveStream, tick_ms: float) -> None:
    times = stream.frame.times_ns
    steps = {b - a for a, b in itertools.pairwise(times)}
    assert steps == {round(tick_ms * 1e6)}, f"steps between rows: {sorted(steps)[:5]}"
    assert all(0 <= v <= 1 for v in stream.frame.column("value"))


def worker_of(pipeline: Pipeline, channel: str) -> int:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        owner = fetch(pipeline.control_endpoint, 2).channels.get(channel, {}).get("worker")
        if owner:
            return int(owner.removeprefix("w")) - 1
        time.sleep(0.05)
    raise TimeoutError(f"{channel} has no worker")


def test_a_killed_worker_s_channels_resume_elsewhere_within_a_second(
    pipeline: Pipeline, host: PluginHost
) -> None:
    load = [Reader(host.run_stream(f"custom-0-1-5-sine-{n}")) for n in range(1, 9)]  # busy workers
    target = Reader(host.run_stream(TARGET))
    time.sleep(1.0)
    victim = worker_of(pipeline, TARGET)
    killed_at = time.time()
    os.kill(pipeline.workers[victim].pid, signal.SIGKILL)
    resumed = target.first_arrival_after(killed_at) - killed_at
    time.sleep(0.5)
    assert worker_of(pipeline, TARGET) != victim
    for reader in [*load, target]:
        reader.close()
    print(f"\n[figure] worker kill -9 → channel resumed on the other worker after {resumed:.3f} s")
    assert resumed < 1.0
    assert_every_tick_once(target.stream, TICK_MS)


def test_streams_resume_within_two_seconds_of_a_broker_restart(pipeline: Pipeline, host: PluginHost) -> None:
    target = Reader(host.run_stream(TARGET))
    time.sleep(1.0)
    pipeline.restart_broker()
    restarted_at = time.time()
    resumed = target.first_arrival_after(restarted_at) - restarted_at
    time.sleep(0.5)
    target.close()
    print(f"\n[figure] broker restart → stream resumed after {resumed:.3f} s")
    assert resumed < 2.0
    assert_every_tick_once(target.stream, TICK_MS)
    status = fetch(pipeline.control_endpoint, 2)
    assert len(status.workers) == 2, "both workers rejoined the new broker"


def test_a_killed_plugin_s_subscriptions_are_released_after_the_lease(pipeline: Pipeline) -> None:
    doomed = pipeline.plugin()
    wait_for_workers(doomed, 2)
    readers = [Reader(doomed.run_stream(path)) for path in (TARGET, "custom-0-1-50")]
    deadline = time.monotonic() + 5
    while len(fetch(pipeline.control_endpoint, 2).channels) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    killed_at = time.monotonic()
    doomed.process.kill()
    while (status := fetch(pipeline.control_endpoint, 2)).channels:
        assert time.monotonic() - killed_at < 5, status.channels
        time.sleep(0.1)
    released = time.monotonic() - killed_at
    doomed.stop()
    for reader in readers:
        reader.thread.join(5)
    print(f"\n[figure] plugin kill -9 → its channels released after {released:.2f} s (lease 1.5 s)")
    assert 1.0 < released < 3.5
    assert all(worker["channels"] == 0 for worker in status.workers.values()), "a ticker leaked"


def test_a_client_that_stops_reading_costs_bounded_memory_and_slows_no_one(pipeline: Pipeline) -> None:
    settings = {
        "stream_queue_bytes": "1600000",
        "min_tick_ms": "0.01",
        "max_values_per_s_per_datasource": "1000000",
        "max_values_per_s": "1000000",
    }
    with plugin_of(pipeline, settings) as host:
        stalled = host.run_stream("custom-0-1-0.02-uniform-10")  # 50,000 rows/s, 10 series, never read
        stalled_first = next(stalled.packets_iter())
        assert stalled_first
        healthy = Reader(host.run_stream(TARGET))
        rss = [memory_kib(host.process.pid)]
        for _ in range(8):
            time.sleep(0.5)
            rss.append(memory_kib(host.process.pid))
        healthy.close()
        metrics = host.collect_metrics()
        (notice,) = stalled.read_notices()
        assert "rows dropped: Grafana reads this stream slower than it ticks" in notice["text"]
        stalled.cancel()
    dropped = sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "zmqstream_plugin_rows_dropped_total"
    )
    growth_mib = (max(rss[2:]) - rss[2]) / 1024
    print(f"\n[figure] stalled client: plugin RSS {[r // 1024 for r in rss]} MiB, rows dropped {dropped:.0f}")
    assert dropped > 0, "the stalled stream's queue never overflowed"
    assert growth_mib < 30, f"RSS kept growing: {growth_mib:.1f} MiB"
    assert_every_tick_once(healthy.stream, TICK_MS)
    assert len(healthy.stream.frame.times_ns) >= 3.5 / (TICK_MS / 1000)


def test_checkhealth_reports_a_dead_broker_clearly(pipeline: Pipeline, host: PluginHost) -> None:
    stop(pipeline.broker)
    health = host.check_health()
    assert health.status == pb.CheckHealthResponse.ERROR
    assert "Broker unreachable" in health.message


def assert_strictly_increasing(stream: LiveStream) -> tuple[int, int]:
    """(repeated ticks, steps back) in what the stream sent: both must be 0."""
    times = stream.frame.times_ns
    repeats = sum(1 for a, b in itertools.pairwise(times) if a == b)
    back = sum(1 for a, b in itertools.pairwise(times) if b < a)
    return repeats, back


def refused(host: PluginHost, reason: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(host.collect_metrics())
        for sample in family.samples
        if sample.name == "zmqstream_plugin_frames_refused_total" and sample.labels["reason"] == reason
    )


@pytest.mark.parametrize("tick_ms", [10, 2])
def test_a_worker_frozen_past_its_lease_never_makes_a_stream_repeat_or_step_back(
    pipeline: Pipeline, host: PluginHost, tick_ms: int
) -> None:
    channel = f"custom-0-1-{tick_ms}"
    reader = Reader(host.run_stream(channel))
    time.sleep(1.0)
    frozen = worker_of(pipeline, channel)
    os.kill(pipeline.workers[frozen].pid, signal.SIGSTOP)  # past the 0.6 s lease: the channel moves
    try:
        time.sleep(3.0)
    finally:
        os.kill(pipeline.workers[frozen].pid, signal.SIGCONT)  # its old ticker comes back to life
    time.sleep(3.0)
    assert worker_of(pipeline, channel) != frozen
    deadline = time.monotonic() + 3
    while fetch(pipeline.control_endpoint, 2).workers[f"w{frozen + 1}"]["channels"] != 0:
        assert time.monotonic() < deadline, "the woken worker was not told to stop its superseded ticker"
        time.sleep(0.1)
    reader.close()
    repeats, back = assert_strictly_increasing(reader.stream)
    stale = refused(host, "epoch")
    print(
        f"\n[figure] worker frozen 3 s ({tick_ms} ms channel): {len(reader.stream.frame.times_ns)} rows, "
        f"{repeats} repeated, {back} steps back, {stale:.0f} stale frames dropped"
    )
    assert (repeats, back) == (0, 0)
    assert_every_tick_once(reader.stream, tick_ms)


def test_under_cpu_starvation_streams_stay_strictly_increasing_and_live_peers_are_not_failed_over() -> None:
    pipeline = Pipeline(2)  # the default leases, as users run them
    try:
        with plugin_of(pipeline) as host:
            readers = [Reader(host.run_stream(f"custom-{i}-{i + 1}-10")) for i in range(STARVED_STREAMS)]
            time.sleep(1.5)
            spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(10)]
            try:  # load 12 on 2 cores
                time.sleep(6.0)
            finally:
                for spinner in spinners:
                    spinner.kill()
                    spinner.wait()
            time.sleep(1.0)
            for reader in readers:
                reader.close()
        started = [
            orjson.loads(line)["channel"]
            for i in range(2)
            for line in (pipeline.run_dir / f"w{i + 1}.log").read_text().splitlines()
            if '"ticker started"' in line
        ]
        presumed_dead = [
            line
            for line in (pipeline.run_dir / "broker.log").read_text().splitlines()
            if "presumed dead" in line
        ]
    finally:
        pipeline.close()
    bad = [assert_strictly_increasing(reader.stream) for reader in readers]
    rows = sum(len(reader.stream.frame.times_ns) for reader in readers)
    print(
        f"\n[figure] {STARVED_STREAMS} streams under load 12 on 2 cores for 6 s: {rows} rows, "
        f"{sum(r for r, _ in bad)} repeated, {sum(b for _, b in bad)} steps back, "
        f"{len(started) - len(set(started))} tickers restarted or moved"
    )
    assert bad == [(0, 0)] * len(readers)
    assert presumed_dead == [], "the failure detector took live peers for dead"
