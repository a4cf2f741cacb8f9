"""QueryData through the real plugin: Arrow frames as Grafana reads them, equal to what the stream sent."""

import itertools
import threading
import time
from collections.abc import Iterator

import grpc
import orjson
import pyarrow as pa
import pytest
from recording import recording_pipeline
from support import memory_kib, plugin_of, query_model, running_pipeline

from services.common.channels import ChannelSpec, Limits
from services.common.errors import InvalidChannel
from services.common.waveforms import BUILTINS, channel_seed
from services.hostemu.arrowframe import read_frame
from services.hostemu.host import Datasource, PluginHost, data_query
from services.plugin import bulk, querydata, recomputed
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin.query import parse_query
from services.publish import Publisher

LIMITS = Limits()


@pytest.fixture(scope="module")
def host() -> Iterator[PluginHost]:
    with running_pipeline() as plugin:
        yield plugin


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.mark.parametrize(("generator", "series"), [("uniform", 1), ("random_walk", 2), ("sine", 3)])
def test_query_frames_equal_what_the_stream_delivered(host: PluginHost, generator: str, series: int) -> None:
    path = f"custom-0-10-20-{generator}-{series}"
    stream = host.run_stream(path)
    streamed = stream.read_rows(25, timeout_s=10)
    stream.cancel()
    times = streamed.times_ns
    model = query_model(0, 10, 20, generator, series)
    first_ms, last_ms = times[0] // 1_000_000, -(-times[-1] // 1_000_000)  # Grafana's ranges are in ms
    query = data_query("A", model, first_ms, last_ms, max_data_points=10_000)
    response = host.query_data([query]).responses["A"]
    assert response.status == 200
    assert not response.error
    assert len(response.frames) == 1

    table = pa.ipc.open_file(pa.py_buffer(response.frames[0])).read_all()  # the IPC *file* format
    assert table.schema.metadata == {b"name": b"", b"refId": b"A"}
    assert table.schema.field("time").type == pa.timestamp("ns")
    assert not table.schema.field("time").nullable
    assert table.schema.field("time").metadata == {b"tstype": b"time"}
    value_fields = [table.schema.field(i) for i in range(1, len(table.schema))]
    assert [f.name for f in value_fields] == [f["name"] for f in streamed.fields[1:]]  # the stream's names
    for arrow_field, stream_field in zip(value_fields, streamed.fields[1:], strict=True):
        assert (arrow_field.type, arrow_field.nullable) == (pa.float64(), False)
        assert arrow_field.metadata[b"tstype"] == b"number"
        labels = arrow_field.metadata.get(b"labels")
        assert (orjson.loads(labels) if labels else None) == stream_field.get("labels")
        assert orjson.loads(arrow_field.metadata[b"config"]) == stream_field["config"]
    if series > 1:
        assert [f["labels"] for f in streamed.fields[1:]] == [{"series": str(i)} for i in range(series)]

    frame = read_frame(response.frames[0])
    assert frame.times_ns == times
    for arrow_values, streamed_values in zip(frame.value_fields, streamed.value_columns, strict=True):
        assert arrow_values.values == streamed_values  # exactly the streamed floats


def test_max_data_points_strides_over_the_very_live_values(host: PluginHost) -> None:
    end = now_ms() - 1000
    model = query_model(-1, 1, 20, "random_walk", 2)
    spec = ChannelSpec(-1, 1, 20, "random_walk", 2)
    full = host.query_data([data_query("F", model, end - 60_000, end, max_data_points=50_000)]).responses["F"]
    thin = host.query_data([data_query("T", model, end - 60_000, end, max_data_points=100)]).responses["T"]
    full_frame, thin_frame = read_frame(full.frames[0]), read_frame(thin.frames[0])
    ticks = range(spec.first_tick((end - 60_000) * 1_000_000), spec.last_tick(end * 1_000_000) + 1)
    assert full_frame.times_ns == [spec.tick_time(k) for k in ticks]
    assert len(ticks) == 3000, "a minute of a 20 ms channel"
    assert 90 <= len(thin_frame.times_ns) <= 100
    by_time = dict(zip(full_frame.times_ns, full_frame.value_fields[1].values, strict=True))
    assert all(
        by_time[t] == v for t, v in zip(thin_frame.times_ns, thin_frame.value_fields[1].values, strict=True)
    )
    steps = {b - a for a, b in zip(thin_frame.times_ns, thin_frame.times_ns[1:], strict=False)}
    assert len(steps) == 1
    assert steps.pop() % 20_000_000 == 0


