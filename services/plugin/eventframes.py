"""Event channels' data frames as JSON: typed fields with their own times (frames.py's twin).

An event channel's rows carry their own times and typed columns (services.common.fields).
The frames are written as the SDK's FrameToJSON writes nullable fields (shared docs §3):
`{"name","type","typeInfo":{"frame":<go type>,"nullable":true}}`, nulls as JSON null,
NaN and ±Inf of float64 fields as null with their rows in `entities`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from services.common import fields as f
from services.common.fields import Batch, Schema
from services.plugin.display import DEFAULT, Display
from services.plugin.frames import TIME_FIELD, encoded

TYPES = {f.FLOAT64: "number", f.INT64: "number", f.BOOL: "boolean", f.STRING: "string"}
"""Frontend field type of each column kind."""
GO_TYPES = {f.FLOAT64: "float64", f.INT64: "int64", f.BOOL: "bool", f.STRING: "string"}
"""The SDK's typeInfo.frame of each kind (the non-nullable Go name; `nullable` says the rest)."""


def schema(batch_schema: Schema | None, shown: Display = DEFAULT) -> dict[str, Any]:
    """The frame schema of rows of `batch_schema` (time only while none is known).

    A number field gets the query's unit, and its alias as `displayNameFromDS` with
    `{{field}}` replaced by the field's name; other fields are shown as they are.
    """
    frame_fields: list[dict[str, Any]] = [TIME_FIELD]
    for name, kind in batch_schema.fields if batch_schema else ():
        entry: dict[str, Any] = {
            "name": name,
            "type": TYPES[kind],
            "typeInfo": {"frame": GO_TYPES[kind], "nullable": True},
        }
        config = field_config(name, kind, shown)
        if config:
            entry["config"] = config
        frame_fields.append(entry)
    return {"fields": frame_fields}


def field_config(name: str, kind: str, shown: Display) -> dict[str, Any]:
    if TYPES[kind] != "number":
        return {}
    config: dict[str, Any] = {}
    if shown.alias:
        config["displayNameFromDS"] = shown.alias.replace("{{field}}", name)
    if shown.unit:
        config["unit"] = shown.unit
    return config


def data(batch: Batch) -> dict[str, Any]:
    """The `data` object of a batch: ms times (the rest in `nanos`), typed values, nulls as null."""
    times = batch.times
    values: list[list[Any]] = [[t // 1_000_000 for t in times]]
    entities: list[dict[str, list[int]] | None] = [None]
    for column in batch.columns:
        if column.kind == f.FLOAT64:
            cleaned, found = _finite(column.values)
            values.append(cleaned)
            entities.append(found)
        else:
            values.append(column.values)
            entities.append(None)
    body: dict[str, Any] = {"values": values}
    if any(entities):
        body["entities"] = entities
    nanos = [t % 1_000_000 for t in times]
    if any(nanos):
        body["nanos"] = [nanos, *([None] * len(batch.columns))]
    return body


def _finite(column: Sequence[Any]) -> tuple[list[Any], dict[str, list[int]] | None]:
    """A float64 column with NaN and ±Inf as null, and where they were (the SDK's `entities`)."""
    found: dict[str, list[int]] = {"NaN": [], "Inf": [], "NegInf": []}
    cleaned = list(column)
    for row, value in enumerate(column):
        if value is None or math.isfinite(value):
            continue
        cleaned[row] = None
        found["NaN" if value != value else "Inf" if value > 0 else "NegInf"].append(row)
    present = {kind: rows for kind, rows in found.items() if rows}
    return cleaned, present or None


def packet(batch: Batch, frame_schema: dict[str, Any] | None = None) -> bytes:
    """One StreamPacket's JSON: schema+data when `frame_schema` is given, else data only."""
    if frame_schema is None:
        return encoded({"data": data(batch)})
    return encoded({"schema": frame_schema, "data": data(batch)})
