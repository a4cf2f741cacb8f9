"""A custom zmqstream generator: a sawtooth ramp from lower to upper, then back to lower.

zmqstream finds generators through the entry point group `zmqstream.generators` (see this
package's pyproject.toml). A generator is an object, or a class zmqstream instantiates
once, with:

- `description`: one line, shown in the query editor's generator list;
- `generate(spec, seed, ticks) -> columns`: for every series `i` in `range(spec.series)`,
  a list with one float per tick index in `ticks` (a `range`, possibly with a step).

The values must be a pure function of (spec, seed, tick index): workers run channels by
ticks, a channel may move to another worker, and the plugin recomputes past ticks for
QueryData and for a new panel's history. Anything stateful would make those disagree.
`spec` has `lower`, `upper`, `tick_ms`, `series` and `generator`; `seed` is a stable
64-bit integer derived from the channel's path.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Sawtooth"]


class Sawtooth:
    description = "a sawtooth from lower up to upper every 20 ticks, series staggered by 5 ticks"

    PERIOD_TICKS = 20
    STAGGER_TICKS = 5

    def generate(self, spec: Any, seed: int, ticks: range) -> list[list[float]]:
        span = spec.upper - spec.lower
        columns = []
        for series in range(spec.series):
            offset = series * self.STAGGER_TICKS
            columns.append(
                [spec.lower + span * ((k + offset) % self.PERIOD_TICKS) / self.PERIOD_TICKS for k in ticks]
            )
        return columns
