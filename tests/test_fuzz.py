"""Property tests: hostile input is refused with our own errors, never a crash."""

import json
import math
import string
from collections.abc import Iterator

import msgpack
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import Pipeline, plugin_of

from services.broker.registry import Registry
from services.common import protocol
from services.common.channels import ChannelSpec, Limits, parse_path
from services.common.errors import InvalidChannel, ProtocolError
from services.hostemu.dataframe import StreamingFrame
from services.hostemu.host import Datasource, PluginHost
from services.plugin import frames
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin.query import parse_query

LIMITS = Limits()


@pytest.fixture(scope="module")
def fuzz_host(pipeline: Pipeline) -> Iterator[PluginHost]:
    """One plugin process for all generated subscriptions (hypothesis runs them in one test)."""
    with plugin_of(pipeline) as host:
        yield host


PATH_ALPHABET = string.ascii_letters + string.digits + "-._/=+eE"
numbers = st.decimals(min_value=-(10**12), max_value=10**12, places=3, allow_nan=False, allow_infinity=False)


@settings(max_examples=2000)
@given(
    st.one_of(
        st.text(PATH_ALPHABET, max_size=60), st.text(max_size=60), st.from_regex(r"custom-.*", fullmatch=True)
    )
)
def test_any_path_parses_to_a_canonical_spec_or_is_refused_clearly(path: str) -> None:
    try:
        spec = parse_path(path, LIMITS)
    except InvalidChannel as exc:
        assert str(exc)
        return
    assert parse_path(spec.path, LIMITS) == spec
    assert spec.lower < spec.upper
    assert LIMITS.min_tick_ms <= spec.tick_ms <= LIMITS.max_tick_ms


@settings(max_examples=1000)
@given(numbers, numbers, st.decimals(min_value=1, max_value=3_600_000, places=3), st.integers(1, 10))
def test_every_valid_spec_round_trips_through_its_path(lower, upper, tick, series) -> None:  # type: ignore[no-untyped-def]
    if lower >= upper:
        lower, upper = upper - 1, lower
    spec = ChannelSpec(float(lower), float(upper), float(tick), "sine", series).check(LIMITS)
    assert parse_path(spec.path, LIMITS) == spec


wire_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=3000)
@given(
    st.binary(min_size=0, max_size=3),
    st.one_of(
        st.binary(max_size=64),
        st.dictionaries(st.text(max_size=12), wire_values, max_size=6).map(msgpack.packb),
    ),
    st.integers(1, 3),
)
def test_any_wire_message_decodes_or_raises_protocol_error(header: bytes, payload: bytes, parts: int) -> None:
    candidates = [header, payload, payload][:parts]
    try:
        message = protocol.decode(candidates)
    except ProtocolError as exc:
        assert str(exc)
        return
    assert protocol.decode(protocol.encode(message)) == message


@settings(max_examples=3000)
@given(
    st.sampled_from(list(protocol.MsgType)), st.dictionaries(st.text(max_size=12), wire_values, max_size=6)
)
def test_well_framed_messages_with_any_fields_never_crash(kind: protocol.MsgType, body: dict) -> None:  # type: ignore[type-arg]
    try:
        protocol.decode([bytes((protocol.PROTOCOL_VERSION, kind)), msgpack.packb(body)])
    except ProtocolError as exc:
        assert str(exc)


cells = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=1000)
@given(
    st.integers(1, 40).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 2**62), min_size=n, max_size=n),
            st.lists(st.lists(cells, min_size=n, max_size=n), min_size=1, max_size=3),
        )
    )
)
def test_frame_json_is_strict_json_and_decodes_to_the_same_rows(
    rows: tuple[list[int], list[list[float]]],
) -> None:
    times, columns = rows
    spec = ChannelSpec(0, 1, 1, "uniform", len(columns))
    packet = frames.packet(times, columns, frames.schema(spec))
    orjson.loads(packet)  # orjson refuses NaN/Infinity tokens, as Go's json.Valid does
    frame = StreamingFrame()
    frame.push(packet)
    assert frame.times_ns == times
    for decoded, original in zip(frame.values[1:], columns, strict=True):
        for a, b in zip(decoded, original, strict=True):
            assert a == b or (math.isnan(a) and math.isnan(b))


