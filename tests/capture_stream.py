"""Capture what our real plugin sends for `custom-10-20-100`, for the frontend's tests.

    .venv/bin/python tests/capture_stream.py > tests/golden/stream_packets.jsonl

Line 1 is SubscribeStream's initial data (schema and recent history), the following lines
RunStream's packets (schema and data, then data only), each exactly as the plugin sent it.
tests/test_frames.py checks the committed file still matches today's frame format.
"""

import sys

from support import Pipeline, wait_for_workers

PATH = "custom-10-20-100"
PACKETS = 5


def main() -> int:
    pipeline = Pipeline(1)
    host = pipeline.plugin()
    try:
        wait_for_workers(host, 1)
        lines = [host.subscribe(PATH).data]
        stream = host.run_stream(PATH)
        for packet in stream.packets_iter():
            lines.append(packet)
            if len(lines) > PACKETS:
                break
        stream.cancel()
    finally:
        host.stop()
        pipeline.close()
    sys.stdout.write("".join(line.decode() + "\n" for line in lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
