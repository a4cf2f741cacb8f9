"""Two sites: two pipelines in two run folders, one plugin, a datasource for each; no row crosses.

The plugin's own settings point at site A; site B's datasource names B's broker. Each site's
recorder holds a `pub-site` channel of its own rows. Every call through a datasource must
answer from its own site: QueryData and SubscribeStream (the recorder's history),
PublishStream (into the recorder), RunStream (the broker's frames, then its recorder's).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from recording import recording_pipeline
from support import Pipeline, plugin_of, wait_for_workers

from services.cli.status import fetch
from services.hostemu.arrowframe import read_frame
from services.hostemu.dataframe import StreamingFrame
from services.hostemu.host import Datasource, PluginHost, data_query
from services.plugin._proto import pluginv2_pb2 as pb
from services.publish import Publisher

CHANNEL = "pub-site"
PATHS = ("custom-0-1-100", "custom-0-2-100")


@pytest.fixture(scope="module")
def sites() -> Iterator[tuple[Pipeline, Pipeline]]:
    with recording_pipeline() as a, recording_pipeline() as b:
        yield a, b


def datasources(b: Pipeline) -> dict[str, Datasource]:
    """Site A's datasource (the plugin's default broker) and site B's (its Broker address)."""
    return {
        "a": Datasource(uid="site-a", json_data={"allowPublish": True}),
        "b": Datasource(uid="site-b", json_data={"brokerAddress": b.control_endpoint, "allowPublish": True}),
    }


def publish_into(site: Pipeline, name: str, at_ms: int) -> None:
    with Publisher(site.publish_endpoint) as publisher:
        publisher.publish(CHANNEL, [{"time": at_ms, "site": name}])


def recorded(host: PluginHost, ds: Datasource) -> list[str]:
    """The `site` column QueryData answers through `ds` for the last minute."""
    now_ms = time.time_ns() // 1_000_000
    query = data_query("A", {"kind": "published", "channel": "site"}, now_ms - 60_000, now_ms + 1000)
    response = host.query_data([query], ds).responses["A"]
    assert response.status == 200, response.error
    frame = read_frame(response.frames[0])
    assert "site" in frame.names, frame.meta
    return list(frame.field("site").values)


def test_every_call_through_a_datasource_answers_from_its_own_site(sites: tuple[Pipeline, Pipeline]) -> None:
    a, b = sites
    now_ms = time.time_ns() // 1_000_000
    publish_into(a, "a", now_ms - 3000)
    publish_into(b, "b", now_ms - 3000)
    ds = datasources(b)
    with plugin_of(a) as host:
        wait_for_workers(host, 1, ds["b"])
        assert recorded(host, ds["a"]) == ["a"]
        assert recorded(host, ds["b"]) == ["b"], "site B's datasource read another site's recorder"
        for name in ("a", "b"):
            initial = StreamingFrame()
            initial.push(host.subscribe(CHANNEL, ds[name]).data)
            assert initial.column("site") == [name]

        # PublishStream through B's datasource lands in B's recorder only.
        context = ds["b"].context()
        body = orjson.dumps({"time": now_ms - 2000, "site": "b-grafana"})
        reply = host.stream.PublishStream(
            pb.PublishStreamRequest(pluginContext=context, path=CHANNEL, data=body)
        )
        assert reply.status == pb.PublishStreamResponse.OK
        assert recorded(host, ds["b"]) == ["b", "b-grafana"]
        assert recorded(host, ds["a"]) == ["a"]

        # A stream through B: B's history after what its subscriber got, then B's live rows; A's never.
        stream = host.run_stream(CHANNEL, ds["b"])
        try:
            stream.read_rows(1)
            for offset in range(1, 6):
                publish_into(a, f"a-live-{offset}", now_ms - 1000 + offset)
                publish_into(b, f"b-live-{offset}", now_ms - 1000 + offset)
            stream.read_rows(6)
            assert stream.frame.column("site") == ["b-grafana", *(f"b-live-{i}" for i in range(1, 6))]
        finally:
            stream.cancel()


def test_two_datasources_on_one_broker_spelled_two_ways_hold_their_channels_both(
    sites: tuple[Pipeline, Pipeline], tmp_path: Path
) -> None:
    """Datasource A uses the plugin's broker; B names the same broker through another path to its
    folder (as /var/run is /run). The plugin has two connections to it: on main they shared the
    plugin's name, so each one's heartbeat released the other's channels, every second."""
    a, _ = sites
    other_way = tmp_path / "var-run"
    other_way.symlink_to(a.run_dir.parent)
    address = a.control_endpoint.replace(str(a.run_dir.parent), str(other_way))
    assert address != a.control_endpoint
    ds_a = Datasource(uid="one-broker-a")
    ds_b = Datasource(uid="one-broker-b", json_data={"brokerAddress": address})
    with plugin_of(a) as host:
        wait_for_workers(host, 1, ds_b)
        streams = [host.run_stream(PATHS[0], ds_a), host.run_stream(PATHS[1], ds_b)]
        try:
            for stream in streams:
                stream.read_rows(2)
            seen: list[dict[str, int]] = []
            for _ in range(12):  # three heartbeats of each connection
                channels = fetch(a.control_endpoint, 2).channels
                seen.append({path: int(channels.get(path, {}).get("subscribers") or 0) for path in PATHS})
                time.sleep(0.25)
        finally:
            for stream in streams:
                stream.cancel()
    assert all(counts == dict.fromkeys(PATHS, 1) for counts in seen), seen
