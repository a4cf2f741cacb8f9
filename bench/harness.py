"""Drive the pipeline as Grafana and as a raw subscriber would, from inside a benchmark."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
import orjson
import zmq

from services.common import protocol
from services.common.channels import UNCHECKED, ChannelSpec, parse_path
from services.hostemu.host import Datasource
from services.hostemu.localpipeline import Pipeline
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin._proto import pluginv2_pb2_grpc

FAST = ["--min-tick-ms", "0.001"]
"""Broker flags that admit the sub-millisecond ticks the rows/s scenario needs."""
FAST_PLUGIN_SETTINGS = {
    "min_tick_ms": "0.001",
    "max_values_per_s": "1000000",
    "max_values_per_s_per_datasource": "1000000",
}


@dataclass
class StreamStats:
    rows: int = 0
    packets: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    silent: int = 0
    """Streams that sent nothing in the measured window (a fault the table shows)."""
    failed: list[str] = field(default_factory=list)
    """Status codes of streams that ended with an error before the window closed."""
    notices: int = 0
    """Schema-only packets in the window: a panel's notice (rows dropped, a stall), not rows."""


STARTUP_LIMIT_S = 30.0
"""How long every stream may take to send its first packet before the window opens anyway."""


async def read_streams(
    address: str,
    paths: Sequence[str],
    warmup_s: float,
    measure_s: float,
    *,
    latency: bool = True,
    on_window: Callable[[], None] = lambda: None,
) -> tuple[StreamStats, float]:
    """RunStream every path as Grafana does; count what arrives in the measured window.

    The window opens `warmup_s` after every stream has sent its first packet (a busy
    server takes new calls slowly, and a window that opened earlier would measure fewer
    streams than asked for); `on_window` is called then. Returns the totals and the
    window's length in seconds.
    """
    stats = StreamStats()
    context = Datasource().context()
    loop = asyncio.get_running_loop()
    started: set[str] = set()
    all_started = asyncio.Event()
    window = [float("inf"), float("inf")]  # monotonic start and end, once known

    async def open_window() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_started.wait(), STARTUP_LIMIT_S)
        await asyncio.sleep(warmup_s)
        on_window()
        window[0] = loop.time()
        window[1] = window[0] + measure_s

    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 2**31 - 1)]
    ) as channel:
        stub = pluginv2_pb2_grpc.StreamStub(channel)

        async def one(path: str) -> None:
            call = stub.RunStream(pb.RunStreamRequest(pluginContext=context, path=path))
            try:
                async for packet in call:
                    now = loop.time()
                    if now >= window[1]:
                        break
                    if now < window[0]:
                        if path not in started:
                            started.add(path)
                            if len(started) == len(paths):
                                all_started.set()
                        continue
                    arrived_ns = time.time_ns()
                    data = orjson.loads(packet.data).get("data")
                    if data is None:  # a notice: what the panel is told, with no rows
                        stats.notices += 1
                        continue
                    times_ms = data["values"][0]
                    stats.packets += 1
                    stats.rows += len(times_ms)
                    if latency:
                        nanos = data.get("nanos") or [None]
                        rest = nanos[0] or [0] * len(times_ms)
                        stats.latencies_ms.extend(
                            (arrived_ns - (t * 1_000_000 + r)) / 1e6
                            for t, r in zip(times_ms, rest, strict=True)
                        )
            except grpc.aio.AioRpcError as error:
                stats.failed.append(error.code().name)
            finally:
                call.cancel()

        opener = asyncio.create_task(open_window())
        tasks = [asyncio.create_task(one(p)) for p in paths]
        # A stream that never sends would keep us waiting: bound the read, count the silent ones.
        _, pending = await asyncio.wait(tasks, timeout=STARTUP_LIMIT_S + warmup_s + measure_s + 10)
        stats.silent = len(pending)
        for task in [*pending, opener]:
            task.cancel()
        await asyncio.gather(*pending, opener, return_exceptions=True)
    return stats, measure_s


