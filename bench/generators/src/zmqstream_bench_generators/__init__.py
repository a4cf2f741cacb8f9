"""`burn`: a generator that costs a fixed amount of CPU per tick, for the scaling benchmark."""

from __future__ import annotations

from typing import Any

ROUNDS = 2000
"""Arithmetic rounds per value: roughly 100 µs of one core."""


class Burn:
    description = "values in [lower, upper] that cost ~100 µs of CPU each (benchmarks only)"
    hidden = True
    """Runs when asked for, but the query editor does not offer it (services/plugin/resources.py)."""

    def generate(self, spec: Any, seed: int, ticks: range) -> list[list[float]]:
        span = spec.upper - spec.lower
        columns = []
        for series in range(spec.series):
            column = []
            for k in ticks:
                x = (seed ^ (k * 2654435761) ^ series) & 0xFFFFFFFF
                for _ in range(ROUNDS):
                    x = (x * 1103515245 + 12345) & 0x7FFFFFFF
                column.append(spec.lower + span * x / 0x7FFFFFFF)
            columns.append(column)
        return columns
