"""bench's Python client (bench/harness.py) reads every packet the plugin may send."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the bench package sits at the repo root

from bench.harness import read_streams
from bench.streams import Prebuilt
from services.common.channels import ChannelSpec
from services.plugin import frames, notices
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin._proto import pluginv2_pb2_grpc
from services.plugin.servicers import Context

NOTICE = pb.StreamPacket(
    data=notices.notice_packet(frames.schema(ChannelSpec(0, 1, 10)), notices.WARNING, "rows dropped")
)


class NoticeThenRows(Prebuilt):
    """A notice (schema only, as an overloaded plugin tells a panel), then rows every 10 ms."""

    async def RunStream(
        self, request: pb.RunStreamRequest, context: Context
    ) -> AsyncIterator[pb.StreamPacket]:
        while True:
            yield NOTICE
            yield self.PACKET
            await asyncio.sleep(0.01)


def test_a_notice_is_counted_not_taken_for_rows() -> None:
    """Under overload the plugin tells panels rows were dropped with a schema-only packet; the
    client took every packet for rows and its stream task died on the missing `data`."""

    async def scenario() -> tuple[int, int, int, list[str]]:
        server = grpc.aio.server()
        pluginv2_pb2_grpc.add_StreamServicer_to_server(NoticeThenRows(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            stats, _ = await read_streams(f"127.0.0.1:{port}", ["custom-0-1-10"], 0.1, 0.5, latency=False)
        finally:
            await server.stop(0)
        return stats.packets, stats.rows, stats.notices, stats.failed

    packets, rows, told, failed = asyncio.run(scenario())
    assert failed == []
    assert packets > 5
    assert rows == packets
    assert told >= packets - 1
