"""Typed columns of event channels: records in, checked batches out, schemas kept."""

import decimal
import math
import re

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common import fields, protocol
from services.common.channels import PUBLISHED, SOURCE, EventChannel, Limits, parse_channel
from services.common.errors import InvalidChannel, ProtocolError
from services.common.fields import (
    BOOL,
    FLOAT64,
    INT64,
    STRING,
    Batch,
    Column,
    InvalidRows,
    Schema,
    from_records,
)

NOON = 1_795_953_600_000_000_000
"""2026-11-29T12:00:00Z in ns."""


def test_records_become_typed_columns_in_the_order_fields_first_appear() -> None:
    batch = from_records(
        [
            {"time": "2026-11-29T12:00:00Z", "temp": 21.5, "door": "open"},
            {"time": 1_795_953_601_000, "temp": 22, "door": None, "ok": True, "n": 3},
        ],
        None,
        100,
    )
    assert batch.times == [NOON, NOON + 1_000_000_000]
    assert batch.schema == Schema((("temp", FLOAT64), ("door", STRING), ("ok", BOOL), ("n", INT64)))
    assert batch.columns[0].values == [21.5, 22.0]  # an int in a float field is a float
    assert batch.columns[2].values == [None, True]


def test_a_schema_holds_later_rows_to_their_first_kinds() -> None:
    first = from_records([{"time": NOON // 1_000_000, "temp": 1.5, "door": "open"}], None, 10)
    later = from_records([{"time": NOON // 1_000_000 + 1, "temp": 2}], first.schema, 10)
    assert later.schema == first.schema
    assert later.columns[1].values == [None]  # absent: null
    with pytest.raises(InvalidRows, match="field 'door' is bool, the channel's schema has it as string"):
        from_records([{"time": NOON // 1_000_000 + 2, "door": True}], first.schema, 10)
    with pytest.raises(InvalidRows, match="field 'colour' is not in the channel's schema"):
        from_records([{"time": NOON // 1_000_000 + 2, "colour": "red"}], first.schema, 10)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"temp": 1.0}, "row 1: no 'time'"),
        ({"time": "yesterday"}, "is not RFC 3339"),
        ({"time": "2026-11-29T12:00:00"}, "has no time zone"),
        ({"time": True}, "time must be"),
        ({"time": -5}, "outside 1970 to 2262"),
        ({"time": 5, "x": [1]}, "is not a number, bool, string or null"),
        ({"time": 5, "x": {"a": 1}}, "is not a number, bool, string or null"),
        ({"time": 5, "x": "y" * 2000}, "does not fit"),
        ({"time": 5, "x": 2**70}, "does not fit"),
        ({"time": 5, "bad name": 1}, "is not [A-Za-z_]"),
    ],
)
def test_bad_records_are_refused_saying_why(record: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidRows) as refused:
        from_records([record], None, 10)
    assert reason in str(refused.value)


def test_times_must_increase_and_rows_are_bounded() -> None:
    with pytest.raises(InvalidRows, match="strictly increasing"):
        from_records([{"time": 5, "x": 1}, {"time": 5, "x": 2}], None, 10)
    with pytest.raises(InvalidRows, match="more than 2 rows"):
        from_records([{"time": t} for t in range(1, 5)], None, 2)


def test_a_batch_keeps_only_rows_after_a_time() -> None:
    batch = from_records([{"time": t, "x": t} for t in (1, 2, 3)], None, 10)
    assert batch.after(0) is batch
    assert batch.after(2_000_000).times == [3_000_000]
    assert batch.after(2_000_000).columns[0].values == [3]
    assert len(batch.after(9_000_000)) == 0
    assert fields.concat([batch.last(1), batch.after(9_000_000)]).times == [3_000_000]


def test_event_channel_paths_parse_to_their_kind_and_bad_ones_say_the_forms() -> None:
    limits = Limits()
    assert parse_channel("source-host-1000", limits) == EventChannel(SOURCE, "host", 1000.0)
    assert parse_channel("source-host-1000.0", limits).path == "source-host-1000"
    assert parse_channel("pub-room.temp-1", limits) == EventChannel(PUBLISHED, "room.temp-1")
    assert parse_channel("custom-0-1-100", limits).path == "custom-0-1-100"
    for bad in ("pub-", "pub-Room", "source-host", "source-host-0.1", "events-x", "pub-" + "a" * 65):
        with pytest.raises(InvalidChannel):
            parse_channel(bad, limits)


wire_int = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what msgpack can carry
values = st.none() | st.booleans() | wire_int | st.floats() | st.text(max_size=5) | st.binary(max_size=3)


@settings(max_examples=500)
@given(
    times=st.lists(values, max_size=4),
    columns=st.lists(st.lists(values | st.lists(values, max_size=4), max_size=4), max_size=3),
)
def test_any_events_payload_decodes_wholly_valid_or_is_refused(
    times: list[object], columns: list[object]
) -> None:
    frames = [
        bytes((protocol.PROTOCOL_VERSION, protocol.MsgType.EVENTS)),
        msgpack.packb({"epoch": 1, "times": times, "columns": columns}),
    ]
    try:
        message = protocol.expect(frames, protocol.Events)
    except ProtocolError as exc:
        refusal = str(exc)
        assert refusal.startswith("Events")
        return
    assert fields.problem(message.times, message.columns, protocol.MAX_ROWS) == ""
    for column in message.columns:
        assert isinstance(column, Column)
        expected = {FLOAT64: float, INT64: int, BOOL: bool, STRING: str}[column.kind]
        assert all(v is None or type(v) is expected for v in column.values)
        assert len(column.values) == len(message.times)


def test_an_events_frame_round_trips_with_nan_and_nulls() -> None:
    batch = fields.checked([1, 2], [Column("x", FLOAT64, [math.nan, None])], 10)
    channel, message = protocol.decode_data(protocol.events_frame("pub-a", 9, batch))
    assert channel == "pub-a"
    assert isinstance(message, protocol.Events)
    assert message.epoch == 9
    assert math.isnan(message.columns[0].values[0])  # type: ignore[arg-type]
    assert message.columns[0].values[1] is None


def test_an_int_too_large_for_a_float64_field_is_invalid_rows_not_a_crash() -> None:
    """A source or a Python publisher may hand any int: past float's range it is refused as rows are."""
    with pytest.raises(InvalidRows, match="row 2, field 'x'"):
        from_records([{"time": 1, "x": 1.5}, {"time": 2, "x": 10**400}], None, 10)
    with pytest.raises(InvalidRows, match="row 1, field 'x'"):
        from_records([{"time": 1, "x": 10**400}], Schema((("x", FLOAT64),)), 10)


@settings(max_examples=2000)
@given(ms=st.integers(min_value=0, max_value=9_000_000_000_000), micro=st.integers(0, 999))
def test_a_float_of_epoch_milliseconds_is_the_nanosecond_it_is_written_as(ms: int, micro: int) -> None:
    """`time.time() * 1000` and JSON's 1796484188869.0 are floats: the ns they denote, never 1 ms early."""
    assert fields.parse_time(float(ms)) == ms * 1_000_000
    written = float(f"{ms}.{micro:03d}")
    assert fields.parse_time(written) == round(decimal.Decimal(repr(written)) * 1_000_000)
    assert fields.parse_time(1796484188869.0) == 1_796_484_188_869_000_000
    assert fields.parse_time(1796484188869.123) == 1_796_484_188_869_123_000


@pytest.mark.parametrize(
    "time", [-1, -0.5, -86_400_000.0, "1969-12-31T23:59:59.999Z", "1900-01-01T00:00:00+01:00"]
)
def test_a_time_before_1970_is_refused_for_the_same_reason_however_it_is_written(time: object) -> None:
    with pytest.raises(InvalidRows) as refused:
        from_records([{"time": time, "x": 1}], None, 10)
    assert fields.OUT_OF_RANGE in str(refused.value)


def test_a_batch_of_ns_before_1970_is_refused_for_the_same_reason_on_the_wire() -> None:
    """A Python publisher's or a worker's times arrive as ns: the same rule, in the check every
    Publish and Events frame passes."""
    with pytest.raises(InvalidRows, match=re.escape(fields.OUT_OF_RANGE)):
        fields.checked([-1_000_000_000, 5], [Column("x", INT64, [1, 2])], 10)
    frame = protocol.events_frame("source-x-100", 1, Batch([-5], [Column("x", INT64, [1])]))
    with pytest.raises(ProtocolError, match=re.escape(fields.OUT_OF_RANGE)):
        protocol.decode_data(frame)


def test_records_without_a_time_are_left_for_the_recorder_to_stamp_all_or_none() -> None:
    records = [{"temp": 1.5}, {"temp": 2}]
    assert fields.leaves_time_out(records)
    batch = from_records(records, None, 10, stamp=True)
    assert batch.times == [1, 2]  # STAMPED_LATER
    assert batch.columns == [Column("temp", FLOAT64, [1.5, 2.0])]
    with pytest.raises(InvalidRows, match="row 2 has a 'time' and row 1 has none"):
        from_records([{"temp": 1.5}, {"time": 5, "temp": 2}], None, 10, stamp=True)
    assert not fields.leaves_time_out([{"time": 5}, {"temp": 1.0}])
    with pytest.raises(InvalidRows, match="row 2: no 'time': give every row of a batch its time, or none"):
        from_records([{"time": 5}, {"temp": 1.0}], None, 10)
