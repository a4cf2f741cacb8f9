"""The fence on data frames: a channel's rows are taken only under the placement the broker last told.

The broker gives every placement of a channel a new epoch and the worker stamps its rows
with it; a worker its channel moved away from, or anyone who can write into frames_in,
sends other epochs. Whoever relays or records rows (the plugin, the recorder) holds them
to the placement it was told, never adopting an epoch a frame brings.
"""

from __future__ import annotations

import enum


class Fence(enum.Enum):
    TAKE = "take"
    """The frame is of the placement told."""
    REFUSE = "refuse"
    """Another epoch than the placement told: a superseded worker, or a forged frame."""
    UNTOLD = "untold"
    """No placement told yet: nothing to hold the frame to (the caller waits or drops it)."""


def fence(placement: int, epoch: int) -> Fence:
    """How a frame of `epoch` meets its channel's placement as last told (0: none told yet)."""
    if not placement:
        return Fence.UNTOLD
    return Fence.TAKE if epoch == placement else Fence.REFUSE
