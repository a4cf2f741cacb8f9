"""Sources: stateful channels that read the world (a device, a socket, a file, an HTTP API).

A generator is a pure function of (channel, tick); a source is not. It is an object a
worker makes for one channel `source-<name>-<tick ms>` and polls every `tick_ms`:

- `__init__(channel)`: `channel` is the services.common.channels.EventChannel (its `name`
  and `tick_ms`). Keep it quick and open what may block (a device, a connection) in the
  first `poll`; a constructor that raises refuses the channel, as an unknown name does.
- `poll()`: the rows since the last poll, as records `{"time": …, "<field>": value}`
  (time as RFC 3339 text or epoch milliseconds; without one, a record is stamped with
  the poll's time), or None/[] for nothing this time. Values are numbers, bools,
  strings or None; the first rows fix the channel's fields and their kinds. It may block:
  it runs in a thread of its own, never in the worker's ticker thread. A poll that
  raises is logged and tried again at the next tick.
- `close()` (optional): the channel stopped; release what the source holds.
- `description` (optional class attribute): one line saying what it reads, for its readers.

A source cannot recompute the past: when its worker dies, the broker starts the channel
on another worker, which makes a new instance that carries on from whatever it reads
then. Users add sources through the entry point group `zmqstream.sources`
(examples/zmqstream-example-source); `host` (services.sources.host) is built in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import cache
from importlib.metadata import entry_points
from typing import Any, Protocol, cast

from services.common.channels import GENERATOR_NAME_RE, SOURCE, EventChannel
from services.common.entrypoints import load_installed
from services.common.errors import InvalidChannel

ENTRY_POINT_GROUP = "zmqstream.sources"

Record = Mapping[str, Any]


class Source(Protocol):
    def poll(self) -> Iterable[Record] | None:
        """The records read since the last poll (None or empty: nothing new)."""
        ...


SourceClass = Callable[[EventChannel], Source]


BUILTIN_NAMES = ("host",)


def builtins() -> dict[str, SourceClass]:
    from services.sources.host import HostSource  # psutil is loaded only where sources run

    return dict(zip(BUILTIN_NAMES, (HostSource,), strict=True))


@cache
def installed_names() -> frozenset[str]:
    """The sources installed here, by name, none of them loaded: what the plugin offers and
    checks a path against (a worker refuses a name it cannot load, but a panel never hears it)."""
    names = {entry.name for entry in entry_points(group=ENTRY_POINT_GROUP)}
    return frozenset(BUILTIN_NAMES) | {name for name in names if GENERATOR_NAME_RE.fullmatch(name)}


def source_for(channel: EventChannel) -> None:
    """InvalidChannel (listing the known ones) unless `channel`'s source is installed."""
    known = installed_names()
    if channel.kind == SOURCE and channel.name not in known:
        raise InvalidChannel(f"unknown source {channel.name!r}; known: {', '.join(sorted(known))}")


@cache
def registry() -> Mapping[str, SourceClass]:
    """Built-in sources plus the classes installed under ENTRY_POINT_GROUP.

    An entry whose name is not a path's `[a-z][a-z0-9_]*`, that takes a built-in's name,
    does not load or is not a class with a `poll` method, is logged and left out: one
    broken package must not take the worker down with it.
    """
    return load_installed(ENTRY_POINT_GROUP, "source", builtins(), _source_class)


def _source_class(loaded: Any) -> SourceClass:
    if not isinstance(loaded, type) or not callable(getattr(loaded, "poll", None)):
        raise TypeError(f"{loaded!r} is not a class with poll()")
    return cast(SourceClass, loaded)
