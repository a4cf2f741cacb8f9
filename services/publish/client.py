"""`Publisher`: push rows into a published channel (`pub-<name>`) through the recorder.

    from services.publish import Publisher
    with Publisher() as publisher:   # ipc://<run dir>/publish, or endpoint=…, keys=ClientKeys…
        publisher.publish("pub-room", [{"time": "2026-11-29T12:00:00Z", "temp": 21.5, "door": "open"}])

Rows are JSON-like records (services.common.fields.from_records). A channel's schema is
the recorder's, fixed by its first rows; the client need not know it: a refusal over
the schema carries it (PublishReply.schema), and the client converts the same records to it (an int into a
float64 field, a missing field as null) and sends them once more.

Nothing is refused for its pace: rows over a channel's rows-per-second budget wait until
the recorder takes them (PublishReply.wait_ms), and more than a burst go in bursts. Each
batch carries this Publisher's id and a sequence number, so a batch sent again (its reply
lost, or after an Unreachable) is recorded once. Every exchange returns within its
timeout: the socket queues only to a connected recorder (IMMEDIATE), nothing blocks
(NOBLOCK), and a monitor tells a refused connection or CURVE handshake at once.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
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

RESEND_S = 1.0
"""A batch without a reply for this long is sent again (same sequence: applied once)."""


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
        on_wait: Callable[[str, float], None] | None = None,
    ) -> None:
        self.endpoint = endpoint or default_endpoint("publish")
        self.keys = keys
        self.timeout_s = timeout_s
        self.socket_group = socket_group
        self.schemas: dict[str, Schema] = {}
        """Each channel's schema as the recorder last told or accepted it."""
        self.on_wait = on_wait
        """on_wait(channel, seconds): told before each wait for a channel's budget."""
        self.identity = uuid.uuid4().hex
        """This publisher to the recorder: its batches' sequence numbers count under it."""
        self._sequences = itertools.count(1)
        self._unanswered: dict[str, tuple[Batch, int]] = {}
        """Each channel's batch whose reply never came, and its sequence number."""
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
        """Publish `records` into `channel`; the number accepted, or PublishError and none of them
        (more rows than a burst of the channel's budget go in bursts: a refusal keeps the earlier)."""
        records = list(records)
        stamp = fields.leaves_time_out(records)  # no "time": the recorder stamps them on arrival
        schema = self.schemas.get(channel)
        batch = _batch(records, schema, stamp)
        try:
            return self.publish_batch(channel, batch, stamp=stamp)
        except Refused as exc:
            told = exc.schema
            if told is None or told == schema:
                raise
            self.schemas[channel] = told  # convert the same records to the channel's schema, once
            return self.publish_batch(channel, _batch(records, told, stamp), stamp=stamp)

    def publish_batch(self, channel: str, batch: Batch, *, stamp: bool = False) -> int:
        """Publish rows already typed (a checked Batch); the number accepted, or PublishError.

        Paced to the channel's budget: rows over it wait until it takes them (`on_wait` is
        told each wait), and more rows than a burst go in bursts, in order. With `stamp`, the
        batch's times are fields.STAMPED_LATER and the recorder stamps its rows on arrival.
        """
        while True:
            reply = self._exchange(channel, batch, stamp)
            if reply.most_rows and len(batch) > reply.most_rows:
                return sum(
                    self.publish_batch(channel, batch.rows(at, at + reply.most_rows), stamp=stamp)
                    for at in range(0, len(batch), reply.most_rows)
                )
            if not reply.wait_ms:
                break
            if self.on_wait is not None:
                self.on_wait(channel, reply.wait_ms / 1000)
            time.sleep(reply.wait_ms / 1000)
        if reply.error:
            raise Refused(reply.error, Schema(tuple(reply.schema.items())) if reply.schema else None)
        self.schemas[channel] = batch.schema
        return reply.accepted

    def _exchange(self, channel: str, batch: Batch, stamp: bool) -> protocol.PublishReply:
        """Send the batch and wait for its reply, sending it again while none comes (Unreachable
        past the timeout). A batch sent again after an Unreachable or a wait for the budget keeps
        its sequence number, so the recorder applies it once whether or not a copy went in."""
        unanswered = self._unanswered.get(channel)
        sequence = unanswered[1] if unanswered and unanswered[0] == batch else next(self._sequences)
        request_id = next(self._ids)
        frames = protocol.encode(
            protocol.Publish(request_id, channel, batch.times, batch.columns, self.identity, sequence, stamp)
        )
        size = sum(len(frame) for frame in frames)
        if size > protocol.MAX_DATA_BYTES:
            raise Refused(
                f"these {len(batch)} rows are {size} bytes, more than a message may carry "
                f"({protocol.MAX_DATA_BYTES}): publish fewer at a time"
            )
        self._unanswered[channel] = (batch, sequence)
        deadline = time.monotonic() + self.timeout_s
        sock = self._socket()
        self._wait_connected(sock, deadline)
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            raise Unreachable(f"the recorder at {self.endpoint} takes no more messages now") from None
        reply = self._reply(sock, frames, request_id, deadline)
        if not reply.wait_ms:  # after a wait, the same number: a copy sent meanwhile may have gone in
            del self._unanswered[channel]
        return reply

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

    def _reply(
        self, sock: zmq.Socket[bytes], frames: list[bytes], request_id: int, deadline: float
    ) -> protocol.PublishReply:
        """The reply to `request_id`; `frames` are sent again each RESEND_S without one (a reply
        lost on a reconnection): the recorder answers a batch it has applied without applying it."""
        resend = time.monotonic() + RESEND_S
        while (left_ms := (min(deadline, resend) - time.monotonic()) * 1000) > 0:
            if not sock.poll(max(1, int(left_ms))):
                if time.monotonic() >= deadline:
                    break
                resend = time.monotonic() + RESEND_S
                with contextlib.suppress(zmq.Again):  # not connected now: the next try may be
                    sock.send_multipart(frames, zmq.NOBLOCK)
                continue
            try:
                reply = protocol.decode(sock.recv_multipart())
            except PipelineError:
                continue
            if isinstance(reply, protocol.PublishReply) and reply.request_id == request_id:
                return reply  # an older reply (one that came after its timeout) is passed over
        raise Unreachable(
            f"the recorder at {self.endpoint} did not answer within {self.timeout_s:g} s "
            "(the rows may or may not have been recorded: publish the same rows again with this "
            "Publisher, and they are recorded once)"
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


def _batch(records: list[Mapping[str, Any]], schema: Schema | None, stamp: bool) -> Batch:
    try:
        return fields.from_records(records, schema, protocol.MAX_ROWS, stamp=stamp)
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
