"""Admission control: which streams a datasource, and the whole plugin, may run at once.

A stream costs its values per second (rows per second times series): that is what the
plugin decodes, queues and encodes for it. Three budgets bound a new channel:
- its datasource's channel count (`max_channels_per_datasource`),
- its datasource's values per second (`max_values_per_s_per_datasource`),
- the plugin's values per second over every datasource (`max_values_per_s`).
A datasource's jsonData may tighten its own two, never loosen them (services.plugin.datasource).
A channel the datasource already streams is admitted at no extra cost: Grafana may run it
again while the first RunStream ends. A refusal says which budget and how much is in use,
so one dashboard gets told no instead of silently starving every other panel.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from services.common.channels import ChannelSpec


@dataclass(frozen=True, slots=True)
class Refusal:
    budget: str
    """Which budget: `channels`, `datasource_rate` or `plugin_rate` (a metrics label; RunStream
    also counts `brokers`, for a datasource naming a broker past the plugin's max_brokers)."""
    reason: str


class Admission:
    def __init__(self, plugin_values_per_s: float) -> None:
        self.plugin_values_per_s = plugin_values_per_s
        self._running: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._rates: defaultdict[str, float] = defaultdict(float)
        self.values_per_s = 0.0
        """The cost of every channel running in the plugin."""

    def refusal(
        self, datasource: str, spec: ChannelSpec, max_channels: int, values_per_s: float
    ) -> Refusal | None:
        """None if a stream of `spec` fits the budgets, else which budget it exceeds and why."""
        running = self._running.get(datasource, Counter())
        if spec.path in running:
            return None
        cost, used = spec.values_per_s, self._rates[datasource]
        if len(running) >= max_channels:
            return Refusal(
                "channels", f"datasource {datasource} already streams its maximum of {max_channels} channels"
            )
        if used + cost > values_per_s:
            return Refusal(
                "datasource_rate",
                f"datasource {datasource} streams {used:,.0f} values/s of its budget of "
                f"{values_per_s:,.0f}, and {spec.path} needs {cost:,.0f} more (rows/s times series): "
                "slow its tick, lower its series or close other panels",
            )
        if self.values_per_s + cost > self.plugin_values_per_s:
            return Refusal(
                "plugin_rate",
                f"the plugin streams {self.values_per_s:,.0f} values/s of its budget of "
                f"{self.plugin_values_per_s:,.0f}, and {spec.path} needs {cost:,.0f} more "
                "(rows/s times series): slow its tick, lower its series or close other panels",
            )
        return None

    def enter(self, datasource: str, spec: ChannelSpec) -> None:
        running = self._running[datasource]
        if spec.path not in running:
            self._rates[datasource] += spec.values_per_s
            self.values_per_s += spec.values_per_s
        running[spec.path] += 1

    def leave(self, datasource: str, spec: ChannelSpec) -> None:
        running = self._running[datasource]
        running[spec.path] -= 1
        if running[spec.path] > 0:
            return
        del running[spec.path]
        self._rates[datasource] -= spec.values_per_s
        self.values_per_s -= spec.values_per_s
        if not running:
            del self._running[datasource], self._rates[datasource]
            if not self._running:
                self.values_per_s = 0.0  # no float residue once nothing runs
