"""A panel as the frontend runs it: its range from QueryData, then the live stream, seamless.

The frontend (frontend/src/datasource.ts) asks QueryData for the range, subscribes with
`{"after": <the history's last time, ms>}`, and Grafana appends the subscription's
initial data and every packet to that history without deduplication. Here the same
sequence runs against the real plugin and the browser's appending is replayed.
"""

import itertools
import time
from collections.abc import Iterator

import orjson
import pytest
from support import query_model, running_pipeline, suffix

from services.common.channels import ChannelSpec
from services.hostemu.arrowframe import read_frame
from services.hostemu.dataframe import StreamingFrame
from services.hostemu.host import PluginHost, data_query
from services.plugin import backfill, recomputed
from services.plugin._proto import pluginv2_pb2 as pb

MARGIN_MS = 1000
"""The frontend's: QueryData stops this far before now, the subscription bridges the rest."""


@pytest.fixture(scope="module")
def host() -> Iterator[PluginHost]:
    with running_pipeline() as plugin:
        yield plugin


def open_panel(
    host: PluginHost, spec: ChannelSpec, minutes: float, max_points: int, path: str = ""
) -> tuple[StreamingFrame, int]:
    """History over the last `minutes`, then the subscription: the browser's frame, and the history's rows."""
    now_ms = time.time_ns() // 1_000_000
    model = query_model(spec.lower, spec.upper, spec.tick_ms, spec.generator, spec.series)
    start_ms = now_ms - int(minutes * 60_000)
    query = data_query("A", model, start_ms, now_ms - MARGIN_MS, max_data_points=max_points)
    history_frame = read_frame(host.query_data([query]).responses["A"].frames[0])
    after = history_frame.times_ns[-1] // 1_000_000
    reply = host.subscribe(path or spec.path, data=orjson.dumps({"after": after}))
    assert reply.status == pb.SubscribeStreamResponse.OK
    stream = host.run_stream(path or spec.path)
    panel = StreamingFrame()
    panel.push(history_frame.to_json())
    panel.push(reply.data)
    stream.viewers.append(panel)
    stream.read_rows(3, timeout_s=10)
    stream.cancel()
    return panel, len(history_frame.times_ns)


def assert_exact_values(panel: StreamingFrame, spec: ChannelSpec) -> None:
    first, last = spec.last_tick(panel.times_ns[0]), spec.last_tick(panel.times_ns[-1])
    every = recomputed.values(spec, range(first, last + 1))
    by_time = dict(zip(every.times_ns, zip(*every.columns, strict=True), strict=True))
    assert [by_time[t] for t in panel.times_ns] == list(zip(*panel.value_columns, strict=True))


def test_the_last_15_minutes_at_1_s_is_900_rows_at_once_then_live_rows_without_gap_or_duplicate(
    host: PluginHost,
) -> None:
    spec = ChannelSpec(0, 10, 1000)
    panel, rows = open_panel(host, spec, 15, max_points=1000)
    assert rows in (899, 900)  # 15 min less the margin the subscription bridges
    steps = {b - a for a, b in itertools.pairwise(panel.times_ns)}
    assert steps == {spec.tick_ns}, f"steps {sorted(steps)}: a gap or a duplicate at the seam"
    assert len(panel.times_ns) >= rows + 3
    assert_exact_values(panel, spec)


def test_strided_history_is_followed_by_full_rate_rows_from_its_last_tick_on(host: PluginHost) -> None:
    spec = ChannelSpec(-1, 1, 20, "random_walk", 2)
    panel, rows = open_panel(host, spec, 1, max_points=500)  # 3,000 ticks strided by 6
    times = panel.times_ns
    assert rows <= 500
    history_steps = {b - a for a, b in itertools.pairwise(times[:rows])}
    live_steps = {b - a for a, b in itertools.pairwise(times[rows - 1 :])}
    assert history_steps == {6 * spec.tick_ns}
    assert live_steps == {spec.tick_ns}, "the first live row is the tick right after the history's last"
    assert_exact_values(panel, spec)


