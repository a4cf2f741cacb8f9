"""Every ZeroMQ message zmqstream sends, how it travels, and what a receiver accepts.

On the control plane a message is the multipart `[header, payload]`. On the data plane
(Rows, Events) it is one frame, `topic + header + payload`: SUB filtering matches a prefix of the
first frame, and one frame instead of three costs each hop (worker, proxy, plugin) a
third of the per-message work.

- `header` is two bytes: PROTOCOL_VERSION, then the MsgType. A receiver rejects another
  version with ProtocolError instead of guessing.
- `payload` is a msgpack map whose keys are the dataclass's field names. Decoders ignore
  keys they do not know and fill absent keys that have defaults, so a newer peer can add
  optional fields without breaking an older one. Rows alone, the data plane's one message
  and its hot path, has a fixed binary layout instead: `first_tick` and `epoch` (int64),
  the series count (uint16) and the tick count (uint32), all little-endian, then the
  float64 values series after series. It is checked by its lengths alone, with no
  per-value work. Events, the data plane's other message, carries event channels' rows
  (their own times, typed columns: services.common.fields) as a msgpack map, checked to
  every value.
- `topic` is the canonical channel path followed by NUL: SUB filtering is a byte-prefix
  match, and the terminator keeps `custom-1-2-10` from also matching `custom-1-2-100`.

Every message is hostile until `decode` has checked it completely: the msgpack is read
with limits on every length, and each field is checked against its annotation down to the
elements (`dict[str, int]` means string keys of at most MAX_TEXT characters and int64
values), with at most MAX_ITEMS entries per map. A message that fails is a
ProtocolError naming the field and the reason; receivers log it and go on. Sockets refuse
larger messages than MAX_CONTROL_BYTES / MAX_DATA_BYTES before any of this runs.

Placement is fenced: the broker gives every placement of a channel on a worker a new
`epoch` (larger than every earlier one), the worker stamps its Rows with it, and a plugin
relays only the rows of the epoch the broker last told it (Placement). A worker that
wakes from a freeze after its channel moved is told to stop it, and its rows are dropped
meanwhile.

Sockets:

    worker  DEALER ──control──▶ ROUTER broker ◀──control── DEALER plugin
    worker  PUB ──frames_in──▶ XSUB broker XPUB ──frames_out──▶ SUB plugin
    recorder (a worker of role "recorder": published channels, history of event channels)
    publisher DEALER ──publish──▶ ROUTER recorder ◀──history── DEALER plugin

| message          | from → to        | meaning                                                   |
|------------------|------------------|-----------------------------------------------------------|
| Rows             | worker → plugin  | consecutive ticks of one channel under one epoch          |
| Events           | worker, recorder → plugin, recorder | rows of an event channel, with their times |
| WorkerHeartbeat  | worker → broker  | alive; the channels it runs and their epochs (or unchanged)|
| PluginHeartbeat  | plugin → broker  | alive; the channels it holds and the epochs it knows      |
| Welcome          | broker → either  | where to send or read frames, its pipeline (a plugin: its recorder) |
| Goodbye          | plugin → broker  | the plugin leaves: release its subscriptions now          |
| Subscribe        | plugin → broker  | the plugin holds a channel (or several) now               |
| SubscribeReply   | broker → plugin  | accepted (with the epoch if placed), or why not           |
| Placement        | broker → plugin  | a channel the plugin holds runs under a new epoch         |
| Unsubscribe      | plugin → broker  | the plugin no longer holds a channel                      |
| StartTicker      | broker → worker  | run this channel under this epoch                         |
| StopTicker       | broker → worker  | stop this channel (if it runs under this epoch or older)  |
| StatusRequest    | anyone → broker  | ask for the broker's view                                 |
| StatusReply      | broker → asker   | workers, channels, subscribers                            |
| Publish          | publisher → recorder | rows for a published channel (publisher id, batch sequence) |
| PublishReply     | recorder → publisher | how many were accepted, or why none (the schema, when to retry) |
| HistoryRequest   | plugin → recorder | an event channel's recorded rows in a time range         |
| HistoryReply     | recorder → plugin | those rows, or why not                                   |

Heartbeats carry full state, so a restarted broker rebuilds its view from them (a worker
sends its full list at once when a Welcome names a broker it did not know).
"""

from __future__ import annotations

