"""Stopping: signals only set an event; each process's loop notices it and tears down."""

from __future__ import annotations

import signal
import threading
from types import FrameType


def install_stop_handlers() -> threading.Event:
    """SIGTERM and SIGINT set the returned event.

    A second SIGINT raises KeyboardInterrupt so a stuck process can still be stopped by hand.
    """
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def on_int(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_int)
    return stop
