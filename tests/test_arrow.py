"""The Arrow writer against the protocol doc §4: what Grafana's reader expects, byte by byte."""

import math

import orjson
import pyarrow as pa
import pytest

from services.hostemu.arrowframe import read_frame
from services.hostemu.dataframe import FrameError
from services.plugin import arrow
from services.plugin.arrow import NumberField, time_series_file

TIMES = [1_700_000_000_123_456_789, 1_700_000_001_123_456_789]


def frame_bytes(**kwargs: object) -> bytes:
    fields = [
        NumberField("value_0", [1.5, math.nan], {"series": "0", "b": "x"}),
        NumberField("plain", [2.0, 3.0]),
    ]
    return time_series_file(TIMES, fields, ref_id="A", **kwargs)  # type: ignore[arg-type]


def test_it_is_an_ipc_file_not_a_stream() -> None:
    data = frame_bytes()
    assert data[:6] == b"ARROW1"
    assert data[-6:] == b"ARROW1"
    table = pa.ipc.open_file(pa.py_buffer(data)).read_all()
    assert table.num_rows == 2


def test_schema_metadata_has_name_and_ref_id_and_meta_only_when_set() -> None:
    schema = pa.ipc.open_file(pa.py_buffer(frame_bytes())).schema
    assert schema.metadata == {b"name": b"", b"refId": b"A"}
    with_meta = pa.ipc.open_file(pa.py_buffer(frame_bytes(name="n", meta={"typeVersion": [0, 0]}))).schema
    assert with_meta.metadata == {b"name": b"n", b"refId": b"A", b"meta": b'{"typeVersion":[0,0]}'}


def test_time_field_is_non_nullable_timestamp_ns_without_timezone() -> None:
    schema = pa.ipc.open_file(pa.py_buffer(frame_bytes())).schema
    time_field = schema.field(0)
    assert time_field.name == "time"
    assert time_field.type == pa.timestamp("ns")
    assert time_field.type.tz is None
    assert not time_field.nullable
    assert time_field.metadata == {b"tstype": b"time"}


def test_value_fields_are_non_nullable_float64_with_tstype_and_sorted_labels() -> None:
    schema = pa.ipc.open_file(pa.py_buffer(frame_bytes())).schema
    labelled, plain = schema.field(1), schema.field(2)
    assert (labelled.type, labelled.nullable, plain.type, plain.nullable) == (
        pa.float64(),
        False,
        pa.float64(),
        False,
    )
    assert labelled.metadata == {b"tstype": b"number", b"labels": b'{"b":"x","series":"0"}'}
    assert plain.metadata == {b"tstype": b"number"}  # no labels key at all, and never a name key


def test_values_read_back_as_grafana_reads_them() -> None:
    frame = read_frame(frame_bytes())
    assert frame.ref_id == "A"
    assert frame.name == ""
    assert frame.meta is None
    assert frame.times_ns == TIMES  # exact ns: the reader takes the raw int64 as nanoseconds
    values = frame.field("value_0").values
    assert values[0] == 1.5
    assert math.isnan(values[1])
    assert frame.field("value_0").labels == {"b": "x", "series": "0"}


def test_an_empty_frame_is_still_a_valid_file_with_its_schema() -> None:
    frame = read_frame(time_series_file([], [NumberField("value", [])], ref_id="B"))
    assert frame.names == ["time", "value"]
    assert frame.times_ns == []


def test_fields_of_another_length_are_refused() -> None:
    with pytest.raises(ValueError, match="has 1 values for 2 times"):
        time_series_file(TIMES, [NumberField("value", [1.0])], ref_id="A")


def test_the_reader_catches_a_wrong_time_unit_and_non_file_bytes() -> None:
    schema = pa.schema([pa.field("time", pa.timestamp("ms"), nullable=False)])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema) as writer:
        writer.write_batch(
            pa.record_batch([pa.array([1_700_000_000_000], pa.timestamp("ms"))], schema=schema)
        )
    assert read_frame(sink.getvalue().to_pybytes()).times_ns == [
        1_700_000_000_000
    ]  # 1.7 s after 1970 in Grafana
    stream = pa.BufferOutputStream()
    with pa.ipc.new_stream(stream, schema) as writer:
        writer.write_batch(pa.record_batch([pa.array([1], pa.timestamp("ms"))], schema=schema))
    with pytest.raises(FrameError, match="not an Arrow IPC file"):
        read_frame(stream.getvalue().to_pybytes())


def test_labels_json_is_compact_like_go() -> None:
    data = time_series_file([0], [NumberField("v", [0.0], {"z": "1", "a": "2"})], ref_id="A")
    raw = pa.ipc.open_file(pa.py_buffer(data)).schema.field(1).metadata[b"labels"]
    assert raw == orjson.dumps({"a": "2", "z": "1"})


def test_a_small_file_written_as_it_grows_is_the_one_a_large_file_is_sized_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small = frame_bytes()
    monkeypatch.setattr(arrow, "SIZED_FROM_BYTES", 0)
    assert frame_bytes() == small
