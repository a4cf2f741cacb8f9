"""CallResource through the real plugin: the JSON API the frontend uses to offer choices."""

from collections.abc import Iterator

import pytest
from support import dead_broker_datasource, running_pipeline

from services.common.config import PluginSettings
from services.common.waveforms import BUILTINS, registry
from services.hostemu.host import Datasource, PluginHost
from services.plugin._proto import pluginv2_pb2 as pb


@pytest.fixture(scope="module")
def host() -> Iterator[PluginHost]:
    with running_pipeline() as plugin:
        yield plugin


def test_generators_lists_names_and_descriptions(host: PluginHost) -> None:
    reply = host.call_resource("generators")
    assert reply.code == 200
    assert reply.headers["content-type"] == ["application/json"]
    generators = reply.json()["generators"]
    assert [g["name"] for g in generators][: len(BUILTINS)] == list(BUILTINS)
    assert all(isinstance(g["description"], str) and g["description"] for g in generators)


def test_generators_leaves_out_hidden_ones_which_still_run(host: PluginHost) -> None:
    assert "burn" in registry()  # the benchmarks' generator, installed by `make setup`
    assert "burn" not in [g["name"] for g in host.call_resource("generators").json()["generators"]]
    assert host.subscribe("custom-0-1-1000-burn-1").status == pb.SubscribeStreamResponse.OK


def test_limits_are_the_datasource_effective_limits(host: PluginHost) -> None:
    defaults = PluginSettings.load([], env={}).limits
    assert host.call_resource("limits").json() == {
        "minTickMs": defaults.min_tick_ms,
        "maxTickMs": defaults.max_tick_ms,
        "maxSeries": defaults.max_series,
    }
    tight = Datasource(uid="tight", json_data={"minTickMs": 50, "maxSeries": 3})
    assert host.call_resource("limits", ds=tight).json() == {
        "minTickMs": 50,
        "maxTickMs": 3600000,
        "maxSeries": 3,
    }


def test_channels_is_the_broker_view(host: PluginHost) -> None:
    stream = host.run_stream("custom-0-1-50-sine-2")
    stream.read_rows(2)
    try:
        reply = host.call_resource("channels/")  # a trailing slash is the same resource
    finally:
        stream.cancel()
    assert reply.code == 200
    assert reply.headers["content-type"] == ["application/json"]
    view = reply.json()
    assert {"path": "custom-0-1-50-sine-2", "worker": "w1", "subscribers": 1} in view["channels"]
    assert [w["id"] for w in view["workers"]] == ["w1"]
    assert view["plugins"] == 1
    assert set(view) == {"broker", "endpoint", "plugins", "channels", "workers"}


def test_unknown_paths_are_404_and_other_methods_405_in_json(host: PluginHost) -> None:
    missing = host.call_resource("nope")
    assert missing.code == 404
    assert missing.headers["content-type"] == ["application/json"]
    assert "no resource 'nope'" in missing.json()["error"]
    post = host.call_resource("generators", method="POST", body=b"{}")
    assert post.code == 405
    assert post.headers["allow"] == ["GET"]
    assert "use GET" in post.json()["error"]


def test_channels_without_a_broker_is_503_not_a_crash(host: PluginHost) -> None:
    reply = host.call_resource("channels", ds=dead_broker_datasource())
    assert reply.code == 503
    assert "broker unavailable" in reply.json()["error"]
    assert host.call_resource("generators").code == 200
    assert host.process.poll() is None
