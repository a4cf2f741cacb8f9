"""Publishes refused for what they carried, told on the panels of their channel.

Grafana answers a refused PublishStream with a bare 403 over HTTP and the websocket alike
(the status is all it passes on), so the reason would reach only the plugin's log. The
panels streaming the channel are where a publisher looks: each running stream of it
shows the last refusal as a warning notice (at its next packet, or within a heartbeat
when no row comes), until rows are accepted again. Only refusals of the rows themselves
are told (a type mistake, a time out of order, a size or rate limit), not who may publish.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

MAX_CHANNELS = 1024
"""Channels whose last refusal is kept; the least recent is forgotten past it."""


class Refusals:
    def __init__(self) -> None:
        self._last: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._numbers = itertools.count(1)

    def tell(self, path: str, text: str) -> None:
        """A publish into `path` was refused for `text`."""
        self._last.pop(path, None)
        self._last[path] = (next(self._numbers), text)
        while len(self._last) > MAX_CHANNELS:
            self._last.popitem(last=False)

    def seen(self, path: str) -> int:
        """The number of `path`'s last refusal (0: none): a new stream shows only later ones."""
        return self._last.get(path, (0, ""))[0]

    def since(self, path: str, seen: int) -> tuple[int, str] | None:
        """`path`'s last refusal and its number if it is newer than `seen`, else None."""
        last = self._last.get(path)
        return last if last is not None and last[0] > seen else None