def test_the_time_range_is_honoured_and_cut_at_now(host: PluginHost) -> None:
    model = query_model(0, 1, 100)
    start = now_ms()
    ranged = host.query_data([data_query("A", model, start - 10_000, start + 10_000, max_data_points=10_000)])
    times = read_frame(ranged.responses["A"].frames[0]).times_ns
    spec = ChannelSpec(0, 1, 100)
    assert times[0] == spec.tick_time(spec.first_tick((start - 10_000) * 1_000_000))
    assert times[-1] <= time.time_ns()
    assert len(times) in (100, 101)
    future = host.query_data([data_query("B", model, start + 60_000, start + 120_000)]).responses["B"]
    assert future.status == 200
    assert read_frame(future.frames[0]).times_ns == []


def test_an_alert_rule_query_is_answered_like_a_panel_query(host: PluginHost) -> None:
    end = now_ms()
    query = data_query("A", query_model(0, 100, 1000), end - 6 * 3600_000, end, max_data_points=43_200)
    response = host.query_data([query], headers={"FromAlert": "true"}).responses["A"]
    assert response.status == 200
    frame = read_frame(response.frames[0])
    assert 21_599 <= len(frame.times_ns) <= 21_601
    assert all(0 <= v <= 100 for v in frame.field("value").values)


def test_bad_queries_get_400_with_a_clear_message_and_the_others_are_answered(host: PluginHost) -> None:
    end = now_ms()
    good = data_query("OK", query_model(0, 1, 100), end - 5000, end)
    bad: dict[str, tuple[dict[str, object], str]] = {
        "NAN": ({"lowerLimit": "abc"}, "lowerLimit must be a number"),
        "ORDER": ({"lowerLimit": 5, "upperLimit": 1}, "lower (5) must be below upper (1)"),
        "TICK": ({"tickInterval": 0.5}, "tick interval 0.5 ms is outside [1, 3600000] ms"),
        "GEN": ({"generator": "nope"}, "unknown generator 'nope'"),
        "SERIES": ({"series": 99}, "series 99 is outside [1, 10]"),
        "KIND": ({"series": "two"}, "series must be a whole number"),
        "DIGITS": ({"lowerLimit": 0.1234567890123}, "at most 15 integer and 9 decimal digits"),
    }
    queries = [good] + [data_query(ref, model, end - 5000, end) for ref, (model, _) in bad.items()]
    queries.append(
        pb.DataQuery(refId="JSON", json=b"{not json", timeRange=pb.TimeRange(fromEpochMS=0, toEpochMS=1))
    )
    queries.append(data_query("RANGE", query_model(0, 1, 100), end, end - 5000))
    responses = host.query_data(queries).responses
    assert responses["OK"].status == 200
    assert len(read_frame(responses["OK"].frames[0]).times_ns) >= 49
    for ref, (_, message) in bad.items():
        assert (responses[ref].status, responses[ref].errorSource) == (400, "downstream"), ref
        assert message in responses[ref].error
        assert not responses[ref].frames
    assert responses["JSON"].status == 400
    assert "not valid JSON" in responses["JSON"].error
    assert responses["RANGE"].status == 400
    assert "ends" in responses["RANGE"].error
    assert host.check_health().status == pb.CheckHealthResponse.OK
    assert host.process.poll() is None


