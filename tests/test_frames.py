"""Stream frames against golden JSON, and the golden JSON decoded back as the browser decodes it.

The golden files in tests/golden/ were written by hand from the Go SDK's writer
(data/frame_json.go): compact JSON; `values`, then `entities`, then `nanos`; times in epoch
milliseconds with the sub-millisecond rest in `nanos`; NaN/±Inf as null with their rows
under `entities` keyed NaN, Inf, NegInf in that order. sdk_frame_example.json is the
literal example of the protocol fact sheet (§3.4). They are not snapshots of our output.
"""

import itertools
import math
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pytest

from services.common.channels import ChannelSpec
from services.common.fields import Batch, Column
from services.hostemu.dataframe import StreamingFrame
from services.plugin import eventframes, frames
from services.plugin.display import Display

GOLDEN = Path(__file__).parent / "golden"
ONE = ChannelSpec(10, 20, 100)
BASE_NS = 1_700_000_000_000_000_000


@dataclass(frozen=True)
class Case:
    spec: ChannelSpec
    times_ns: list[int]
    columns: list[list[float]]
    with_schema: bool


CASES = {
    "frame_one_series": Case(
        ONE, [BASE_NS + k * 100_000_000 for k in range(3)], [[10.5, 12.25, 19.75]], with_schema=True
    ),
    "frame_data_only": Case(ONE, [BASE_NS + 300_000_000], [[15.125]], with_schema=False),
    "frame_sub_ms_nanos": Case(
        ONE, [BASE_NS + k * 250_000 for k in range(1, 5)], [[0.5, 0.25, 0.125, 0.0625]], with_schema=False
    ),
    "frame_entities": Case(
        ONE,
        [BASE_NS + k * 1_000_000_000 for k in range(1, 7)],
        [[1.5, math.nan, math.inf, -math.inf, math.nan, 2.5]],
        with_schema=False,
    ),
    "frame_multi_series": Case(
        ChannelSpec(0, 1, 100, "sine", 3),
        [BASE_NS + 100_000_000, BASE_NS + 200_000_000],
        [[0.5, 0.75], [math.nan, 0.25], [0.125, 0.375]],
        with_schema=True,
    ),
}


def golden(name: str) -> bytes:
    return (GOLDEN / f"{name}.json").read_bytes().rstrip(b"\n")


