"""The built-in `uniform` generator over many ticks at once, in numpy, bit for bit as waveforms computes it.

A panel's initial frame holds up to 1,000 ticks of its channel, recomputed in the plugin;
in Python, tick by tick, that took about 1.3 ms of CPU per SubscribeStream (0.3 ms here),
a third of the plugin's work when 1,000 panels of 50 ms channels open. Here the same
splitmix64 arithmetic runs on uint64 arrays (which wrap as the Python code's `& _MASK`
does), and the last step is one correctly rounded int → float conversion and a division
by 2⁶⁴, exact as the Python `int / float`; `lower + span * u` is then the same two float operations. Any other
generator, and negative tick indices, keep the Python path.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from services.common.channels import ChannelSpec
from services.common.waveforms import GOLDEN, MIX_1, MIX_2, TWO_64, series_seed

MIN_TICKS = 16
"""Below this many ticks numpy's per-call cost is more than the Python loop's."""
INT64_END = 2**63
"""Tick times at or past this (the year 2262) do not fit numpy's int64: Python computes them."""


def handles(spec: ChannelSpec, ticks: range) -> bool:
    """Whether `times` and `columns` compute these ticks of this channel (else Python does)."""
    return (
        spec.generator == "uniform"
        and len(ticks) >= MIN_TICKS
        and ticks.start >= 0
        and ticks.step > 0
        and spec.tick_time(ticks[-1]) < INT64_END
    )


def times(spec: ChannelSpec, ticks: range) -> list[int]:
    """spec.tick_times(ticks), for ticks that `handles`."""
    return time_array(spec, ticks).tolist()  # type: ignore[no-any-return]


def columns(spec: ChannelSpec, seed: int, ticks: range) -> list[list[float]]:
    """waveforms.Uniform().generate(spec, seed, ticks), for ticks that `handles`."""
    return [column.tolist() for column in column_arrays(spec, seed, ticks)]


def time_array(spec: ChannelSpec, ticks: range) -> NDArray[np.int64]:
    """`times` as packed int64 (QueryData's answers go into Arrow from these, uncopied)."""
    stamps = np.arange(ticks.start, ticks.stop, ticks.step, dtype=np.int64) * np.int64(spec.tick_ns)
    return stamps + np.int64(spec.phase_ns)


def column_arrays(spec: ChannelSpec, seed: int, ticks: range) -> list[NDArray[np.float64]]:
    """`columns` as packed float64."""
    keys = np.arange(ticks.start + 1, ticks.stop + 1, ticks.step, dtype=np.uint64)
    span = spec.upper - spec.lower
    out = []
    for series in range(spec.series):
        z = np.uint64(series_seed(seed, series)) + keys * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX_1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX_2)
        z ^= z >> np.uint64(31)
        out.append(spec.lower + span * (z.astype(np.float64) / TWO_64))
    return out
