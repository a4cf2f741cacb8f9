"""Event-stream packets as the plugin writes them (services.plugin.eventframes), for the frontend's tests.

    .venv/bin/python tests/capture_events.py > tests/golden/event_stream_packets.jsonl

Line 1: schema and data (float64 with a null and a NaN, int64, string with a null, bool
with a null), as a stream's first packet; line 2: data only; line 3: a new schema (a
source changed its fields) with its data. tests/test_event_streams.py checks the
committed file still matches what the plugin writes today.
"""

import sys

from services.common.fields import Batch, Column
from services.plugin import eventframes

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


if __name__ == "__main__":
    sys.stdout.buffer.write(b"".join(packet + b"\n" for packet in packets()))