import array
import dataclasses
import enum
import struct
import sys
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import msgpack

from services.common import fields
from services.common.errors import ProtocolError
from services.common.fields import Batch, Column

PROTOCOL_VERSION = 4
"""3: Rows carry a first tick index, an epoch and float64 columns in a fixed binary layout;
placements are fenced. 4: event channels (Events, Publish, History), worker roles."""
TOPIC_END = b"\x00"
MAX_TEXT = 1024
"""Characters in any string field or map key (ids, endpoints, paths, errors)."""
MAX_ITEMS = 100_000
"""Items in any list or map (the broker runs 10,000 channels by default)."""
MAX_SUBSCRIBE_CHANNELS = 1000
"""Channels one Subscribe may carry: what a broker does for one message stays bounded."""
MAX_SERIES = 1024
MAX_ROWS = 100_000
"""Ticks one Rows message may carry (workers send at most max_rows_per_message)."""
MAX_REQUEST_BYTES = 1024 * 1024
"""Largest control message the broker accepts (a heartbeat of 10,000 channels is ~0.4 MiB)."""
MAX_CONTROL_BYTES = 8 * 1024 * 1024
"""Largest control message a worker, plugin or CLI accepts (a StatusReply of 10,000 channels
is ~0.7 MiB)."""
MAX_DATA_BYTES = 4 * 1024 * 1024
"""Largest data frame a socket accepts (1,000 ticks of 10 series are 80 kB)."""
FLOAT_BYTES = 8
EPOCH_AHEAD_NS = 86_400 * 10**9
"""How far past its receiver's clock a claimed epoch may be. Epochs are wall-clock ns (or the
last + 1), so a larger claim is forged or broken, and adopting it would carry the next
placements (last + 1) out of int64 and freeze the channel."""
_BIG_ENDIAN = sys.byteorder == "big"
Scalar = str | int | float | bool | None
NOT_RECORDED = "no rows recorded for "
"""A HistoryReply's error for a channel the recorder never recorded (then the channel's path):
not a failure, the plugin shows it as nothing recorded yet."""


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
    PLACEMENT = 12
    EVENTS = 13
    PUBLISH = 14
    PUBLISH_REPLY = 15
    HISTORY_REQUEST = 16
    HISTORY_REPLY = 17
    GOODBYE = 18


GENERATOR = "generator"
RECORDER = "recorder"
ROLES = (GENERATOR, RECORDER)


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    TYPE: ClassVar[MsgType]


@dataclasses.dataclass(frozen=True, slots=True)
class Rows(Message):
    """Ticks `first_tick`, `first_tick + 1`, … of one channel, placed under `epoch`.

    `columns[i]` is series i as little-endian float64 bytes, one value per tick; every
    column has the same length. The tick times follow from the channel (ChannelSpec.tick_time),
    so they are on the channel's grid and strictly increasing by construction.
    """

    TYPE = MsgType.ROWS
    first_tick: int
    epoch: int
    columns: list[bytes]

    @property
    def count(self) -> int:
        return len(self.columns[0]) // FLOAT_BYTES


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerHeartbeat(Message):
    TYPE = MsgType.WORKER_HEARTBEAT
    worker: str
    channels: dict[str, int]
    """The channels the worker runs, each with the epoch it runs it under."""
    pid: int = 0
    ticks_late: int = 0
    """Ticks published later than the worker's lateness budget since it started."""
    unchanged: bool = False
    """`channels` is left empty: the same as in the last full heartbeat to this broker.
    Listing 10,000 channels five times a second costs the worker ~2 ms/s of stalls."""
    role: str = GENERATOR
    """GENERATOR: takes placements of pure and source channels. RECORDER: takes none; its
    `channels` are the published channels it carries, each under the epoch it chose."""
    endpoints: dict[str, str] = dataclasses.field(default_factory=dict)
    """A recorder's sockets as bound ({"publish": …, "history": …}): the broker tells its plugins."""
    pipeline: str = ""
    """The pipeline the worker belongs to ('' : any); a broker of another one does not take it."""


