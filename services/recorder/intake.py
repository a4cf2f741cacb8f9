"""What the recorder accepts into a channel: every check a Publish or a source's rows must pass.

A refusal is a sentence for the publisher saying what to do, and changes nothing: the
checks run before any row is recorded. A refusal over the schema names it for the reader;
the PublishReply carries it as data, for a client to convert its rows (services.publish).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from services.common.channels import PUBLISHED, SOURCE, UNCHECKED, EventChannel, parse_channel
from services.common.errors import InvalidChannel
from services.common.fields import Batch, InvalidRows, Schema


def event_channel(path: str, kind: str | None = None) -> EventChannel | None:
    """The event channel `path` names canonically (of `kind`, if given), else None."""
    try:
        channel = parse_channel(path, UNCHECKED)
    except InvalidChannel:
        return None
    if not isinstance(channel, EventChannel) or channel.path != path:
        return None
    return channel if kind is None or channel.kind == kind else None


def is_source(path: str) -> bool:
    return event_channel(path, SOURCE) is not None


def stamp(time_ns: int) -> str:
    """A time as RFC 3339, as publishers write it."""
    seconds, ns = divmod(time_ns, 1_000_000_000)
    try:
        day = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, ValueError, OSError):
        return f"{time_ns} ns"
    fraction = f"{ns:09d}".rstrip("0")
    return f"{day}.{fraction}Z" if fraction else f"{day}Z"


@dataclass(slots=True)
class Budget:
    """A token bucket of rows per second: a burst of one second's worth, then the rate."""

    rate: float
    tokens: float
    at: float

    def allows(self, rows: int, now: float) -> bool:
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return rows <= self.tokens

    def take(self, rows: int) -> None:
        self.tokens -= rows


def publish_problem(
    channel: str,
    batch: Batch,
    *,
    schema: Schema | None,
    last_time: int | None,
    now_ns: int,
    skew_ns: int,
) -> str:
    """'' if `batch` may go into published `channel`, else what is wrong and what to do."""
    if event_channel(channel, PUBLISHED) is None:
        return (
            f"{channel[:120]!r} is not a channel you can publish to: name it pub-<name>, the name of "
            "lower-case letters, digits, '_', '.' and '-' (at most 64)"
        )
    if not batch.times:
        return "no rows: a publish carries at least one row"
    if schema is not None:
        try:
            schema.check(batch)
        except InvalidRows as exc:
            return f"{exc}; the channel's schema: {schema.describe()}"
    if last_time is not None and batch.times[0] <= last_time:
        return (
            f"time {stamp(batch.times[0])} is not after the channel's last row ({stamp(last_time)}): "
            "each row must be later than the one before"
        )
    ahead_ns = batch.times[-1] - now_ns
    if ahead_ns > skew_ns:
        return (
            f"time {stamp(batch.times[-1])} is {ahead_ns / 1e9:.1f} s ahead of the recorder's clock "
            f"(at most {skew_ns / 1e6:g} ms is allowed): check the publisher's clock and its times' time zone"
        )
    return ""


def size_problem(size: int, max_bytes: int) -> str:
    """'' if a Publish of `size` bytes may be read at all, else what to do (checked before decoding it)."""
    if size > max_bytes:
        return f"the message is {size} bytes, the limit is {max_bytes}: publish fewer rows at a time"
    return ""
