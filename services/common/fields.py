"""Typed columns: what an event channel's rows carry, checked wherever they enter a process.

A batch of events is `times` (ns since the epoch, strictly increasing) and columns, each
a name, a kind and one value per time. Any value may be None (null). The kinds are what
Grafana's data frames carry: float64 and int64 (`number` fields), bool (`boolean`) and
string (`string`).

A channel's schema (each field's name and kind, in order) is taken from its first rows.
Later batches must have the same fields of the same kinds: `Schema.check` says which one
differs. The origin (the worker running a source, the recorder for publishers) enforces
this. The plugin re-checks, so a stream never mixes two schemas in one frame.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.common.errors import PipelineError
from services.common.wording import count

FLOAT64 = "float64"
INT64 = "int64"
BOOL = "bool"
STRING = "string"
KINDS = (FLOAT64, INT64, BOOL, STRING)
MAX_FIELDS = 64
"""Fields in one channel; Grafana draws one series per number field."""
MAX_NAME = 64
"""Characters in a field name."""
MAX_STRING = 1024
"""Characters in a string value."""
TIME_KEY = "time"
"""The record key that holds a row's time when rows are written as JSON records."""
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}", re.ASCII)
Value = float | int | bool | str | None


def is_field_name(name: str) -> bool:
    """Whether `name` may name a field (the plugin checks a query's label fields with it too)."""
    return bool(_NAME_RE.fullmatch(name)) and name != TIME_KEY


class InvalidRows(PipelineError):
    """Rows that do not fit the rules above or their channel's schema; the message says which."""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: str
    values: list[Value]


@dataclass(frozen=True, slots=True)
class Batch:
    """Consecutive events of one channel: strictly increasing times and one column per field."""

    times: list[int]
    columns: list[Column]

    def __len__(self) -> int:
        return len(self.times)

    @property
    def schema(self) -> Schema:
        return Schema(tuple((column.name, column.kind) for column in self.columns))

    def rows(self, start: int, stop: int) -> Batch:
        """Rows [start, stop) of every column (itself when that is all of them)."""
        if start <= 0 and stop >= len(self.times):
            return self
        columns = [Column(c.name, c.kind, c.values[start:stop]) for c in self.columns]
        return Batch(self.times[start:stop], columns)

    def after(self, time_ns: int) -> Batch:
        """The rows later than `time_ns`."""
        return self.rows(bisect.bisect_right(self.times, time_ns), len(self.times))

    def until(self, time_ns: int) -> Batch:
        """The rows stamped at or before `time_ns`."""
        return self.rows(0, bisect.bisect_right(self.times, time_ns))

    def last(self, count: int) -> Batch:
        return self.rows(len(self.times) - count, len(self.times))


@dataclass(frozen=True, slots=True)
class Schema:
    fields: tuple[tuple[str, str], ...]

    def check(self, batch: Batch) -> None:
        """InvalidRows unless `batch` has exactly these fields of these kinds, in this order."""
        if batch.schema == self:
            return
        known = dict(self.fields)
        for name, kind in batch.schema.fields:
            if name not in known:
                raise InvalidRows(f"field {name!r} is not in the channel's schema ({self.describe()})")
            if known[name] != kind:
                raise InvalidRows(f"field {name!r} is {kind}, the channel's schema has it as {known[name]}")
        missing = [name for name, _ in self.fields if name not in dict(batch.schema.fields)]
        if missing:
            raise InvalidRows(f"fields {missing} of the channel's schema are missing")
        raise InvalidRows(f"fields are out of order: the channel's schema is {self.describe()}")

    def describe(self) -> str:
        return ", ".join(f"{name}: {kind}" for name, kind in self.fields)


def concat(batches: Sequence[Batch]) -> Batch:
    """One batch of several of one schema, in order (the caller keeps times increasing)."""
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    times = [t for batch in batches for t in batch.times]
    columns = [
        Column(column.name, column.kind, [v for batch in batches for v in batch.columns[index].values])
        for index, column in enumerate(first.columns)
    ]
    return Batch(times, columns)


def problem(times: Any, columns: Any, max_rows: int) -> str:
    """'' if (`times`, `columns`) as decoded from msgpack make a valid batch, else why not.

    Checked completely: every time an int64 and later than the one before, every column a
    `[name, kind, values]` of a known kind with exactly one value of that kind (or None)
    per time, names unique.
    """
    if not isinstance(times, list):
        return f"times: expected a list, got {type(times).__name__}"
    if len(times) > max_rows:
        return f"{len(times)} rows, the limit is {max_rows}"
    previous = -(2**63) - 1
    for time in times:
        if type(time) is not int or not previous < time < 2**63:
            return f"times must be int64 ns, strictly increasing; got {str(time)[:40]} after {previous}"
        previous = time
    if not isinstance(columns, list):
        return f"columns: expected a list, got {type(columns).__name__}"
    if len(columns) > MAX_FIELDS:
        return f"{len(columns)} fields, the limit is {MAX_FIELDS}"
    names: set[str] = set()
    for column in columns:
        if not isinstance(column, Column):
            return f"expected a column, got {type(column).__name__}"
        if not isinstance(column.name, str) or not is_field_name(column.name):
            return (
                f"field name {str(column.name)[:80]!r} is not [A-Za-z_][A-Za-z0-9_.-]* "
                f"(at most {MAX_NAME} characters), nor {TIME_KEY!r}"
            )
        if column.name in names:
            return f"field {column.name!r} appears twice"
        names.add(column.name)
        if column.kind not in KINDS:
            return f"field {column.name!r}: kind {str(column.kind)[:40]!r} is not one of {', '.join(KINDS)}"
        if not isinstance(column.values, list) or len(column.values) != len(times):
            return f"field {column.name!r}: expected {count(len(times), 'value')}"
        wrong = _first_wrong(column.kind, column.values)
        if wrong is not None:
            return f"field {column.name!r} ({column.kind}): value {str(wrong)[:60]!r} does not fit"
    return ""


