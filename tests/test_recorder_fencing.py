"""The recorder takes a source's rows only under the placement the broker tells, and a source
channel nobody watches gives its slot up: real broker, worker (its host source) and recorder."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import zmq
from recording import history, recorded, recording_pipeline
from support import Pipeline

from services.common import fields, protocol
from services.common.fields import Batch, Column

PLUGIN = "p-viewer"


class Viewer:
    """A plugin as the broker sees one: it holds channels and renews its lease."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], pipeline: Pipeline) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(pipeline.control_endpoint)
        self.held: dict[str, int] = {}

    def hold(self, channel: str) -> None:
        self.sock.send_multipart(protocol.encode(protocol.Subscribe(PLUGIN, channel)))
        self.held[channel] = 0
        self.beat()

    def release(self, channel: str) -> None:
        self.sock.send_multipart(protocol.encode(protocol.Unsubscribe(PLUGIN, channel)))
        del self.held[channel]

    def beat(self) -> None:
        self.sock.send_multipart(protocol.encode(protocol.PluginHeartbeat(PLUGIN, self.held)))


@contextlib.contextmanager
def viewer(pipeline: Pipeline) -> Iterator[Viewer]:
    with zmq.Context() as ctx:
        held = Viewer(ctx, pipeline)
        try:
            yield held
        finally:
            held.sock.close()


def wait_recorded(
    pipeline: Pipeline, channel: str, held: Viewer, after_ns: int = 0, within_s: float = 10
) -> list[int]:
    """The channel's recorded times once it has one after `after_ns`."""
    deadline = time.monotonic() + within_s
    while True:
        reply = history(pipeline.history_endpoint, channel, timeout_s=1)
        assert reply is not None
        if not reply.error and reply.times and reply.times[-1] > after_ns:
            return reply.times
        assert time.monotonic() < deadline, f"{channel} was not recorded: {reply.error}"
        held.beat()
        time.sleep(0.2)


def test_a_forged_epoch_is_refused_and_the_sources_own_rows_go_on_being_recorded() -> None:
    """One Events frame with a huge epoch, written into frames_in: never recorded, never adopted."""
    channel = "source-host-100"
    with recording_pipeline() as pipeline, viewer(pipeline) as held, zmq.Context() as ctx:
        held.hold(channel)
        wait_recorded(pipeline, channel, held)
        with ctx.socket(zmq.PUB) as forger:
            forger.linger = 1000
            forger.connect(f"ipc://{pipeline.run_dir}/frames-in")
            forged_at = time.time_ns()
            for k in range(10):  # its subscription reaches it a moment after it connects
                batch = Batch([forged_at + k], [Column("forged", fields.FLOAT64, [1.0])])
                forger.send(protocol.events_frame(channel, 2**62, batch))
                time.sleep(0.1)
        times = wait_recorded(pipeline, channel, held, after_ns=time.time_ns())
        _, columns = recorded(history(pipeline.history_endpoint, channel))
        assert "forged" not in [c.name for c in columns], "the forged frame was recorded"
        assert forged_at not in times
        assert all(t - forged_at not in range(10) for t in times)


def test_source_channels_nobody_watches_give_their_slots_to_new_ones() -> None:
    """A viewer opening source-host-<tick> channels (past the sources' half of --max-channels)
    must not take the recorder's source slots for good: once it lets them go, a new one is recorded."""
    with recording_pipeline(["--max-channels", "4"]) as pipeline, viewer(pipeline) as held:
        for channel in ("source-host-100", "source-host-101"):
            held.hold(channel)
            wait_recorded(pipeline, channel, held)
        for channel in ("source-host-100", "source-host-101"):
            held.release(channel)
        time.sleep(2.5)  # the broker's status says nobody watches them
        held.hold("source-host-102")
        wait_recorded(pipeline, "source-host-102", held)
        reply = history(pipeline.history_endpoint, "source-host-100")
        assert reply is not None
        assert reply.error == f"{protocol.NOT_RECORDED}source-host-100", "the least recently watched stays"
        assert recorded(history(pipeline.history_endpoint, "source-host-101"))[0] != []
