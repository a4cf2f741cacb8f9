"""Limits a datasource sets in its jsonData, enforced by the real plugin process."""

import time

import grpc
import pytest
from support import running_pipeline

from services.common.channels import ChannelSpec, Limits, parse_path
from services.common.config import PluginSettings
from services.hostemu.host import Datasource, PluginHost
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin.admission import Admission
from services.plugin.datasource import DatasourceConfig

LIMITED = Datasource(uid="limited", json_data={"maxChannels": 2, "minTickMs": 50, "maxSeries": 2})
CHANNELS = ["custom-0-1-50", "custom-0-1-60", "custom-0-1-70"]


def spec(path: str) -> ChannelSpec:
    return parse_path(path, Limits())


def test_admission_counts_channels_not_streams() -> None:
    admission = Admission(plugin_values_per_s=1e9)
    a, b, c = spec("custom-0-1-10"), spec("custom-0-1-20"), spec("custom-0-1-30")
    admission.enter("ds", a)
    admission.enter("ds", a)
    assert admission.refusal("ds", b, 2, 1e9) is None
    admission.enter("ds", b)
    refusal = admission.refusal("ds", c, 2, 1e9)
    assert refusal is not None
    assert refusal.budget == "channels"
    assert admission.refusal("ds", a, 2, 1e9) is None
    assert admission.refusal("other", c, 2, 1e9) is None
    admission.leave("ds", a)
    assert admission.refusal("ds", c, 2, 1e9) is not None, "one stream of channel a is still running"
    admission.leave("ds", a)
    assert admission.refusal("ds", c, 2, 1e9) is None


def test_admission_charges_values_per_second_to_the_datasource_and_the_plugin() -> None:
    admission = Admission(plugin_values_per_s=25_000)
    fast = spec("custom-0-1-1-uniform-10")  # 10,000 values/s
    admission.enter("ds", fast)
    assert admission.refusal("ds", fast, 100, 10_000) is None, "a channel it streams costs nothing more"
    refusal = admission.refusal("ds", spec("custom-0-1-1000"), 100, 10_000)
    assert refusal is not None
    assert refusal.budget == "datasource_rate"
    assert "streams 10,000 values/s of its budget of 10,000" in refusal.reason
    admission.enter("other", spec("custom-0-1-1-uniform-9"))
    refusal = admission.refusal("third", spec("custom-0-1-1-uniform-7"), 100, 1e9)
    assert refusal is not None
    assert refusal.budget == "plugin_rate"
    assert "the plugin streams 19,000 values/s of its budget of 25,000" in refusal.reason
    admission.leave("ds", fast)
    assert admission.refusal("third", spec("custom-0-1-1-uniform-7"), 100, 1e9) is None
    assert admission.values_per_s == 9_000


def test_a_datasource_may_tighten_its_rate_budget_but_not_loosen_it() -> None:
    settings = PluginSettings.load([], env={})
    for asked, granted in [(5_000, 5_000), (10**9, 50_000), ("lots", 50_000)]:
        context = Datasource(uid="x", json_data={"maxValuesPerSecond": asked}).context()
        assert DatasourceConfig.from_context(context, settings).max_values_per_s == granted


def refused_at_subscribe(host: PluginHost, path: str) -> bool:
    """Whether LIMITED's SubscribeStream of `path` is refused: OK with the reason as its notice."""
    response = host.subscribe(path, LIMITED)
    assert response.status == pb.SubscribeStreamResponse.OK
    return b"maximum of 2 channels" in response.data


@pytest.fixture(scope="module")
def host() -> PluginHost:
    with running_pipeline(1) as host:
        yield host  # type: ignore[misc]


def test_a_datasource_at_its_channel_limit_is_refused_a_new_channel_until_one_ends(host: PluginHost) -> None:
    first, second = (host.run_stream(path, LIMITED) for path in CHANNELS[:2])
    first.read_rows(2)
    second.read_rows(2)
    assert refused_at_subscribe(host, CHANNELS[2]), "the reason goes to the panel as a notice, not a 403"
    assert not refused_at_subscribe(host, CHANNELS[0])
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
    while refused_at_subscribe(host, CHANNELS[2]):
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