def test_a_datasource_may_tighten_the_limits_of_its_queries(host: PluginHost) -> None:
    ds = Datasource(uid="tight", json_data={"maxSeries": 2, "minTickMs": 50})
    end = now_ms()
    queries = [
        data_query("S", query_model(0, 1, 100, "sine", 3), end - 1000, end),
        data_query("T", query_model(0, 1, 20), end - 1000, end),
    ]
    responses = host.query_data(queries, ds=ds).responses
    assert "series 3 is outside [1, 2]" in responses["S"].error
    assert "tick interval 20 ms is outside [50, 3600000] ms" in responses["T"].error


def test_the_query_model_takes_defaults_and_numeric_strings() -> None:
    assert parse_query(b"", LIMITS) == ChannelSpec(0, 100, 1000, "uniform", 1)
    model = {"refId": "A", "lowerLimit": "-5", "upperLimit": 5.5, "tickInterval": "250", "series": 2.0}
    assert parse_query(orjson.dumps(model), LIMITS) == ChannelSpec(-5, 5.5, 250, "uniform", 2)
    with pytest.raises(InvalidChannel, match="must be a JSON object"):
        parse_query(b"[1]", LIMITS)
    with pytest.raises(InvalidChannel, match="lowerLimit must be a finite number"):
        parse_query(b'{"lowerLimit": "1e999"}', LIMITS)
    with pytest.raises(InvalidChannel, match="generator must be a string"):
        parse_query(b'{"generator": 3}', LIMITS)


def test_the_query_spec_is_the_stream_spec() -> None:
    spec = parse_query(orjson.dumps(query_model(10.0, 20, 100.00, "sine", 2)), LIMITS)
    assert spec.path == "custom-10-20-100-sine-2"
    assert recomputed.values(spec, range(5)) == recomputed.values(
        ChannelSpec(10, 20, 100, "sine", 2), range(5)
    )


def test_a_time_range_before_1677_fails_its_query_alone(host: PluginHost) -> None:
    end = now_ms()
    good = data_query("OK", query_model(0, 1, 100), end - 5000, end)
    early = [data_query(ref, query_model(0, 1, 100), start, end) for ref, start in EARLY_STARTS.items()]
    responses = host.query_data([good, *early]).responses
    assert responses["OK"].status == 200
    for ref in EARLY_STARTS:
        assert (responses[ref].status, responses[ref].errorSource) == (400, "downstream"), ref
        assert "before 1677-09-21, which Grafana cannot represent" in responses[ref].error


EARLY_STARTS = {"MIN": -(2**63), "1600": -11_676_096_000_000}


def test_a_thousand_day_long_queries_stay_within_the_points_budgets() -> None:
    day_ms = 86_400_000
    end = now_ms()
    model = query_model(0, 1, 1, "uniform", 10)
    queries = [data_query(f"Q{i}", model, end - day_ms, end, max_data_points=50_000) for i in range(1000)]
    with running_pipeline() as plugin:
        health_s: list[float] = []
        querying = threading.Thread(target=lambda: answers.append(plugin.query_data(queries, timeout_s=60)))
        answers: list[pb.QueryDataResponse] = []
        started = time.monotonic()
        querying.start()
        while querying.is_alive():
            asked = time.monotonic()
            assert plugin.check_health().status == pb.CheckHealthResponse.OK
            health_s.append(time.monotonic() - asked)
        elapsed = time.monotonic() - started
        peak = memory_kib(plugin.process.pid, "VmHWM") / 1024
    responses = answers[0].responses
    answered = [ref for ref, r in responses.items() if r.status == 200]
    assert len(responses) == 1000
    assert len(answered) == 4, "2,000,000 values per request, 500,000 per query"
    assert all(len(read_frame(responses[ref].frames[0]).times_ns) == 50_000 for ref in answered)
    refused = [r for r in responses.values() if r.status != 200]
    assert all((r.status, r.errorSource) == (413, "downstream") for r in refused)
    assert "needs 500,000 values" in refused[0].error
    assert "budget of 2,000,000" in refused[0].error
    assert "lower maxDataPoints" in refused[0].error
    print(
        f"\n[figure] QueryData of 1,000 day-long queries: {elapsed:.1f} s, plugin peak RSS {peak:.0f} MiB, "
        f"CheckHealth meanwhile at most {max(health_s) * 1000:.0f} ms"
    )
    assert peak < 300
    assert max(health_s) < 1.0


