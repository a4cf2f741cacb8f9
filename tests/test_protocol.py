"""The wire format: every message round-trips, and every malformed one is a ProtocolError."""

import struct

import msgpack
import pytest

from services.common import protocol
from services.common.errors import ProtocolError
from services.common.fields import Column

SAMPLES: list[protocol.Message] = [
    protocol.Rows(
        17, 1_700_000_000_000_000_000, [protocol.float_bytes([0.5, 1.5]), protocol.float_bytes([-1.0, 2.0])]
    ),
    protocol.WorkerHeartbeat("w1", {"custom-0-1-100": 5}, pid=4242, ticks_late=3),
    protocol.PluginHeartbeat("p1", {"custom-0-1-100": 5, "custom-10-20-100": 0}),
    protocol.Welcome("ipc:///tmp/zs/frames-in", "b0b0"),
    protocol.Welcome(
        "tcp://*:5572", "b0b0", "site-b", {"publish": "tcp://*:5573", "history": "tcp://*:5574"}
    ),
    protocol.WorkerHeartbeat(
        "recorder",
        {},
        role=protocol.RECORDER,
        endpoints={"publish": "ipc:///tmp/zs/publish"},
        pipeline="/tmp/zs",
    ),
    protocol.Goodbye("p1"),
    protocol.Subscribe("p1", "custom-10-20-100"),
    protocol.Subscribe("p1", "custom-10-20-100", ["custom-0-1-100", "custom-0-2-100"]),
    protocol.SubscribeReply("custom-10-20-100", "refused"),
    protocol.Placement("custom-10-20-100", 6),
    protocol.Unsubscribe("p1", "custom-10-20-100"),
    protocol.StartTicker("custom-10-20-100", 6),
    protocol.StopTicker("custom-10-20-100", 5),
    protocol.StatusRequest("r1"),
    protocol.StatusReply(
        "r1",
        "b0b0",
        {"w1": {"pid": 1, "channels": 1, "load": 10.0, "ticks_late": 0}},
        {"custom-10-20-100": {"worker": "w1", "subscribers": 2, "epoch": 6}},
        plugins=2,
    ),
    protocol.Events(
        6, [1, 2], [Column("temp", "float64", [21.5, None]), Column("door", "string", ["open", "shut"])]
    ),
    protocol.Publish(3, "pub-room", [5], [Column("ok", "bool", [True]), Column("n", "int64", [-(2**63)])]),
    protocol.PublishReply(3, 0, "field 'n' is int64, the channel's schema has it as string", {"n": "string"}),
    protocol.HistoryRequest("h1", "pub-room", 0, 10, 1000),
    protocol.HistoryReply("h1", "pub-room", [5], [Column("n", "int64", [1])], truncated=True),
]


def frames_of(message_type: int, payload: object, version: int = protocol.PROTOCOL_VERSION) -> list[bytes]:
    return [bytes((version, message_type)), msgpack.packb(payload)]


def refusal(frames: list[bytes]) -> str:
    with pytest.raises(ProtocolError) as refused:
        protocol.decode(frames)
    return str(refused.value)


def test_the_samples_cover_every_message_type() -> None:
    assert {type(m).TYPE for m in SAMPLES} == set(protocol.MsgType)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: protocol.Message) -> None:
    frames = protocol.encode(message)
    assert frames[0] == bytes((protocol.PROTOCOL_VERSION, message.TYPE))
    assert protocol.decode(frames) == message
    assert protocol.expect(frames, type(message)) == message


def test_the_payload_is_a_map_of_field_names() -> None:
    _, payload = protocol.encode(protocol.Subscribe("p1", "custom-0-1-100"))
    assert msgpack.unpackb(payload) == {"plugin": "p1", "channel": "custom-0-1-100", "more": []}


def test_another_protocol_version_is_refused_not_guessed() -> None:
    other = protocol.PROTOCOL_VERSION + 1
    frames = frames_of(protocol.MsgType.STOP_TICKER, {"channel": "c"}, version=other)
    assert refusal(frames) == f"protocol version {other}, this process speaks {protocol.PROTOCOL_VERSION}"


@pytest.mark.parametrize("message_type", [0, len(protocol.MsgType) + 1, 255])
def test_an_unknown_message_type_is_refused(message_type: int) -> None:
    assert refusal(frames_of(message_type, {})) == f"unknown message type {message_type}"


def test_unknown_keys_are_ignored_so_a_newer_peer_can_add_fields() -> None:
    frames = frames_of(protocol.MsgType.SUBSCRIBE, {"plugin": "p1", "channel": "c", "priority": [1, 2]})
    assert protocol.decode(frames) == protocol.Subscribe("p1", "c")


