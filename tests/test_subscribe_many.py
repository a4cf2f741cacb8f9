"""A burst of stream starts tells the broker its channels in one Subscribe, not one message each
(broker_connection.TELL_AFTER_S)."""

import asyncio

import zmq
import zmq.asyncio
from support import Pipeline
from test_frame_subscriptions import FakeBroker

from services.cli.status import fetch
from services.common import protocol
from services.common.channels import Limits, parse_path
from services.common.config import PluginSettings
from services.plugin.broker_connection import BrokerConnections

CHANNELS = 100


def test_the_broker_subscribes_every_channel_of_one_subscribe_and_answers_each() -> None:
    pipeline = Pipeline(0)
    ctx = zmq.Context()
    paths = [f"custom-{i}-{i + 1}-1000" for i in range(CHANNELS)]
    try:
        plugin = ctx.socket(zmq.DEALER)
        plugin.connect(pipeline.control_endpoint)
        plugin.send_multipart(
            protocol.encode(protocol.Subscribe("p-burst", paths[0], [*paths[1:], "custom-9"]))
        )
        replies = {}
        while len(replies) < CHANNELS + 1:
            assert plugin.poll(5000), f"only {len(replies)} replies"
            reply = protocol.expect(plugin.recv_multipart(), protocol.SubscribeReply)
            replies[reply.channel] = reply.error
        held = fetch(pipeline.control_endpoint, 5).channels
    finally:
        ctx.destroy(linger=0)
        pipeline.close()
    assert all(replies[path] == "" for path in paths)
    assert replies.get("custom-9"), "a bad channel among them is refused alone"
    assert sorted(held) == sorted(paths)
    assert all(info["subscribers"] == 1 for info in held.values())


async def burst() -> list[protocol.Message]:
    ctx = zmq.asyncio.Context()
    broker = FakeBroker(ctx)
    settings = PluginSettings.load(["--control-endpoint", broker.control_endpoint], env={})
    brokers = BrokerConnections(settings)
    connection = brokers.get()
    specs = [parse_path(f"custom-0-1-{1000 + i}", Limits()) for i in range(CHANNELS + 1)]
    try:
        queues = []
        for spec in specs:  # a turn of the loop each, as panels opening a few ms apart
            queues.append(connection.hold(spec))
            await asyncio.sleep(0)
        connection.release(specs[-1].path, queues[-1])  # and one stream already gone
        while not any(isinstance(m, protocol.Subscribe) for m in broker.told):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        return broker.told
    finally:
        await brokers.close()
        broker.task.cancel()
        ctx.destroy(linger=0)


def test_channels_held_moments_apart_go_to_the_broker_in_one_subscribe() -> None:
    told = asyncio.run(burst())
    subscribes = [m for m in told if isinstance(m, protocol.Subscribe)]
    assert len(subscribes) == 1
    assert [subscribes[0].channel, *subscribes[0].more] == [f"custom-0-1-{1000 + i}" for i in range(CHANNELS)]
    assert not [m for m in told if isinstance(m, protocol.Unsubscribe)], (
        "released before told: nothing to undo"
    )


async def restarted(count: int) -> list[str]:
    """Channels the plugin subscribes in Subscribes once its broker's Welcome names a new instance."""
    ctx = zmq.asyncio.Context()
    broker = FakeBroker(ctx)
    settings = PluginSettings.load(["--control-endpoint", broker.control_endpoint], env={})
    brokers = BrokerConnections(settings)
    connection = brokers.get()
    specs = [parse_path(f"custom-0-1-{1000 + i}", Limits()) for i in range(count)]
    try:
        for spec in specs:
            connection.hold(spec)
        while not any(isinstance(m, protocol.Subscribe) for m in broker.told):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        before = len(broker.told)
        broker.instance = "fake-restarted"
        told: list[str] = []
        for _ in range(60):  # the next heartbeat's Welcome (1 s), then its Subscribes
            await asyncio.sleep(0.05)
            told = [
                channel
                for m in broker.told[before:]
                if isinstance(m, protocol.Subscribe)
                for channel in (m.channel, *m.more)
            ]
            if len(told) >= count:
                break
        return told
    finally:
        await brokers.close()
        broker.task.cancel()
        ctx.destroy(linger=0)


def test_a_restarted_broker_is_told_every_held_channel_in_subscribes() -> None:
    """A broker adds at most MAX_SUBSCRIBE_CHANNELS new channels per plugin heartbeat, so a
    plugin holding more tells a restarted broker all of them in Subscribes at its Welcome."""
    count = protocol.MAX_SUBSCRIBE_CHANNELS + 500
    told = asyncio.run(restarted(count))
    assert sorted(told) == sorted(f"custom-0-1-{1000 + i}" for i in range(count))
