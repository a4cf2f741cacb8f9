"""Capture what a panel over the last 15 minutes of `custom-0-10-1000` gets, for the frontend's tests.

    .venv/bin/python tests/capture_panel.py > tests/golden/panel_packets.json

The steps of frontend/src/datasource.ts against the real plugin: QueryData over the range
(ending LIVE_MARGIN_MS before now), as /api/ds/query returns it to the browser; the
SubscribeStream answer to `{"after": <the history's last ms>}`; then RunStream's packets.
`now` is when the panel asked. tests/test_panel.py checks the same sequence live.
"""

import sys
import time

import orjson
from support import Pipeline, query_model, wait_for_workers

from services.hostemu.arrowframe import read_frame
from services.hostemu.host import data_query

PATH = "custom-0-10-1000"
LIVE_MARGIN_MS = 1000
PACKETS = 3


def main() -> int:
    pipeline = Pipeline(1)
    host = pipeline.plugin()
    try:
        wait_for_workers(host, 1)
        now_ms = time.time_ns() // 1_000_000
        query = data_query("A", query_model(0, 10, 1000), now_ms - 15 * 60_000, now_ms - LIVE_MARGIN_MS)
        frame = read_frame(host.query_data([query]).responses["A"].frames[0])
        after = frame.times_ns[-1] // 1_000_000
        subscribed = host.subscribe(PATH, data=orjson.dumps({"after": after}))
        stream = host.run_stream(PATH)
        packets = []
        for packet in stream.packets_iter():
            packets.append(orjson.loads(packet))
            if len(packets) == PACKETS:
                break
        stream.cancel()
    finally:
        host.stop()
        pipeline.close()
    capture = {
        "now": now_ms,
        "path": PATH,
        "query": {"results": {"A": {"status": 200, "frames": [frame.to_json()]}}},
        "after": after,
        "subscribe": orjson.loads(subscribed.data),
        "packets": packets,
    }
    sys.stdout.write(orjson.dumps(capture).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
