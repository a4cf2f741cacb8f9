"""How a channel's value fields are shown: names, labels and field config, the same in streams and QueryData.

Grafana names a labelled field `<name> <label value>`, so the series of a channel are all
`value`, labelled `series=<i>`: the legend reads `value 0`, `value 1`. Each field's
config carries `min`/`max` (the channel's lower and upper, so gauges and stat panels scale
without overrides), the query's `unit`, and its `alias` as `displayNameFromDS`, with
`{{series}}` replaced by the series number.

Alias and unit change the frames, not the values. Grafana runs one RunStream per Live
path, so they travel in the path after the channel, as one base64url JSON object:

    custom-10-20-100                                   no display options
    custom-10-20-100/display=eyJ1bml0IjoiY2Vsc2l1cyJ9  {"unit": "celsius"}

An event channel's query may also name `labels`, text fields whose values label its
other fields instead of being fields (services.plugin.labelled), and ask for `logs`,
frames Grafana shows in its Logs panel (meta `preferredVisualisationType`).

and the plugin holds the channel part's canonical broker channel, whatever follows it.
The frontend writes that suffix (frontend/src/channel.ts); QueryData reads the same
options from the query model's `alias` and `unit`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

import orjson

from services.common.channels import ChannelSpec
from services.common.errors import InvalidChannel
from services.common.fields import is_field_name
from services.common.wording import count

MAX_LABELS = 8
"""Label fields one query may name."""

MAX_ALIAS_CHARS = 64
MAX_UNIT_CHARS = 40
SERIES_PLACEHOLDER = re.compile(r"\{\{\s*series\s*\}\}")
_SUFFIX = "/display="
_BASE64URL = re.compile(r"[A-Za-z0-9_-]{1,200}")


@dataclass(frozen=True, slots=True)
class Display:
    """A query's display options; empty strings mean Grafana's defaults."""

    alias: str = ""
    unit: str = ""
    labels: tuple[str, ...] = ()
    logs: bool = False

    def check(self) -> Display:
        limits = (("alias", self.alias, MAX_ALIAS_CHARS), ("unit", self.unit, MAX_UNIT_CHARS))
        for key, value, limit in limits:
            if len(value) > limit:
                raise InvalidChannel(f"{key} is {len(value)} characters, the limit is {limit}")
            if any(ord(c) < 32 for c in value):
                raise InvalidChannel(f"{key} must not contain control characters")
        if len(self.labels) > MAX_LABELS:
            raise InvalidChannel(
                f"labels names {count(len(self.labels), 'field')}, the limit is {MAX_LABELS}"
            )
        for name in self.labels:
            if not is_field_name(name):
                raise InvalidChannel(f"label field {name[:80]!r} is not a field name")
        return self


@dataclass(frozen=True, slots=True)
class ValueField:
    """One value field of a channel's frame, as both frame encodings write it."""

    name: str
    labels: dict[str, str] | None
    config: dict[str, Any]


def split_path(path: str) -> tuple[str, Display]:
    """A Live path → (channel path, display options); InvalidChannel if the suffix is malformed."""
    channel, sep, encoded = path.partition(_SUFFIX)
    if not sep:
        return path, Display()
    if not _BASE64URL.fullmatch(encoded):
        raise InvalidChannel(f"display options {encoded[:40]!r} are not base64url")
    try:
        model = orjson.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise InvalidChannel(f"display options are not base64url JSON: {exc}") from None
    if not isinstance(model, dict):
        raise InvalidChannel("display options must be a JSON object")
    return channel, from_model(model)


def from_model(model: dict[str, Any]) -> Display:
    """The display options of a query model (absent or null keys: none)."""
    values = []
    for key in ("alias", "unit"):
        value = model.get(key)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise InvalidChannel(f"{key} must be a string, got {type(value).__name__}")
        values.append(value.strip())
    labels = model.get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(name, str) for name in labels):
        raise InvalidChannel("labels must be a list of field names")
    logs = model.get("logs") or False
    if not isinstance(logs, bool):
        raise InvalidChannel(f"logs must be true or false, got {type(logs).__name__}")
    alias, unit = values
    return Display(alias, unit, tuple(dict.fromkeys(n.strip() for n in labels)), logs).check()


def from_query(raw: bytes) -> Display:
    """The display options of a DataQuery's JSON (services.plugin.query checks the rest)."""
    model = orjson.loads(raw) if raw else {}
    return from_model(model if isinstance(model, dict) else {})


DEFAULT = Display()


def value_fields(spec: ChannelSpec, display: Display = DEFAULT) -> list[ValueField]:
    """The value fields of a channel's frame, one per series."""
    fields = []
    for i in range(spec.series):
        config: dict[str, Any] = {}  # in the order of the SDK's FieldConfig
        if display.alias:
            config["displayNameFromDS"] = SERIES_PLACEHOLDER.sub(str(i), display.alias)
        if display.unit:
            config["unit"] = display.unit
        config["min"], config["max"] = float(spec.lower), float(spec.upper)
        labels = None if spec.series == 1 else {"series": str(i)}
        fields.append(ValueField("value", labels, config))
    return fields