@dataclasses.dataclass(frozen=True, slots=True)
class PluginHeartbeat(Message):
    TYPE = MsgType.PLUGIN_HEARTBEAT
    plugin: str
    channels: dict[str, int]
    """The channels the plugin holds, each with the epoch it relays (0: none known yet)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Welcome(Message):
    TYPE = MsgType.WELCOME
    frames_endpoint: str
    """frames_in for a worker, frames_out for a plugin, as the broker advertises it."""
    broker: str = ""
    """The broker's instance id: a new one means the broker restarted."""
    pipeline: str = ""
    """The pipeline the broker serves (its run folder, or its --pipeline): a worker of another refuses it."""
    recorder: dict[str, str] = dataclasses.field(default_factory=dict)
    """To a plugin: where the broker's recorder serves ({"publish": …, "history": …}), as advertised."""


@dataclasses.dataclass(frozen=True, slots=True)
class Goodbye(Message):
    """A plugin leaving on purpose: its subscriptions go now, with no lease to wait out."""

    TYPE = MsgType.GOODBYE
    plugin: str


@dataclasses.dataclass(frozen=True, slots=True)
class Subscribe(Message):
    TYPE = MsgType.SUBSCRIBE
    plugin: str
    channel: str
    more: list[str] = dataclasses.field(default_factory=list)
    """Further channels held at once: a burst of stream starts costs one message, not one each
    (a broker without this field takes them from the plugin's next heartbeat). At most
    MAX_SUBSCRIBE_CHANNELS in all: a broker refuses a longer one whole."""


@dataclasses.dataclass(frozen=True, slots=True)
class SubscribeReply(Message):
    TYPE = MsgType.SUBSCRIBE_REPLY
    channel: str
    error: str = ""
    """Empty when the broker accepted the subscription."""
    epoch: int = 0
    """The channel's placement, 0 while no worker runs it."""


@dataclasses.dataclass(frozen=True, slots=True)
class Placement(Message):
    """A held channel now runs under `epoch`: relay its rows of that epoch only."""

    TYPE = MsgType.PLACEMENT
    channel: str
    epoch: int


@dataclasses.dataclass(frozen=True, slots=True)
class Unsubscribe(Message):
    TYPE = MsgType.UNSUBSCRIBE
    plugin: str
    channel: str


@dataclasses.dataclass(frozen=True, slots=True)
class StartTicker(Message):
    TYPE = MsgType.START_TICKER
    channel: str
    epoch: int


@dataclasses.dataclass(frozen=True, slots=True)
class StopTicker(Message):
    TYPE = MsgType.STOP_TICKER
    channel: str
    epoch: int
    """Stop only a ticker running under this epoch or an older one, never a newer placement."""


@dataclasses.dataclass(frozen=True, slots=True)
class StatusRequest(Message):
    TYPE = MsgType.STATUS_REQUEST
    request_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class StatusReply(Message):
    """The broker's view. `workers`: {id: {"pid", "channels", "load", "ticks_late", "seen_s_ago"}};
    `channels`: {path: {"worker", "subscribers", "epoch"}}; `plugins`: live plugin connections
    (a plugin has one per broker address and CURVE keys its datasources use)."""

    TYPE = MsgType.STATUS_REPLY
    request_id: str
    broker: str
    workers: dict[str, dict[str, Scalar]]
    channels: dict[str, dict[str, Scalar]]
    plugins: int


@dataclasses.dataclass(frozen=True, slots=True)
class Events(Message):
    """Rows of an event channel (services.common.fields), from the placement `epoch`."""

    TYPE = MsgType.EVENTS
    epoch: int
    times: list[int]
    columns: list[Column]
    prev: int = 0
    """The time of the channel's row before these (0: not told): a reader whose last row is
    older missed some on the way (a broker restart), and asks the recorder for them."""

    @property
    def batch(self) -> Batch:
        return Batch(self.times, self.columns)


@dataclasses.dataclass(frozen=True, slots=True)
class Publish(Message):
    """Rows for the published channel `channel` (pub-<name>); answered by a PublishReply."""

    TYPE = MsgType.PUBLISH
    request_id: int
    channel: str
    times: list[int]
    columns: list[Column]
    publisher: str = ""
    """Who sends (a Publisher's random id): with `sequence`, what makes a retry apply once."""
    sequence: int = 0
    """Counts the publisher's batches up from 1 (0: none); sent again unchanged with the same
    rows, it is answered as before and applied once (the recorder remembers the last per
    publisher and channel)."""
    stamp: bool = False
    """The rows have no time of their own (`times` are fields.STAMPED_LATER): the recorder stamps
    them on arrival, strictly after the channel's last row."""


