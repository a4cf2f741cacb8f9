"""Sources (services.sources): the hand-off's bounds, then real workers running real sources.

The misbehaving sources come from tests/sources_for_tests, found by the workers through
their PYTHONPATH as installed entry points would be. Events are read as a plugin reads
them: a bare DEALER heartbeating the channels it holds and a SUB on frames_out
(tests/eventclient.py).
"""

from __future__ import annotations

import json
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import psutil
import pytest
from eventclient import EventsClient
from support import Pipeline

from services.cli.status import fetch
from services.common import protocol
from services.common.channels import SOURCE, UNCHECKED, EventChannel, parse_channel, parse_path
from services.common.fields import FLOAT64, STRING, InvalidRows
from services.generator.handoff import Handoff, Waker
from services.generator.runner import SourceChannels, prepare
from services.sources import registry
from services.sources.host import HostSource

TEST_SOURCES = Path(__file__).parent / "sources_for_tests"


# -- the hand-off ------------------------------------------------------------------------


@pytest.fixture
def waker() -> Iterator[Waker]:
    waker = Waker()
    yield waker
    waker.close()


def readable(waker: Waker) -> bool:
    return bool(select.select([waker.fd], [], [], 0)[0])


def test_the_handoff_keeps_the_newest_items_within_its_bytes(waker: Waker) -> None:
    handoff: Handoff[int] = Handoff(1000, waker)
    for item in range(10):
        assert handoff.put(item, 300)
        assert handoff.bytes <= 1000
    assert handoff.take() == [7, 8, 9], "the oldest went first"
    assert handoff.dropped == 7
    assert handoff.bytes == 0
    assert handoff.take() == []


def test_an_item_larger_than_the_bound_is_refused_and_counted(waker: Waker) -> None:
    handoff: Handoff[str] = Handoff(100, waker)
    handoff.put("kept", 60)
    assert not handoff.put("huge", 101)
    assert handoff.dropped == 1
    assert handoff.take() == ["kept"], "what was queued stays"


def test_a_put_wakes_the_consumer_until_it_clears(waker: Waker) -> None:
    handoff: Handoff[int] = Handoff(100, waker)
    assert not readable(waker)
    handoff.put(1, 10)
    handoff.put(2, 10)
    assert readable(waker)
    assert waker.pending
    waker.clear()
    assert not readable(waker)
    assert not waker.pending
    waker.clear()  # clearing twice must not block or raise


def test_producers_in_threads_never_exceed_the_bound_and_nothing_is_lost_uncounted(waker: Waker) -> None:
    handoff: Handoff[int] = Handoff(10_000, waker)
    taken: list[int] = []
    highest = 0
    done = threading.Event()

    def produce(base: int) -> None:
        for i in range(5000):
            handoff.put(base + i, 1 + i % 700)

    producers = [threading.Thread(target=produce, args=(n * 10_000,)) for n in range(4)]
    for thread in producers:
        thread.start()

    def consume() -> None:
        nonlocal highest
        while not done.is_set() or handoff.bytes:
            highest = max(highest, handoff.bytes)
            taken.extend(handoff.take())

    consumer = threading.Thread(target=consume)
    consumer.start()
    for thread in producers:
        thread.join()
    done.set()
    consumer.join()
    assert highest <= 10_000
    assert len(taken) + handoff.dropped == 4 * 5000
    for n in range(4):  # each producer's items stay in order
        mine = [item for item in taken if n * 10_000 <= item < (n + 1) * 10_000]
        assert mine == sorted(mine)


