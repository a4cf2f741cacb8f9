"""Sources that misbehave on purpose. tests/test_sources.py puts this folder on the workers'
PYTHONPATH, where importlib.metadata finds the dist-info beside it: real entry points,
nothing installed."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

BLOCK_S = 3.0


class Sleepy:
    """Every poll blocks for BLOCK_S, as a device read or an HTTP call that hangs would."""

    def __init__(self, channel: Any) -> None:
        self.polls = 0

    def poll(self) -> list[dict[str, Any]]:
        time.sleep(BLOCK_S)
        self.polls += 1
        return [{"polls": self.polls}]


class Shifty:
    """`value` is a float, except every third poll, when it turns into a string."""

    def __init__(self, channel: Any) -> None:
        self.polls = 0

    def poll(self) -> list[dict[str, Any]]:
        self.polls += 1
        value: Any = "oops" if self.polls % 3 == 0 else float(self.polls)
        return [{"value": value, "label": f"poll {self.polls}"}]


class Broken:
    def __init__(self, channel: Any) -> None:
        raise RuntimeError("no such device")

    def poll(self) -> None:
        return None


class Flaky:
    """Raises on every other poll; rows on the others. Closed, it leaves a file named after
    its channel in $ZMQSTREAM_TEST_CLOSED_DIR, for the test to see."""

    def __init__(self, channel: Any) -> None:
        self.polls = 0
        self.path = channel.path

    def poll(self) -> list[dict[str, Any]]:
        self.polls += 1
        if self.polls % 2:
            raise OSError("device busy")
        return [{"ok": True}]

    def close(self) -> None:
        folder = os.environ.get("ZMQSTREAM_TEST_CLOSED_DIR")
        if folder:
            (Path(folder) / self.path).touch()
