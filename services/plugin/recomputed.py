"""A channel's values over a range of ticks, recomputed: the one source for QueryData and backfill.

Generators are pure functions of (channel, tick index) and tick k is stamped
`spec.tick_time(k)`, so the values of any past tick can be recomputed here, in the plugin,
and are exactly what a worker published for that tick (same function, same seed, same
float arithmetic). Nothing is interpolated or averaged: downsampling keeps every s-th
tick, so each value shown is a value the live stream sent.

Strides are aligned to multiples of s (tick indices 0, s, 2s, …), so a panel that
refreshes over a sliding range keeps showing the same ticks instead of shimmering.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.channels import ChannelSpec
from services.common.errors import InvalidChannel, PipelineError
from services.common.waveforms import Generator, channel_seed, registry
from services.plugin import bulk


class RecomputeError(PipelineError):
    """A generator failed, or returned columns of the wrong shape."""


@dataclass(frozen=True, slots=True)
class Rows:
    """Ticks of one channel: `columns[i][j]` is series i at `times_ns[j]`."""

    times_ns: list[int]
    columns: list[list[float]]

    def __len__(self) -> int:
        return len(self.times_ns)


def generator_for(spec: ChannelSpec) -> Generator:
    """The generator a spec names; InvalidChannel (listing the known ones) if none is installed."""
    generators = registry()
    generator = generators.get(spec.generator)
    if generator is None:
        raise InvalidChannel(f"unknown generator {spec.generator!r}; known: {', '.join(generators)}")
    return generator


def ticks_between(spec: ChannelSpec, from_ns: int, to_ns: int) -> range:
    """Indices of the ticks stamped within [from_ns, to_ns] (empty if to_ns < from_ns)."""
    return range(spec.first_tick(from_ns), spec.last_tick(to_ns) + 1)


def strided(ticks: range, max_points: int) -> range:
    """At most `max_points` of `ticks` (a step-1 range): every s-th, aligned to multiples of s."""
    if max_points < 1:
        raise ValueError(f"max_points must be positive, got {max_points}")
    step = max(1, -(-len(ticks) // max_points))
    if step == 1:
        return ticks
    start = -(-ticks.start // step) * step
    return range(start, ticks.stop, step)


def values(spec: ChannelSpec, ticks: range) -> Rows:
    """The values of `spec` at `ticks`, exactly as the workers generate them.

    InvalidChannel if the generator is unknown; RecomputeError if it fails or misbehaves
    (a user-installed generator may), so a caller can answer with an error, not crash.
    Many ticks of the built-in `uniform` are computed in bulk (services.plugin.bulk).
    """
    generator = generator_for(spec)
    if bulk.handles(spec, ticks):  # a built-in: no checks needed
        return Rows(bulk.times(spec, ticks), bulk.columns(spec, channel_seed(spec.path), ticks))
    try:
        columns = generator.generate(spec, channel_seed(spec.path), ticks)
    except Exception as exc:
        raise RecomputeError(f"generator {spec.generator!r} failed: {exc!r}") from exc
    if (
        not isinstance(columns, list)
        or len(columns) != spec.series
        or any(not isinstance(column, list) or len(column) != len(ticks) for column in columns)
    ):
        raise RecomputeError(
            f"generator {spec.generator!r} must return {spec.series} lists of {len(ticks)} floats"
        )
    try:
        floats = [[float(value) for value in column] for column in columns]
    except (TypeError, ValueError) as exc:
        raise RecomputeError(
            f"generator {spec.generator!r} returned a value that is not a number: {exc}"
        ) from None
    return Rows(spec.tick_times(ticks), floats)
