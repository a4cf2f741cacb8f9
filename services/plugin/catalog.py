"""The streams a query editor or a dashboard variable may name, with the fields they carry.

    GET streams → {"generators": [{"name", "description"}, …],
                   "sources":    [{"name", "fields": [{"name", "type"}, …]}, …],
                   "published":  [{"name", "fields": [{"name", "type"}, …]}, …],
                   "problems":   ["what could not be asked, and so is missing", …]}

Generators and sources are those installed here. Published channels are those the broker
knows (a recorder lists every channel it carries, held or not). An event channel's fields
are those of the last row the recorder has (a source's from one of its running channels);
empty until it has one. Field types are the frontend's (number, string, boolean).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from services.common.channels import PUBLISHED, SOURCE, UNCHECKED, EventChannel, parse_channel
from services.common.errors import InvalidChannel
from services.common.waveforms import registry
from services.plugin.eventframes import TYPES
from services.plugin.recorder import RecorderClient, RecorderUnavailable
from services.sources import installed_names

MAX_LOOKUPS = 200
"""Channels whose fields are asked of the recorder in one answer; the rest are listed without."""


def generators() -> list[dict[str, str]]:
    """Installed generators, without those marked `hidden = True` (the benchmarks' `burn`)."""
    return [
        {"name": name, "description": str(getattr(generator, "description", ""))}
        for name, generator in registry().items()
        if getattr(generator, "hidden", False) is not True
    ]


async def streams(
    paths: Iterable[str], recorder: RecorderClient | None, problems: list[str]
) -> dict[str, Any]:
    """The `streams` answer for the channels the broker knows (`paths`); `problems` so far.
    Without a recorder (no broker to say where it is), no channel's fields are asked."""
    events = [c for c in map(_event_channel, sorted(paths)) if c is not None]
    published = [c for c in events if c.kind == PUBLISHED]
    sources: dict[str, EventChannel | None] = dict.fromkeys(sorted(installed_names()))
    for channel in events:
        if channel.kind == SOURCE and sources.get(channel.name, channel) is None:
            sources[channel.name] = channel  # one running channel of each source tells its fields
    asked = [*published, *(c for c in sources.values() if c is not None)][:MAX_LOOKUPS]
    found = await _fields(asked, recorder, problems) if recorder is not None else {}
    return {
        "generators": generators(),
        "sources": [
            {"name": name, "fields": found.get(channel.path, []) if channel else []}
            for name, channel in sources.items()
        ],
        "published": [{"name": c.name, "fields": found.get(c.path, [])} for c in published],
        "problems": problems,
    }


def _event_channel(path: str) -> EventChannel | None:
    try:
        channel = parse_channel(path, UNCHECKED)
    except InvalidChannel:
        return None
    return channel if isinstance(channel, EventChannel) else None


async def _fields(
    channels: list[EventChannel], recorder: RecorderClient, problems: list[str]
) -> dict[str, list[dict[str, str]]]:
    """Each channel's fields from its last recorded row; a recorder that fails is told once."""
    now = time.time_ns()
    answers = await asyncio.gather(
        *(recorder.history(c.path, 0, now, 1) for c in channels), return_exceptions=True
    )
    found: dict[str, list[dict[str, str]]] = {}
    for channel, answer in zip(channels, answers, strict=True):
        if isinstance(answer, RecorderUnavailable):
            if not any(p.startswith("recorder") for p in problems):
                problems.append(f"recorder unavailable, so no fields are listed: {answer}")
            continue
        if isinstance(answer, BaseException):
            raise answer
        batch, _ = answer
        found[channel.path] = [{"name": name, "type": TYPES[kind]} for name, kind in batch.schema.fields]
    return found
