"""Hostile peers on the broker's control socket: what they cost it is bounded."""

import time
import uuid

import zmq
from support import Pipeline, memory_kib

from services.cli.status import fetch
from services.common import protocol

CHANNELS = 2000
"""Enough that a StatusReply is about 100 kB."""
ASKS = 20_000


def test_a_peer_that_asks_for_status_and_never_reads_costs_the_broker_bounded_memory() -> None:
    pipeline = Pipeline(0, broker_args=["--plugin-lease-s", "600"])
    ctx = zmq.Context()
    try:
        filler = ctx.socket(zmq.DEALER)
        filler.connect(pipeline.control_endpoint)
        for i in range(CHANNELS):
            filler.send_multipart(protocol.encode(protocol.Subscribe("filler", f"custom-{i}-{i + 1}-1000")))
        while len(fetch(pipeline.control_endpoint, 5).channels) < CHANNELS:
            time.sleep(0.1)
        before_kib = memory_kib(pipeline.broker.pid)

        hostile = ctx.socket(zmq.DEALER)
        hostile.setsockopt(zmq.RCVHWM, 1)  # keep its own side small: it never reads anyway
        hostile.setsockopt(zmq.SNDHWM, ASKS)
        hostile.connect(pipeline.control_endpoint)
        for _ in range(ASKS):
            hostile.send_multipart(protocol.encode(protocol.StatusRequest(uuid.uuid4().hex)))
        asked = time.monotonic()
        polite = fetch(pipeline.control_endpoint, 5)
        served_s = time.monotonic() - asked
        rss_kib = []
        for _ in range(20):  # while the broker goes through the asks
            rss_kib.append(memory_kib(pipeline.broker.pid))
            time.sleep(0.25)
        growth_mib = (max(rss_kib) - before_kib) / 1024
        hostile.close(linger=0)
        filler.close(linger=0)
    finally:
        ctx.term()
        pipeline.close()
    print(
        f"\n[figure] {ASKS:,} unread StatusRequests ({CHANNELS:,} channels): broker grew "
        f"{growth_mib:.1f} MiB, another asker answered after {served_s:.2f} s"
    )
    assert len(polite.channels) == CHANNELS
    assert growth_mib < 50
    assert served_s < 1
