"""Property tests: hostile input is refused with our own errors, never a crash."""

import dataclasses
import itertools
import json
import math
import string
import time
import types
import typing
from collections.abc import Iterator

import msgpack
import orjson
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from support import Pipeline, plugin_of

from services.broker.registry import Registry
from services.cli.status import fetch
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
        st.sampled_from(
            ["subscribe", "unsubscribe", "plugin_heartbeat", "worker_heartbeat", "stale_claim", "expire"]
        ),
        st.sampled_from(["p1", "p2", "p3"]),
        st.sampled_from(["w1", "w2"]),
        st.sampled_from(["custom-0-1-100", "custom-0-1-50-sine-2", "custom-1-0-5", "custom-0-1-10"]),
        st.floats(0, 3),
        st.integers(0, 12),
    ),
    max_size=40,
)


@settings(max_examples=500)
@given(operations)
def test_registry_keeps_its_books_consistent_under_any_sequence(ops: list) -> None:  # type: ignore[type-arg]
    epochs = iter(range(1, 1000))
    registry = Registry(
        LIMITS, plugin_lease_s=1.0, worker_lease_s=0.5, max_channels=3, epoch_clock=lambda: next(epochs)
    )
    now = 0.0
    for op, plugin, worker, path, step, epoch in ops:
        now += step
        registry.outbox.clear()
        if op == "subscribe":
            registry.subscribe(plugin, path, now, plugin.encode())
        elif op == "unsubscribe":
            registry.unsubscribe(plugin, path)
        elif op == "plugin_heartbeat":
            registry.plugin_heartbeat(plugin, {path: epoch}, now, plugin.encode())
        elif op in ("worker_heartbeat", "stale_claim"):
            running = {p: c.epoch for p, c in registry.channels.items() if c.worker == worker}
            if op == "stale_claim":  # a worker woken from a freeze claims a channel under any epoch
                running[path] = epoch
            registry.worker_heartbeat(protocol.WorkerHeartbeat(worker, running), worker.encode(), now)
        else:
            registry.expire(now)
        assert len(registry.channels) <= registry.max_channels
        for worker_id, w in registry.workers.items():
            assert w.assigned == {p for p, c in registry.channels.items() if c.worker == worker_id}
            assert math.isclose(w.load, sum(registry.channels[p].load for p in w.assigned), abs_tol=1e-6)
        for p, channel in registry.channels.items():
            assert channel.holders or p in registry.orphans
            assert channel.worker is None or channel.worker in registry.workers
            assert all(p in registry.plugins[h].channels for h in channel.holders)
        assert all(not registry.channels[p].holders for p in registry.orphans)
        starts = {}
        for to, message in registry.outbox:
            if isinstance(message, protocol.StartTicker):
                starts.setdefault(message.channel, set()).add(to)
        assert all(len(workers) == 1 for workers in starts.values()), "one placement per channel at a time"
        for _, message in registry.outbox:
            if isinstance(message, protocol.Placement):
                assert message.epoch == registry.channels[message.channel].epoch, (
                    "holders told the current one"
                )


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


