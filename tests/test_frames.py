"""Stream frames byte for byte as the Go SDK's FrameToJSON writes them.

tests/golden/sdk_frame_example.json is the literal example of the protocol fact sheet
(§3.4), derived from the SDK's writer: time 2023-11-14T22:13:20.123456789Z, value 42.5.
"""

import itertools
import math
from pathlib import Path

import orjson

from services.common.channels import ChannelSpec
from services.hostemu.dataframe import StreamingFrame
from services.plugin import frames

GOLDEN = Path(__file__).parent / "golden"
TIME_NS = 1_700_000_000_123_456_789
ONE_SERIES = ChannelSpec(10, 20, 100)


def test_schema_and_data_match_the_sdk_byte_for_byte() -> None:
    expected = (GOLDEN / "sdk_frame_example.json").read_bytes().strip()
    assert frames.packet([TIME_NS], [[42.5]], frames.schema(ONE_SERIES)) == expected


def test_data_only_and_whole_milliseconds_drop_schema_and_nanos() -> None:
    assert (
        frames.packet([TIME_NS], [[42.5]])
        == b'{"data":{"values":[[1700000000123],[42.5]],"nanos":[[456789],null]}}'
    )
    assert (
        frames.packet([1_700_000_000_123_000_000], [[1.0]]) == b'{"data":{"values":[[1700000000123],[1.0]]}}'
    )


def test_nan_and_infinities_travel_as_null_with_entities() -> None:
    packet = frames.packet([0, 1_000_000, 2_000_000], [[math.nan, math.inf, -math.inf]])
    body = orjson.loads(packet)["data"]
    assert body["values"][1] == [None, None, None]
    assert body["entities"] == [None, {"NaN": [0], "Inf": [1], "NegInf": [2]}]
    frame = StreamingFrame()
    frame.push(frames.schema_only(frames.schema(ONE_SERIES)))
    frame.push(packet)
    decoded = frame.column("value")
    assert math.isnan(decoded[0])
    assert decoded[1:] == [math.inf, -math.inf]


def test_several_series_are_labelled_fields() -> None:
    schema = frames.schema(ChannelSpec(0, 1, 100, "sine", 3))
    fields = schema["fields"]
    assert [f["name"] for f in fields] == ["time", "value_0", "value_1", "value_2"]
    assert [f.get("labels") for f in fields[1:]] == [{"series": "0"}, {"series": "1"}, {"series": "2"}]


def test_the_capture_the_frontend_tests_read_matches_todays_format() -> None:
    packets = (GOLDEN / "stream_packets.jsonl").read_bytes().splitlines()
    initial, first, *rest = (orjson.loads(p) for p in packets)
    expected_schema = frames.schema(ChannelSpec(10, 20, 100))
    assert initial["schema"] == first["schema"] == expected_schema
    assert rest
    assert all(set(p) == {"data"} for p in rest)
    frame = StreamingFrame()
    for packet in packets:
        frame.push(packet)
    times = frame.times_ns
    assert times == sorted(set(times)), "the capture repeats or reorders rows"
    assert {b - a for a, b in itertools.pairwise(times)} == {100_000_000}
    assert all(10 <= v <= 20 for v in frame.column("value"))
