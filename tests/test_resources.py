"""CallResource through the real plugin: the JSON API the frontend uses to offer choices."""

import time
from collections.abc import Iterator

import pytest
from recording import now_ms, recording_pipeline
from support import Pipeline, dead_broker_datasource, plugin_of, running_pipeline

from services.common.config import PluginSettings
from services.common.waveforms import BUILTINS, registry
from services.hostemu.host import Datasource, PluginHost
from services.plugin._proto import pluginv2_pb2 as pb
from services.publish.client import Publisher


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


@pytest.fixture(scope="module")
def recorded() -> Iterator[tuple[Pipeline, PluginHost]]:
    """A broker, a worker and a recorder holding pub-lab.door, and the plugin in front of them."""
    with recording_pipeline() as pipeline, plugin_of(pipeline) as plugin:
        with Publisher(pipeline.publish_endpoint) as publisher:
            row = {"time": now_ms(), "temp": 21.5, "room": "kitchen", "open": True}
            publisher.publish("pub-lab.door", [row])
        yield pipeline, plugin


def test_streams_lists_published_channels_sources_and_generators_with_their_fields(
    recorded: tuple[Pipeline, PluginHost],
) -> None:
    _, plugin = recorded
    stream = plugin.run_stream("source-host-1000")  # a running source channel: the recorder records it
    try:
        deadline = time.monotonic() + 20
        while True:
            reply = plugin.call_resource("streams")
            assert reply.code == 200
            found = reply.json()
            host_fields = next(s["fields"] for s in found["sources"] if s["name"] == "host")
            if host_fields or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        stream.cancel()
    assert found["problems"] == []
    assert {
        "name": "lab.door",
        "fields": [
            {"name": "temp", "type": "number"},
            {"name": "room", "type": "string"},
            {"name": "open", "type": "boolean"},
        ],
    } in found["published"]
    assert {"name": "cpu", "type": "number"} in host_fields
    assert [g["name"] for g in found["generators"]][: len(BUILTINS)] == list(BUILTINS)
    assert "burn" not in [g["name"] for g in found["generators"]]


def test_streams_without_a_broker_still_lists_what_is_installed_and_says_what_is_missing(
    host: PluginHost,
) -> None:
    reply = host.call_resource("streams", ds=dead_broker_datasource())
    assert reply.code == 200
    found = reply.json()
    assert found["published"] == []
    assert "host" in [s["name"] for s in found["sources"]]
    assert found["generators"]
    (problem,) = found["problems"]
    assert problem.startswith("broker unavailable, so no published channel is listed")