def test_absent_fields_with_defaults_take_them() -> None:
    frames = frames_of(protocol.MsgType.WORKER_HEARTBEAT, {"worker": "w1", "channels": {}})
    assert protocol.decode(frames) == protocol.WorkerHeartbeat("w1", {}, pid=0, ticks_late=0)
    welcome = protocol.expect(frames_of(protocol.MsgType.WELCOME, {"frames_endpoint": "e"}), protocol.Welcome)
    assert welcome == protocol.Welcome("e", broker="")


def test_a_missing_required_field_is_named() -> None:
    frames = frames_of(protocol.MsgType.SUBSCRIBE, {"plugin": "p1"})
    assert refusal(frames) == "Subscribe: missing field 'channel'"


@pytest.mark.parametrize(
    ("message_type", "payload", "reason"),
    [
        (
            protocol.MsgType.SUBSCRIBE,
            {"plugin": 5, "channel": "c"},
            "Subscribe.plugin: expected str, got int",
        ),
        (protocol.MsgType.SUBSCRIBE, {"plugin": b"p", "channel": "c"}, "expected str, got bytes"),
        (
            protocol.MsgType.WORKER_HEARTBEAT,
            {"worker": "w", "channels": {}, "pid": True},
            "WorkerHeartbeat.pid: expected int, got bool",
        ),
        (
            protocol.MsgType.WORKER_HEARTBEAT,
            {"worker": "w", "channels": {}, "pid": "7"},
            "expected int, got str",
        ),
        (
            protocol.MsgType.WORKER_HEARTBEAT,
            {"worker": "w", "channels": "custom-0-1-100"},
            "WorkerHeartbeat.channels: expected a map, got str",
        ),
        # The elements, not only the outer type: each of these killed the broker before protocol 3.
        (
            protocol.MsgType.WORKER_HEARTBEAT,
            {"worker": "w", "channels": {"custom-0-1-100": "5"}},
            "WorkerHeartbeat.channels: ['custom-0-1-100']: expected int, got str",
        ),
        (
            protocol.MsgType.WORKER_HEARTBEAT,
            {"worker": "w", "channels": {"custom-0-1-100": 2**63}},
            "is outside int64",
        ),
        (protocol.MsgType.PLUGIN_HEARTBEAT, {"plugin": "p", "channels": [[1]]}, "expected a map, got list"),
        (
            protocol.MsgType.PLUGIN_HEARTBEAT,
            {"plugin": "p", "channels": {"c": [1]}},
            "expected int, got list",
        ),
        (
            protocol.MsgType.SUBSCRIBE,
            {"plugin": "p", "channel": 5},
            "Subscribe.channel: expected str, got int",
        ),
        (protocol.MsgType.SUBSCRIBE, {"plugin": "p", "channel": "c" * 1025}, "the limit is 1024"),
        (
            protocol.MsgType.SUBSCRIBE,
            {"plugin": "p", "channel": "c", "more": ["d", 5]},
            "Subscribe.more: [1]: expected str, got int",
        ),
        (
            protocol.MsgType.SUBSCRIBE,
            {"plugin": "p", "channel": "c", "more": "d"},
            "Subscribe.more: expected a list, got str",
        ),
        (
            protocol.MsgType.STATUS_REPLY,
            {"request_id": "r", "broker": "b", "workers": [], "channels": {}, "plugins": 0},
            "StatusReply.workers: expected a map, got list",
        ),
        (
            protocol.MsgType.STATUS_REPLY,
            {"request_id": "r", "broker": "b", "workers": {"w": {"pid": [1]}}, "channels": {}, "plugins": 0},
            "StatusReply.workers: ['w']: ['pid']: expected str, got list",
        ),
    ],
)
def test_wrong_field_types_are_refused(message_type: int, payload: object, reason: str) -> None:
    assert reason in refusal(frames_of(message_type, payload))


@pytest.mark.parametrize("payload", [[1, 2], "text", 7, None, b"bytes"])
def test_a_payload_that_is_not_a_map_is_refused(payload: object) -> None:
    assert "payload must be a map" in refusal(frames_of(protocol.MsgType.STATUS_REQUEST, payload))


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",  # a byte msgpack never uses
        b"\x82\xa1a",  # a map cut short
        msgpack.packb({"request_id": "r"}) + b"\x00",  # trailing bytes
        b"\xa2\xff\xfe",  # a str that is not UTF-8
        b"\x81\x01\xa1x",  # a map with an int key
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion items
        b"\x91" * 100_000,  # nested deeper than any stack
    ],
    ids=["empty", "never-used", "truncated", "trailing", "bad-utf8", "int-key", "huge-array", "deep"],
)
def test_garbage_payloads_are_protocol_errors(payload: bytes) -> None:
    header = bytes((protocol.PROTOCOL_VERSION, protocol.MsgType.STATUS_REQUEST))
    with pytest.raises(ProtocolError):
        protocol.decode([header, payload])


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([], "expected 2 frames (header, payload), got 0"),
        ([b"\x01\x0a"], "expected 2 frames (header, payload), got 1"),
        ([b"t\x00", b"\x01\x0a", b"\x80"], "expected 2 frames (header, payload), got 3"),
        ([b"\x01", b"\x80"], "header must be 2 bytes, got 1"),
        ([b"\x01\x0a\x00", b"\x80"], "header must be 2 bytes, got 3"),
    ],
)
def test_badly_framed_messages_are_refused(frames: list[bytes], reason: str) -> None:
    assert refusal(frames) == reason


