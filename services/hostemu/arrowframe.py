"""QueryData frames read back the way Grafana's Go SDK reads them (data.UnmarshalArrowFrame).

- Only the IPC *file* format is read (Grafana uses ipc.NewFileReader, which needs the footer).
- Schema metadata gives the frame's `name`, `refId` and `meta` (JSON); field metadata gives
  `labels` and `config` (JSON) and `tstype`; the Arrow field name is the field name.
- Timestamps: the reader ignores the unit and the timezone and takes every stored int64 as
  nanoseconds, so a writer using another unit gets wrong times here, as in Grafana.
- A non-nullable field must hold no nulls: Grafana ignores its validity bitmap and would
  silently read whatever the null slots hold.
- Types Grafana cannot read (large_string, dictionary, lists, …) are refused.
Strict on purpose, like services.hostemu.dataframe: whatever it accepts, Grafana accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

from services.common import fields as kinds
from services.common.fields import Batch, Column
from services.hostemu.dataframe import FrameError
from services.plugin.eventframes import data as frame_data

TSTYPES = ("time", "number", "string", "boolean", "enum", "other")
KINDS = {"double": kinds.FLOAT64, "int64": kinds.INT64, "bool": kinds.BOOL, "string": kinds.STRING}
"""The column kind of each Arrow type a frame's value field may have (services.plugin.arrow)."""


@dataclass
class ArrowField:
    name: str
    arrow_type: str
    nullable: bool
    tstype: str
    labels: dict[str, str] | None
    config: dict[str, Any] | None
    values: list[Any]


@dataclass
class ArrowFrame:
    name: str
    ref_id: str
    meta: dict[str, Any] | None
    fields: list[ArrowField] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> ArrowField:
        return self.fields[self.names.index(name)]

    @property
    def value_fields(self) -> list[ArrowField]:
        """Every field but time, in order (a channel's series share the name `value`)."""
        return [f for f in self.fields if not f.arrow_type.startswith("timestamp")]

    def to_json(self) -> dict[str, Any]:
        """The frame as Grafana's /api/ds/query hands it to the browser (DataFrameJSON): numbers,
        text and booleans, nulls as null, NaN and ±Inf in `entities`, and the frame's meta."""
        fields: list[dict[str, Any]] = []
        for f in self.fields:
            entry: dict[str, Any] = {"name": f.name, "type": f.tstype}
            if f.labels is not None:
                entry["labels"] = f.labels
            if f.config is not None:
                entry["config"] = f.config
            fields.append(entry)
        schema: dict[str, Any] = {"name": self.name, "refId": self.ref_id, "fields": fields}
        if self.meta is not None:
            schema["meta"] = self.meta
        columns = []
        for f in self.value_fields:
            if f.arrow_type not in KINDS:
                raise FrameError(f"field {f.name!r}: no JSON for Arrow type {f.arrow_type}")
            columns.append(Column(f.name, KINDS[f.arrow_type], f.values))
        return {"schema": schema, "data": frame_data(Batch(self.times_ns, columns))}

    @property
    def times_ns(self) -> list[int]:
        for f in self.fields:
            if f.arrow_type.startswith("timestamp"):
                return f.values
        raise FrameError("the frame has no time field")


def read_frame(data: bytes) -> ArrowFrame:
    """One `DataResponse.frames` entry, decoded; FrameError says what Grafana would refuse."""
    try:
        reader = pa.ipc.open_file(pa.py_buffer(data))
        table = reader.read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise FrameError(f"not an Arrow IPC file: {exc}") from exc
    schema_meta = _text_map(table.schema.metadata)
    frame = ArrowFrame(
        name=schema_meta.get("name", ""),
        ref_id=schema_meta.get("refId", ""),
        meta=_json(schema_meta["meta"], "frame meta") if "meta" in schema_meta else None,
    )
    for index, arrow_field in enumerate(table.schema):
        frame.fields.append(_field(arrow_field, table.column(index)))
    return frame


def _field(arrow_field: pa.Field, column: pa.ChunkedArray) -> ArrowField:
    meta = _text_map(arrow_field.metadata)
    tstype = meta.get("tstype", "")
    if tstype and tstype not in TSTYPES:
        raise FrameError(f"field {arrow_field.name!r}: unknown tstype {tstype!r}")
    kind = arrow_field.type
    if not arrow_field.nullable and column.null_count:
        raise FrameError(f"field {arrow_field.name!r} is non-nullable but holds nulls")
    if pa.types.is_timestamp(kind):
        values = column.cast(pa.int64()).to_pylist()  # the stored integers, whatever the unit says
    elif (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_string(kind)
        or pa.types.is_string_view(kind)
        or pa.types.is_binary(kind)
    ):
        values = column.to_pylist()
    else:
        raise FrameError(f"field {arrow_field.name!r}: Grafana cannot read Arrow type {kind}")
    return ArrowField(
        name=arrow_field.name,
        arrow_type=str(kind),
        nullable=arrow_field.nullable,
        tstype=tstype,
        labels=_json(meta["labels"], "labels") if "labels" in meta else None,
        config=_json(meta["config"], "config") if "config" in meta else None,
        values=values,
    )


def _text_map(metadata: dict[bytes, bytes] | None) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (metadata or {}).items()}


def _json(text: str, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"{what} is not JSON: {exc}") from exc
