"""A panel's query (DataQuery.json) → the ChannelSpec it streams, checked like a channel path.

The query model, as the frontend's QueryEditor writes it (Grafana adds its own keys, such
as datasource, intervalMs and maxDataPoints, which are ignored here):

    {"refId": "A", "lowerLimit": 0, "upperLimit": 100, "tickInterval": 1000,
     "generator": "uniform", "series": 1}

Absent keys take those defaults. `kind` picks the channel family: absent or `generator`
as above; `source` streams the source named `source` every `tickInterval` ms
(`source-<source>-<tick>`), `published` the published channel `channel` (`pub-<channel>`);
either is checked as its path is (services.common.channels.parse_channel). `alias` and
`unit` shape the frame, not the channel (services.plugin.display). Numbers may arrive as
JSON numbers or numeric strings (form inputs). The spec is then checked by
ChannelSpec.check and round-tripped through its canonical path, so a query is accepted
exactly when the same stream would be, with the same limits and messages, and its values
are seeded by the same path.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from services.common.channels import (
    DEFAULT_GENERATOR,
    SOURCE,
    Channel,
    ChannelSpec,
    EventChannel,
    Limits,
    parse_channel,
    parse_path,
)
from services.common.errors import InvalidChannel
from services.plugin.recomputed import generator_for

DEFAULTS: dict[str, Any] = {
    "lowerLimit": 0.0,
    "upperLimit": 100.0,
    "tickInterval": 1000.0,
    "generator": DEFAULT_GENERATOR,
    "series": 1,
}


KINDS = ("generator", "source", "published")


def parse_any_query(raw: bytes, limits: Limits) -> Channel:
    """The channel of any kind a query model asks for; InvalidChannel says what is wrong with it."""
    model = _object(raw)
    kind = model.get("kind") or "generator"
    if kind not in KINDS:
        raise InvalidChannel(f"kind must be one of {', '.join(KINDS)}, got {str(kind)[:40]!r}")
    if kind == "generator":
        return parse_query(raw, limits)
    if kind == "source":
        source = model.get("source")
        if not isinstance(source, str) or not source.strip():
            raise InvalidChannel("a source query needs the source's name (source)")
        path = EventChannel(SOURCE, source.strip(), _number(model, "tickInterval")).path
    else:
        name = model.get("channel")
        if not isinstance(name, str) or not name.strip():
            raise InvalidChannel("a published query needs the channel's name (channel)")
        path = f"pub-{name.strip()}"
    return parse_channel(path, limits)


def parse_query(raw: bytes, limits: Limits) -> ChannelSpec:
    """The spec a query model asks for; InvalidChannel says what is wrong with it."""
    model = _object(raw)
    spec = ChannelSpec(
        lower=_number(model, "lowerLimit"),
        upper=_number(model, "upperLimit"),
        tick_ms=_number(model, "tickInterval"),
        generator=_text(model, "generator"),
        series=_count(model, "series"),
    ).check(limits)
    try:
        canonical = parse_path(spec.path, limits)
    except InvalidChannel as exc:
        raise InvalidChannel(
            f"the query cannot be streamed ({exc}); numbers may have at most 15 integer and 9 decimal digits"
        ) from None
    generator_for(canonical)
    return canonical


def _object(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        model = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidChannel(f"the query is not valid JSON: {exc}") from None
    if not isinstance(model, dict):
        raise InvalidChannel(f"the query must be a JSON object, got {type(model).__name__}")
    return model


def _value(model: dict[str, Any], key: str) -> Any:
    value = model.get(key)
    return DEFAULTS[key] if value is None or value == "" else value


def _number(model: dict[str, Any], key: str) -> float:
    value = _value(model, key)
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise InvalidChannel(f"{key} must be a number, got {value[:40]!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidChannel(f"{key} must be a number, got {type(value).__name__}")
    try:
        result = float(value)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result):
        raise InvalidChannel(f"{key} must be a finite number, got {value!r}")
    return result


def _count(model: dict[str, Any], key: str) -> int:
    value = _value(model, key)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidChannel(f"{key} must be a whole number, got {str(value)[:40]!r}")
    return value


def _text(model: dict[str, Any], key: str) -> str:
    value = _value(model, key)
    if not isinstance(value, str):
        raise InvalidChannel(f"{key} must be a string, got {type(value).__name__}")
    return value.strip()
