"""The plugin's own CPU per row on its steady path, in this process, without gRPC or a pipeline.

A BrokerConnection holds 1,000 channels placed under one epoch; Rows frames of one tick each,
as the workers send them, go through its frame handler (what a drain does with each frame
received), then every stream takes its queue and builds its data-only packet, as RowStreams
does between two packets. CPU time of this thread only, so the figures hold on a shared machine
where the end-to-end ones (rowcost, streams) move with the load: receive per row, take and
packet per packet, and their sum per row at 1 and at 6 rows per packet (6: what pacing gives
at 20,000 rows/s).
"""

from __future__ import annotations

import asyncio
import time

from bench.measure import Result
from services.common import protocol
from services.common.channels import ChannelSpec, Limits, parse_path
from services.common.config import PluginSettings
from services.plugin import frames
from services.plugin.broker_connection import BrokerConnections
from services.plugin.queues import RowQueue
from services.plugin.rowstreams import _segment_rows

STREAMS = 1000
EPOCH = 7


async def _measure(rows_per_packet: int, packets: int) -> tuple[float, float]:
    """(receive µs per row, take + packet µs per packet) over `packets` packets per stream."""
    settings = PluginSettings.load(["--control-endpoint", "tcp://127.0.0.1:9"], env={})  # nobody there
    brokers = BrokerConnections(settings)
    connection = brokers.get()
    specs = [parse_path(f"custom-{i}-{i + 1}-50", Limits()) for i in range(STREAMS)]
    streams: list[tuple[ChannelSpec, RowQueue]] = []
    try:
        for spec in specs:
            streams.append((spec, connection.hold(spec)))
            connection._placement(connection.holders[spec.path], EPOCH)
        first = specs[0].last_tick(time.time_ns()) - rows_per_packet * packets
        after = [first - 1] * STREAMS
        receive_s = take_s = 0.0
        for packet in range(packets):
            ticks = range(first + packet * rows_per_packet, first + (packet + 1) * rows_per_packet)
            sent = [
                protocol.rows_frame(spec.path, tick, EPOCH, [protocol.float_bytes([0.5])])
                for tick in ticks
                for spec in specs
            ]
            started = time.thread_time()
            for frame in sent:
                connection._on_rows(frame)
            taking = time.thread_time()
            for i, (spec, queue) in enumerate(streams):
                taken = await queue.take(settings.max_rows_per_packet, after[i])
                times, columns = _segment_rows(spec, *taken.segments[0])
                frames.packet(times, columns)
                after[i] = spec.last_tick(times[-1])
            receive_s += taking - started
            take_s += time.thread_time() - taking
    finally:
        for spec, queue in streams:
            connection.release(spec.path, queue)
        await brokers.close()
    return 1e6 * receive_s / (STREAMS * rows_per_packet * packets), 1e6 * take_s / (STREAMS * packets)


def run(quick: bool) -> list[Result]:
    packets = 10 if quick else 40
    results = []
    for rows_per_packet in (1, 6):
        receive_us, packet_us = asyncio.run(_measure(rows_per_packet, packets))
        results += [
            Result("rowpath", f"receive, per row ({rows_per_packet} per packet)", receive_us, "µs"),
            Result("rowpath", f"take + packet, per packet of {rows_per_packet}", packet_us, "µs"),
            Result(
                "rowpath",
                f"plugin's own steady path per row, {rows_per_packet} per packet",
                receive_us + packet_us / rows_per_packet,
                "µs",
            ),
        ]
    return results
