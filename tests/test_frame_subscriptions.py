"""The plugin's frames socket and fan-out against a real broker-side XPUB: a subscription per
channel held, one for every topic once many are (broker_connection.SUBSCRIBE_ALL_AT), and one
packet built for every stream of a channel that sends the same rows."""

import asyncio
import time

import zmq
import zmq.asyncio

from services.common import protocol
from services.common.channels import Limits, parse_path
from services.common.config import PluginSettings
from services.plugin import backfill
from services.plugin.broker_connection import SUBSCRIBE_ALL_AT, BrokerConnections
from services.plugin.display import Display
from services.plugin.metrics import PluginMetrics
from services.plugin.queues import RowQueue
from services.plugin.rowstreams import RowStreams

EPOCH = 7
ALL = b""


class FakeBroker:
    """A ROUTER that welcomes the plugin and places every channel at EPOCH; an XPUB that
    reports every subscription message the plugin's SUB socket sends (XPUB_VERBOSE)."""

    def __init__(self, ctx: zmq.asyncio.Context) -> None:
        self.control = ctx.socket(zmq.ROUTER)
        self.control_endpoint = f"tcp://127.0.0.1:{self.control.bind_to_random_port('tcp://127.0.0.1')}"
        self.frames = ctx.socket(zmq.XPUB)
        self.frames.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.frames.setsockopt(zmq.XPUB_VERBOSER, 1)
        self.frames_endpoint = f"tcp://127.0.0.1:{self.frames.bind_to_random_port('tcp://127.0.0.1')}"
        self.told: list[protocol.Message] = []
        """Every control message the plugin sent, in order."""
        self.instance = "fake"
        """The broker instance its Welcome names: a new one is a restarted broker."""
        self.task = asyncio.create_task(self._answer())

    async def _answer(self) -> None:
        while True:
            peer, *frames = await self.control.recv_multipart()
            message = protocol.decode(frames)
            self.told.append(message)
            replies: list[protocol.Message] = [protocol.Welcome(self.frames_endpoint, self.instance)]
            if isinstance(message, protocol.Subscribe):
                replies += [
                    protocol.SubscribeReply(channel, epoch=EPOCH)
                    for channel in (message.channel, *message.more)
                ]
            if isinstance(
                message, protocol.PluginHeartbeat
            ):  # a Subscribe sent before the connection is lost
                replies += [
                    protocol.Placement(channel, EPOCH)
                    for channel, epoch in message.channels.items()
                    if not epoch
                ]
            for reply in replies:
                await self.control.send_multipart([peer, *protocol.encode(reply)])

    async def subscriptions(self, quiet_s: float = 0.3, first_s: float = 0.3) -> list[tuple[bool, bytes]]:
        """(subscribe?, topic) of each subscription message, the first within `first_s`, then
        until none came for `quiet_s`."""
        seen = []
        while await self.frames.poll((quiet_s if seen else first_s) * 1000):
            message = await self.frames.recv()
            seen.append((message[:1] == b"\x01", message[1:]))
        return seen


def topics(seen: list[tuple[bool, bytes]], subscribe: bool) -> set[bytes]:
    return {topic for on, topic in seen if on == subscribe}


