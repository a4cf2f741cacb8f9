"""A generator installed from examples/zmqstream-example-generator runs in the workers like a built-in."""

import time
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, distribution

import pytest
from support import query_model, running_pipeline

from services.common.channels import ChannelSpec
from services.common.waveforms import ENTRY_POINT_GROUP
from services.hostemu.arrowframe import read_frame
from services.hostemu.host import PluginHost, data_query

PACKAGE = "zmqstream-example-generator"


@pytest.fixture(scope="module")
def host() -> Iterator[PluginHost]:
    try:
        entry_points = distribution(PACKAGE).entry_points
    except PackageNotFoundError:
        pytest.fail(f"{PACKAGE} is not installed: run `make python` (it pip-installs examples/{PACKAGE})")
    assert [(e.group, e.name) for e in entry_points] == [(ENTRY_POINT_GROUP, "sawtooth")]
    with running_pipeline() as plugin:
        yield plugin


def sawtooth(lower: float, upper: float, tick_ns: int, time_ns: int, series: int) -> float:
    """The example's documented values: a ramp over 20 ticks, series staggered by 5 ticks."""
    return lower + (upper - lower) * ((time_ns // tick_ns + 5 * series) % 20) / 20


def test_the_custom_generator_streams_from_the_workers(host: PluginHost) -> None:
    path = "custom-0-20-25-sawtooth-2"
    stream = host.run_stream(path)
    frame = stream.read_rows(40, timeout_s=10)
    stream.cancel()
    assert frame.names == ["time", "value", "value"]
    for series in (0, 1):
        expected = [sawtooth(0, 20, 25_000_000, t, series) for t in frame.times_ns]
        assert frame.value_columns[series] == expected
    assert host.call_resource("channels").code == 200


def test_the_custom_generator_is_offered_and_queried_like_a_builtin(host: PluginHost) -> None:
    generators = {g["name"]: g["description"] for g in host.call_resource("generators").json()["generators"]}
    assert "sawtooth" in generators
    assert "sawtooth" in generators["sawtooth"]
    end = time.time_ns() // 1_000_000
    query = data_query("A", query_model(-1, 1, 100, "sawtooth", 1), end - 2000, end)
    response = host.query_data([query]).responses["A"]
    assert response.status == 200
    frame = read_frame(response.frames[0])
    spec = ChannelSpec(-1, 1, 100, "sawtooth", 1)
    first, last = spec.first_tick((end - 2000) * 1_000_000), spec.last_tick(end * 1_000_000)
    assert frame.times_ns == [spec.tick_time(k) for k in range(first, last + 1)]
    assert len(frame.times_ns) >= 20, "2 s of a 100 ms channel"
    assert frame.field("value").values == [sawtooth(-1, 1, 100_000_000, t, 0) for t in frame.times_ns]
