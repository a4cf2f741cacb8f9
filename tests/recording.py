"""Helpers for the recorder's tests: a pipeline with a recorder, a spy on frames_out, history asks."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import zmq
from support import ROOT, Pipeline

from services.cli.status import fetch
from services.common import protocol
from services.common.errors import PipelineError
from services.common.fields import Column
from services.common.probe import Access
from services.common.security import ClientKeys, secure_client
from services.publish import Publisher, Refused

READY_S = 20.0


def wait_for_recorder(
    pipeline: Pipeline, workers: Sequence[str] = ("w1",), curve: tuple[str, str] = ("", "")
) -> dict[str, dict[str, object]]:
    """Until the broker knows the recorder (this process of it) and `workers`; their status entries."""
    assert pipeline.recorder is not None
    deadline = time.monotonic() + READY_S
    while True:
        try:
            known = fetch(Access(pipeline.control_endpoint, *curve), 1).workers
            recorder = known.get("recorder", {})
            if recorder.get("pid") == pipeline.recorder.pid and set(workers) <= known.keys():
                return dict(known)
        except PipelineError:
            pass  # not up yet
        assert time.monotonic() < deadline, "the recorder did not join the broker"
        time.sleep(0.05)


@contextlib.contextmanager
def recording_pipeline(
    recorder_args: Sequence[str] = (),
    broker_args: Sequence[str] = (),
    worker_args: Sequence[str] = (),
    curve: tuple[str, str] = ("", ""),
) -> Iterator[Pipeline]:
    """A broker, w1 and a recorder; `curve`: (our secret key file, the broker's public key file)."""
    pipeline = Pipeline(1, broker_args, worker_args, recorder=True, recorder_args=recorder_args)
    try:
        wait_for_recorder(pipeline, curve=curve)
        yield pipeline
    finally:
        pipeline.close()


WARMUP = "pub-spy-warmup"


class Spy:
    """A SUB on the broker's frames_out: what any plugin would receive of some channels.

    A subscription reaches the recorder's PUB a while after it is made (through the
    broker's XPUB and XSUB); rows published before then are not sent. So the spy also
    subscribes to WARMUP and publishes there until its own rows come back: its other
    subscription, sent before, is in place by then.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        prefix: bytes,
        keys: ClientKeys | None = None,
        publisher_keys: ClientKeys | None = None,
    ) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.linger = 0
        if keys is not None:
            secure_client(self.sock, keys)
        self.sock.connect(f"ipc://{pipeline.run_dir}/frames-out")
        self.sock.subscribe(prefix)
        self.sock.subscribe(protocol.topic(WARMUP))
        deadline = time.monotonic() + READY_S
        with Publisher(pipeline.publish_endpoint, publisher_keys) as publisher:
            while not self._warm():
                assert time.monotonic() < deadline, "the spy's subscription never reached the recorder"
                with contextlib.suppress(Refused):  # the same millisecond as the last: not after it
                    publisher.publish(WARMUP, [{"time": now_ms() - 100, "v": 1}])

    def _warm(self) -> bool:
        warm = False
        while self.sock.poll(50):
            channel, _ = protocol.decode_data(self.sock.recv())
            warm = warm or channel == WARMUP
        return warm

    def events(self, wait_s: float = 2.0, count: int = 1) -> list[tuple[str, protocol.Events]]:
        """What arrives within `wait_s` (returning early once `count` messages came), WARMUP aside."""
        found: list[tuple[str, protocol.Events]] = []
        deadline = time.monotonic() + wait_s
        while len(found) < count and (left := deadline - time.monotonic()) > 0:
            if self.sock.poll(max(1, int(left * 1000))):
                channel, message = protocol.decode_data(self.sock.recv())
                assert isinstance(message, protocol.Events)
                if channel != WARMUP:
                    found.append((channel, message))
        return found

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def history(
    endpoint: str,
    channel: str,
    from_ns: int = 0,
    to_ns: int = 2**63 - 1,
    max_rows: int = 1000,
    keys: ClientKeys | None = None,
    timeout_s: float = 3.0,
) -> protocol.HistoryReply | None:
    """One HistoryRequest; its reply, or None if none came within `timeout_s`."""
    request_id = uuid.uuid4().hex
    with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as sock:
        sock.linger = 0
        if keys is not None:
            secure_client(sock, keys)
        sock.connect(endpoint)
        sock.send_multipart(
            protocol.encode(protocol.HistoryRequest(request_id, channel, from_ns, to_ns, max_rows))
        )
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not sock.poll(max(1, int(left * 1000))):
                break
            reply = protocol.expect(sock.recv_multipart(), protocol.HistoryReply)
            if reply.request_id == request_id:
                return reply
    return None


def recorded(reply: protocol.HistoryReply | None) -> tuple[list[int], list[Column]]:
    """The rows of a HistoryReply (which must have come, without error)."""
    assert reply is not None, "no HistoryReply"
    assert not reply.error, reply.error
    return reply.times, reply.columns


def publish_cli(
    run_dir: Path | str, channel: str, lines: list[str], *extra: str
) -> subprocess.CompletedProcess[str]:
    """`zmqstream publish` as a user runs it, `lines` on its stdin."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "publish", channel, "--run-dir", str(run_dir), *extra],
        cwd=ROOT,
        input="".join(line + "\n" for line in lines),
        capture_output=True,
        text=True,
        timeout=60,
    )


def now_ms() -> float:
    return time.time() * 1000


def raw_publish(endpoint: str, *messages: protocol.Publish) -> list[protocol.PublishReply]:
    """`messages` sent one after the other over one DEALER, each once the last was answered (a
    message twice: a publisher retrying a lost reply); the replies."""
    replies = []
    with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as sock:
        sock.linger = 0
        sock.connect(endpoint)
        for message in messages:
            sock.send_multipart(protocol.encode(message))
            assert sock.poll(5000), "no PublishReply"
            replies.append(protocol.expect(sock.recv_multipart(), protocol.PublishReply))
    return replies