operations = st.lists(
    st.tuples(
        st.sampled_from(["subscribe", "unsubscribe", "plugin_heartbeat", "worker_heartbeat", "expire"]),
        st.sampled_from(["p1", "p2", "p3"]),
        st.sampled_from(["w1", "w2"]),
        st.sampled_from(["custom-0-1-100", "custom-0-1-50-sine-2", "custom-1-0-5", "custom-0-1-10"]),
        st.floats(0, 3),
    ),
    max_size=40,
)


@settings(max_examples=500)
@given(operations)
def test_registry_keeps_its_books_consistent_under_any_sequence(ops: list) -> None:  # type: ignore[type-arg]
    registry = Registry(LIMITS, plugin_lease_s=1.0, worker_lease_s=0.5, max_channels=3)
    now = 0.0
    for op, plugin, worker, path, step in ops:
        now += step
        if op == "subscribe":
            registry.subscribe(plugin, path, now)
        elif op == "unsubscribe":
            registry.unsubscribe(plugin, path)
        elif op == "plugin_heartbeat":
            registry.plugin_heartbeat(plugin, [path], now)
        elif op == "worker_heartbeat":
            running = [p for p, c in registry.channels.items() if c.worker == worker]
            registry.worker_heartbeat(protocol.WorkerHeartbeat(worker, running), worker.encode(), now)
        else:
            registry.expire(now)
        assert len(registry.channels) <= registry.max_channels
        for worker_id, w in registry.workers.items():
            assert w.assigned == {p for p, c in registry.channels.items() if c.worker == worker_id}
            assert math.isclose(w.load, sum(registry.channels[p].load for p in w.assigned), abs_tol=1e-6)
        for p, channel in registry.channels.items():
            assert channel.holders or channel.orphan_since is not None
            assert channel.worker is None or channel.worker in registry.workers
            assert all(p in registry.plugins[h].channels for h in channel.holders)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def dump(value: object) -> bytes:
    """The stdlib writer, on purpose: it writes huge integers and NaN tokens a real client might send."""
    return json.dumps(value).encode()


query_keys = st.sampled_from(
    ["lowerLimit", "upperLimit", "tickInterval", "generator", "series", "refId", "x"]
)


@settings(max_examples=3000)
@given(
    st.one_of(
        st.dictionaries(query_keys, json_values, max_size=6).map(dump),
        st.binary(max_size=40),
        json_values.map(dump),
    )
)
def test_any_query_json_becomes_a_checked_spec_or_a_clear_refusal(raw: bytes) -> None:
    try:
        spec = parse_query(raw, LIMITS)
    except InvalidChannel as exc:
        assert str(exc)
        return
    assert parse_path(spec.path, LIMITS) == spec


@settings(max_examples=300, deadline=None)
@given(
    st.text(PATH_ALPHABET, max_size=40)
    | st.from_regex(r"custom-[0-9.-]{1,12}-[0-9.-]{1,8}-[0-9.]{1,6}", fullmatch=True),
    st.binary(max_size=200),
)
def test_the_real_plugin_answers_any_subscription_without_falling_over(
    fuzz_host: PluginHost, path: str, data: bytes
) -> None:
    request = pb.SubscribeStreamRequest(pluginContext=Datasource().context(), path=path, data=data)
    response = fuzz_host.stream.SubscribeStream(request, timeout=10)
    assert response.status in (pb.SubscribeStreamResponse.OK, pb.SubscribeStreamResponse.NOT_FOUND)
    assert fuzz_host.process.poll() is None
