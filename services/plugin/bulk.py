"""The built-in `uniform` generator over many ticks at once, in numpy, bit for bit as waveforms computes it.

A panel's initial frame holds up to 1,000 ticks of its channel, recomputed in the plugin;
in Python, tick by tick, that was about 2 ms of CPU per SubscribeStream, most of what
opening a dashboard of fast channels cost. Here the same splitmix64 arithmetic runs on
uint64 arrays (which wrap as the Python code's `& _MASK` does), and the last step is one
correctly rounded int → float conversion and a division by 2⁶⁴, exact as the Python
`int / float`; `lower + span * u` is then the same two float operations. Any other
generator, and negative tick indices, keep the Python path.
"""

from __future__ import annotations

import numpy as np

from services.common.channels import ChannelSpec
from services.common.waveforms import GOLDEN, MIX_1, MIX_2, TWO_64, series_seed

MIN_TICKS = 16
"""Below this many ticks numpy's per-call cost is more than the Python loop's."""


def handles(spec: ChannelSpec, ticks: range) -> bool:
    """Whether `columns` computes these ticks of this channel (else waveforms does)."""
    return spec.generator == "uniform" and len(ticks) >= MIN_TICKS and ticks.start >= 0 and ticks.step > 0


def columns(spec: ChannelSpec, seed: int, ticks: range) -> list[list[float]]:
    """waveforms.Uniform().generate(spec, seed, ticks), for ticks that `handles`."""
    keys = np.arange(ticks.start + 1, ticks.stop + 1, ticks.step, dtype=np.uint64)
    span = spec.upper - spec.lower
    out = []
    for series in range(spec.series):
        z = np.uint64(series_seed(seed, series)) + keys * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX_1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX_2)
        z ^= z >> np.uint64(31)
        out.append((spec.lower + span * (z.astype(np.float64) / TWO_64)).tolist())
    return out
