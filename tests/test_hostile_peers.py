"""Hostile peers and datasources: what they cost the broker and the plugin is bounded."""

import os
import time
import uuid

import grpc
import pytest
import zmq
from support import Pipeline, memory_kib, plugin_of, streams_refused

from services.cli.status import fetch
from services.common import protocol
from services.hostemu.host import Datasource
from services.plugin._proto import pluginv2_pb2 as pb

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


def elsewhere(i: int) -> Datasource:
    """A datasource naming a broker address of its own, where nothing listens."""
    return Datasource(uid=f"elsewhere-{i}", json_data={"brokerAddress": f"ipc:///tmp/zs-nobody-{i}/control"})


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_broker_connections_are_capped_and_closed_when_idle(pipeline: Pipeline) -> None:
    with plugin_of(pipeline, {"max_brokers": "4", "broker_idle_s": "1"}) as host:
        baseline = open_fds(host.process.pid)
        held = host.run_stream("custom-0-1-100", elsewhere(0))  # holds its connection however long
        answers = [host.check_health(elsewhere(i)).message for i in range(1, 40)]
        assert all("Broker unreachable" in message for message in answers[:2]), answers[:2]
        refused = answers[2:]
        assert all("maximum of 4 broker connections" in message for message in refused), refused[0]
        assert "point datasources at fewer brokers" in refused[0]
        with pytest.raises(grpc.RpcError) as stream_refused:
            host.run_stream("custom-0-1-100", elsewhere(99)).read_rows(1)
        assert stream_refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "maximum of 4 broker connections" in str(stream_refused.value.details())
        assert streams_refused(host.collect_metrics())[("run", "brokers")] == 1
        crowded = open_fds(host.process.pid)

        time.sleep(2)  # idle for longer than broker_idle_s
        calm = open_fds(host.process.pid)
        again = [host.check_health(elsewhere(i)).message for i in (50, 51, 52)]
        assert all("Broker unreachable" in message for message in again[:2]), "the idle two closed"
        assert "maximum of 4" in again[2], "the held one stayed open"
        assert host.check_health().status == pb.CheckHealthResponse.OK
        held.cancel()
    print(f"\n[figure] 40 broker addresses, cap 4: plugin fds {baseline} → {crowded} → {calm} once idle")
    assert calm < crowded


def broker_peer(pipeline: Pipeline, ctx: zmq.Context[zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
    """A DEALER on the broker's control socket, once the broker has bound it."""
    peer = ctx.socket(zmq.DEALER)
    peer.linger = 0
    deadline = time.monotonic() + 10
    while not (pipeline.run_dir / "control").exists():
        assert time.monotonic() < deadline, "no broker"
        time.sleep(0.05)
    peer.connect(pipeline.control_endpoint)
    return peer


def test_a_subscribe_of_more_channels_than_one_message_may_carry_is_refused_whole() -> None:
    """One Subscribe carries at most MAX_SUBSCRIBE_CHANNELS: on main a peer's single message of
    100,000 channels made the broker try every one in one turn (a warning logged for each refused)."""
    pipeline = Pipeline(0)
    ctx = zmq.Context()
    try:
        peer = broker_peer(pipeline, ctx)
        paths = [f"custom-{i}-{i + 1}-1000" for i in range(protocol.MAX_SUBSCRIBE_CHANNELS + 1)]
        peer.send_multipart(protocol.encode(protocol.Subscribe("greedy", paths[0], paths[1:])))
        peer.send_multipart(protocol.encode(protocol.Subscribe("greedy", paths[0], paths[1:-1])))
        deadline = time.monotonic() + 10
        while len(fetch(pipeline.control_endpoint, 5).channels) < len(paths) - 1:
            assert time.monotonic() < deadline, "the Subscribe within the limit was not served"
            time.sleep(0.1)
        channels = fetch(pipeline.control_endpoint, 5).channels
        log = (pipeline.run_dir / "broker.log").read_text()
    finally:
        ctx.destroy(linger=0)
        pipeline.close()
    assert paths[-1] not in channels, "the longer message was taken in part"
    assert len(channels) == protocol.MAX_SUBSCRIBE_CHANNELS
    assert f"Subscribe: {len(paths)} channels, at most {protocol.MAX_SUBSCRIBE_CHANNELS} in one" in log


def test_a_heartbeat_of_more_new_channels_than_a_subscribe_adds_only_so_many() -> None:
    """A PluginHeartbeat lists every channel its plugin holds: on main one of 30,000 new channels
    (728 KB) kept the broker from every other peer for 0.9 s and took all its 10,000 channels."""
    pipeline = Pipeline(0)
    ctx = zmq.Context()
    try:
        peer = broker_peer(pipeline, ctx)
        paths = {f"custom-{i}-{i + 1}-1000": 0 for i in range(3 * protocol.MAX_SUBSCRIBE_CHANNELS)}
        peer.send_multipart(protocol.encode(protocol.PluginHeartbeat("greedy", paths)))
        assert peer.poll(10_000), "no answer to the heartbeat"
        channels = fetch(pipeline.control_endpoint, 5).channels
    finally:
        ctx.destroy(linger=0)
        pipeline.close()
    assert len(channels) == protocol.MAX_SUBSCRIBE_CHANNELS