def conforms(value: object, hint: object) -> bool:
    """An independent reading of a field's annotation (typing's, not the protocol's checks)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, arg) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(conforms(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            conforms(key, args[0]) and conforms(item, args[1]) for key, item in value.items()
        )
    if hint is type(None):
        return value is None
    if hint in (int, float) and isinstance(value, bool):
        return False
    if hint is float:
        return isinstance(value, int | float)
    return isinstance(value, hint)  # type: ignore[arg-type]


def shaped(hint: object) -> st.SearchStrategy[object]:
    """Values of the right outer type whose elements may be anything."""
    origin = typing.get_origin(hint)
    if origin is list:
        return st.lists(wire_values, max_size=4)
    if origin is dict:
        return st.dictionaries(
            st.text(max_size=8), wire_values | st.dictionaries(st.text(max_size=4), wire_values)
        )
    return wire_values


MESSAGE_CLASSES = [protocol._CLASSES[int(kind)] for kind in protocol.MsgType]
well_framed = st.sampled_from(MESSAGE_CLASSES).flatmap(
    lambda cls: st.fixed_dictionaries(
        {name: shaped(hint) for name, hint in typing.get_type_hints(cls).items() if name != "TYPE"}
    ).map(lambda body: (cls, body))
)


@settings(max_examples=3000)
@given(well_framed)
def test_messages_with_every_field_but_wrong_elements_are_refused_or_wholly_valid(
    sample: tuple[type[protocol.Message], dict[str, object]],
) -> None:
    cls, body = sample
    try:
        message = protocol.decode([bytes((protocol.PROTOCOL_VERSION, cls.TYPE)), msgpack.packb(body)])
    except ProtocolError as exc:
        assert str(exc)
        return
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(message):
        assert conforms(getattr(message, field.name), hints[field.name]), field.name
    # and what the broker's books do with any valid message never raises
    registry = Registry(LIMITS, plugin_lease_s=1.0, worker_lease_s=0.5, max_channels=3)
    if isinstance(message, protocol.WorkerHeartbeat):
        registry.worker_heartbeat(message, b"w", 0.0)
    elif isinstance(message, protocol.PluginHeartbeat):
        registry.plugin_heartbeat(message.plugin, message.channels, 0.0, b"p")
    elif isinstance(message, protocol.Subscribe):
        registry.subscribe(message.plugin, message.channel, 0.0, b"p")


HOSTILE_CONTROL: list[tuple[int, object]] = [  # each of these killed the broker on 6cb18ab
    (protocol.MsgType.PLUGIN_HEARTBEAT, {"plugin": "evil", "channels": [[1]]}),
    (protocol.MsgType.PLUGIN_HEARTBEAT, {"plugin": "evil", "channels": [5]}),
    (protocol.MsgType.PLUGIN_HEARTBEAT, {"plugin": "evil", "channels": {"custom-0-1-100": "x"}}),
    (protocol.MsgType.WORKER_HEARTBEAT, {"worker": "evil", "channels": [5]}),
    (protocol.MsgType.WORKER_HEARTBEAT, {"worker": "evil", "channels": {"custom-0-1-100": [1]}}),
    (protocol.MsgType.SUBSCRIBE, {"plugin": "evil", "channel": 5}),
    (protocol.MsgType.UNSUBSCRIBE, {"plugin": ["x"], "channel": "custom-0-1-100"}),
    (protocol.MsgType.STATUS_REQUEST, {"request_id": {"a": 1}}),
    (protocol.MsgType.ROWS, {"first_tick": 1, "epoch": 1, "columns": [1]}),
    (protocol.MsgType.START_TICKER, {"channel": "custom-0-1-100", "epoch": "now"}),
    (protocol.MsgType.PLACEMENT, {"channel": None, "epoch": 1}),
]


def test_the_real_broker_survives_every_malformed_control_message(pipeline: Pipeline) -> None:
    broker_pid = pipeline.broker.pid
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    hostile = ctx.socket(zmq.DEALER)
    hostile.linger = 0
    hostile.connect(pipeline.control_endpoint)
    try:
        sent = 0
        for _ in range(100):
            for kind, body in HOSTILE_CONTROL:
                hostile.send_multipart([bytes((protocol.PROTOCOL_VERSION, kind)), msgpack.packb(body)])
                sent += 1
        hostile.send_multipart(
            [b"\x03\x0a", b"\x00" * (protocol.MAX_REQUEST_BYTES + 1)]
        )  # over the size limit
        time.sleep(1.0)
        status = fetch(pipeline.control_endpoint, 2)
    finally:
        hostile.close()
        ctx.term()
    print(
        f"\n[figure] {sent} malformed control messages of {len(HOSTILE_CONTROL)} kinds: broker pid unchanged"
    )
    assert pipeline.broker.poll() is None
    assert pipeline.broker.pid == broker_pid
    assert len(status.workers) == 2, "the workers still heartbeat through it"
    assert "evil" not in str(status.channels)


FAKE = 666.0


def test_bad_data_frames_cost_only_themselves(pipeline: Pipeline, fuzz_host: PluginHost) -> None:
    channel = "custom-0-1-20"
    stream = fuzz_host.run_stream(channel)
    stream.read_rows(5)
    epoch = int(fetch(pipeline.control_endpoint, 2).channels[channel]["epoch"] or 0)
    spec = parse_path(channel, LIMITS)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    forger = ctx.socket(zmq.PUB)
    forger.linger = 0
    forger.connect(f"ipc://{pipeline.run_dir}/frames-in")
    fake = protocol.float_bytes([FAKE])
    header = bytes((protocol.PROTOCOL_VERSION, protocol.MsgType.ROWS))
    hour_ahead = spec.last_tick(time.time_ns() + 3600 * 10**9)
    frames_by_reason = {
        "malformed": [
            protocol.topic(channel)
            + header
            + msgpack.packb({"first_tick": 1, "epoch": epoch, "columns": [5]}),
            protocol.topic(channel)
            + header
            + msgpack.packb({"first_tick": 1, "epoch": epoch, "columns": ["x"]}),
            protocol.topic(channel) + b"\x03\x01\xc1",
        ],
        "shape": [protocol.rows_frame(channel, spec.last_tick(time.time_ns()), epoch, [fake, fake])],
        "epoch": [protocol.rows_frame(channel, spec.last_tick(time.time_ns()) + 1, epoch - 1, [fake])],
        "future": [protocol.rows_frame(channel, hour_ahead, epoch, [protocol.float_bytes([FAKE] * 1000)])],
    }
    try:
        time.sleep(0.3)  # the PUB's subscriptions arrive from the proxy
        for _ in range(20):
            for forged in frames_by_reason.values():
                for frame in forged:
                    forger.send(frame)
            time.sleep(0.02)
        frame = stream.read_rows(60)
    finally:
        stream.cancel()
        forger.close()
        ctx.term()
    metrics = fuzz_host.collect_metrics()
    counts = {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "zmqstream_plugin_frames_refused_total"
    }
    print(f"\n[figure] forged data frames refused by reason: {counts}")
    assert FAKE not in frame.column("value")
    steps = {b - a for a, b in itertools.pairwise(frame.times_ns)}
    assert steps == {spec.tick_ns}, "every genuine tick once, none made up"
    assert all(counts[reason] > 0 for reason in frames_by_reason)
    assert fuzz_host.check_health().status == pb.CheckHealthResponse.OK
