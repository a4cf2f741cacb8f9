"""Event-stream packets as the plugin writes them (services.plugin.eventframes), for the frontend's tests.

    .venv/bin/python tests/capture_events.py > tests/golden/event_stream_packets.jsonl
    .venv/bin/python tests/capture_events.py --logs > tests/golden/event_logs_packets.jsonl

Line 1: schema and data (float64 with a null and a NaN, int64, string with a null, bool
with a null), as a stream's first packet; line 2: data only; line 3: a new schema (a
source changed its fields) with its data. tests/test_event_streams.py checks the
committed file still matches what the plugin writes today.

With --logs: a published channel of text rows asked with label field `service` and logs
(services.plugin.labelled): the rows of service=api with their schema and the logs meta,
then those of service=db under a new schema.
"""

import sys

from services.common.fields import Batch, Column
from services.plugin import eventframes, labelled
from services.plugin.display import Display

T0 = 1_764_417_600_000_000_000
"""2025-11-29T12:00:00Z in ns."""


def packets() -> list[bytes]:
    first = Batch(
        [T0, T0 + 1_000_000, T0 + 2_500_000],
        [
            Column("temp", "float64", [21.5, None, float("nan")]),
            Column("count", "int64", [1, 2, None]),
            Column("door", "string", ["open", None, "shut"]),
            Column("ok", "bool", [True, None, False]),
        ],
    )
    second = Batch(
        [T0 + 3_000_000],
        [
            Column("temp", "float64", [22.0]),
            Column("count", "int64", [3]),
            Column("door", "string", ["open"]),
            Column("ok", "bool", [False]),
        ],
    )
    changed = Batch([T0 + 4_000_000], [Column("level", "string", ["low"])])
    return [
        eventframes.packet(first, eventframes.schema(first.schema)),
        eventframes.packet(second),
        eventframes.packet(changed, eventframes.schema(changed.schema)),
    ]


def logs_packets() -> list[bytes]:
    shown = Display(labels=("service",), logs=True)
    batch = Batch(
        [T0, T0 + 1_000_000, T0 + 2_000_000],
        [
            Column("message", "string", ["started", "GET / 200", "connection reset"]),
            Column("level", "string", ["info", "info", "error"]),
            Column("service", "string", ["api", "api", "db"]),
        ],
    )
    return [
        eventframes.packet(run, labelled.frame_schema(run.schema, shown, labels))
        for run, labels in labelled.runs(batch, shown.labels)
    ]


if __name__ == "__main__":
    chosen = logs_packets() if "--logs" in sys.argv[1:] else packets()
    sys.stdout.buffer.write(b"".join(packet + b"\n" for packet in chosen))
