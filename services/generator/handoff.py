"""How a source's thread hands its rows to the worker's main thread: bounded in bytes, and it wakes it.

The main thread sleeps in a zmq poll on its control socket until the next tick is due
(seconds, for slow channels). A Waker is an eventfd it polls beside the control socket,
so a batch is published as soon as it is handed over, not at the next tick. Each source
has its own Handoff: a source that floods it, or a main thread that falls behind, costs
at most `max_bytes` per source, and the oldest batches go first (counted), as a slow
Grafana's stream does, so what is kept is the newest and times still only increase.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Waker:
    """An eventfd: readable once woken, until cleared. Safe to wake from any thread.

    `pending` says the same without a system call, for a consumer that looks on every
    turn of its loop whether or not it slept (set before the fd, cleared before it).
    """

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.pending = False

    def wake(self) -> None:
        self.pending = True
        os.eventfd_write(self.fd, 1)

    def clear(self) -> None:
        self.pending = False
        with contextlib.suppress(BlockingIOError):  # not woken since the last clear
            os.eventfd_read(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class Handoff(Generic[T]):
    """A thread-safe queue of items with a size each, holding at most `max_bytes` of them."""

    def __init__(self, max_bytes: int, waker: Waker) -> None:
        self.max_bytes = max_bytes
        self._waker = waker
        self._lock = threading.Lock()
        self._items: deque[tuple[T, int]] = deque()
        self._bytes = 0
        self.dropped = 0
        """Items dropped to keep within max_bytes (the oldest, or one larger than max_bytes)."""

    @property
    def bytes(self) -> int:
        return self._bytes

    def put(self, item: T, size: int) -> bool:
        """Queue `item` (dropping the oldest to fit) and wake the consumer; False if it alone is too big."""
        if size > self.max_bytes:
            with self._lock:
                self.dropped += 1
            return False
        with self._lock:
            while self._items and self._bytes + size > self.max_bytes:
                _, old = self._items.popleft()
                self._bytes -= old
                self.dropped += 1
            self._items.append((item, size))
            self._bytes += size
        self._waker.wake()
        return True

    def take(self) -> list[T]:
        """Everything queued, oldest first."""
        with self._lock:
            items = [item for item, _ in self._items]
            self._items.clear()
            self._bytes = 0
        return items