def same_values(a: list[float], b: list[float]) -> bool:
    """Equal element by element, NaN equal to NaN."""
    return len(a) == len(b) and all(
        x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("name", CASES)
def test_packets_match_the_golden_json_byte_for_byte(name: str) -> None:
    case = CASES[name]
    schema = frames.schema(case.spec) if case.with_schema else None
    assert frames.packet(case.times_ns, case.columns, schema) == golden(name)


@pytest.mark.parametrize("name", CASES)
def test_the_golden_json_decodes_back_to_the_exact_rows(name: str) -> None:
    case = CASES[name]
    frame = StreamingFrame()
    if not case.with_schema:  # a data-only packet follows the stream's first packet
        frame.push(frames.schema_only(frames.schema(case.spec)))
    assert frame.push(golden(name)) == len(case.times_ns)
    assert frame.fields == frames.schema(case.spec)["fields"]
    assert frame.times_ns == case.times_ns, "nanosecond times survive ms + nanos"
    for decoded, column in zip(frame.value_columns, case.columns, strict=True):
        assert same_values(decoded, column)


def test_the_schema_only_initial_frame_matches_its_golden() -> None:
    assert frames.schema_only(frames.schema(ONE)) == golden("frame_schema_only")


def test_several_series_are_one_name_labelled_by_index_so_grafana_shows_value_0() -> None:
    fields = frames.schema(ChannelSpec(0, 1, 100, "sine", 3))["fields"]
    assert [f["name"] for f in fields] == ["time", "value", "value", "value"]
    assert [f.get("labels") for f in fields] == [None, {"series": "0"}, {"series": "1"}, {"series": "2"}]
    assert "labels" not in frames.schema(ONE)["fields"][1], "one series: no labels, as the SDK omits nil"


def test_field_config_scales_panels_to_the_channel_and_carries_unit_and_alias() -> None:
    assert frames.schema(ONE)["fields"][1]["config"] == {"min": 10.0, "max": 20.0}
    shown = Display(alias="room {{series}}", unit="celsius")
    configs = [f["config"] for f in frames.schema(ChannelSpec(-5, 5, 100, "sine", 2), shown)["fields"][1:]]
    assert configs == [
        {"displayNameFromDS": "room 0", "unit": "celsius", "min": -5.0, "max": 5.0},
        {"displayNameFromDS": "room 1", "unit": "celsius", "min": -5.0, "max": 5.0},
    ]


def test_the_protocol_sheet_s_literal_example() -> None:
    value = {"name": "value", "type": "number", "typeInfo": {"frame": "float64"}}
    plain = {"fields": [frames.TIME_FIELD, value]}
    assert frames.packet([BASE_NS + 123_456_789], [[42.5]], plain) == golden("sdk_frame_example")


def test_entity_keys_keep_the_sdk_s_order_whatever_comes_first() -> None:
    packet = frames.packet([0, 1_000_000, 2_000_000], [[-math.inf, math.inf, math.nan]])
    assert packet == (
        b'{"data":{"values":[[0,1,2],[null,null,null]],"entities":[null,{"NaN":[2],"Inf":[1],"NegInf":[0]}]}}'
    )


def test_the_committed_stream_capture_still_matches_today_s_frames() -> None:
    """tests/golden/stream_packets.jsonl, which the frontend's tests replay (tests/capture_stream.py)."""
    lines = (GOLDEN / "stream_packets.jsonl").read_bytes().splitlines()
    initial, first, *later = (orjson.loads(line) for line in lines)
    schema = frames.schema(ONE)
    assert initial["schema"] == schema, "SubscribeStream's initial frame"
    assert set(first) == {"schema", "data"}, "RunStream's first packet"
    assert first["schema"] == schema
    assert len(later) >= 3
    assert all(set(packet) == {"data"} for packet in later), "later packets carry data only"
    frame = StreamingFrame()
    for line in lines:
        frame.push(line)
    assert frame.fields == schema["fields"]
    times = frame.times_ns
    assert len(times) > len(lines)
    gaps = {b - a for a, b in itertools.pairwise(times)}
    assert gaps == {ONE.tick_ns}, f"the capture repeats, reorders or skips ticks: {sorted(gaps)[:5]}"
    assert all(10 <= v <= 20 for v in frame.column("value"))


def test_a_query_frame_of_text_booleans_and_nulls_goes_to_the_browser_as_grafana_sends_it() -> None:
    """hostemu's to_json: the /api/ds/query JSON of an event frame, with its meta, read back."""
    from services.common import fields as kinds
    from services.common.fields import Column
    from services.hostemu.arrowframe import read_frame
    from services.plugin.arrow import event_frame_file

    times = [BASE_NS, BASE_NS + 1_500_000]
    columns = [
        Column("temp", kinds.FLOAT64, [21.5, math.nan]),
        Column("count", kinds.INT64, [None, 7]),
        Column("door", kinds.STRING, ["open", None]),
        Column("ok", kinds.BOOL, [True, False]),
    ]
    meta = {"typeVersion": [0, 0], "preferredVisualisationType": "logs"}
    body = read_frame(event_frame_file(times, columns, ref_id="A", meta=meta)).to_json()
    assert body["schema"]["meta"] == meta
    assert [(f["name"], f["type"]) for f in body["schema"]["fields"]] == [
        ("time", "time"),
        ("temp", "number"),
        ("count", "number"),
        ("door", "string"),
        ("ok", "boolean"),
    ]
    panel = StreamingFrame()
    panel.push(orjson.loads(orjson.dumps(body)))  # through JSON, as the browser gets it
    assert panel.times_ns == times
    assert panel.column("door") == ["open", None]
    assert panel.column("ok") == [True, False]
    assert panel.column("count") == [None, 7]
    assert panel.column("temp")[0] == 21.5
    assert math.isnan(panel.column("temp")[1])
    assert panel.meta["preferredVisualisationType"] == "logs"


def test_a_kept_packet_costs_its_own_size_not_the_encoder_s_buffer() -> None:
    """10,000 streams each keep their last packet while they wait for a row: orjson's own
    result held a 4 KiB buffer for about 60 bytes of JSON (8 KiB a stream in `bench many`)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [frames.packet([BASE_NS + i], [[0.5]]) for i in range(1000)]
        level = Column("level", "string", ["low"])
        kept += [eventframes.packet(Batch([BASE_NS + i], [level])) for i in range(1000)]
        per_packet = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert max(map(len, kept)) < 100
    assert per_packet < 200, f"{per_packet:.0f} bytes held per packet of under 100"


@pytest.mark.parametrize(
    "values",
    [
        [0.5, -0.0, 1.0, 1e-7, 123456789012.0, 1.7976931348623157e308, 5e-324],
        [0.25, math.nan, 2.0, math.inf, -math.inf, 0.0, 1.5],
    ],
    ids=["finite", "not-finite"],
)
def test_an_initial_frame_from_numpy_arrays_is_the_lists_frame_byte_for_byte(values: list[float]) -> None:
    """SubscribeStream's initial frame (up to 1,000 rows) is encoded from the bulk generator's
    arrays as they are; a panel must get exactly the bytes the lists' path writes."""
    times = [BASE_NS + i * 50_000_000 + (i % 3) * 123 for i in range(len(values))]
    frame_schema = frames.schema(ONE)
    as_lists = frames.packet(times, [values, values[::-1]], frame_schema)
    arrays = [np.array(values), np.array(values[::-1])]
    assert frames.array_packet(np.array(times, dtype=np.int64), arrays, frame_schema) == as_lists
    whole_ms = [BASE_NS + i * 1_000_000 for i in range(len(values))]  # no nanos at all
    assert frames.array_packet(np.array(whole_ms, dtype=np.int64), arrays, frame_schema) == frames.packet(
        whole_ms, [values, values[::-1]], frame_schema
    )
