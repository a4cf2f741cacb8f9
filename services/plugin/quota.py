"""How many channels each datasource streams at once in this plugin process.

Grafana runs one RunStream per channel, so the number of RunStreams of a datasource is
its number of channels. A datasource at its limit may still subscribe to channels it
already streams; a new one is refused (PERMISSION_DENIED on subscribe, RESOURCE_EXHAUSTED
on RunStream) with the reason logged.
"""

from __future__ import annotations

from collections import Counter, defaultdict


class ChannelQuota:
    def __init__(self) -> None:
        self._running: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def admits(self, datasource: str, channel: str, limit: int) -> bool:
        running = self._running[datasource]
        return channel in running or len(running) < limit

    def enter(self, datasource: str, channel: str) -> None:
        self._running[datasource][channel] += 1

    def leave(self, datasource: str, channel: str) -> None:
        running = self._running[datasource]
        running[channel] -= 1
        if running[channel] <= 0:
            del running[channel]
        if not running:
            del self._running[datasource]

    def count(self, datasource: str) -> int:
        return len(self._running.get(datasource, ()))
