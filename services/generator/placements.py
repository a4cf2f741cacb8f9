"""The worker's fence: the channels it runs, each under the epoch of its placement.

The broker gives every placement a newer epoch; a worker takes a newer epoch for a
channel it runs, never an older one, and a StopTicker stops a channel only if it runs
under that epoch or an older one, so a stop meant for an earlier placement cannot end a
later one. Tickers (services.generator.ticker) and sources (services.generator.runner)
keep their channels in this one table.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar


class Placed(Protocol):
    epoch: int


P = TypeVar("P", bound=Placed)


class Placements(Generic[P]):
    def __init__(self) -> None:
        self._placed: dict[str, P] = {}
        self.version = 0
        """Moves on whenever the set of channels or an epoch changes."""

    @property
    def channels(self) -> dict[str, int]:
        """Each running channel and the epoch it runs under."""
        return {path: placed.epoch for path, placed in self._placed.items()}

    def __contains__(self, channel: str) -> bool:
        return channel in self._placed

    def advance_epoch(self, channel: str, epoch: int) -> bool:
        """A running channel takes `epoch` if it is newer; whether the channel runs here."""
        placed = self._placed.get(channel)
        if placed is None:
            return False
        if epoch > placed.epoch:
            placed.epoch = epoch
            self.version += 1
        return True

    def _place(self, channel: str, placed: P) -> None:
        self._placed[channel] = placed
        self.version += 1

    def _unplace(self, channel: str, epoch: int | None) -> P | None:
        """Forget a channel (only if it runs under `epoch` or older, when given); what ran it, if so."""
        placed = self._placed.get(channel)
        if placed is None or (epoch is not None and placed.epoch > epoch):
            return None
        del self._placed[channel]
        self.version += 1
        return placed
