"""Every ZeroMQ message zmqstream sends, and how it travels.

On the control plane a message is the multipart `[header, payload]`. On the data plane
(Rows) it is one frame, `topic + header + payload`: SUB filtering matches a prefix of the
first frame, and one frame instead of three costs each hop (worker, proxy, plugin) a
third of the per-message work.

- `header` is two bytes: PROTOCOL_VERSION, then the MsgType. A receiver rejects another
  version with ProtocolError instead of guessing.
- `payload` is a msgpack map whose keys are the dataclass's field names. Decoders ignore
  keys they do not know and fill absent keys that have defaults, so a newer peer can add
  optional fields without breaking an older one.
- `topic` is the canonical channel path followed by NUL: SUB filtering is a byte-prefix
  match, and the terminator keeps `custom-1-2-10` from also matching `custom-1-2-100`.

Sockets (names from services.common.endpoints):

    worker  DEALER ──control──▶ ROUTER broker ◀──control── DEALER plugin
    worker  PUB ──frames_in──▶ XSUB broker XPUB ──frames_out──▶ SUB plugin

| message          | from → to        | meaning                                                 |
|------------------|------------------|---------------------------------------------------------|
| Rows             | worker → plugin  | ticks of one channel: times (ns) and one column/series  |
| WorkerHeartbeat  | worker → broker  | alive; the channels it runs (full state, or unchanged)  |
| PluginHeartbeat  | plugin → broker  | alive; the channels it holds (full state, renews lease) |
| Welcome          | broker → either  | reply to a heartbeat: where to send or read frames      |
| Subscribe        | plugin → broker  | the plugin holds a channel now                          |
| SubscribeReply   | broker → plugin  | accepted, or why not                                    |
| Unsubscribe      | plugin → broker  | the plugin no longer holds a channel                    |
| StartTicker      | broker → worker  | run this channel                                        |
| StopTicker       | broker → worker  | stop this channel                                       |
| StatusRequest    | anyone → broker  | ask for the broker's view                               |
| StatusReply      | broker → asker   | workers, channels, subscribers                          |

Heartbeats carry full state, so a restarted broker rebuilds its view from them (a worker
sends its full list at once when a Welcome names a broker it did not know).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import msgpack

from services.common.errors import ProtocolError

PROTOCOL_VERSION = 2
"""2: data frames became one frame (topic, header and payload) instead of three."""
TOPIC_END = b"\x00"
Pack = Callable[[Any], bytes]


class MsgType(enum.IntEnum):
    ROWS = 1
    WORKER_HEARTBEAT = 2
    PLUGIN_HEARTBEAT = 3
    WELCOME = 4
    SUBSCRIBE = 5
    SUBSCRIBE_REPLY = 6
    UNSUBSCRIBE = 7
    START_TICKER = 8
    STOP_TICKER = 9
    STATUS_REQUEST = 10
    STATUS_REPLY = 11


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    TYPE: ClassVar[MsgType]


@dataclasses.dataclass(frozen=True, slots=True)
class Rows(Message):
    """Consecutive ticks of one channel; `columns[i][j]` is series i at `times_ns[j]`."""

    TYPE = MsgType.ROWS
    times_ns: list[int]
    columns: list[list[float]]


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerHeartbeat(Message):
    TYPE = MsgType.WORKER_HEARTBEAT
    worker: str
    channels: list[str]
    pid: int = 0
    ticks_late: int = 0
    """Ticks published later than the worker's lateness budget since it started."""
    unchanged: bool = False
    """`channels` is left empty: the same as in the last full heartbeat to this broker.
    Listing 10,000 channels five times a second costs the worker ~2 ms/s of stalls."""


@dataclasses.dataclass(frozen=True, slots=True)
class PluginHeartbeat(Message):
    TYPE = MsgType.PLUGIN_HEARTBEAT
    plugin: str
    channels: list[str]


@dataclasses.dataclass(frozen=True, slots=True)
class Welcome(Message):
    TYPE = MsgType.WELCOME
    frames_endpoint: str
    """frames_in for a worker, frames_out for a plugin, as the broker advertises it."""
    broker: str = ""
    """The broker's instance id: a new one means the broker restarted."""


@dataclasses.dataclass(frozen=True, slots=True)
class Subscribe(Message):
    TYPE = MsgType.SUBSCRIBE
    plugin: str
    channel: str


@dataclasses.dataclass(frozen=True, slots=True)
class SubscribeReply(Message):
    TYPE = MsgType.SUBSCRIBE_REPLY
    channel: str
    error: str = ""
    """Empty when the broker accepted the subscription."""


@dataclasses.dataclass(frozen=True, slots=True)
class Unsubscribe(Message):
    TYPE = MsgType.UNSUBSCRIBE
    plugin: str
    channel: str


@dataclasses.dataclass(frozen=True, slots=True)
class StartTicker(Message):
    TYPE = MsgType.START_TICKER
    channel: str


