"""Grafana data-frame JSON, read back the way the browser's StreamingDataFrame reads it.

`push` takes one message (`{"schema"?, "data"?}`): a schema replaces the field layout
(and the meta if it has one: a schema without meta leaves the old meta, as the browser
does, so a stream clears a notice with a meta that lacks it); data appends rows and must
have one column per field ("push message mismatch" otherwise). Times are rebuilt as ns
from ms plus `nanos`; cells named in `entities` become NaN/±Inf again. Strict on
purpose: whatever it accepts, Grafana accepts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson

ENTITY_VALUES = {"NaN": math.nan, "Inf": math.inf, "NegInf": -math.inf}


class FrameError(ValueError):
    """A message Grafana's frontend would refuse."""


@dataclass
class StreamingFrame:
    fields: list[dict[str, Any]] = field(default_factory=list)
    values: list[list[Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def notices(self) -> list[dict[str, Any]]:
        """What the panel shows above the data: `meta.notices` (severity, text)."""
        return list(self.meta.get("notices") or [])

    @property
    def names(self) -> list[str]:
        return [f.get("name", "") for f in self.fields]

    @property
    def times_ns(self) -> list[int]:
        return self.values[self._time_index()] if self.values else []

    def column(self, name: str) -> list[Any]:
        return self.values[self.names.index(name)]

    @property
    def value_columns(self) -> list[list[Any]]:
        """Every column but time, in order (a channel's series share the name `value`)."""
        time_index = self._time_index()
        return [column for i, column in enumerate(self.values) if i != time_index]

    def push(self, message: bytes | dict[str, Any]) -> int:
        """Apply one message; return how many rows it added."""
        body = orjson.loads(message) if isinstance(message, bytes | bytearray) else message
        if not isinstance(body, dict) or not ({"schema", "data"} & body.keys()):
            raise FrameError("a frame message needs schema or data")
        if "schema" in body:
            self._apply_schema(body["schema"])
        if "data" not in body:
            return 0
        columns = self._decode_data(body["data"])
        for target, column in zip(self.values, columns, strict=True):
            target.extend(column)
        return len(columns[0]) if columns else 0

    def _apply_schema(self, schema: dict[str, Any]) -> None:
        fields = schema.get("fields")
        if not isinstance(fields, list) or not fields:
            raise FrameError("schema.fields must be a non-empty list")
        for f in fields:
            if f.get("type") not in ("time", "number", "string", "boolean", "enum", "other"):
                raise FrameError(f"unknown field type {f.get('type')!r}")
        if "meta" in schema:
            if not isinstance(schema["meta"], dict):
                raise FrameError("schema.meta must be an object")
            for notice in schema["meta"].get("notices") or []:
                if notice.get("severity") not in ("info", "warning", "error") or not notice.get("text"):
                    raise FrameError(f"a notice needs a severity (info, warning, error) and a text: {notice}")
            self.meta = dict(schema["meta"])
        if [(f.get("name"), f.get("type")) for f in fields] != [
            (f.get("name"), f.get("type")) for f in self.fields
        ]:
            self.fields = fields
            self.values = [[] for _ in fields]

    def _decode_data(self, data: dict[str, Any]) -> list[list[Any]]:
        columns = data.get("values")
        if not isinstance(columns, list) or len(columns) != len(self.fields):
            raise FrameError(
                f"push message mismatch: {len(self.fields)} fields, data has "
                f"{len(columns) if isinstance(columns, list) else 'no'} columns"
            )
        if len({len(c) for c in columns}) > 1:
            raise FrameError("columns of one message differ in length")
        columns = [list(c) for c in columns]
        for index, entity in enumerate(data.get("entities") or []):
            for kind, rows in (entity or {}).items():
                for row in rows:
                    columns[index][row] = ENTITY_VALUES[kind]
        nanos = data.get("nanos") or [None] * len(columns)
        for index, f in enumerate(self.fields):
            if f["type"] == "time":
                extra = nanos[index] or [0] * len(columns[index])
                columns[index] = [ms * 1_000_000 + ns for ms, ns in zip(columns[index], extra, strict=True)]
        return columns

    def _time_index(self) -> int:
        for index, f in enumerate(self.fields):
            if f.get("type") == "time":
                return index
        raise FrameError("the frame has no time field")