async def scenario() -> None:
    ctx = zmq.asyncio.Context()
    broker = FakeBroker(ctx)
    settings = PluginSettings.load(["--control-endpoint", broker.control_endpoint], env={})
    brokers = BrokerConnections(settings)
    connection = brokers.get()
    specs = [parse_path(f"custom-0-1-{1000 + i}", Limits()) for i in range(2 * SUBSCRIBE_ALL_AT)]
    queues: list[RowQueue] = []
    try:
        queues.append(connection.hold(specs[0]))
        first = await broker.subscriptions(first_s=5)  # the SUB connects on the Welcome
        assert first == [(True, protocol.topic(specs[0].path))]
        queues += [connection.hold(spec) for spec in specs[1:]]
        held_many = await broker.subscriptions()
        assert len(held_many) == SUBSCRIBE_ALL_AT - 1, "channels one by one up to the limit, then one for all"
        assert topics(held_many, True) == {
            protocol.topic(s.path) for s in specs[1 : SUBSCRIBE_ALL_AT - 1]
        } | {ALL}

        last = specs[-1]  # held with no topic of its own: its frames still arrive, through the one for all
        await broker.frames.send(protocol.rows_frame(last.path, 5, EPOCH, [protocol.float_bytes([0.5])]))
        taken = await asyncio.wait_for(queues[-1].take(10, 0), 5)
        assert [first for first, _ in taken.segments] == [5]

        others = protocol.rows_frame(
            "custom-0-1-5", 5, EPOCH, [b"not floats"]
        )  # a channel not held, malformed
        await broker.frames.send(others)
        await broker.frames.send(protocol.rows_frame(last.path, 6, EPOCH, [protocol.float_bytes([0.5])]))
        await asyncio.wait_for(queues[-1].take(10, 5), 5)
        assert connection.frames_refused["malformed"] == 0, "not ours: passed over, as a topic filter would"

        keep = SUBSCRIBE_ALL_AT // 2 - 1
        for spec, queue in zip(specs[keep:], queues[keep:], strict=True):
            connection.release(spec.path, queue)
        few = await broker.subscriptions()
        assert topics(few, False) == {protocol.topic(s.path) for s in specs[keep : SUBSCRIBE_ALL_AT - 1]} | {
            ALL
        }
        assert topics(few, True) == set(), "the channels kept had their topics all along"
        assert connection.subscribed == {s.path for s in specs[:keep]}
    finally:
        await brokers.close()
        broker.task.cancel()
        ctx.destroy(linger=0)


def test_many_channels_held_cost_one_frames_subscription_not_one_each() -> None:
    asyncio.run(scenario())


async def variants_scenario() -> tuple[bytes, bytes, bytes, bytes]:
    ctx = zmq.asyncio.Context()
    broker = FakeBroker(ctx)
    argv = ["--control-endpoint", broker.control_endpoint, "--max-clock-skew-ms", "20000"]
    brokers = BrokerConnections(PluginSettings.load(argv, env={}))
    rows = RowStreams(brokers, PluginMetrics(brokers), backfill.Ledger())
    spec = parse_path("custom-0-1-10000", Limits())  # a tick of 10 s: both streams start at the same one
    connection = brokers.get()
    celsius, kelvin = (
        rows.run(("1", "ds", spec.path + f"/{unit}"), spec, Display(unit=unit), connection)
        for unit in ("celsius", "kelvin")
    )
    try:
        firsts = [await anext(celsius), await anext(kelvin)]  # the latest tick, each with its own schema
        await broker.subscriptions(first_s=5)  # connected
        while connection.holders[spec.path].epoch != EPOCH:  # noqa: ASYNC110 - placed (by the next heartbeat)
            await asyncio.sleep(0.05)
        due = spec.last_tick(time.time_ns())
        await broker.frames.send(
            protocol.rows_frame(spec.path, due + 1, EPOCH, [protocol.float_bytes([0.5])])
        )
        return (*firsts, await asyncio.wait_for(anext(celsius), 5), await asyncio.wait_for(anext(kelvin), 5))
    finally:
        await celsius.aclose()
        await kelvin.aclose()
        await brokers.close()
        broker.task.cancel()
        ctx.destroy(linger=0)


def test_display_variants_of_a_channel_share_its_packets() -> None:
    first_celsius, first_kelvin, celsius, kelvin = asyncio.run(variants_scenario())
    assert b"celsius" in first_celsius, "each its own schema"
    assert b"kelvin" in first_kelvin
    assert b"schema" not in celsius
    assert celsius is kelvin, "one packet built for both"
