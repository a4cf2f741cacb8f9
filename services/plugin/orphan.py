"""The plugin ends with its host: a Grafana killed with -9 never sends Shutdown.

Two guards, because each misses a case: PR_SET_PDEATHSIG has the kernel send SIGTERM
when the parent dies (the launcher `exec`s Python, so the parent is Grafana), but not if
it died before the call; a check that os.getppid() is still the parent we started
with catches that, at most POLL_S late.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal

from services.common.logs import fields

log = logging.getLogger("zmqstream.plugin")
PR_SET_PDEATHSIG = 1
POLL_S = 0.5


def die_with_parent() -> int:
    """Ask for SIGTERM when the parent dies (Linux); return the parent's pid, for watch_parent."""
    prctl = getattr(ctypes.CDLL(None), "prctl", None)
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    return os.getppid()


async def watch_parent(parent: int, stop: asyncio.Event) -> None:
    """Set `stop` once `parent` is no longer our parent: it died and we were re-parented."""
    while not stop.is_set():
        if os.getppid() != parent:
            log.warning("the host is gone: stopping", extra=fields(host_pid=parent))
            stop.set()
            return
        await asyncio.sleep(POLL_S)
