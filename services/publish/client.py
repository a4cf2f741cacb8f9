"""`Publisher`: push rows into a published channel (`pub-<name>`) through the recorder.

    from services.publish import Publisher
    with Publisher() as publisher:   # ipc://<run dir>/publish, or endpoint=…, keys=ClientKeys…
        publisher.publish("pub-room", [{"time": "2026-11-29T12:00:00Z", "temp": 21.5, "door": "open"}])

Rows are JSON-like records (services.common.fields.from_records). A channel's schema is
the recorder's, fixed by its first rows; the client need not know it: a refusal over
the schema carries it (PublishReply.schema), and the client converts the same records to it (an int into a
float64 field, a missing field as null) and sends them once more. Every call returns
within its timeout: the socket queues only to a connected recorder (IMMEDIATE), nothing
blocks (NOBLOCK), and a monitor tells a refused connection or CURVE handshake at once.
"""

from __future__ import annotations

import itertools
import os
import stat
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, cast

import zmq
from zmq.utils.monitor import recv_monitor_message

from services.common import fields, protocol, rundir
from services.common.config import default_endpoint
from services.common.errors import PipelineError
from services.common.fields import Batch, InvalidRows, Schema
from services.common.probe import CURVE_FAILED, RETRIED
from services.common.security import ClientKeys, secure_client
from services.common.sockets import configure


class PublishError(PipelineError):
    """Rows that were not published, and why."""


class Refused(PublishError):
    """The recorder (or the client, before sending) refused the rows; nothing of them was recorded."""

    def __init__(self, reason: str, schema: Schema | None = None) -> None:
        super().__init__(reason)
        self.schema = schema
        """The channel's schema, when the rows did not fit it."""


class Unreachable(PublishError):
    """No answer from the recorder: absent, refusing our key, or silent past the timeout."""


class Publisher:
    def __init__(
        self,
        endpoint: str = "",
        keys: ClientKeys | None = None,
        *,
        timeout_s: float = 5.0,
        socket_group: str = "",
    ) -> None:
        self.endpoint = endpoint or default_endpoint("publish")
        self.keys = keys
        self.timeout_s = timeout_s
        self.socket_group = socket_group
        self.schemas: dict[str, Schema] = {}
        """Each channel's schema as the recorder last told or accepted it."""
        self._ids = itertools.count(1)
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._monitor: zmq.Socket[bytes] | None = None
        self._connected = False

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def publish(self, channel: str, records: Iterable[Mapping[str, Any]]) -> int:
        """Publish `records` into `channel`, all or none; the number accepted, or PublishError."""
        records = list(records)
        schema = self.schemas.get(channel)
        batch = _batch(records, schema)
        try:
            return self.publish_batch(channel, batch)
        except Refused as exc:
            told = exc.schema
            if told is None or told == schema:
                raise
            self.schemas[channel] = told  # convert the same records to the channel's schema, once
            return self.publish_batch(channel, _batch(records, told))

    def publish_batch(self, channel: str, batch: Batch) -> int:
        """Publish rows already typed (a checked Batch); the number accepted, or PublishError."""
        request_id = next(self._ids)
        frames = protocol.encode(protocol.Publish(request_id, channel, batch.times, batch.columns))
        size = sum(len(frame) for frame in frames)
        if size > protocol.MAX_DATA_BYTES:
            raise Refused(
                f"these {len(batch)} rows are {size} bytes, more than a message may carry "
                f"({protocol.MAX_DATA_BYTES}): publish fewer at a time"
            )
        deadline = time.monotonic() + self.timeout_s
        sock = self._socket()
        self._wait_connected(sock, deadline)
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            raise Unreachable(f"the recorder at {self.endpoint} takes no more messages now") from None
        reply = self._reply(sock, request_id, deadline)
        if reply.error:
            raise Refused(reply.error, Schema(tuple(reply.schema.items())) if reply.schema else None)
        self.schemas[channel] = batch.schema
        return reply.accepted

    def _socket(self) -> zmq.Socket[bytes]:
        if self._sock is not None:
            return self._sock
        folder = rundir.ipc_folder(self.endpoint)
        if folder is not None:
            rundir.check(folder, self.socket_group)
            _check_socket_file(self.endpoint)
        self._ctx = zmq.Context()
        sock = configure(self._ctx.socket(zmq.DEALER))
        sock.setsockopt(zmq.IMMEDIATE, 1)  # queue nothing for a recorder that is not there
        if self.keys is not None:
            secure_client(sock, self.keys)
        self._monitor = sock.get_monitor_socket(RETRIED | CURVE_FAILED | zmq.EVENT_CONNECTED)
        sock.connect(self.endpoint)
        self._sock = sock
        return sock

    def _wait_connected(self, sock: zmq.Socket[bytes], deadline: float) -> None:
        """Until the socket may send (a recorder connected and past CURVE), or Unreachable."""
        assert self._monitor is not None
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLOUT)
        poller.register(self._monitor, zmq.POLLIN)
        while True:
            self._drain_monitor()
            if cast(int, sock.get(zmq.EVENTS)) & zmq.POLLOUT:
                return
            left_ms = (deadline - time.monotonic()) * 1000
            if left_ms <= 0:
                raise Unreachable(f"no recorder answered at {self.endpoint} within {self.timeout_s:g} s")
            poller.poll(max(1, int(left_ms)))

    def _drain_monitor(self) -> None:
        assert self._monitor is not None
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            if event & CURVE_FAILED:
                raise Unreachable(
                    f"CURVE refused by the recorder at {self.endpoint}: your key must be in its "
                    "--publish-authorized-dir, and the server key the recorder's"
                )
            if event == RETRIED and not self._connected:
                raise Unreachable(f"no recorder at {self.endpoint}: connection refused")
            self._connected = self._connected or event == zmq.EVENT_CONNECTED

    def _reply(self, sock: zmq.Socket[bytes], request_id: int, deadline: float) -> protocol.PublishReply:
        while (left_ms := (deadline - time.monotonic()) * 1000) > 0:
            if not sock.poll(max(1, int(left_ms))):
                break
            try:
                reply = protocol.decode(sock.recv_multipart())
            except PipelineError:
                continue
            if isinstance(reply, protocol.PublishReply) and reply.request_id == request_id:
                return reply  # an older reply (one that came after its timeout) is passed over
        raise Unreachable(
            f"the recorder at {self.endpoint} did not answer within {self.timeout_s:g} s "
            "(the rows may or may not have been recorded)"
        )

    def close(self) -> None:
        if self._sock is not None:
            self._sock.disable_monitor()
            self._sock.close(linger=0)
            self._sock = None
        if self._monitor is not None:
            self._monitor.close(linger=0)
            self._monitor = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        self._connected = False


def _batch(records: list[Mapping[str, Any]], schema: Schema | None) -> Batch:
    try:
        return fields.from_records(records, schema, protocol.MAX_ROWS)
    except InvalidRows as exc:
        raise Refused(str(exc)) from None


def _check_socket_file(endpoint: str) -> None:
    path = endpoint.removeprefix("ipc://")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise Unreachable(
            f"no recorder at {endpoint}: {path} does not exist. Is it running (supervisord's `recorder`)?"
        ) from None
    except PermissionError:
        raise Unreachable(f"permission denied on {endpoint}: run as the recorder's user") from None
    if not stat.S_ISSOCK(mode):
        raise Unreachable(f"no recorder at {endpoint}: {path} is not a socket")
