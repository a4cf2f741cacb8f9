"""What a channel's values are: pure functions of (channel, tick index).

Tick k of a channel happens at `spec.tick_time(k)`, and every value is a function of the
canonical path and k alone. So any worker can take a channel over
and carry on with the very same series, and history can be recomputed at will.

A generator is any object with a `description` and
`generate(spec, seed, ticks) -> columns`: one list of floats per series, one value per
tick index in `ticks`. Users add their own through the entry point group
`zmqstream.generators` (see examples/zmqstream-example-generator).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from functools import cache
from typing import Any, Protocol, cast

from services.common.channels import ChannelSpec
from services.common.entrypoints import load_installed

ENTRY_POINT_GROUP = "zmqstream.generators"
_MASK = (1 << 64) - 1
TWO_64 = float(1 << 64)
GOLDEN, MIX_1, MIX_2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
"""splitmix64's increment and finaliser multipliers (services.plugin.bulk runs them in numpy too)."""


class Generator(Protocol):
    description: str

    def generate(self, spec: ChannelSpec, seed: int, ticks: range) -> list[list[float]]:
        """Values of `spec.series` series at the tick indices `ticks`."""
        ...


def channel_seed(path: str) -> int:
    """A stable 64-bit seed for a canonical channel path."""
    return int.from_bytes(hashlib.blake2b(path.encode(), digest_size=8).digest(), "big")


def unit_random(seed: int, key: int) -> float:
    """A uniform float in [0, 1) from (seed, key): splitmix64's finaliser."""
    z = (seed + (key + 1) * GOLDEN) & _MASK
    z = ((z ^ (z >> 30)) * MIX_1) & _MASK
    z = ((z ^ (z >> 27)) * MIX_2) & _MASK
    return (z ^ (z >> 31)) / TWO_64


def series_seed(seed: int, series: int) -> int:
    return (seed ^ ((series + 1) * 0xD6E8FEB86659FD93)) & _MASK


class Uniform:
    description = "a random value in [lower, upper] every tick (the tutorial's generator)"

    def generate(self, spec: ChannelSpec, seed: int, ticks: range) -> list[list[float]]:
        span = spec.upper - spec.lower
        columns = []
        for series in range(spec.series):
            s = series_seed(seed, series)
            columns.append([spec.lower + span * unit_random(s, k) for k in ticks])
        return columns


class Sine:
    description = "a sine between lower and upper, 100 ticks per period, series out of phase"

    PERIOD_TICKS = 100

    def generate(self, spec: ChannelSpec, seed: int, ticks: range) -> list[list[float]]:
        middle = (spec.upper + spec.lower) / 2
        amplitude = (spec.upper - spec.lower) / 2
        step = 2 * math.pi / self.PERIOD_TICKS
        columns = []
        for series in range(spec.series):
            phase = 2 * math.pi * series / spec.series
            columns.append([middle + amplitude * math.sin(k * step + phase) for k in ticks])
        return columns


class RandomWalk:
    """Smooth value noise at three scales: wanders like a walk, stays in [lower, upper],
    and needs no state, so tick k's value never depends on who computed tick k-1."""

    description = "a bounded random walk between lower and upper"

    OCTAVES = ((64, 0.6), (16, 0.3), (4, 0.1))

    def generate(self, spec: ChannelSpec, seed: int, ticks: range) -> list[list[float]]:
        span = spec.upper - spec.lower
        columns = []
        for series in range(spec.series):
            s = series_seed(seed, series)
            columns.append([spec.lower + span * self._noise(s, k) for k in ticks])
        return columns

    def _noise(self, seed: int, k: int) -> float:
        total = 0.0
        for octave, (scale, weight) in enumerate(self.OCTAVES):
            cell, offset = divmod(k, scale)
            t = offset / scale
            t = t * t * (3 - 2 * t)
            key = seed + octave
            a = unit_random(key, cell)
            b = unit_random(key, cell + 1)
            total += weight * (a + (b - a) * t)
        return total


BUILTINS: Mapping[str, Generator] = {
    "uniform": Uniform(),
    "random_walk": RandomWalk(),
    "sine": Sine(),
}


@cache
def registry() -> Mapping[str, Generator]:
    """Built-in generators plus those installed under the entry point group.

    A plugin that fails to load, or takes a built-in's name, is logged and left out.
    """
    return load_installed(ENTRY_POINT_GROUP, "generator", dict(BUILTINS), _generator)


def _generator(loaded: Any) -> Generator:
    """An installed generator (a class is made once), with generate() now, not at the first tick."""
    generator = loaded() if isinstance(loaded, type) else loaded
    generator.generate  # noqa: B018
    return cast(Generator, generator)
