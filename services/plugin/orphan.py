"""The plugin ends with its host: a Grafana killed with -9 never sends Shutdown.

Two guards, because each misses a case: PR_SET_PDEATHSIG has the kernel send SIGTERM
when the parent dies (the launcher `exec`s Python, so the parent is Grafana), but not if
it died before the call; a thread that checks os.getppid() is still the parent we started
with catches that, at most POLL_S late. Neither may wait for the event loop: a saturated
plugin heard its SIGTERM 16-21 s late. So the thread asks for an orderly stop and, if
the process still runs GRACE_S later, removes what it leaves behind and ends it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from services.common.logs import fields

log = logging.getLogger("zmqstream.plugin")
PR_SET_PDEATHSIG = 1
POLL_S = 0.05
GRACE_S = 0.3
"""An orderly stop's time after the host died: with POLL_S, the plugin is gone within 0.5 s."""
_leftovers: list[Path] = []


def die_with_parent() -> int:
    """Ask for SIGTERM when the parent dies (Linux); return the parent's pid, for watch_parent."""
    prctl = getattr(ctypes.CDLL(None), "prctl", None)
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    return os.getppid()


def remove_at_forced_exit(folder: Path) -> None:
    """`folder` goes even if the process is ended without its orderly stop."""
    _leftovers.append(folder)


def watch_parent(parent: int, stop_soon: Callable[[], object]) -> threading.Thread:
    """A thread that calls `stop_soon` once `parent` is no longer our parent, and ends the
    process GRACE_S later if it still runs (a thread: a busy event loop cannot delay it)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_S)
        log.warning("the host is gone: stopping", extra=fields(host_pid=parent))
        with contextlib.suppress(RuntimeError):  # the event loop is closed: we are ending anyway
            stop_soon()
        time.sleep(GRACE_S)
        for folder in _leftovers:
            shutil.rmtree(folder, ignore_errors=True)
        log.warning("the host is gone and the stop is slow: exiting now", extra=fields(grace_s=GRACE_S))
        os._exit(0)

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread
