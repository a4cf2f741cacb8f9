"""What one Grafana datasource instance asks of the plugin: its jsonData, read safely.

Keys (set in the frontend's ConfigEditor): `brokerAddress` (the broker's control
endpoint; empty means the plugin's own default; one that is not an endpoint is refused by
services.plugin.broker_connection with the reason, never replaced by the default),
`minTickMs`, `maxSeries`, `maxChannels`,
`maxValuesPerSecond` (what its streams carry at once, rows/s times series), `allowPublish`
(true: Editors and Admins may publish rows into `pub-*` channels through Grafana Live,
services.plugin.eventstreams; anything but JSON true is off). A datasource
may tighten the plugin's limits, never loosen them. Malformed jsonData is ignored key by
key, with a warning, so a typo never takes a datasource down.

secureJsonData (the ConfigEditor's secret fields; Grafana stores them encrypted and hands
them over decrypted): `curveSecretKey` (the plugin's CURVE secret key) and
`brokerPublicKey` (the broker's). With both, this datasource reaches its broker over
CURVE with these keys, whatever the plugin's own settings say.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import orjson

from services.common.channels import Limits
from services.common.config import PluginSettings
from services.common.logs import fields
from services.plugin._proto import pluginv2_pb2 as pb

log = logging.getLogger("zmqstream.plugin.datasource")


CURVE_SECRET_KEY = "curveSecretKey"
BROKER_PUBLIC_KEY = "brokerPublicKey"
NO_CURVE = ("", "")


@dataclass(frozen=True, slots=True)
class DatasourceConfig:
    broker_address: str
    limits: Limits
    uid: str
    max_channels: int
    max_values_per_s: float
    curve: tuple[str, str] = NO_CURVE
    """(plugin's secret key, broker's public key) as entered, or NO_CURVE: the plugin's own."""
    allow_publish: bool = False

    @property
    def broker(self) -> tuple[str, tuple[str, str]]:
        """What BrokerConnections.get needs to reach this datasource's broker."""
        return self.broker_address, self.curve

    @classmethod
    def from_context(cls, context: pb.PluginContext, plugin: PluginSettings) -> DatasourceConfig:
        base = plugin.limits
        settings = context.dataSourceInstanceSettings
        raw = _json_object(settings.jsonData, settings.uid)
        address = raw.get("brokerAddress", "")
        if not isinstance(address, str):  # kept, so Save & test says what is wrong with it
            address = repr(address)
        min_tick = _number(raw, "minTickMs", settings.uid)
        max_series = _number(raw, "maxSeries", settings.uid)
        max_channels = _number(raw, "maxChannels", settings.uid)
        max_rate = _number(raw, "maxValuesPerSecond", settings.uid)
        limits = Limits(
            min_tick_ms=max(base.min_tick_ms, min_tick) if min_tick else base.min_tick_ms,
            max_tick_ms=base.max_tick_ms,
            max_series=min(base.max_series, int(max_series)) if max_series else base.max_series,
        )
        channels = plugin.max_channels_per_datasource
        if max_channels:
            channels = min(channels, int(max_channels))
        rate = plugin.max_values_per_s_per_datasource
        secure = settings.decryptedSecureJsonData
        curve = (secure.get(CURVE_SECRET_KEY, "").strip(), secure.get(BROKER_PUBLIC_KEY, "").strip())
        return cls(
            address.strip(),
            limits,
            settings.uid,
            max(1, channels),
            min(rate, max_rate) if max_rate else rate,
            curve,
            raw.get("allowPublish") is True,
        )


def _json_object(data: bytes, uid: str) -> dict[str, Any]:
    if not data:
        return {}
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        log.warning("datasource jsonData is not JSON", extra=fields(uid=uid))
        return {}
    return value if isinstance(value, dict) else {}


def _number(raw: dict[str, Any], key: str, uid: str) -> float:
    """A positive finite number from jsonData, or 0 for absent or unusable values."""
    value = raw.get(key)
    if value is None or value == "":
        return 0.0
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        log.warning("datasource setting ignored", extra=fields(uid=uid, key=key, value=repr(value)))
        return 0.0
    return float(value)
