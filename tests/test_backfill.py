"""Backfill on subscribe: recent history first, then live rows with no gap and no duplicate."""

import itertools
from collections.abc import Iterator

import pytest
from support import running_pipeline

from services.common.channels import ChannelSpec
from services.hostemu.dataframe import StreamingFrame
from services.hostemu.host import Datasource, PluginHost
from services.plugin import backfill, recomputed
from services.plugin._proto import pluginv2_pb2 as pb

KEY = (1, "uid", "custom-0-1-100")
SPEC = ChannelSpec(0, 1, 100)


@pytest.fixture(scope="module")
def host() -> Iterator[PluginHost]:
    with running_pipeline() as plugin:
        yield plugin


def assert_gapless(frame: StreamingFrame, tick_ns: int) -> None:
    times = frame.times_ns
    steps = {b - a for a, b in itertools.pairwise(times)}
    assert steps == {tick_ns}, f"steps {sorted(steps)[:5]}: a gap or a duplicate"


def assert_live_values(frame: StreamingFrame, spec: ChannelSpec) -> None:
    """Every row holds the channel's own value for its tick (what the workers publish)."""
    ticks = range(spec.last_tick(frame.times_ns[0]), spec.last_tick(frame.times_ns[-1]) + 1)
    expected = recomputed.values(spec, ticks)
    assert frame.times_ns == expected.times_ns
    assert frame.value_columns == expected.columns


def test_a_late_subscriber_starts_from_recent_history_and_continues_live(host: PluginHost) -> None:
    spec = ChannelSpec(0, 5, 200, "sine", 2)
    first = host.subscribe(spec.path)
    stream = host.run_stream(spec.path)  # Grafana's one RunStream for the channel
    stream.add_viewer(first.data)
    seen = len(
        stream.read_rows(5, timeout_s=10).times_ns
    )  # returns as a packet lands: the next is ~200 ms away
    late = host.subscribe(spec.path)
    assert late.status == pb.SubscribeStreamResponse.OK
    initial = StreamingFrame()
    initial.push(late.data)
    assert len(initial.times_ns) == backfill.window(spec) == 300  # 60 s of 200 ms ticks
    assert initial.times_ns[-1] >= stream.frame.times_ns[-1]  # not before what we have read…
    assert [f.get("labels") for f in initial.fields[1:]] == [{"series": "0"}, {"series": "1"}]
    viewer = stream.add_viewer(late.data)
    stream.read_rows(10, timeout_s=10)
    stream.cancel()
    assert initial.times_ns[-1] in stream.frame.times_ns  # …but where the live stream had got to
    assert len(viewer.times_ns) == 300 + len(stream.frame.times_ns) - seen
    assert_gapless(viewer, spec.tick_ns)
    assert_live_values(viewer, spec)


def test_the_first_subscriber_gets_history_bridged_to_a_fresh_ticker(host: PluginHost) -> None:
    spec = ChannelSpec(0, 1, 5, "random_walk", 1)  # 5 ms ticks: the ticker starts some ticks after the reply
    response = host.subscribe(spec.path)
    stream = host.run_stream(spec.path)
    viewer = stream.add_viewer(response.data)
    assert len(viewer.times_ns) == 1000
    stream.read_rows(200, timeout_s=10)
    stream.cancel()
    assert_gapless(viewer, spec.tick_ns)
    assert_live_values(viewer, spec)


def test_a_subscriber_joining_a_ticker_already_running_elsewhere_sees_no_repeat(host: PluginHost) -> None:
    spec = ChannelSpec(0, 1, 5, "sine", 2)
    elsewhere = host.run_stream(spec.path, ds=Datasource(uid="another-datasource"))  # keeps the ticker busy
    elsewhere.read_rows(20, timeout_s=10)
    response = host.subscribe(spec.path)
    stream = host.run_stream(spec.path)  # rows in flight at or before the promise must not be sent
    viewer = stream.add_viewer(response.data)
    stream.read_rows(100, timeout_s=10)
    stream.cancel()
    elsewhere.cancel()
    assert_gapless(viewer, spec.tick_ns)
    assert_live_values(viewer, spec)