class RawPlugin:
    """Holds channels at the broker the way a plugin process does, without gRPC: for
    benchmarks of the workers alone. Also reads the rows from the broker's XPUB."""

    def __init__(self, control_endpoint: str, run_dir: str) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.control = self.ctx.socket(zmq.DEALER)
        self.control.linger = 0
        self.control.connect(control_endpoint)
        self.frames = self.ctx.socket(zmq.SUB)
        self.frames.linger = 0
        self.frames.rcvhwm = 0
        self.frames.connect(f"ipc://{run_dir}/frames-out")
        self.frames.subscribe(b"")
        self.plugin_id = uuid.uuid4().hex[:12]
        self.epochs: dict[str, int] = {}
        """The channels held, with the epoch the broker last told (as a plugin tells it back)."""

    def hold(self, channels: list[str]) -> None:
        self.epochs = {channel: self.epochs.get(channel, 0) for channel in channels}
        self.control.send_multipart(protocol.encode(protocol.PluginHeartbeat(self.plugin_id, self.epochs)))

    def renew(self) -> None:
        """Renew the lease, and learn the epochs the broker tells (or it tells them every time)."""
        self.hold(list(self.epochs))
        while self.control.poll(0):
            message = protocol.decode(self.control.recv_multipart())
            if isinstance(message, protocol.Placement | protocol.SubscribeReply) and message.epoch:
                self.epochs[message.channel] = message.epoch

    def status(self) -> protocol.StatusReply:
        request = uuid.uuid4().hex
        self.control.send_multipart(protocol.encode(protocol.StatusRequest(request)))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.control.poll(100):
                reply = protocol.decode(self.control.recv_multipart())
                if isinstance(reply, protocol.StatusReply) and reply.request_id == request:
                    return reply
        raise TimeoutError("the broker did not answer")

    @classmethod
    def on(cls, pipeline: Pipeline) -> RawPlugin:
        """One for `pipeline`, once the broker knows all its workers."""
        plugin = cls(pipeline.control_endpoint, str(pipeline.run_dir))
        try:
            plugin.wait_workers(len(pipeline.workers))
        except TimeoutError:
            plugin.close()
            raise
        return plugin

    def wait_workers(self, count: int, timeout_s: float = 30) -> None:
        """Until the broker knows `count` workers: it places channels only on workers it knows."""
        deadline = time.monotonic() + timeout_s
        while len(self.status().workers) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the broker knows fewer than {count} workers")
            time.sleep(0.05)

    def wait_running(self, count: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while sum(int(w["channels"] or 0) for w in self.status().workers.values()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} channels running")
            self.renew()
            time.sleep(0.2)

    def count_rows(self, seconds: float, *, tick_ns: int = 0) -> tuple[int, int, list[float]]:
        """Rows received in `seconds`; with `tick_ns`, also skipped ticks and arrival lateness (ms)."""
        rows = skipped = 0
        last: dict[str, int] = {}
        lateness: list[float] = []
        end = time.monotonic() + seconds
        renew_at = time.monotonic() + 1
        while (now := time.monotonic()) < end:
            if now > renew_at:
                self.renew()
                renew_at = now + 1
            if not self.frames.poll(100):
                continue
            while True:
                try:
                    channel, message = protocol.decode_rows(self.frames.recv(zmq.NOBLOCK))
                except zmq.Again:
                    break
                rows += message.count
                if tick_ns:
                    newest = message.first_tick + message.count - 1
                    lateness.append((time.time_ns() - specs(channel).tick_time(newest)) / 1e6)
                    previous = last.get(channel)
                    if previous is not None:
                        skipped += max(0, message.first_tick - previous - 1)
                    last[channel] = newest
        return rows, skipped, lateness

    def close(self) -> None:
        self.hold([])
        self.control.close()
        self.frames.close()
        self.ctx.term()


@functools.cache
def specs(channel: str) -> ChannelSpec:
    """The spec of a channel path the broker placed (cached: read for every data frame)."""
    return parse_path(channel, UNCHECKED)
