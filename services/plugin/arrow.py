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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

TIME_FIELD_NAME = "time"


@dataclass(frozen=True, slots=True)
class NumberField:
    """A float64 field; its values must be as many as the frame's times."""

    name: str
    values: Sequence[float]
    labels: Mapping[str, str] | None = None
    config: Mapping[str, Any] | None = None


def time_series_file(
    times_ns: Sequence[int],
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
    batch = pa.record_batch(arrays, schema=schema)
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