def _first_wrong(kind: str, values: list[Any]) -> Any:
    """The first value that is not of `kind` (None fits every kind); None if all fit."""
    if kind == FLOAT64:
        for value in values:
            if value is not None and type(value) is not float:
                return value
    elif kind == INT64:
        for value in values:
            if value is not None and (type(value) is not int or not -(2**63) <= value < 2**63):
                return value
    elif kind == BOOL:
        for value in values:
            if value is not None and type(value) is not bool:
                return value
    else:
        for value in values:
            if value is not None and (type(value) is not str or len(value) > MAX_STRING):
                return value
    return None


def checked(times: Any, columns: Any, max_rows: int) -> Batch:
    """A Batch of what arrived, or InvalidRows saying what is wrong with it."""
    why = problem(times, columns, max_rows)
    if why:
        raise InvalidRows(why)
    return Batch(times, columns)


# -- records: rows as JSON objects, as publishers write them -------------------------------


def parse_time(value: Any) -> int:
    """A record's time as ns since the epoch: RFC 3339 text, or a number of epoch milliseconds."""
    if isinstance(value, bool) or value is None:
        raise InvalidRows(f"time must be RFC 3339 text or epoch milliseconds, got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or not 0 <= value < 2**63 / 1e6:
            raise InvalidRows(f"time {value!r} ms is outside 1970 to 2262")
        return round(value * 1_000_000)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
        except ValueError:
            raise InvalidRows(f"time {value[:60]!r} is not RFC 3339 (2026-11-29T12:00:00Z)") from None
        if parsed.tzinfo is None:
            raise InvalidRows(f"time {value[:60]!r} has no time zone: add Z or an offset")
        delta = parsed - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    raise InvalidRows(f"time must be RFC 3339 text or epoch milliseconds, got {type(value).__name__}")


def kind_of(value: Value) -> str | None:
    """The kind a JSON value takes in a new schema (None for null: it fits any)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT64
    if isinstance(value, float):
        return FLOAT64
    if isinstance(value, str):
        return STRING
    raise InvalidRows(f"value {str(value)[:60]!r} is not a number, bool, string or null")


def from_records(records: Iterable[Mapping[str, Any]], schema: Schema | None, max_rows: int) -> Batch:
    """Rows written as JSON objects (`{"time": …, "<field>": value, …}`) as a checked Batch.

    With `schema`, each field must be in it (absent ones are null, an int fits a float64
    field); without one, the schema is taken from these rows in the order fields first
    appear, and a field that is null in all of them is float64.
    """
    rows: list[tuple[int, Mapping[str, Any]]] = []
    for number, record in enumerate(records, 1):
        if not isinstance(record, Mapping):
            raise InvalidRows(f"row {number}: expected a JSON object, got {type(record).__name__}")
        if TIME_KEY not in record:
            raise InvalidRows(f"row {number}: no {TIME_KEY!r}")
        try:
            rows.append((parse_time(record[TIME_KEY]), record))
        except InvalidRows as exc:
            raise InvalidRows(f"row {number}: {exc}") from None
        if len(rows) > max_rows:
            raise InvalidRows(f"more than {max_rows} rows in one batch")
    kinds: dict[str, str | None] = dict(schema.fields) if schema else {}
    for number, (_, record) in enumerate(rows, 1):
        for name, value in record.items():
            if name == TIME_KEY:
                continue
            try:
                kind = kind_of(value)
            except InvalidRows as exc:
                raise InvalidRows(f"row {number}, field {name!r}: {exc}") from None
            known = kinds.get(name, ...)
            if known is ...:
                if schema is not None:
                    raise InvalidRows(
                        f"row {number}: field {name!r} is not in the channel's schema ({schema.describe()})"
                    )
                kinds[name] = kind
            elif known is None:
                kinds[name] = kind
            elif kind is not None and kind != known and not (known == FLOAT64 and kind == INT64):
                where = "the channel's schema" if schema else "an earlier row"
                raise InvalidRows(f"row {number}: field {name!r} is {kind}, {where} has it as {known}")
    columns = []
    for name, kind in kinds.items():
        final = kind or FLOAT64
        values: list[Value] = [record.get(name) for _, record in rows]
        if final == FLOAT64:
            try:
                values = [float(v) if v is not None else None for v in values]
            except OverflowError:  # an int past float's range (a Python caller's, or a source's)
                number = next(n for n, v in enumerate(values, 1) if v is not None and not _fits_float(v))
                raise InvalidRows(
                    f"row {number}, field {name!r}: the number does not fit a float64"
                ) from None
        columns.append(Column(name, final, values))
    return checked([time for time, _ in rows], columns, max_rows)


def _fits_float(value: Any) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True