def test_queries_past_the_plugin_s_points_in_flight_get_a_429() -> None:
    settings = {"max_points_in_flight": "600000"}
    end = now_ms()
    model = query_model(0, 1, 1, "uniform", 10)
    big = [data_query(ref, model, end - 86_400_000, end, max_data_points=50_000) for ref in ("A", "B")]
    small = data_query("C", query_model(0, 1, 100), end - 5000, end)
    with running_pipeline(plugin_settings=settings) as plugin:
        responses = plugin.query_data([*big, small]).responses
    assert responses["A"].status == 200
    assert (responses["B"].status, responses["B"].errorSource) == (429, "downstream")
    assert "plugin already holds 500,000 of the 600,000" in responses["B"].error
    assert "retry in a moment" in responses["B"].error
    assert responses["C"].status == 200, "a query that fits is still answered"


def test_shutdown_during_a_large_query_data_exits_within_a_second() -> None:
    end = now_ms()
    model = query_model(0, 1, 1, "uniform", 10)
    queries = [data_query(f"Q{i}", model, end - 86_400_000, end, max_data_points=50_000) for i in range(1000)]
    with running_pipeline() as plugin:
        outcome: list[grpc.StatusCode] = []

        def query() -> None:
            try:
                plugin.query_data(queries, timeout_s=60)
            except grpc.RpcError as exc:
                outcome.append(exc.code())

        querying = threading.Thread(target=query)
        querying.start()
        time.sleep(0.5)  # the plugin is computing the first answers
        shutdown_s = plugin.stop()
        querying.join(5)
    print(f"\n[figure] Shutdown during a QueryData of 1,000 large queries: exited after {shutdown_s:.2f} s")
    assert shutdown_s < 1.0
    assert plugin.process.returncode == 0
    assert outcome in ([], [grpc.StatusCode.CANCELLED], [grpc.StatusCode.UNAVAILABLE])


def test_an_event_channels_query_spreads_its_points_over_the_whole_range() -> None:
    """On main it answered the last maxDataPoints rows of the range: a 24 h panel showed only its
    last minutes. Now evenly spaced rows, the range's first and last among them."""
    with recording_pipeline() as pipeline:
        start = int(now_ms()) - 100_000
        records = [{"time": start + 30 * i, "v": i} for i in range(3000)]  # 90 s of rows
        with Publisher(pipeline.publish_endpoint) as publisher:
            assert publisher.publish("pub-day", records) == 3000
        with plugin_of(pipeline) as host:
            query = data_query(
                "A", {"kind": "published", "channel": "day"}, start - 1000, int(now_ms()), max_data_points=100
            )
            response = host.query_data([query]).responses["A"]
    assert response.status == 200, response.error
    frame = read_frame(response.frames[0])
    values = frame.field("v").values
    assert len(values) == 100
    assert (values[0], values[-1]) == (0, 2999), values[:3]
    steps = {b - a for a, b in itertools.pairwise(values)}
    assert steps <= {30, 31}, steps  # evenly spaced: every 30th row, give or take the rounding
    assert "evenly spaced" in str(frame.meta)


def test_an_answer_computed_in_bulk_holds_the_generator_s_very_values() -> None:
    spec = ChannelSpec(0, 10, 1000, "uniform", 3)
    last = spec.last_tick(time.time_ns())
    ticks = recomputed.strided(range(last - 21_600, last + 1), 1000)  # 6 h of 1 s ticks, as a dashboard asks
    assert bulk.handles(spec, ticks)
    answered, rows = querydata.answer(spec, ticks, "A")
    frame = read_frame(answered.frames[0])
    assert rows == len(ticks)
    assert frame.times_ns == spec.tick_times(ticks)
    generated = BUILTINS["uniform"].generate(spec, channel_seed(spec.path), ticks)
    assert [field.values for field in frame.value_fields] == generated
