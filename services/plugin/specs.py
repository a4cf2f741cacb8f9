"""What a call's datasource settings and Live path mean, worked out once for every call that repeats them.

Every SubscribeStream, RunStream and PublishStream reads its datasource's jsonData and
parses its path (with the display options after it): about 25 µs a call, twice per stream,
the same answer for each of a dashboard's panels and for each Grafana restart. Both are
pure functions of what the call carries (the plugin's own settings do not change while it
runs), so the answers are kept, keyed by those bytes: a datasource saved with new settings
or keys is a new key. Refusals (InvalidChannel) are not kept: they are rare and cheap to
say again. Each table is emptied when it reaches KEPT entries, so a caller inventing paths
costs bounded memory.
"""

from __future__ import annotations

from typing import TypeVar

from services.common.channels import Channel, ChannelSpec, Limits, parse_channel
from services.common.config import PluginSettings
from services.plugin import display
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin.datasource import DatasourceConfig
from services.plugin.display import Display
from services.plugin.recomputed import generator_for
from services.sources import source_for

KEPT = 10_000
K = TypeVar("K")
V = TypeVar("V")


class Specs:
    def __init__(self, settings: PluginSettings) -> None:
        self.settings = settings
        self._configs: dict[bytes, DatasourceConfig] = {}
        self._paths: dict[tuple[str, Limits], tuple[Channel, Display]] = {}

    def config(self, context: pb.PluginContext) -> DatasourceConfig:
        """The datasource's settings (services.plugin.datasource), parsed once per version of them."""
        key = context.dataSourceInstanceSettings.SerializeToString(deterministic=True)
        config = self._configs.get(key)
        if config is None:
            config = DatasourceConfig.from_context(context, self.settings)
            _keep(self._configs, key, config)
        return config

    def channel(self, path: str, limits: Limits) -> tuple[Channel, Display]:
        """The canonical channel a Live path streams and its display options; InvalidChannel if bad."""
        key = (path, limits)
        known = self._paths.get(key)
        if known is None:
            channel_path, shown = display.split_path(path)
            spec = parse_channel(channel_path, limits)
            if isinstance(spec, ChannelSpec):
                generator_for(spec)
            else:
                source_for(spec)
            known = (spec, shown)
            _keep(self._paths, key, known)
        return known


def _keep(table: dict[K, V], key: K, value: V) -> None:
    if len(table) >= KEPT:
        table.clear()
    table[key] = value
