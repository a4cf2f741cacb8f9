"""`zmqstream watch` draws an event channel's rows: typed fields as Grafana's frames carry them."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
from recording import now_ms, publish_cli, recording_pipeline
from support import ROOT

from services.cli.watch import Watcher, first_number, latest_row
from services.hostemu.dataframe import StreamingFrame
from services.packaging.bundle import write_launchers


def event_frame() -> StreamingFrame:
    """Two rows of a channel with a string, a number and a bool field, as data-frame JSON."""
    frame = StreamingFrame()
    frame.push(
        {
            "schema": {
                "fields": [
                    {"name": "time", "type": "time"},
                    {"name": "door", "type": "string"},
                    {"name": "temp", "type": "number"},
                    {"name": "alarm", "type": "boolean"},
                ]
            },
            "data": {"values": [[1000, 2000], ["open", "closed"], [21.5, None], [False, True]]},
        }
    )
    return frame


def test_the_sparkline_follows_the_first_number_field_and_skips_nulls() -> None:
    frame = event_frame()
    number = first_number(frame)
    assert number == 2
    watcher = Watcher(10)
    watcher.add(frame.times_ns, frame.values[number], received=3.0)
    assert "rows/s" in watcher.line()


def test_the_latest_row_shows_every_field_with_its_kind() -> None:
    assert latest_row(event_frame(), 200) == "door=closed temp=null alarm=true"
    assert latest_row(event_frame(), 12) == "door=closed…"
    assert len(latest_row(event_frame(), 12)) == 12


def test_a_frame_without_number_fields_has_no_sparkline() -> None:
    frame = StreamingFrame()
    frame.push(
        {
            "schema": {"fields": [{"name": "time", "type": "time"}, {"name": "door", "type": "string"}]},
            "data": {"values": [[1000], ["open"]]},
        }
    )
    assert first_number(frame) is None
    watcher = Watcher(10)
    watcher.add(frame.times_ns, [], received=1.0)
    assert watcher.line().startswith("  ")


def test_a_single_field_row_is_shown_too() -> None:
    frame = StreamingFrame()
    frame.push(
        {
            "schema": {"fields": [{"name": "time", "type": "time"}, {"name": "door", "type": "string"}]},
            "data": {"values": [[1000], ["open"]]},
        }
    )
    assert latest_row(frame, 80) == "door=open"


def test_a_published_string_cannot_drive_the_terminal() -> None:
    """Any publisher writes the strings: escape sequences (clear the screen, set the title, write the
    clipboard with OSC 52) and newlines are shown escaped, not sent to the operator's terminal."""
    hostile = "\x1b[2J\x1b]52;c;cm0gLXJmIH4=\x07\rdoor=open\n"
    frame = StreamingFrame()
    frame.push(
        {
            "schema": {"fields": [{"name": "time", "type": "time"}, {"name": "door", "type": "string"}]},
            "data": {"values": [[1000], [hostile]]},
        }
    )
    shown = latest_row(frame, 200)
    assert shown.isprintable(), shown
    assert shown == r"door=\x1b[2J\x1b]52;c;cm0gLXJmIH4=\x07\rdoor=open\n"


def test_a_published_channel_shows_its_recorded_rows_then_says_nothing_is_published() -> None:
    """On main the recorded rows never showed (the subscription's answer was dropped and the
    stream starts after it), and the silence was blamed on workers: 'is a worker running?'."""
    with recording_pipeline() as pipeline:
        start = now_ms() - 600_000  # ten minutes ago: older than a subscription's last minute
        lines = [
            orjson.dumps({"time": start + i, "temp": 20.5 + i, "door": "shut"}).decode() for i in range(3)
        ]
        assert publish_cli(pipeline.run_dir, "pub-watched", lines).returncode == 0
        shim = str(write_launchers(pipeline.run_dir)[0])
        command = ["watch", "pub-watched", "--plugin", shim, "--plain", "--timeout", "2"]
        watched = subprocess.run(
            [sys.executable, "-m", "services.cli", *command],
            cwd=ROOT,
            env={**os.environ, "ZMQSTREAM_RUN_DIR": str(pipeline.run_dir)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert "temp=22.5 door=shut" in watched.stdout, watched.stdout + watched.stderr
    assert watched.returncode == 1
    assert "nothing published to pub-watched for 2 s: no publisher is sending to it now" in watched.stderr
    assert "worker" not in watched.stderr