def test_prepare_stamps_orders_and_sizes_a_poll() -> None:
    polled, size = prepare(
        [{"a": 1.0}, {"time": 1000, "a": 2.0}, {"time": 999, "a": 3.0}, {"time": 1001, "b": "xyz"}],
        5_000_000_000,
        10,
    )
    times = [r["time"] for r in polled.records]
    assert times == [5000.0], "records after the stamped one must be later than it"
    assert polled.dropped == 3
    polled, size = prepare([{"time": 1, "a": 1.0}, {"time": 2, "s": "xyz"}], 0, 10)
    assert polled.dropped == 0
    assert len(polled.records) == 2
    assert size > len("xyz")
    assert prepare(None, 0, 10)[0].records == []


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        ({"a": 1}, "must return a list of records"),
        ("text", "must return a list of records"),
        (5, "must return a list of records"),
        ([1, 2], "record 1: expected a map"),
        ([{"a": [1, 2]}], "is not a number, bool, string or null"),
        ([{"time": "yesterday"}], "record 1: time 'yesterday' is not RFC 3339"),
        ([{5: 1.0}], "field names must be strings"),
        (iter(lambda: {"a": 1.0}, None), "more than 3 records"),
    ],
)
def test_prepare_refuses_what_a_source_should_not_return(result: object, reason: str) -> None:
    with pytest.raises(InvalidRows, match=reason):
        prepare(result, 0, 3)