def test_a_restarted_stream_carries_on_where_the_last_one_stopped(host: PluginHost) -> None:
    spec = ChannelSpec(-1, 1, 10, "uniform", 3)
    response = host.subscribe(spec.path)
    first = host.run_stream(spec.path)
    viewer = first.add_viewer(response.data)
    first.read_rows(30, timeout_s=10)
    first.cancel()
    second = host.run_stream(spec.path)  # as Grafana re-runs a stream that failed
    second.viewers.append(viewer)
    second.read_rows(30, timeout_s=10)
    second.cancel()
    assert len(viewer.times_ns) >= 1000 + 30 + 30
    assert_gapless(viewer, spec.tick_ns)
    assert_live_values(viewer, spec)


def test_a_bad_path_is_still_not_found(host: PluginHost) -> None:
    response = host.subscribe("custom-5-1-100")
    assert response.status == pb.SubscribeStreamResponse.NOT_FOUND
    assert not response.data


@pytest.mark.parametrize(("tick_ms", "rows"), [(1, 1000), (100, 600), (1000, 60), (120_000, 1), (0.5, 1000)])
def test_history_is_the_last_minute_or_1000_rows_and_at_least_one(tick_ms: float, rows: int) -> None:
    spec = ChannelSpec(0, 1, tick_ms)
    assert backfill.window(spec) == rows
    recent = recomputed.values(spec, backfill.recent(spec, 10**18 + 1))
    assert len(recent) == rows
    assert recent.times_ns[-1] <= 10**18 + 1 < recent.times_ns[-1] + spec.tick_ns


def test_the_bridge_holds_the_ticks_strictly_between_at_most_max_rows() -> None:
    at = SPEC.tick_time
    assert backfill.between(SPEC, at(10), at(14)) == range(11, 14)
    assert len(backfill.between(SPEC, at(10), at(11))) == 0
    long = backfill.between(SPEC, 0, at(10_000))
    assert len(long) == backfill.MAX_ROWS
    assert long[-1] == 9_999


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_first_subscriber_is_promised_the_last_due_tick() -> None:
    ledger = backfill.Ledger()
    assert ledger.history_end(KEY, SPEC, SPEC.tick_time(12) + 34_567_890) == SPEC.tick_time(12)
    assert ledger.open(KEY) == SPEC.tick_time(12)  # the stream sends nothing at or before it


def test_a_running_stream_defines_the_end_of_a_late_subscriber_history() -> None:
    ledger = backfill.Ledger()
    assert ledger.open(KEY) == backfill.NOTHING
    ledger.sent(KEY, 5_000_000_000)
    assert ledger.history_end(KEY, SPEC, 9_999_000_000) == 5_000_000_000  # not now: the stream's last row


def test_a_promise_made_before_the_stream_sent_anything_binds_it() -> None:
    ledger = backfill.Ledger()
    ledger.open(KEY)
    assert ledger.history_end(KEY, SPEC, SPEC.tick_time(70) + 50_000_000) == SPEC.tick_time(70)
    assert ledger.promised(KEY) == SPEC.tick_time(70)


def test_a_stream_started_again_after_the_last_one_ended_carries_on() -> None:
    ledger = backfill.Ledger()
    ledger.open(KEY)
    ledger.sent(KEY, 3_000_000_000)
    ledger.close(KEY)
    assert ledger.open(KEY) == 3_000_000_000
    assert ledger.open(KEY) == backfill.NOTHING  # one beside a running one only honours promises


def test_idle_entries_are_forgotten_after_the_ttl_but_not_while_streaming() -> None:
    clock = Clock()
    ledger = backfill.Ledger(ttl_s=60, clock=clock)
    other = (1, "uid", "custom-0-1-200")
    ledger.open(KEY)
    ledger.sent(KEY, 3_000_000_000)
    ledger.history_end(other, SPEC, 1_000_000_000)
    clock.now = 61
    ledger.history_end((2, "x", "y"), SPEC, 0)
    assert KEY in ledger.entries
    assert other not in ledger.entries
    ledger.close(KEY)
    clock.now = 122
    assert ledger.open(other) == backfill.NOTHING
    assert KEY not in ledger.entries