@dataclasses.dataclass(frozen=True, slots=True)
class PublishReply(Message):
    TYPE = MsgType.PUBLISH_REPLY
    request_id: int
    accepted: int
    """Rows accepted: all of the Publish, or none (then `error` says why)."""
    error: str = ""
    schema: dict[str, str] = dataclasses.field(default_factory=dict)
    """The channel's fields and kinds, in order, when the rows did not fit them: convert and send again."""
    wait_ms: int = 0
    """Refused for the channel's rows-per-second budget alone: the same Publish is taken after
    this many milliseconds (nothing else is wrong with it)."""
    most_rows: int = 0
    """Refused because a burst of the budget holds fewer rows: send at most this many at once."""


@dataclasses.dataclass(frozen=True, slots=True)
class HistoryRequest(Message):
    """An event channel's recorded rows with from_ns <= time <= to_ns, the last `max_rows` of them
    (with `spread`, `max_rows` of them evenly spaced over all)."""

    TYPE = MsgType.HISTORY_REQUEST
    request_id: str
    channel: str
    from_ns: int
    to_ns: int
    max_rows: int
    spread: bool = False
    """More rows in the range than `max_rows`: every k-th row, the first and the last included,
    so a graph of the range covers all of it (QueryData), instead of the last ones (backfill)."""


@dataclasses.dataclass(frozen=True, slots=True)
class HistoryReply(Message):
    TYPE = MsgType.HISTORY_REPLY
    request_id: str
    channel: str
    times: list[int]
    columns: list[Column]
    error: str = ""
    truncated: bool = False
    """More rows were recorded in the range than `max_rows`: these are the last ones (or, asked
    with `spread`, evenly spaced ones)."""


_CLASSES: dict[int, type[Message]] = {
    int(cls.TYPE): cls
    for cls in (
        Rows,
        WorkerHeartbeat,
        PluginHeartbeat,
        Welcome,
        Subscribe,
        SubscribeReply,
        Placement,
        Unsubscribe,
        StartTicker,
        StopTicker,
        StatusRequest,
        StatusReply,
        Events,
        Publish,
        PublishReply,
        HistoryRequest,
        HistoryReply,
        Goodbye,
    )
}
M = TypeVar("M", bound=Message)
Check = Callable[[Any], str]
"""A value → '' if it has the shape, else why not."""


def _kind(value: Any) -> str:
    return type(value).__name__


def _text(value: Any) -> str:
    if not isinstance(value, str):
        return f"expected str, got {_kind(value)}"
    return f"a string of {len(value)} characters, the limit is {MAX_TEXT}" if len(value) > MAX_TEXT else ""


