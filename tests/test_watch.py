"""`zmqstream watch` draws an event channel's rows: typed fields as Grafana's frames carry them."""

from __future__ import annotations

from services.cli.watch import Watcher, first_number, latest_row
from services.hostemu.dataframe import StreamingFrame


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