def test_expect_insists_on_the_class() -> None:
    frames = protocol.encode(protocol.StartTicker("c", 1))
    with pytest.raises(ProtocolError, match="expected StopTicker, got StartTicker"):
        protocol.expect(frames, protocol.StopTicker)


def test_the_topic_terminator_keeps_prefixes_apart() -> None:
    short, long = protocol.topic("custom-1-2-10"), protocol.topic("custom-1-2-100")
    assert short == b"custom-1-2-10\x00"
    assert not long.startswith(short), "a SUB for the 10 ms channel would receive the 100 ms one"
    frame = protocol.rows_frame("custom-1-2-100", 1, 1, [protocol.float_bytes([0.5])])
    assert frame.startswith(long), "the data frame starts with what a SUB subscribes to"
    assert not frame.startswith(short)


def test_a_data_frame_is_one_frame_that_decodes_to_its_channel_and_rows() -> None:
    columns = [protocol.float_bytes([0.5, 0.25]), protocol.float_bytes([1.0, -2.0])]
    frame = protocol.rows_frame("custom-1-2-100", 10, 3, columns)
    channel, rows = protocol.decode_rows(frame)
    assert (channel, rows) == ("custom-1-2-100", protocol.Rows(10, 3, columns))
    assert rows.count == 2
    assert [protocol.floats(column) for column in rows.columns] == [[0.5, 0.25], [1.0, -2.0]]
    channel, header, _ = protocol.split_data_frame(frame)
    assert (channel, header) == ("custom-1-2-100", bytes((protocol.PROTOCOL_VERSION, protocol.MsgType.ROWS)))


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"custom-1-2-100", "lacks its topic terminator"),
        (b"custom-1-2-100\x00", "header must be 2 bytes"),
        (b"custom-1-2-100\x00\x01\x01" + msgpack.packb({"times_ns": [1], "columns": [[1.0]]}), "version 1"),
        (b"custom-1-2-100\x00" + b"".join(protocol.encode(protocol.StartTicker("c", 1))), "expected Rows"),
    ],
)
def test_a_bad_data_frame_is_refused_with_its_reason(frame: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        protocol.decode_rows(frame)


def test_a_column_that_is_not_numbers_cannot_be_encoded() -> None:
    with pytest.raises(TypeError):
        protocol.float_bytes([0.5, "six"])  # type: ignore[list-item]


def test_lists_beyond_max_items_are_refused_while_reading_not_after() -> None:
    header = bytes((protocol.PROTOCOL_VERSION, protocol.MsgType.STATUS_REQUEST))
    at_limit = msgpack.packb({"request_id": "r", "extra": [None] * protocol.MAX_ITEMS})
    assert protocol.decode([header, at_limit]) == protocol.StatusRequest("r")
    over = msgpack.packb({"request_id": "r", "extra": [None] * (protocol.MAX_ITEMS + 1)})
    assert "exceeds max_array_len" in refusal([header, over])


ROWS_HEADER = bytes((protocol.PROTOCOL_VERSION, protocol.MsgType.ROWS))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "0 bytes, shorter than its 22-byte head"),
        (struct.pack("<qqHI", 1, 1, 0, 1), "0 series of 1 ticks"),
        (struct.pack("<qqHI", 1, 1, 1, 0), "1 series of 0 ticks"),
        (struct.pack("<qqHI", 1, 1, 1025, 1) + bytes(8 * 1025), "1025 series"),
        (struct.pack("<qqHI", 1, 1, 1, 100_001), "100001 ticks"),
        (struct.pack("<qqHI", 1, 1, 2, 3) + bytes(8 * 5), "40 bytes of values for 2 series of 3 ticks"),
        (struct.pack("<qqHI", 1, 1, 1, 1) + bytes(9), "9 bytes of values for 1 series of 1 ticks"),
        (msgpack.packb({"first_tick": 1, "epoch": 1, "columns": [5]}), "Rows:"),
    ],
)
def test_a_rows_payload_is_checked_by_its_lengths(payload: bytes, reason: str) -> None:
    assert reason in refusal([ROWS_HEADER, payload])


def test_rows_values_are_little_endian_float64_series_after_series() -> None:
    frames = protocol.encode(
        protocol.Rows(7, 9, [protocol.float_bytes([1.0, 2.0]), protocol.float_bytes([3.0, 4.0])])
    )
    assert frames[1] == struct.pack("<qqHI4d", 7, 9, 2, 2, 1.0, 2.0, 3.0, 4.0)