def _int(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"expected int, got {_kind(value)}"
    return "" if -(2**63) <= value < 2**63 else f"{value} is outside int64"


def epoch_problem(epoch: int, now_ns: int) -> str:
    """Why a peer's claimed epoch may not be adopted ('' if it may): it must keep the next ones in int64."""
    if 0 <= epoch <= now_ns + EPOCH_AHEAD_NS:
        return ""
    return f"epoch {epoch} is not between 0 and a day past this clock ({now_ns} ns): forged or broken"


def _bool(value: Any) -> str:
    return "" if isinstance(value, bool) else f"expected bool, got {_kind(value)}"


def _scalar(value: Any) -> str:
    if value is None or isinstance(value, bool | float):
        return ""
    return _int(value) if isinstance(value, int) else _text(value)


def _container(value: Any, kind: type[list[Any]] | type[dict[Any, Any]], name: str, unit: str) -> str:
    """Why `value` is not a `kind` of at most MAX_ITEMS `unit` ('' if it is)."""
    if not isinstance(value, kind):
        return f"expected a {name}, got {_kind(value)}"
    return f"{len(value)} {unit}, the limit is {MAX_ITEMS}" if len(value) > MAX_ITEMS else ""


def _list_of(item: Check) -> Check:
    def check(value: Any) -> str:
        if problem := _container(value, list, "list", "items"):
            return problem
        for at, element in enumerate(value):
            problem = item(element)
            if problem:
                return f"[{at}]: {problem}"
        return ""

    return check


def _map_of(item: Check) -> Check:
    def check(value: Any) -> str:
        if problem := _container(value, dict, "map", "entries"):
            return problem
        for key, element in value.items():
            problem = _text(key)
            if problem:
                return f"a key: {problem}"
            problem = item(element)
            if problem:
                return f"[{key[:40]!r}]: {problem}"
        return ""

    return check


def _list(value: Any) -> str:
    """Times and columns: checked together, with the whole message (_build, fields.problem)."""
    return "" if isinstance(value, list) else f"expected a list, got {_kind(value)}"


_CHECKS: dict[str, Check] = {
    "str": _text,
    "int": _int,
    "bool": _bool,
    "Scalar": _scalar,
    "list[int]": _list,
    "list[Column]": _list,
    "list[str]": _list_of(_text),
}


def _checker(annotation: str) -> Check:
    """The check for a field annotation, built once: `dict[str, X]` or a name in _CHECKS."""
    if annotation.startswith("dict[str, ") and annotation.endswith("]"):
        return _map_of(_checker(annotation[10:-1]))
    return _CHECKS[annotation]


_FIELDS: dict[type[Message], tuple[tuple[str, Check, bool], ...]] = {
    cls: tuple(
        (field.name, _checker(str(field.type)), field.default is field.default_factory is dataclasses.MISSING)
        for field in dataclasses.fields(cls)
    )
    for cls in _CLASSES.values()
    if cls is not Rows  # its own binary layout (_read_rows)
}
_UNPACK_LIMITS = {
    "max_str_len": MAX_CONTROL_BYTES,
    "max_bin_len": MAX_CONTROL_BYTES,
    "max_array_len": MAX_ITEMS,
    "max_map_len": MAX_ITEMS,
    "max_ext_len": 0,
}
"""msgpack refuses a length beyond these before allocating (5 header bytes can claim 4 billion items)."""


def _header(message_type: MsgType) -> bytes:
    return bytes((PROTOCOL_VERSION, message_type))


def encode(message: Message) -> list[bytes]:
    """The `[header, payload]` frames of a message."""
    if isinstance(message, Rows):
        return [_header(message.TYPE), _rows_payload(message.first_tick, message.epoch, message.columns)]
    return [_header(message.TYPE), _payload(message)]


def _payload(message: Message) -> bytes:
    payload = {name: getattr(message, name) for name, _, _ in _FIELDS[type(message)]}
    if "columns" in payload:
        payload["columns"] = [[c.name, c.kind, c.values] for c in payload["columns"]]
    packed: bytes = msgpack.packb(payload)
    return packed


def decode(frames: list[bytes]) -> Message:
    """Decode and check `[header, payload]`; ProtocolError says why a message is refused."""
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
    if cls is Rows:
        return _read_rows(payload)
    try:
        body = msgpack.unpackb(payload, **_UNPACK_LIMITS)
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


ROWS_HEADER = _header(MsgType.ROWS)
"""What follows a Rows frame's topic: readers tell Rows from Events by these two bytes."""
_ROWS_LAYOUT = struct.Struct("<qqHI")
"""first_tick, epoch, series, ticks: what precedes a Rows message's values."""
ROWS_HEAD_BYTES = _ROWS_LAYOUT.size


def rows_frame(channel: str, first_tick: int, epoch: int, columns: list[bytes]) -> bytes:
    """A Rows message as the data plane carries it (columns as `float_bytes`, of equal length)."""
    return topic(channel) + ROWS_HEADER + _rows_payload(first_tick, epoch, columns)


def _rows_payload(first_tick: int, epoch: int, columns: list[bytes]) -> bytes:
    ticks = len(columns[0]) // FLOAT_BYTES
    return _ROWS_LAYOUT.pack(first_tick, epoch, len(columns), ticks) + b"".join(columns)


def rows_head(frame: bytes, start: int) -> tuple[int, int, int, int]:
    """(first_tick, epoch, series, ticks) of the Rows payload at `frame[start:]`, checked by its lengths
    (the layout leaves nothing else to go wrong) without copying the frame: its values follow the head."""
    if len(frame) - start < ROWS_HEAD_BYTES:
        raise ProtocolError(f"Rows: {len(frame) - start} bytes, shorter than its {ROWS_HEAD_BYTES}-byte head")
    first_tick, epoch, series, ticks = _ROWS_LAYOUT.unpack_from(frame, start)
    if not 1 <= series <= MAX_SERIES or not 1 <= ticks <= MAX_ROWS:
        raise ProtocolError(
            f"Rows: {series} series of {ticks} ticks, expected 1 to {MAX_SERIES} of 1 to {MAX_ROWS}"
        )
    values = len(frame) - start - ROWS_HEAD_BYTES
    if values != series * ticks * FLOAT_BYTES:
        raise ProtocolError(f"Rows: {values} bytes of values for {series} series of {ticks} ticks")
    return first_tick, epoch, series, ticks


def _read_rows(payload: bytes) -> Rows:
    """A Rows payload checked by its lengths (rows_head), its values split into columns."""
    first_tick, epoch, series, _ = rows_head(payload, 0)
    return Rows(first_tick, epoch, split_columns(payload[ROWS_HEAD_BYTES:], series))


def split_columns(values: bytes, series: int) -> list[bytes]:
    """Values of consecutive ticks, series after series (a Rows payload's), as one column per series."""
    if series == 1:
        return [values]
    size = len(values) // series
    return [values[at : at + size] for at in range(0, len(values), size)]


def split_data_frame(frame: bytes) -> tuple[str, bytes, bytes]:
    """(channel, header, payload) of a data frame, for readers that decode the payload themselves."""
    end = frame.find(TOPIC_END)
    if end < 0:
        raise ProtocolError("data frame lacks its topic terminator")
    return frame[:end].decode(errors="replace"), frame[end + 1 : end + 3], frame[end + 3 :]


def decode_rows(frame: bytes) -> tuple[str, Rows]:
    """The channel and Rows of a data frame; ProtocolError says why one is refused."""
    end = frame.find(TOPIC_END)
    if end >= 0 and frame[end + 1 : end + 3] == ROWS_HEADER:  # the hot path: every data frame
        try:
            channel = frame[:end].decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"data frame topic is not UTF-8: {exc}") from None
        return channel, _read_rows(frame[end + 3 :])
    channel, header, payload = split_data_frame(frame)  # why it is refused, as decode says it
    return channel, expect([header, payload], Rows)