@dataclasses.dataclass(frozen=True, slots=True)
class StopTicker(Message):
    TYPE = MsgType.STOP_TICKER
    channel: str


@dataclasses.dataclass(frozen=True, slots=True)
class StatusRequest(Message):
    TYPE = MsgType.STATUS_REQUEST
    request_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class StatusReply(Message):
    """The broker's view. `workers`: {id: {"pid", "channels", "load", "ticks_late"}};
    `channels`: {path: {"worker", "subscribers"}}; `plugins`: live plugin process count."""

    TYPE = MsgType.STATUS_REPLY
    request_id: str
    broker: str
    workers: dict[str, dict[str, Any]]
    channels: dict[str, dict[str, Any]]
    plugins: int


_CLASSES: dict[int, type[Message]] = {
    int(cls.TYPE): cls
    for cls in (
        Rows,
        WorkerHeartbeat,
        PluginHeartbeat,
        Welcome,
        Subscribe,
        SubscribeReply,
        Unsubscribe,
        StartTicker,
        StopTicker,
        StatusRequest,
        StatusReply,
    )
}
_FIELDS: dict[type[Message], tuple[dataclasses.Field[Any], ...]] = {
    cls: dataclasses.fields(cls) for cls in _CLASSES.values()
}
_BASE_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str,
    "int": int,
    "float": (int, float),
    "bool": bool,
}

M = TypeVar("M", bound=Message)


def _header(message_type: MsgType) -> bytes:
    return bytes((PROTOCOL_VERSION, message_type))


def encode(message: Message) -> list[bytes]:
    """The `[header, payload]` frames of a message."""
    payload = {field.name: getattr(message, field.name) for field in _FIELDS[type(message)]}
    return [_header(message.TYPE), msgpack.packb(payload)]


def decode(frames: list[bytes]) -> Message:
    """Decode `[header, payload]`; ProtocolError says why a message is refused."""
    if len(frames) != 2:
        raise ProtocolError(f"expected 2 frames (header, payload), got {len(frames)}")
    header, payload = frames
    if len(header) != 2:
        raise ProtocolError(f"header must be 2 bytes, got {len(header)}")
    if header[0] != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {header[0]}, this process speaks {PROTOCOL_VERSION}")
    cls = _CLASSES.get(header[1])  # keyed by int: no MsgType() call per message
    if cls is None:
        raise ProtocolError(f"unknown message type {header[1]}")
    try:
        body = msgpack.unpackb(payload)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ProtocolError(f"{cls.__name__}: payload is not msgpack: {exc}") from exc
    if not isinstance(body, dict):
        raise ProtocolError(f"{cls.__name__}: payload must be a map, got {type(body).__name__}")
    return _build(cls, body)


def expect(frames: list[bytes], cls: type[M]) -> M:
    """Decode and insist on one message class."""
    message = decode(frames)
    if not isinstance(message, cls):
        raise ProtocolError(f"expected {cls.__name__}, got {type(message).__name__}")
    return message


def topic(channel: str) -> bytes:
    """What a SUB socket subscribes to for one channel: the prefix of its data frames."""
    return channel.encode() + TOPIC_END


_ROWS_HEADER = _header(MsgType.ROWS)


def rows_frame(
    channel: str, times_ns: list[int], columns: list[list[float]], pack: Pack = msgpack.packb
) -> bytes:
    """A Rows message as the data plane carries it; `pack` lets a hot loop reuse a Packer.

    The payload map is written here rather than by `encode` (which reads the dataclass's
    fields): this runs for every tick of every channel.
    """
    return topic(channel) + _ROWS_HEADER + pack({"times_ns": times_ns, "columns": columns})


def split_data_frame(frame: bytes) -> tuple[str, bytes, bytes]:
    """(channel, header, payload) of a data frame, for readers that decode the payload themselves."""
    end = frame.find(TOPIC_END)
    if end < 0:
        raise ProtocolError("data frame lacks its topic terminator")
    return frame[:end].decode(errors="replace"), frame[end + 1 : end + 3], frame[end + 3 :]


def decode_rows(frame: bytes) -> tuple[str, Rows]:
    """The channel and Rows of a data frame; ProtocolError says why one is refused."""
    channel, header, payload = split_data_frame(frame)
    return channel, expect([header, payload], Rows)


def _build(cls: type[M], body: dict[Any, Any]) -> M:
    """Keep known keys, check their outer type, let defaults fill the rest."""
    values: dict[str, Any] = {}
    for field in _FIELDS[cls]:
        if field.name not in body:
            if field.default is dataclasses.MISSING:
                raise ProtocolError(f"{cls.__name__}: missing field {field.name!r}")
            continue
        value = body[field.name]
        annotation = str(field.type)
        expected = _BASE_TYPES.get(annotation, list if annotation.startswith("list") else dict)
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise ProtocolError(
                f"{cls.__name__}.{field.name}: expected {annotation}, got {type(value).__name__}"
            )
        values[field.name] = value
    return cls(**values)