def test_the_registry_takes_entry_points_and_leaves_out_bad_ones(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.syspath_prepend(str(TEST_SOURCES))
    registry.cache_clear()
    try:
        found = registry()
    finally:
        registry.cache_clear()
    assert {"sleepy", "shifty", "broken", "flaky"} <= found.keys()
    assert not {"Bad-Name", "missing", "notaclass"} & found.keys(), "logged and left out"
    assert found["host"] is HostSource, "an entry point cannot take a built-in's name"
    logged = [(r.getMessage(), r.__dict__["fields"]["source"]) for r in caplog.records]
    assert ("source name refused", "Bad-Name") in logged
    assert ("source failed to load", "missing") in logged
    assert ("source failed to load", "notaclass") in logged
    assert any("is not a class with poll()" in r.__dict__["fields"].get("error", "") for r in caplog.records)


def test_the_host_source_reads_this_machine() -> None:
    channel = parse_channel("source-host-1000", UNCHECKED)
    assert isinstance(channel, EventChannel)
    source = HostSource(channel)
    time.sleep(0.2)
    (record,) = source.poll()
    check_host_record(record)


def check_host_record(record: dict[str, object]) -> None:
    cores = psutil.cpu_count()
    expected = ["cpu", *(f"cpu{i}" for i in range(cores)), "memory_used", "net_rx", "net_tx", "disk_read"]
    assert list(record)[: len(expected)] == expected
    assert list(record)[len(expected) :] == ["disk_write"]
    for name in ["cpu", *(f"cpu{i}" for i in range(cores))]:
        value = record[name]
        assert isinstance(value, float), name
        assert 0.0 <= value <= 100.0, (name, value)
    memory = record["memory_used"]
    assert isinstance(memory, float)
    assert 0.0 < memory <= 100.0
    for name in ("net_rx", "net_tx", "disk_read", "disk_write"):
        value = record[name]
        assert value is None or (isinstance(value, float) and 0.0 <= value < 1e12), (name, value)


# -- the main thread's side, in this process -----------------------------------------------

NOW_MS = time.time_ns() // 1_000_000


class Script:
    """Returns SCRIPT's batches, one per poll, then nothing."""

    SCRIPT: ClassVar[list[list[dict[str, Any]]]] = []

    def __init__(self, channel: EventChannel) -> None:
        self.polls = iter(self.SCRIPT)

    def poll(self) -> list[dict[str, Any]]:
        return next(self.polls, [])


def run_script(script: list[list[dict[str, Any]]], queue_bytes: int = 1 << 20) -> list[protocol.Events]:
    """Run `Script` as a worker would, until its batches are published; the Events it sent."""
    Script.SCRIPT = script
    frames: list[bytes] = []
    sources = SourceChannels(
        lambda: {"script": Script}, frames.append, max_rows=1000, queue_bytes=queue_bytes
    )
    channel = EventChannel(SOURCE, "script", 5)
    assert sources.start(channel, epoch=7)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sources.channels:
        select.select([sources.waker.fd], [], [], 0.05)
        sources.drain(lambda path, why: pytest.fail(why))
        thread = sources._placed[channel.path].thread
        if thread.polls_done > len(script) + 2 and not thread.handoff.bytes:
            break
    assert sources.stop(channel.path, 7)
    sources.close()
    decoded = [protocol.decode_data(frame) for frame in frames]
    assert all(path == channel.path for path, _ in decoded)
    events = [message for _, message in decoded]
    assert all(isinstance(e, protocol.Events) and e.epoch == 7 for e in events)
    return events  # type: ignore[return-value]


def test_times_only_go_forward_and_rows_far_ahead_are_dropped() -> None:
    events = run_script(
        [
            [{"time": NOW_MS - 5000, "v": 1.0}, {"time": NOW_MS - 4000, "v": 2.0}],
            [{"time": NOW_MS - 4500, "v": 3.0}, {"time": NOW_MS - 3000, "v": 4.0}],  # the first steps back
            [{"time": NOW_MS + 600_000, "v": 5.0}],  # ten minutes ahead
            [{"time": NOW_MS - 2000, "v": 6}],  # an int in a float64 field
        ]
    )
    times = [t for e in events for t in e.times]
    assert times == [(NOW_MS + d) * 1_000_000 for d in (-5000, -4000, -3000, -2000)]
    assert [v for e in events for v in e.columns[0].values] == [1.0, 2.0, 4.0, 6.0]


def test_a_batch_larger_than_a_data_frame_leaves_in_several() -> None:
    text = "x" * 1000
    rows = [{"time": NOW_MS - 10_000 + i, **{f"f{n}": text for n in range(10)}} for i in range(1000)]
    events = run_script([rows], queue_bytes=64 << 20)
    assert len(events) > 1
    assert [t for e in events for t in e.times] == [(NOW_MS - 10_000 + i) * 1_000_000 for i in range(1000)]
    for e in events:
        assert len(protocol.events_frame("source-script-5", 7, e.batch)) <= protocol.MAX_DATA_BYTES


def test_stop_is_fenced_by_epoch() -> None:
    sources = SourceChannels(lambda: {"script": Script}, lambda frame: None, max_rows=10)
    channel = EventChannel(SOURCE, "script", 1000)
    Script.SCRIPT = []
    assert sources.start(channel, epoch=5)
    assert sources.start(channel, epoch=9), "a running channel takes the newer epoch"
    assert sources.channels == {channel.path: 9}
    assert not sources.stop(channel.path, 8), "an older placement's StopTicker leaves it running"
    assert sources.stop(channel.path, 9)
    assert not sources.start(EventChannel(SOURCE, "nosuch", 1000), epoch=1)
    sources.close()


# -- real workers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def closed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the `flaky` source leaves a file when it is closed."""
    return tmp_path_factory.mktemp("closed")


@pytest.fixture(scope="module")
def single(closed_dir: Path) -> Iterator[Pipeline]:
    """A broker and one worker (so every channel shares it), with the test sources on its path."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(TEST_SOURCES))
        patch.setenv("ZMQSTREAM_TEST_CLOSED_DIR", str(closed_dir))
        pipeline = Pipeline(1, broker_args=["--plugin-lease-s", "1"])
    try:
        yield pipeline
    finally:
        pipeline.close()


Client = Callable[..., EventsClient]


@pytest.fixture
def client(single: Pipeline) -> Iterator[Client]:
    """Clients holding the channels they are made with; closed after the test."""
    clients: list[EventsClient] = []

    def make(*channels: str) -> EventsClient:
        clients.append(EventsClient(single.control_endpoint, list(channels)))
        return clients[-1]

    yield make
    for each in clients:
        each.close()


def log_lines(pipeline: Pipeline, name: str, message: str) -> list[dict[str, object]]:
    lines = []
    for line in (pipeline.run_dir / f"{name}.log").read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and message in str(entry.get("@message", "")):
            lines.append(entry)
    return lines


def test_a_blocking_source_does_not_delay_the_ticks_of_its_worker(single: Pipeline, client: Client) -> None:
    fast = "custom-0-1-20"
    events = client("source-sleepy-100", fast)
    events.collect(lambda: len(events.of("source-sleepy-100")) >= 2, timeout_s=20)
    spec = parse_path(fast, UNCHECKED)
    started = events.received[0].at_ns
    late_ms = []
    ticks: list[int] = []
    for channel, rows, at_ns in events.rows:
        assert channel == fast
        last = rows.first_tick + rows.count - 1
        ticks.extend(range(rows.first_tick, last + 1))
        if at_ns >= started:
            late_ms.append((at_ns - spec.tick_time(last)) / 1e6)
    assert len(late_ms) > 100, "3 s of a 20 ms channel while the source blocked"
    late_ms.sort()
    print(
        "[figure] a 20 ms channel beside a source blocking 3 s per poll: "
        f"median {late_ms[len(late_ms) // 2]:.2f} ms late, worst {late_ms[-1]:.2f} ms"
    )
    assert late_ms[-1] < 500, "a tick waited for the blocking source"
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), "every tick once, in order"
    polls = [e.columns[0].values for e in events.of("source-sleepy-100")]
    assert polls[:2] == [[1], [2]]


def test_a_source_that_changes_a_fields_kind_keeps_its_schema_and_says_why(
    single: Pipeline, client: Client
) -> None:
    path = "source-shifty-50"
    events = client(path)
    events.collect(lambda: sum(len(e.times) for e in events.of(path)) >= 8, timeout_s=20)
    labels = []
    for batch in events.of(path):
        assert [(c.name, c.kind) for c in batch.columns] == [("value", FLOAT64), ("label", STRING)]
        labels.extend(batch.columns[1].values)
    numbers = [int(str(label).split()[1]) for label in labels]
    assert numbers == sorted(numbers)
    assert not [n for n in numbers if n % 3 == 0], "the string batches never reach a stream"
    assert len(numbers) >= 8, "the source went on after its first bad batch"
    refused = log_lines(single, "w1", "source rows refused")
    assert len(refused) == 1, "logged at most every 10 s"
    assert "field 'value' is string, the channel's schema has it as float64" in json.dumps(refused[0])


def test_a_source_that_cannot_be_made_is_refused_and_one_that_raises_is_retried(
    single: Pipeline, client: Client
) -> None:
    events = client("source-broken-100", "source-flaky-50")
    events.collect(lambda: len(events.of("source-flaky-50")) >= 3, timeout_s=20)
    assert not events.of("source-broken-100")
    refused = log_lines(single, "w1", "source failed to start")
    assert refused
    assert "no such device" in json.dumps(refused[0])
    failed = log_lines(single, "w1", "source poll failed")
    assert len(failed) == 1
    assert "device busy" in json.dumps(failed[0])
    assert single.workers[0].poll() is None, "the worker lives on"


def test_a_source_is_closed_after_its_last_subscriber(
    single: Pipeline, client: Client, closed_dir: Path
) -> None:
    path = "source-flaky-100"
    events = client(path)
    events.collect(lambda: bool(events.of(path)), timeout_s=20)
    events.close()  # no more heartbeats: the broker releases it after its 1 s lease
    deadline = time.monotonic() + 10
    while not (closed_dir / path).exists():
        assert time.monotonic() < deadline, "the source was never closed"
        time.sleep(0.2)
    assert any(e.get("channel") == path for e in log_lines(single, "w1", "source stopped"))


def test_host_fields_decode_with_sensible_values(single: Pipeline, client: Client) -> None:
    path = "source-host-200"
    events = client(path)
    events.collect(lambda: sum(len(e.times) for e in events.of(path)) >= 3, timeout_s=20)
    times = [t for e in events.of(path) for t in e.times]
    assert times == sorted(set(times))
    assert abs(times[-1] - time.time_ns()) < 5e9
    for batch in events.of(path):
        assert all(c.kind == FLOAT64 for c in batch.columns)
        for row in range(len(batch.times)):
            check_host_record({c.name: c.values[row] for c in batch.columns})


def test_a_source_on_a_killed_worker_resumes_on_the_other(monkeypatch: pytest.MonkeyPatch) -> None:
    path = "source-host-100"
    pipeline = Pipeline(2)
    events = EventsClient(pipeline.control_endpoint, [path])
    try:
        events.collect(lambda: len(events.of(path)) >= 5, timeout_s=30)
        first_epoch = events.of(path)[0].epoch
        worker = fetch(pipeline.control_endpoint, 5).channels[path]["worker"]
        victim = pipeline.workers[int(str(worker)[1:]) - 1]
        victim.send_signal(signal.SIGKILL)
        killed_at = time.time_ns()

        def resumed() -> list[int]:
            return [r.at_ns for r in events.received if r.events.epoch != first_epoch]

        events.collect(lambda: len(resumed()) >= 5, timeout_s=20)
        print(f"[figure] source resumed {(resumed()[0] - killed_at) / 1e9:.2f} s after kill -9 of its worker")
        epochs = [e.epoch for e in events.of(path)]
        assert epochs == sorted(epochs)
        assert epochs[-1] > first_epoch
        assert len(set(epochs)) == 2
        times = [t for e in events.of(path) for t in e.times]
        assert times == sorted(set(times)), "no time repeated or stepping back"
        assert fetch(pipeline.control_endpoint, 5).channels[path]["worker"] != worker
    finally:
        events.close()
        pipeline.close()


def test_rows_leave_at_once_and_a_restarted_broker_adopts_the_running_source() -> None:
    path = "source-host-100"
    pipeline = Pipeline(1)
    events = EventsClient(pipeline.control_endpoint, [path])
    try:
        events.collect(lambda: len(events.of(path)) >= 6, timeout_s=30)
        # Alone on its worker, no ticker wakes the main thread: the hand-off must, at once.
        late_ms = sorted((r.at_ns - r.events.times[-1]) / 1e6 for r in events.received)
        assert late_ms[len(late_ms) // 2] < 25, late_ms
        pipeline.restart_broker()
        before = len(events.of(path))
        events.collect(lambda: len(events.of(path)) >= before + 5, timeout_s=30)
        times = [t for e in events.of(path) for t in e.times]
        assert times == sorted(set(times))
        started = [e for e in log_lines(pipeline, "w1", "source started") if e.get("channel") == path]
        assert len(started) == 1, "the source ran on, it was not started again"
        deadline = time.monotonic() + 5
        # Rows flow as soon as the ipc sockets reconnect, maybe before the new broker has heard the
        # worker's full heartbeat or the client's: until then it lists no such channel.
        while fetch(pipeline.control_endpoint, 5).channels.get(path, {}).get("worker") != "w1":
            assert time.monotonic() < deadline, fetch(pipeline.control_endpoint, 5)
            time.sleep(0.1)
    finally:
        events.close()
        pipeline.close()


def test_with_a_pinned_ticker_sources_run_on_the_other_cpus() -> None:
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        pytest.skip("needs two CPUs")
    path = "source-host-100"
    pipeline = Pipeline(1, worker_args=["--ticker-cpu", str(usable[0])])
    events = EventsClient(pipeline.control_endpoint, [path])
    try:
        events.collect(lambda: bool(events.of(path)), timeout_s=30)
        pid = pipeline.workers[0].pid
        cpus_of: dict[int, set[int]] = {}
        for task in Path(f"/proc/{pid}/task").iterdir():
            status = dict(line.split(":", 1) for line in (task / "status").read_text().splitlines())
            if not status["Name"].strip().startswith("ZMQbg"):  # libzmq's threads are pinned by libzmq
                cpus_of[int(task.name)] = cpu_list(status["Cpus_allowed_list"])
        assert cpus_of.pop(pid) == {usable[0]}, "the ticker thread"
        assert cpus_of, "the source's thread"
        for tid, cpus in cpus_of.items():
            assert usable[0] not in cpus, (tid, cpus)
    finally:
        events.close()
        pipeline.close()


def cpu_list(text: str) -> set[int]:
    """/proc's `0-2,5` as {0, 1, 2, 5}."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def test_a_worker_whose_source_blocks_in_poll_exits_within_a_second_of_sigterm() -> None:
    """SIGTERM while a source's poll blocks (a hung device read): the worker still stops within 1 s."""
    path = "source-sleepy-100"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(TEST_SOURCES))
        pipeline = Pipeline(1)
    events = EventsClient(pipeline.control_endpoint, [path])
    try:
        events.collect(lambda: bool(log_lines(pipeline, "w1", "source started")), timeout_s=20)
        time.sleep(0.5)  # its first poll has begun, and blocks for 3 s
        worker = pipeline.workers[0]
        began = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(10) == 0
        stopped_s = time.monotonic() - began
        print(f"\n[figure] worker exit after SIGTERM, its source blocked in poll: {stopped_s:.2f} s")
        assert stopped_s < 1
    finally:
        events.close()
        pipeline.close()
