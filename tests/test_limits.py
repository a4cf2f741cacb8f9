"""Limits a datasource sets in its jsonData, enforced by the real plugin process."""

import time

import grpc
import pytest
from support import running_pipeline

from services.hostemu.host import Datasource, PluginHost
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin.quota import ChannelQuota

LIMITED = Datasource(uid="limited", json_data={"maxChannels": 2, "minTickMs": 50, "maxSeries": 2})
CHANNELS = ["custom-0-1-50", "custom-0-1-60", "custom-0-1-70"]


def test_quota_counts_channels_not_streams() -> None:
    quota = ChannelQuota()
    quota.enter("ds", "a")
    quota.enter("ds", "a")
    assert quota.admits("ds", "b", 2)
    quota.enter("ds", "b")
    assert not quota.admits("ds", "c", 2)
    assert quota.admits("ds", "a", 2)
    assert quota.admits("other", "c", 2)
    quota.leave("ds", "a")
    assert not quota.admits("ds", "c", 2), "one stream of channel a is still running"
    quota.leave("ds", "a")
    assert quota.admits("ds", "c", 2)


@pytest.fixture(scope="module")
def host() -> PluginHost:
    with running_pipeline(1) as host:
        yield host  # type: ignore[misc]


def test_a_datasource_at_its_channel_limit_is_refused_a_new_channel_until_one_ends(host: PluginHost) -> None:
    first, second = (host.run_stream(path, LIMITED) for path in CHANNELS[:2])
    first.read_rows(2)
    second.read_rows(2)
    assert host.subscribe(CHANNELS[2], LIMITED).status == pb.SubscribeStreamResponse.PERMISSION_DENIED
    assert host.subscribe(CHANNELS[0], LIMITED).status == pb.SubscribeStreamResponse.OK
    assert host.subscribe(CHANNELS[2]).status == pb.SubscribeStreamResponse.OK, (
        "other datasources are not limited"
    )
    third = host.run_stream(CHANNELS[2], LIMITED)
    with pytest.raises(grpc.RpcError) as refused:
        third.read_rows(1)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "maximum of 2 channels" in str(refused.value.details())
    first.cancel()  # the plugin sees the cancellation asynchronously, as with Grafana
    deadline = time.monotonic() + 5
    while host.subscribe(CHANNELS[2], LIMITED).status != pb.SubscribeStreamResponse.OK:
        assert time.monotonic() < deadline, "the ended stream still counts against the limit"
        time.sleep(0.05)
    again = host.run_stream(CHANNELS[2], LIMITED)
    assert len(again.read_rows(2).times_ns) >= 2
    again.cancel()
    second.cancel()


@pytest.mark.parametrize(
    "path",
    ["custom-0-1-20", "custom-0-1-100-sine-3"],
    ids=["tick under the datasource's minTickMs", "series over its maxSeries"],
)
def test_datasource_limits_tighten_the_plugin_limits(host: PluginHost, path: str) -> None:
    assert host.subscribe(path, LIMITED).status == pb.SubscribeStreamResponse.NOT_FOUND
    assert host.subscribe(path).status == pb.SubscribeStreamResponse.OK
