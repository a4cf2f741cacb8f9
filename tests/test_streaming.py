"""The tutorial's stream end to end, and the broker's accounting of who watches what."""

import itertools
import os
import statistics
import time
from pathlib import Path

import pytest
from support import Pipeline, plugin_of

from services.cli.status import fetch
from services.hostemu.host import PluginHost

TUTORIAL = "custom-10-20-100"


def channels(pipeline: Pipeline) -> dict[str, dict[str, object]]:
    return fetch(pipeline.control_endpoint, 2).channels


def wait_channels(pipeline: Pipeline, expected: dict[str, int], timeout_s: float = 5) -> None:
    """Until the broker's subscriber counts are `expected` ({channel: subscribers})."""
    deadline = time.monotonic() + timeout_s
    while (seen := {c: i["subscribers"] for c, i in channels(pipeline).items()}) != expected:
        assert time.monotonic() < deadline, f"broker has {seen}, expected {expected}"
        time.sleep(0.05)


def test_the_tutorial_channel_ticks_every_100_ms_within_its_limits(host: PluginHost) -> None:
    stream = host.run_stream(TUTORIAL)
    stream.read_rows(1)
    arrived = len(stream.received_at)
    frame = stream.read_rows(26, timeout_s=10)
    stream.cancel()
    gaps_ms = [(b - a) * 1000 for a, b in itertools.pairwise(stream.received_at[arrived - 1 :])]
    median = statistics.median(gaps_ms)
    print(f"\n[figure] {TUTORIAL}: median gap between packets {median:.2f} ms over {len(gaps_ms)}")
    assert 90 <= median <= 110
    steps = {b - a for a, b in itertools.pairwise(frame.times_ns)}
    assert steps == {100_000_000}
    assert all(10 <= v <= 20 for v in frame.column("value"))


def test_two_channels_run_at_once_on_different_workers(pipeline: Pipeline, host: PluginHost) -> None:
    first, second = host.run_stream("custom-0-1-50"), host.run_stream("custom--5-5-70-random_walk-2")
    a, b = first.read_rows(5), second.read_rows(5)
    assert all(0 <= v <= 1 for v in a.column("value"))
    assert all(-5 <= v <= 5 for v in b.value_columns[0] + b.value_columns[1])
    owners = {i["worker"] for i in channels(pipeline).values()}
    first.cancel()
    second.cancel()
    assert len(owners) == 2, f"both channels ran on {owners}"


def test_cancelling_the_stream_stops_the_ticker(pipeline: Pipeline, host: PluginHost) -> None:
    stream = host.run_stream(TUTORIAL)
    stream.read_rows(2)
    wait_channels(pipeline, {TUTORIAL: 1})
    stream.cancel()
    wait_channels(pipeline, {}, timeout_s=3)
    # A worker says what it runs in its next heartbeat (every 0.2 s), not when it stops a ticker.
    deadline = time.monotonic() + 3
    while any(w["channels"] for w in fetch(pipeline.control_endpoint, 2).workers.values()):
        assert time.monotonic() < deadline, "a worker still runs the ticker 3 s after the broker let it go"
        time.sleep(0.05)


def test_two_plugin_processes_keep_a_channel_alive_until_both_leave(
    pipeline: Pipeline, host: PluginHost
) -> None:
    other = pipeline.plugin()
    try:
        one, two = host.run_stream(TUTORIAL), other.run_stream(TUTORIAL)
        one.read_rows(2)
        two.read_rows(2)
        wait_channels(pipeline, {TUTORIAL: 2})
        one.cancel()
        wait_channels(pipeline, {TUTORIAL: 1})
        before = len(two.frame.times_ns)
        assert len(two.read_rows(before + 3).times_ns) > before, "the remaining plugin stopped receiving"
        two.cancel()
        wait_channels(pipeline, {})
    finally:
        other.stop()


def test_equivalent_spellings_share_one_ticker(pipeline: Pipeline, host: PluginHost) -> None:
    plain, padded = host.run_stream("custom-10-20-100"), host.run_stream("custom-10.0-20.00-100")
    a, b = plain.read_rows(3), padded.read_rows(3)
    wait_channels(pipeline, {TUTORIAL: 1})
    shared = set(a.times_ns) & set(b.times_ns)
    assert shared
    for t in shared:
        assert a.column("value")[a.times_ns.index(t)] == b.column("value")[b.times_ns.index(t)]
    plain.cancel()
    padded.cancel()


@pytest.mark.skipif(not {0, 1} <= os.sched_getaffinity(0), reason="needs CPUs 0 and 1")
def test_a_worker_given_a_cpu_keeps_its_ticker_there_and_its_io_thread_off_it() -> None:
    pipeline = Pipeline(1, worker_args=["--ticker-cpu", "1"])
    try:
        with plugin_of(pipeline) as host:
            assert len(host.run_stream(TUTORIAL).read_rows(3).times_ns) >= 3
        affinity = {
            (task / "comm").read_text().strip(): os.sched_getaffinity(int(task.name))
            for task in Path(f"/proc/{pipeline.workers[0].pid}/task").iterdir()
        }
        assert affinity["python"] == {1}, affinity
        assert affinity["ZMQbg/IO/0"] == os.sched_getaffinity(0) - {1}, affinity
    finally:
        pipeline.close()


def test_a_new_stream_sends_its_latest_tick_at_once_not_at_the_next_one(host: PluginHost) -> None:
    channel = "custom-0-1-60000"  # a tick a minute: waiting for the next live row would take up to 60 s
    opened = time.time()
    stream = host.run_stream(channel)
    frame = stream.read_rows(1, timeout_s=5)
    waited = stream.received_at[0] - opened
    stream.cancel()
    print(f"\n[figure] first packet of a 60 s channel after {waited * 1000:.0f} ms")
    assert waited < 2.0
    assert opened * 1e9 - 60e9 < frame.times_ns[0] <= opened * 1e9, "the latest tick due, recomputed"
