"""Time series → one Arrow IPC *file*, as Grafana's SDK writes a data frame for QueryData.

What Grafana's reader expects (shared/docs/grafana-plugin-protocol.md §4):
- the IPC file format (magic, schema, batches, footer), one file per frame;
- schema metadata `name` and `refId`, always (possibly empty), `meta` (FrameMeta JSON) only
  when the frame has meta;
- per field: the Arrow field name is the frame field name; metadata `tstype` (the
  frontend type) always, `labels` and `config` (JSON objects) only when the field has them;
- the time field `timestamp[ns]` without a timezone: the Go reader takes every int64 as
  nanoseconds whatever the unit says, so any other unit silently shifts the times;
- non-nullable fields, as the SDK writes `time.Time` and `float64`: the nullable flag
  alone decides whether Grafana builds pointer (nullable) vectors.

Event channels' frames (`event_frame_file`) have typed fields that may hold nulls, so
they are written as the SDK writes `*float64`, `*int64`, `*bool`, `*string`: float64,
int64, bool and utf8, nullable; the time field stays non-nullable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from numpy.typing import NDArray

from services.common import fields as kinds
from services.common.fields import Column

TIME_FIELD_NAME = "time"
Floats = Sequence[float] | NDArray[np.float64]
Times = Sequence[int] | NDArray[np.int64]
"""Values and times as lists, or packed (QueryData's: Arrow takes those without reading them one by one)."""


@dataclass(frozen=True, slots=True)
class NumberField:
    """A float64 field; its values must be as many as the frame's times."""

    name: str
    values: Floats
    labels: Mapping[str, str] | None = None
    config: Mapping[str, Any] | None = None


def time_series_file(
    times_ns: Times,
    fields: Sequence[NumberField],
    *,
    ref_id: str,
    name: str = "",
    meta: Mapping[str, Any] | None = None,
) -> bytes:
    """A wide time series frame (time, then the number fields) as Arrow IPC file bytes."""
    for field in fields:
        if len(field.values) != len(times_ns):
            raise ValueError(f"field {field.name!r} has {len(field.values)} values for {len(times_ns)} times")
    schema_meta = {"name": name, "refId": ref_id}
    if meta is not None:
        schema_meta["meta"] = _json(meta)
    arrow_fields = [
        pa.field(TIME_FIELD_NAME, pa.timestamp("ns"), nullable=False, metadata={"tstype": "time"})
    ]
    for field in fields:
        field_meta = {"tstype": "number"}
        if field.labels is not None:
            field_meta["labels"] = _json(field.labels)
        if field.config is not None:
            field_meta["config"] = _json(field.config)
        arrow_fields.append(pa.field(field.name, pa.float64(), nullable=False, metadata=field_meta))
    schema = pa.schema(arrow_fields, metadata=schema_meta)
    arrays = [pa.array(times_ns, type=pa.timestamp("ns"))]
    arrays += [pa.array(field.values, type=pa.float64()) for field in fields]
    return _file(pa.record_batch(arrays, schema=schema))


ARROW_TYPES = {
    kinds.FLOAT64: pa.float64(),
    kinds.INT64: pa.int64(),
    kinds.BOOL: pa.bool_(),
    kinds.STRING: pa.string(),
}
TSTYPES = {kinds.FLOAT64: "number", kinds.INT64: "number", kinds.BOOL: "boolean", kinds.STRING: "string"}


def event_frame_file(
    times_ns: Sequence[int],
    columns: Sequence[Column],
    *,
    ref_id: str,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
    meta: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
) -> bytes:
    """An event channel's rows (time, then its typed, nullable columns) as Arrow IPC file bytes.

    `configs`: field config by field name (unit, display name), for the fields that have one;
    `labels`: the labels of every field but time (services.plugin.labelled).
    """
    schema_meta = {"name": "", "refId": ref_id}
    if meta is not None:
        schema_meta["meta"] = _json(meta)
    arrow_fields = [
        pa.field(TIME_FIELD_NAME, pa.timestamp("ns"), nullable=False, metadata={"tstype": "time"})
    ]
    arrays = [pa.array(times_ns, type=pa.timestamp("ns"))]
    for column in columns:
        if len(column.values) != len(times_ns):
            raise ValueError(
                f"field {column.name!r} has {len(column.values)} values for {len(times_ns)} times"
            )
        field_meta = {"tstype": TSTYPES[column.kind]}
        if labels:
            field_meta["labels"] = _json(labels)
        config = (configs or {}).get(column.name)
        if config:
            field_meta["config"] = _json(config)
        arrow_fields.append(
            pa.field(column.name, ARROW_TYPES[column.kind], nullable=True, metadata=field_meta)
        )
        arrays.append(pa.array(column.values, type=ARROW_TYPES[column.kind], from_pandas=False))
    return _file(pa.record_batch(arrays, schema=pa.schema(arrow_fields, metadata=schema_meta)))


SIZED_FROM_BYTES = 1 << 20
"""Batches from this size are measured before they are written (see _file)."""


def _file(batch: pa.RecordBatch) -> bytes:
    """One batch as an IPC file."""
    if batch.nbytes < SIZED_FROM_BYTES:  # a panel's answer: written once, as it grows
        sink = pa.BufferOutputStream()
        _write_file(sink, batch)
        return bytes(sink.getvalue().to_pybytes())
    # Sized first, then written once into a buffer of that size: a growing buffer would
    # double and copy its way up, a peak of about three times the file for a large query.
    size = pa.MockOutputStream()
    _write_file(size, batch)
    buffer = pa.allocate_buffer(size.size())
    _write_file(pa.FixedSizeBufferWriter(buffer), batch)
    return bytes(buffer.to_pybytes())


def _write_file(sink: pa.NativeFile, batch: pa.RecordBatch) -> None:
    with pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)


def _json(value: Mapping[str, Any]) -> str:
    """Compact JSON with sorted keys, as Go's encoding/json writes a map."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
