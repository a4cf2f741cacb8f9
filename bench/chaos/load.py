"""The traffic: viewers that open and close streams and QueryData, publishers, a slow reader.

Everything read is kept (as Session and Query records) for the checker; nothing here judges.
"""

from __future__ import annotations

import base64
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import orjson

from bench.chaos.cluster import Cluster
from services.common import fields
from services.common.fields import Batch, Column
from services.hostemu.arrowframe import read_frame
from services.hostemu.dataframe import StreamingFrame
from services.hostemu.host import Datasource, data_query
from services.plugin._proto import pluginv2_pb2 as pb
from services.publish import Publisher, PublishError, Refused

GENERATED = (
    "custom-0-100-20",
    "custom-10-20-50",
    "custom-0-10-100-sine-3",
    "custom-5-50-250-random_walk-2",
    "custom-0-1-1000-uniform-10",
)
"""Generator channels of several tick intervals and series counts."""
PUBLISHED = ("pub-chaos-a", "pub-chaos-b")
SOURCES = ("source-host-1000",)
FAST = "custom-0-1-1-uniform-10"
"""The slow reader's channel: 10,000 values/s, a fifth of a datasource's budget."""
VIEWERS = 6
PUBLISH_EVERY_S = 0.1


def display(path: str, unit: str) -> str:
    """`path` with a display suffix, as the frontend writes it (services/plugin/display.py)."""
    options = base64.urlsafe_b64encode(orjson.dumps({"unit": unit})).rstrip(b"=").decode()
    return f"{path}/display={options}"


def channel_of(path: str) -> str:
    return path.split("/display=", 1)[0]


@dataclass
class Packet:
    at: float
    """Wall-clock seconds when it arrived."""
    times: list[int]
    columns: dict[str, list[Any]]
    """The rows it added, by field name (a channel's series are value, value#1, …)."""
    notices: list[str]


@dataclass
class Session:
    path: str
    opened: float
    closed: float = 0.0
    packets: list[Packet] = field(default_factory=list)
    error: str = ""
    """The gRPC status it ended with, '' when we cancelled it."""
    paused: tuple[float, float] | None = None
    """A slow reader's stall: it read nothing in this window (drops are allowed there)."""


@dataclass
class Query:
    path: str
    at: float
    times: list[int]
    columns: list[list[float]]
    error: str


@dataclass
class Published:
    """What publishers sent, by outcome: rows are (time ns, value)."""

    acked: dict[str, list[tuple[float, int, float]]] = field(default_factory=dict)
    """channel → (wall time of the answer, time ns, value)."""
    refused: dict[str, set[int]] = field(default_factory=dict)
    unanswered: dict[str, set[int]] = field(default_factory=dict)
    """No answer (Unreachable): in history or not."""
    values: dict[str, dict[int, float]] = field(default_factory=dict)
    """Every row ever sent, answered or not."""


