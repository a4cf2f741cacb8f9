"""Admission control: which streams a datasource, and the whole plugin, may run at once.

A stream costs its values per second (rows per second times series): that is what the
plugin decodes, queues and encodes for it. Three budgets bound a new channel:
- its datasource's channel count (`max_channels_per_datasource`),
- its datasource's values per second (`max_values_per_s_per_datasource`),
- the plugin's values per second over every datasource (`max_values_per_s`).
A datasource's jsonData may tighten its own two, never loosen them (services.plugin.datasource).
An event channel's cost is estimated before its first row (its fields are not known yet):
a source's SOURCE_FIELDS fields per tick, a published channel the recorder's rate budget
(PUBLISHED_VALUES_PER_S: the recorder refuses publishers past it).
A stream is a channel as shown (services.plugin.display): each display variant of a channel
is a RunStream of its own, with its own packets, so it counts as a channel and costs the
channel's values per second again (else 200 variants of one channel ran 200 times its
budget). A stream the datasource already runs is admitted at no extra cost: Grafana may
run it again while the first RunStream ends. A refusal says which budget and how much is
in use, so one dashboard gets told no instead of silently starving every other panel.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from services.common.channels import SOURCE, Channel, ChannelSpec
from services.plugin.display import DEFAULT, Display

SOURCE_FIELDS = 16
"""Fields assumed of a source (the built-in `host` has cpu, a few cores, memory, network and disk)."""
PUBLISHED_VALUES_PER_S = 1000.0
"""What a published channel may carry: the recorder's rate budget for one channel (values/s)."""


def cost(channel: Channel) -> float:
    """Values per second a channel's stream carries (rows/s times fields), estimated for events."""
    if isinstance(channel, ChannelSpec):
        return channel.values_per_s
    if channel.kind == SOURCE:
        return SOURCE_FIELDS * 1000.0 / channel.tick_ms
    return PUBLISHED_VALUES_PER_S


@dataclass(frozen=True, slots=True)
class Refusal:
    budget: str
    """Which budget: `channels`, `datasource_rate` or `plugin_rate` (a metrics label; RunStream
    also counts `brokers`, for a datasource naming a broker past the plugin's max_brokers)."""
    reason: str


Stream = tuple[str, Display]
"""What admission counts: a channel's path as shown."""
VARIANT_HINT = " (each unit or alias of a channel streams, and counts, on its own)"


class Admission:
    def __init__(self, plugin_values_per_s: float) -> None:
        self.plugin_values_per_s = plugin_values_per_s
        self._running: defaultdict[str, Counter[Stream]] = defaultdict(Counter)
        self._rates: defaultdict[str, float] = defaultdict(float)
        self.values_per_s = 0.0
        """The cost of every channel running in the plugin."""

    def refusal(
        self, datasource: str, spec: Channel, max_channels: int, values_per_s: float, shown: Display = DEFAULT
    ) -> Refusal | None:
        """None if a stream of `spec` as `shown` fits the budgets, else which budget it exceeds and why."""
        running = self._running.get(datasource, Counter())
        if (spec.path, shown) in running:
            return None
        needed, used = cost(spec), self._rates[datasource]
        hint = "" if shown == DEFAULT else VARIANT_HINT
        if len(running) >= max_channels:
            return Refusal(
                "channels",
                f"datasource {datasource} already streams its maximum of {max_channels} channels{hint}",
            )
        if used + needed > values_per_s:
            return Refusal(
                "datasource_rate",
                f"datasource {datasource} streams {used:,.0f} values/s of its budget of "
                f"{values_per_s:,.0f}, and {spec.path}{hint} needs {needed:,.0f} more (rows/s times "
                "series): slow its tick, lower its series or close other panels",
            )
        if self.values_per_s + needed > self.plugin_values_per_s:
            return Refusal(
                "plugin_rate",
                f"the plugin streams {self.values_per_s:,.0f} values/s of its budget of "
                f"{self.plugin_values_per_s:,.0f}, and {spec.path}{hint} needs {needed:,.0f} "
                "more (rows/s times series): slow its tick, lower its series or close other panels",
            )
        return None

    def enter(self, datasource: str, spec: Channel, shown: Display = DEFAULT) -> None:
        running, stream = self._running[datasource], (spec.path, shown)
        if stream not in running:
            self._rates[datasource] += cost(spec)
            self.values_per_s += cost(spec)
        running[stream] += 1

    def leave(self, datasource: str, spec: Channel, shown: Display = DEFAULT) -> None:
        running, stream = self._running[datasource], (spec.path, shown)
        running[stream] -= 1
        if running[stream] > 0:
            return
        del running[stream]
        self._rates[datasource] -= cost(spec)
        self.values_per_s -= cost(spec)
        if not running:
            del self._running[datasource], self._rates[datasource]
            if not self._running:
                self.values_per_s = 0.0  # no float residue once nothing runs