def test_a_panel_joining_a_stream_already_running_carries_on_from_what_it_sent(host: PluginHost) -> None:
    spec = ChannelSpec(0, 1, 500, "sine", 1)
    first = host.subscribe(spec.path)
    running = host.run_stream(spec.path)  # Grafana's one RunStream, for another panel
    running.add_viewer(first.data)
    running.read_rows(3, timeout_s=10)  # returns as a packet lands: the next is ~500 ms away
    now_ms = time.time_ns() // 1_000_000
    model = query_model(0, 1, 500, "sine", 1)
    query = data_query("A", model, now_ms - 120_000, now_ms - MARGIN_MS, max_data_points=1000)
    history_frame = read_frame(host.query_data([query]).responses["A"].frames[0])
    reply = host.subscribe(spec.path, data=orjson.dumps({"after": history_frame.times_ns[-1] // 1_000_000}))
    panel = StreamingFrame()
    panel.push(history_frame.to_json())
    panel.push(reply.data)
    assert panel.times_ns[-1] == running.frame.times_ns[-1], "the bridge ends where the stream has got to"
    running.viewers.append(panel)
    running.read_rows(len(running.frame.times_ns) + 2, timeout_s=10)
    running.cancel()
    assert {b - a for a, b in itertools.pairwise(panel.times_ns)} == {spec.tick_ns}
    assert_exact_values(panel, spec)


def test_display_options_shape_the_frames_but_hold_the_one_canonical_channel(host: PluginHost) -> None:
    spec = ChannelSpec(0, 50, 100, "sine", 2)
    shown = spec.path + suffix(b'{"alias":"room {{series}}","unit":"celsius"}')
    plain, styled = host.run_stream(spec.path), host.run_stream(shown)
    a, b = plain.read_rows(5), styled.read_rows(5)
    configs = [f["config"] for f in b.fields[1:]]
    assert configs == [
        {"displayNameFromDS": "room 0", "unit": "celsius", "min": 0.0, "max": 50.0},
        {"displayNameFromDS": "room 1", "unit": "celsius", "min": 0.0, "max": 50.0},
    ]
    assert [f["config"] for f in a.fields[1:]] == [{"min": 0.0, "max": 50.0}] * 2
    channels = [c["path"] for c in host.call_resource("channels").json()["channels"]]
    plain.cancel()
    styled.cancel()
    assert channels.count(spec.path) == 1
    assert not any("display" in c for c in channels)
    common = sorted(set(a.times_ns) & set(b.times_ns))
    assert common, "both streams relay the one ticker"
    assert [a.value_columns[0][a.times_ns.index(t)] for t in common] == [
        b.value_columns[0][b.times_ns.index(t)] for t in common
    ]


def test_querydata_answers_the_same_field_config_as_the_stream(host: PluginHost) -> None:
    model = {**query_model(0, 50, 100, "sine", 2), "alias": "room {{series}}", "unit": "celsius"}
    now_ms = time.time_ns() // 1_000_000
    response = host.query_data([data_query("A", model, now_ms - 5000, now_ms)]).responses["A"]
    frame = read_frame(response.frames[0])
    reply = host.subscribe("custom-0-50-100-sine-2" + suffix(b'{"alias":"room {{series}}","unit":"celsius"}'))
    streamed = orjson.loads(reply.data)["schema"]["fields"][1:]
    assert [(f.name, f.labels, f.config) for f in frame.value_fields] == [
        (f["name"], f["labels"], f["config"]) for f in streamed
    ]


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("custom-0-1-100/display=!!", b""),
        ("custom-0-1-100" + suffix(b'{"unit": 5}'), b""),
        ("custom-0-1-100" + suffix(b'{"alias": "' + b"x" * 65 + b'"}'), b""),
        ("custom-0-1-100" + suffix(b'["celsius"]'), b""),
        ("custom-0-1-100", b'{"after": "yesterday"}'),
        ("custom-0-1-100", b"not json"),
    ],
)
def test_bad_display_options_or_payloads_are_not_found(host: PluginHost, path: str, data: bytes) -> None:
    assert host.subscribe(path, data=data).status == pb.SubscribeStreamResponse.NOT_FOUND


def test_since_holds_the_ticks_after_a_millisecond_up_to_the_end_strided_to_end_on_it() -> None:
    spec = ChannelSpec(0, 1, 100)
    at = spec.tick_time
    assert list(backfill.since(spec, at(10) // 1_000_000, at(13))) == [11, 12, 13]
    assert len(backfill.since(spec, at(13) // 1_000_000, at(13))) == 0
    long = backfill.since(spec, 0, at(100_000))
    assert len(long) <= backfill.MAX_ROWS
    assert long[-1] == 100_000