class Traffic:
    """Threads that read and write until `stop`; their records for the checker."""

    def __init__(self, cluster: Cluster, seed: int) -> None:
        self.cluster = cluster
        self.seed = seed
        self.stop = threading.Event()
        self.stop_publishing = threading.Event()
        """Set after the viewers are done: a stream open at the end must not see its publisher stop."""
        self.calls: set[Any] = set()
        """The RunStreams open now, cancelled at `join`."""
        self.sessions: list[Session] = []
        self.queries: list[Query] = []
        self.published = Published()
        self.threads: list[threading.Thread] = []
        self.paths = [
            *GENERATED,
            *PUBLISHED,
            *SOURCES,
            *(display(p, f"u{i}") for i, p in enumerate(GENERATED)),
        ]

    def start(self) -> None:
        for i in range(VIEWERS):
            self._spawn(self._viewer, random.Random(self.seed * 1000 + i))
        self._spawn(self._querier, random.Random(self.seed * 1000 + 99))
        for channel in PUBLISHED:
            self._spawn(self._publisher, channel)

    def _spawn(self, target: Any, arg: Any) -> None:
        thread = threading.Thread(target=target, args=(arg,), daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        """Close every stream, then stop the publishers."""
        self.stop.set()
        for call in list(self.calls):
            call.cancel()
        publishers = self.threads[-len(PUBLISHED) :]
        for thread in self.threads[: -len(PUBLISHED)]:
            thread.join(15)
        self.stop_publishing.set()
        for thread in publishers:
            thread.join(15)

    # -- streams -------------------------------------------------------------------

    def read(self, path: str, seconds: float, pause: tuple[float, float] | None = None) -> Session:
        """One RunStream of `path` for `seconds` (a stalled read `pause` = (after_s, for_s) in); it
        opens once no process is being replaced (the time a restart takes is no stream's silence)."""
        with self.cluster.lock:
            host = self.cluster.host
        session = Session(path, time.time())
        request = pb.RunStreamRequest(pluginContext=Datasource().context(), path=path)
        try:
            call: Any = host.stream.RunStream(request)
        except ValueError:  # the host was replaced (a plugin restart) and its channel closed
            session.error = "UNAVAILABLE: the plugin was being replaced"
            session.closed = time.time()
            self.sessions.append(session)
            return session
        self.calls.add(call)
        timer = threading.Timer(seconds, call.cancel)
        timer.start()
        frame = StreamingFrame()
        try:
            for packet in call:
                now = time.time()
                if pause is not None and session.paused is None and now - session.opened > pause[0]:
                    time.sleep(pause[1])  # read nothing: the plugin queues and drops
                    session.paused = (now, time.time())
                    now = time.time()
                added = frame.push(packet.data)
                names = _field_names(frame)
                session.packets.append(
                    Packet(
                        now,
                        frame.times_ns[len(frame.times_ns) - added :],
                        {n: c[len(c) - added :] for n, c in zip(names, frame.values, strict=True)},
                        [n.get("text", "") for n in frame.notices],
                    )
                )
        except grpc.RpcError as error:
            code = error.code()
            session.error = "" if code == grpc.StatusCode.CANCELLED else f"{code.name}: {error.details()}"
        finally:
            timer.cancel()
            self.calls.discard(call)
            session.closed = time.time()
            self.sessions.append(session)
        return session

    def _viewer(self, rng: random.Random) -> None:
        while not self.stop.is_set():
            self.read(rng.choice(self.paths), rng.uniform(2, 8))
            time.sleep(rng.uniform(0, 0.5))

    def _querier(self, rng: random.Random) -> None:
        """QueryData over the last seconds of a generator channel, as a panel refreshes."""
        while not self.stop.wait(rng.uniform(1, 3)):
            path = rng.choice(GENERATED)
            self.queries.append(self.query(path))

    def query(self, path: str) -> Query:
        parts = path.split("-")
        model: dict[str, Any] = {"lowerLimit": parts[1], "upperLimit": parts[2], "tickInterval": parts[3]}
        if len(parts) > 4:
            model |= {"generator": parts[4], "series": int(parts[5])}
        end_ms = int(time.time() * 1000)
        with self.cluster.lock:
            host = self.cluster.host
        try:
            response = host.query_data(
                [data_query("A", model, end_ms - 20_000, end_ms, max_data_points=10_000)]
            )
            answer = response.responses["A"]
            if answer.error:
                return Query(path, time.time(), [], [], answer.error)
            frame = read_frame(answer.frames[0])
            return Query(path, time.time(), frame.times_ns, [f.values for f in frame.value_fields], "")
        except grpc.RpcError as error:
            return Query(path, time.time(), [], [], f"{error.code().name}: {error.details()}")
        except ValueError:  # the host was replaced (a plugin restart) and its channel closed
            return Query(path, time.time(), [], [], "UNAVAILABLE: the plugin was being replaced")

    # -- publishers ----------------------------------------------------------------

    def _publisher(self, channel: str) -> None:
        """Rows of one field `v` every PUBLISH_EVERY_S, strictly later times, each outcome kept."""
        published = self.published
        published.acked[channel] = []
        published.values[channel] = {}
        published.refused[channel] = set()
        published.unanswered[channel] = set()
        last = 0
        sequence = 0
        with Publisher(self.cluster.pipeline.publish_endpoint, timeout_s=2) as publisher:
            while not self.stop_publishing.wait(PUBLISH_EVERY_S):
                times = []
                for _ in range(1 + sequence % 3):
                    last = max(last + 1000, time.time_ns() // 1000 * 1000)
                    times.append(last)
                values = [float(sequence * 10 + i) for i in range(len(times))]
                sequence += 1
                published.values[channel].update(zip(times, values, strict=True))
                batch = Batch(times, [Column("v", fields.FLOAT64, list(values))])
                try:
                    publisher.publish_batch(channel, batch)
                except Refused:
                    published.refused[channel].update(times)
                except PublishError:
                    published.unanswered[channel].update(times)
                else:
                    answered = time.time()
                    published.acked[channel].extend(
                        (answered, t, v) for t, v in zip(times, values, strict=True)
                    )


def _field_names(frame: StreamingFrame) -> list[str]:
    """Field names made distinct: a channel's series share the name `value`."""
    seen: dict[str, int] = {}
    names = []
    for name in frame.names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        names.append(name if count == 0 else f"{name}#{count}")
    return names
