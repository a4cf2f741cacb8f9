"""What a subscriber gets before the live rows, and where the live rows take over.

SubscribeStream answers with the channel's recent history as its initial frame (schema
and data, the same JSON as a stream's first packet), so a panel opened mid-stream is
filled at once. Its size is bounded: the last min(MAX_ROWS, WINDOW_NS / tick) ticks, and at
least the last one, so a slow channel still shows its latest value at once. A subscriber
that already holds history (the frontend loads the panel's range from QueryData first)
says up to when, and gets only the ticks after it (`since`).

Where the history ends. The browser appends every later packet to the initial frame
without deduplication, so history must end exactly where the live rows begin: an overlap
shows twice, a hole shows as a gap. Only the plugin knows what its RunStream has sent, so
it keeps a Ledger per Grafana channel (org, datasource uid, path as sent):

- A RunStream of the channel is running and has sent rows: history ends at the last tick
  it sent. It never sends time backwards, so everything it sends next is later: no
  overlap, and the new subscriber sees from then on what the others see. (A packet
  Grafana publishes between our reply and the client's subscription becoming active is
  missed: a race inside Grafana, milliseconds wide.)
- Otherwise (the first subscriber, or a stream that has sent nothing yet): history ends at
  the last tick already due, and that end is *promised*. RunStream sends no row at or
  before a promise (rows in flight from a ticker already running for someone else), and
  its first packet bridges the promise to its first live row by recomputing the ticks in
  between (a fresh ticker starts at its first tick after the broker placed it, some
  milliseconds later). So the first subscriber sees neither duplicates nor a gap.
- A RunStream that ends leaves its last tick in the ledger for LEDGER_TTL_S, so the
  RunStream Grafana starts again after an error carries on from there, gaplessly.

All of it relies on the values being pure functions of (channel, tick): the bridge and
the history are the very values the workers publish (services.plugin.recomputed). "Due"
is read on the plugin's clock and ticks are stamped on the workers': across hosts the
clocks must agree (NTP), or a promise runs ahead of the live rows and those are dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from services.common.channels import ChannelSpec
from services.common.errors import InvalidChannel

MAX_ROWS = 1000
WINDOW_NS = 60 * 1_000_000_000
LEDGER_TTL_S = 60.0
NOTHING = -1
"""A tick time before every tick: nothing sent, nothing promised."""

StreamKey = tuple[int, str, str]
"""(org id, datasource uid, path as Grafana sent it): what Grafana runs one RunStream for."""


def window(spec: ChannelSpec) -> int:
    """How many ticks an initial frame holds."""
    return max(1, min(MAX_ROWS, WINDOW_NS // spec.tick_ns))


def recent(spec: ChannelSpec, end_ns: int) -> range:
    """The last `window(spec)` ticks at or before `end_ns`."""
    last = spec.last_tick(end_ns)
    return range(last - window(spec) + 1, last + 1)


def since(spec: ChannelSpec, after_ms: int, end_ns: int) -> range:
    """The ticks after a subscriber's own history (its last row at `after_ms`) up to `end_ns`.

    A panel that loaded its range from QueryData subscribes with `{"after": <its last
    time, ms>}` and gets only the rows between that and the live stream, instead of the
    window, which would repeat what it holds. Ticks are at least 1 ms apart, so the tick
    after a row stamped within millisecond `after_ms` is stamped after it. More than
    MAX_ROWS are strided (ending exactly at `end_ns`'s tick), as QueryData strides.
    """
    first = spec.first_tick((after_ms + 1) * 1_000_000)
    last = spec.last_tick(end_ns)
    if last < first:
        return range(0)
    step = max(1, -(-(last - first + 1) // MAX_ROWS))
    return range(last - (last - first) // step * step, last + 1, step)


def after_of(data: bytes) -> int | None:
    """The `after` (epoch ms) of a subscription payload, None without one; InvalidChannel if malformed."""
    if not data:
        return None
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidChannel(f"the subscription payload is not JSON: {exc}") from None
    after = payload.get("after") if isinstance(payload, dict) else None
    if after is None:
        return None
    if isinstance(after, bool) or not isinstance(after, int) or not 0 <= after < 2**53:
        raise InvalidChannel(f"after must be a time in epoch milliseconds, got {str(after)[:40]!r}")
    return after


def between(spec: ChannelSpec, after_ns: int, before_ns: int) -> range:
    """The ticks strictly between two tick times, at most the last MAX_ROWS of them."""
    first = spec.last_tick(after_ns) + 1
    stop = spec.first_tick(before_ns)
    return range(max(first, stop - MAX_ROWS), stop)


@dataclass(slots=True)
class _Entry:
    sent_ns: int = NOTHING
    promised_ns: int = NOTHING
    streams: int = 0
    touched: float = 0.0


class Ledger:
    """Per Grafana channel: the last tick sent live, and the last one an initial frame promised."""

    def __init__(self, ttl_s: float = LEDGER_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self.entries: dict[StreamKey, _Entry] = {}
        self.swept = -ttl_s

    def history_end(self, key: StreamKey, spec: ChannelSpec, now_ns: int) -> int:
        """Where a new subscriber's history ends (a tick time); promises it if no stream sent yet."""
        sent = self.running_end(key)
        if sent != NOTHING:
            return sent
        end = spec.tick_time(spec.last_tick(now_ns))
        self.promise(key, end)
        return end

    def running_end(self, key: StreamKey) -> int:
        """The last time a running stream sent, where a new subscriber's history ends; NOTHING if none."""
        self._forget_stale()
        entry = self._touch(key)
        return entry.sent_ns if entry.streams else NOTHING

    def promise(self, key: StreamKey, end_ns: int) -> None:
        """An initial frame holds rows up to `end_ns`: the stream sends none at or before it.

        Event channels (services.plugin.eventstreams) promise the last row the recorder
        gave, not a tick: their rows keep their own times.
        """
        entry = self._touch(key)
        entry.promised_ns = max(entry.promised_ns, end_ns)

    def open(self, key: StreamKey) -> int:
        """A RunStream starts; returns the tick time at or before which it must send nothing.

        A stream restarted after the last one ended carries on from what that one sent; one
        running beside another (not something Grafana does) only honours promises.
        """
        self._forget_stale()
        entry = self._touch(key)
        floor = entry.promised_ns if entry.streams else max(entry.promised_ns, entry.sent_ns)
        entry.streams += 1
        return floor

    def promised(self, key: StreamKey) -> int:
        entry = self.entries.get(key)
        return entry.promised_ns if entry else NOTHING

    def sent(self, key: StreamKey, time_ns: int) -> None:
        """A stream sent up to `time_ns` (per packet: no clock read, close() stamps the entry)."""
        entry = self.entries[key]
        if time_ns > entry.sent_ns:
            entry.sent_ns = time_ns

    def close(self, key: StreamKey) -> None:
        entry = self._touch(key)
        entry.streams = max(0, entry.streams - 1)

    def _touch(self, key: StreamKey) -> _Entry:
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = _Entry()
        entry.touched = self.clock()
        return entry

    def _forget_stale(self) -> None:
        """Drop entries no stream has used for ttl_s (on subscribe and open, at most every ttl_s / 10:
        a sweep is O(entries), and a thousand panels open at once)."""
        now = self.clock()
        if now - self.swept < self.ttl_s / 10:
            return
        self.swept = now
        for key in [k for k, e in self.entries.items() if not e.streams and now - e.touched > self.ttl_s]:
            del self.entries[key]