def float_bytes(values: list[float]) -> bytes:
    """A column as Rows carries it; TypeError if a value is not a number."""
    column = array.array("d", values)
    if _BIG_ENDIAN:
        column.byteswap()
    return column.tobytes()


def floats(data: bytes) -> list[float]:
    """The values of a Rows column (`float_bytes` undone)."""
    column = array.array("d")
    column.frombytes(data)
    if _BIG_ENDIAN:
        column.byteswap()
    return column.tolist()


def events_frame(channel: str, epoch: int, batch: Batch, prev: int = 0) -> bytes:
    """An Events message as the data plane carries it (`prev`: Events.prev)."""
    return topic(channel) + _EVENTS_HEADER + _payload(Events(epoch, batch.times, batch.columns, prev))


_EVENTS_HEADER = _header(MsgType.EVENTS)


def decode_data(frame: bytes) -> tuple[str, Rows | Events]:
    """The channel and message of any data frame; ProtocolError says why one is refused."""
    end = frame.find(TOPIC_END)
    if end >= 0 and frame[end + 1 : end + 3] == ROWS_HEADER:
        return decode_rows(frame)
    channel, header, payload = split_data_frame(frame)
    return channel, expect([header, payload], Events)


def _columns(raw: list[Any]) -> list[Column] | str:
    """`[name, kind, values]` triples as Columns, or why they are not (checked further by fields.problem)."""
    columns = []
    for item in raw:
        if not isinstance(item, list) or len(item) != 3:
            return "a column must be [name, kind, values]"
        columns.append(Column(*item))
    return columns


def _build(cls: type[M], body: dict[Any, Any]) -> M:
    """Keep known keys, check each against its annotation, let defaults fill the rest."""
    values: dict[str, Any] = {}
    for name, check, required in _FIELDS[cls]:
        if name not in body:
            if required:
                raise ProtocolError(f"{cls.__name__}: missing field {name!r}")
            continue
        value = body[name]
        problem = check(value)
        if problem:
            raise ProtocolError(f"{cls.__name__}.{name}: {problem}")
        values[name] = value
    if "columns" in values:  # every message with columns has times: check them as one batch
        columns = _columns(values["columns"])
        why = columns if isinstance(columns, str) else fields.problem(values["times"], columns, MAX_ROWS)
        if why:
            raise ProtocolError(f"{cls.__name__}: {why}")
        values["columns"] = columns
    return cls(**values)
