"""A source installed from examples/zmqstream-example-source runs in the workers like a built-in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, distribution

import pytest
from eventclient import EventsClient
from support import Pipeline

from services.common.fields import BOOL, FLOAT64, STRING
from services.sources import ENTRY_POINT_GROUP, registry

PACKAGE = "zmqstream-example-source"


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    try:
        entry_points = distribution(PACKAGE).entry_points
    except PackageNotFoundError:
        pytest.fail(f"{PACKAGE} is not installed: run `make python` (it pip-installs examples/{PACKAGE})")
    assert [(e.group, e.name) for e in entry_points] == [(ENTRY_POINT_GROUP, "kvtail")]
    pipeline = Pipeline(1)
    try:
        yield pipeline
    finally:
        pipeline.close()


def test_the_example_parses_key_value_lines() -> None:
    from zmqstream_example_source import parse_line

    assert parse_line("door=open temp=21 alarm=true note=null time=2026-11-29T12:00:00Z") == {
        "door": "open",
        "temp": 21.0,
        "alarm": True,
        "note": None,
        "time": "2026-11-29T12:00:00Z",
    }
    assert parse_line("junk =x y= temp=nan") == {"y": "", "temp": "nan"}
    assert "kvtail" in registry()


def test_lines_appended_to_the_file_stream_with_their_kinds(pipeline: Pipeline) -> None:
    path = "source-kvtail-100"
    target = pipeline.run_dir / "kvtail.txt"
    target.write_text("door=ignored temp=0 alarm=false\n")  # there before the channel: skipped
    events = EventsClient(pipeline.control_endpoint, [path])
    sent = 0

    def arrived() -> bool:
        """Append a line now and then until three have come back (the source may not run yet)."""
        nonlocal sent
        rows = sum(len(e.times) for e in events.of(path))
        if rows < 3 and sent < 100 and (not events.received or rows < sent):
            sent += 1
            with target.open("a") as file:
                file.write(
                    f"door={'open' if sent % 2 else 'closed'} temp={20 + sent / 10} alarm={sent % 2 == 0}\n"
                )
            time.sleep(0.05)
        return rows >= 3

    try:
        events.collect(arrived, timeout_s=30)
        for batch in events.of(path):
            assert [(c.name, c.kind) for c in batch.columns] == [
                ("door", STRING),
                ("temp", FLOAT64),
                ("alarm", BOOL),
            ]
        rows = [
            (door, temp, alarm)
            for batch in events.of(path)
            for door, temp, alarm in zip(*(c.values for c in batch.columns), strict=True)
        ]
        assert "ignored" not in [door for door, _, _ in rows]
        for door, temp, alarm in rows:
            n = round((temp - 20) * 10)
            assert (door, alarm) == ("open" if n % 2 else "closed", n % 2 == 0)
    finally:
        events.close()
