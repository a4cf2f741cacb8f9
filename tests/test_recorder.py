"""The recorder as a real process beside the real broker: publishing, history, refusals, disk, CURVE."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import orjson
import pytest
import zmq
from recording import (
    Spy,
    history,
    now_ms,
    publish_cli,
    raw_publish,
    recorded,
    recording_pipeline,
    wait_for_recorder,
)
from support import Pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the bench package sits at the repo root

from bench.ledger import fill, record_folder
from services.cli.status import fetch
from services.common import fields, protocol
from services.common.fields import Batch, Column
from services.common.security import ClientKeys, create_keys
from services.publish import Publisher, Refused, Unreachable

MAX_PUBLISH_BYTES = 20_000


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    """A broker, one generator and a recorder whose publishes are limited to MAX_PUBLISH_BYTES."""
    with recording_pipeline(["--max-publish-bytes", str(MAX_PUBLISH_BYTES)]) as pipeline:
        yield pipeline


def rows(start_ms: float, count: int, step_ms: float = 10.0) -> list[dict[str, object]]:
    return [
        {"time": start_ms + i * step_ms, "temp": 20.0 + i, "door": "open" if i % 2 else "closed", "n": i}
        for i in range(count)
    ]


def recorded_once(pipeline: Pipeline, channel: str, last_ns: int, within_s: float = 5.0) -> list[int]:
    """The channel's recorded times once they reach `last_ns` (frames of a moved channel wait for
    the recorder to hear of the move from the broker)."""
    deadline = time.monotonic() + within_s
    while True:
        times, _ = recorded(history(pipeline.history_endpoint, channel))
        if (times and times[-1] >= last_ns) or time.monotonic() > deadline:
            return times
        time.sleep(0.1)


class SourceWorker:
    """A worker as the broker and the recorder see one: heartbeats placing its source channels
    (a broker adopts what a worker says it runs), and a PUB into frames_in."""

    def __init__(
        self, ctx: zmq.Context[zmq.Socket[bytes]], pipeline: Pipeline, channels: dict[str, int]
    ) -> None:
        self.control = ctx.socket(zmq.DEALER)
        self.control.linger = 0
        self.control.connect(pipeline.control_endpoint)
        self.frames = ctx.socket(zmq.PUB)
        self.frames.linger = 1000
        self.frames.connect(f"ipc://{pipeline.run_dir}/frames-in")
        self.channels = dict(channels)
        self.place()

    def place(self, channels: dict[str, int] | None = None) -> None:
        """Run `channels` (more, or under new epochs) from now on, as a heartbeat tells the broker."""
        self.channels.update(channels or {})
        beat = protocol.WorkerHeartbeat(f"fake-{os.getpid()}", self.channels, pid=os.getpid())
        self.control.send_multipart(protocol.encode(beat))
        time.sleep(0.3)  # the broker places them; the recorder asks it (each frame it cannot place yet)

    def send(self, frame: bytes) -> None:
        self.frames.send(frame)

    def close(self) -> None:
        self.control.close()
        self.frames.close()


@contextlib.contextmanager
def source_worker(pipeline: Pipeline, channel: str, first: bytes, epoch: int = 10) -> Iterator[SourceWorker]:
    """A worker running `channel` under `epoch`, sending `first` until the recorder has it (its
    subscription reaches us through the broker a moment after it connects)."""
    with zmq.Context() as ctx:
        worker = SourceWorker(ctx, pipeline, {channel: epoch})
        try:
            deadline = time.monotonic() + 5
            while history(pipeline.history_endpoint, channel, timeout_s=1).error:  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the recorder never saw the source's rows"
                worker.send(first)
                time.sleep(0.1)
            yield worker
        finally:
            worker.close()


def test_published_rows_reach_frames_out_and_history_with_their_own_times(pipeline: Pipeline) -> None:
    spy = Spy(pipeline, b"pub-room\0")
    start = now_ms() - 1000
    try:
        with Publisher(pipeline.publish_endpoint) as publisher:
            assert publisher.publish("pub-room", rows(start, 5)) == 5
        [(channel, events)] = spy.events()
    finally:
        spy.close()
    expected = [fields.parse_time(start + i * 10) for i in range(5)]
    assert channel == "pub-room"
    assert events.times == expected
    assert [c.name for c in events.columns] == ["temp", "door", "n"]
    assert events.columns[1].values == ["closed", "open", "closed", "open", "closed"]
    reply = history(pipeline.history_endpoint, "pub-room")
    assert reply is not None
    assert not reply.error
    assert reply.times == expected
    assert reply.columns == events.columns

    last_two = history(pipeline.history_endpoint, "pub-room", expected[1], expected[4], max_rows=2)
    assert last_two is not None
    assert last_two.times == expected[3:]
    assert last_two.truncated


def test_rows_published_without_a_time_are_stamped_on_arrival_strictly_increasing(pipeline: Pipeline) -> None:
    """A Publish with `stamp` (records without "time"): the recorder's clock, after the channel's last row."""
    channel = "pub-stamped"
    with Publisher(pipeline.publish_endpoint) as publisher:
        ahead = time.time_ns() + 500_000_000  # a row half a second ahead: the stamps go after it
        publisher.publish_batch(channel, Batch([ahead], [Column("temp", fields.FLOAT64, [1.0])]))
    batch = fields.from_records([{"temp": float(i)} for i in range(5)], None, 10, stamp=True)
    with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as sock:
        sock.linger = 0
        sock.connect(pipeline.publish_endpoint)
        sent = time.time_ns()
        sock.send_multipart(
            protocol.encode(protocol.Publish(7, channel, batch.times, batch.columns, stamp=True))
        )
        assert sock.poll(5000)
        reply = protocol.expect(sock.recv_multipart(), protocol.PublishReply)
        received = time.time_ns()
    assert (reply.accepted, reply.error) == (5, "")
    times, columns = recorded(history(pipeline.history_endpoint, channel))
    assert times[0] == ahead
    first = times[1]
    assert first == ahead + 1 or sent <= first <= received, "not stamped on arrival, after the last row"
    assert times[1:] == list(range(first, first + 5))
    assert columns[0].values == [1.0, 0.0, 1.0, 2.0, 3.0, 4.0]


def test_rows_the_full_disk_cannot_store_are_refused_with_the_reason_and_logged() -> None:
    with record_folder() as (folder, skipped):
        if skipped:
            pytest.skip(skipped)
        pipeline_args = ["--record-dir", str(folder)]
        with recording_pipeline(pipeline_args) as pipeline, Publisher(pipeline.publish_endpoint) as publisher:
            start = now_ms() - 10_000
            assert publisher.publish("pub-full", rows(start, 5)) == 5
            fill(folder.parent / "filler")
            refusal = ""
            for k in range(1, 200):  # SQLite fills what room its WAL has first
                try:
                    publisher.publish("pub-full", rows(start + k * 50, 5))
                except Refused as exc:
                    refusal = str(exc)
                    break
            (folder.parent / "filler").unlink()
            assert refusal.startswith("the recorder could not store these rows ("), refusal or "none refused"
            assert refusal.endswith("free space on its --record-dir disk, then send them again")
            times = recorded(history(pipeline.history_endpoint, "pub-full"))[0]
            assert len(times) == 5 * k, "a refused row was served"
            assert publisher.publish("pub-full", rows(start + 9_000, 1)) == 1, "still refused with room again"
            assert "rows not stored: refused" in (pipeline.run_dir / "recorder.log").read_text()


def test_bad_rows_get_a_clear_error_and_change_nothing(pipeline: Pipeline) -> None:
    channel = "pub-strict"
    start = now_ms() - 5000
    with Publisher(pipeline.publish_endpoint) as publisher:
        publisher.publish(channel, rows(start, 3))
        before = history(pipeline.history_endpoint, channel)
        assert before is not None
        assert len(before.times) == 3
        spy = Spy(pipeline, f"{channel}\0".encode())
        try:
            later = start + 1000
            wrong_type = Batch(
                [fields.parse_time(later)],
                [
                    Column("temp", fields.STRING, ["warm"]),
                    Column("door", fields.STRING, ["open"]),
                    Column("n", fields.INT64, [1]),
                ],
            )
            with pytest.raises(
                Refused, match="field 'temp' is string, the channel's schema has it as float64"
            ) as refused:
                publisher.publish_batch(channel, wrong_type)
            assert refused.value.schema == Batch(before.times, before.columns).schema  # as data, too
            with pytest.raises(
                Refused, match=r"s ahead of the recorder's clock .* check the publisher's clock"
            ) as refused:
                publisher.publish(channel, rows(now_ms() + 3_600_000, 1))
            assert refused.value.schema is None  # its rows fit the schema
            with pytest.raises(Refused, match=f"bytes, the limit is {MAX_PUBLISH_BYTES}: publish fewer rows"):
                publisher.publish(channel, rows(later, 2000))
            with pytest.raises(Refused, match="is not after the channel's last row"):
                publisher.publish(channel, rows(start, 1))
            with pytest.raises(Refused, match="not a channel you can publish to"):
                publisher.publish("custom-1-2-100", rows(later, 1))
            assert spy.events(wait_s=0.5) == [], "a refused publish reached frames_out"
        finally:
            spy.close()
    assert recorded(history(pipeline.history_endpoint, channel)) == recorded(before)


def test_a_publisher_flooding_over_the_rate_is_paced_and_others_still_publish(pipeline: Pipeline) -> None:
    """Over its channel's budget a publisher waits for it (PublishReply.wait_ms), loses nothing, and
    holds up no other channel's publisher."""
    start = now_ms() - 60_000
    waits: list[float] = []
    with (
        Publisher(pipeline.publish_endpoint, on_wait=lambda _, seconds: waits.append(seconds)) as flood,
        Publisher(pipeline.publish_endpoint) as calm,
    ):
        flooding = threading.Thread(
            target=lambda: [  # 30 times 100 rows at once, the budget is 1,000 rows/s
                flood.publish("pub-flood", rows(start + i * 1000, 100, step_ms=1)) for i in range(30)
            ]
        )
        flooding.start()
        while not waits:
            assert flooding.is_alive(), "the flood never waited for the budget"
            time.sleep(0.01)
        began = time.monotonic()
        assert calm.publish("pub-calm", rows(start, 1)) == 1
        assert time.monotonic() - began < 1
        flooding.join(30)
    assert 0 < max(waits) <= 1.0
    times, _ = recorded(history(pipeline.history_endpoint, "pub-flood", max_rows=5000))
    assert len(times) == 3000


def test_a_publisher_that_floods_without_reading_costs_only_itself(pipeline: Pipeline) -> None:
    stop = threading.Event()
    sent = 0

    def flood() -> None:
        nonlocal sent
        base = time.time_ns() - 600 * 1_000_000_000
        with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as sock:
            sock.linger = 0
            sock.connect(pipeline.publish_endpoint)
            while not stop.is_set():
                frames = protocol.encode(
                    protocol.Publish(sent, "pub-flooder", [base + sent], [Column("v", fields.INT64, [sent])])
                )
                try:
                    sock.send_multipart(frames, zmq.NOBLOCK)
                    sent += 1
                except zmq.Again:
                    time.sleep(0.0005)

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        time.sleep(0.5)
        waits = []
        start = now_ms() - 30_000
        with Publisher(pipeline.publish_endpoint) as calm:
            for i in range(10):
                began = time.monotonic()
                assert calm.publish("pub-calm-beside-flood", rows(start + i * 100, 1)) == 1
                waits.append(time.monotonic() - began)
    finally:
        stop.set()
        flooder.join()
    print(
        f"\n[figure] beside a flood of {sent} publishes: a publish answered within {max(waits) * 1000:.1f} ms"
    )
    assert sent > 1000
    assert max(waits) < 0.5
    assert pipeline.recorder is not None
    assert pipeline.recorder.poll() is None


def test_a_history_reply_stays_under_what_a_client_accepts() -> None:
    with recording_pipeline(["--max-rows-per-s", "100000", "--max-publish-bytes", "2000000"]) as pipeline:
        start = now_ms() - 60_000
        text = "x" * 1000
        with Publisher(pipeline.publish_endpoint) as publisher:
            for k in range(5):
                batch = [{"time": start + k * 2000 + i, "s": text} for i in range(1900)]
                assert publisher.publish("pub-big", batch) == 1900
        reply = history(pipeline.history_endpoint, "pub-big", max_rows=100_000)
        assert reply is not None
        assert reply.truncated
        size = sum(map(len, protocol.encode(reply)))
        print(f"\n[figure] history of 9,500 rows of 1 kB: {len(reply.times)} rows in {size} bytes")
        assert size < protocol.MAX_CONTROL_BYTES
        assert reply.times[-1] == fields.parse_time(start + 4 * 2000 + 1899)
        assert len(reply.times) > 4000


def test_garbage_on_both_routers_does_not_kill_the_recorder(pipeline: Pipeline) -> None:
    rng = random.Random(15)
    valid_publish = protocol.encode(protocol.Publish(1, "pub-x", [1], [Column("a", fields.FLOAT64, [1.0])]))
    valid_history = protocol.encode(protocol.HistoryRequest("h", "pub-x", 0, 1, 1))
    garbage: list[list[bytes]] = [
        [],
        [b""],
        [b"\x04"],
        [b"\x04\x0e", b"\xc1"],
        [b"\x04\x0e", msgpack.packb({"request_id": "x"})],
        [b"\x04\x0e", msgpack.packb({"request_id": 1, "channel": "pub-x", "times": [1, 1], "columns": []})],
        [
            b"\x04\x0e",
            msgpack.packb({"request_id": 1, "channel": "pub-x", "times": [1], "columns": [[1, 2]]}),
        ],
        [
            b"\x04\x10",
            msgpack.packb({"request_id": 1, "channel": 5, "from_ns": 0, "to_ns": 1, "max_rows": 1}),
        ],
        [
            b"\x04\x10",
            msgpack.packb({"request_id": "", "channel": "pub-x", "from_ns": 0, "to_ns": 1, "max_rows": -1}),
        ],
        [b"\x04\x10", b"\xdd\xff\xff\xff\xff"],  # an array claiming 4 billion items
        valid_history,  # to the publish socket: the wrong message
        valid_publish,  # to the history socket
        [b"\x03\x0e", valid_publish[1]],
    ]
    garbage += [
        [rng.randbytes(rng.randrange(0, 300)) for _ in range(rng.randrange(1, 4))] for _ in range(300)
    ]
    with zmq.Context() as ctx:
        for endpoint in (pipeline.publish_endpoint, pipeline.history_endpoint):
            with ctx.socket(zmq.DEALER) as sock:
                sock.linger = 0
                sock.connect(endpoint)
                for frames in garbage:
                    if frames:
                        sock.send_multipart(frames)
                time.sleep(0.3)
    assert pipeline.recorder is not None
    assert pipeline.recorder.poll() is None, "the recorder died"
    with Publisher(pipeline.publish_endpoint) as publisher:
        assert publisher.publish("pub-after-garbage", rows(now_ms() - 1000, 2)) == 2
    reply = history(pipeline.history_endpoint, "pub-after-garbage")
    assert reply is not None
    assert len(reply.times) == 2


def test_history_of_a_channel_never_recorded_says_so(pipeline: Pipeline) -> None:
    reply = history(pipeline.history_endpoint, "pub-nobody")
    assert reply is not None
    assert reply.error == "no rows recorded for pub-nobody"
    reply = history(pipeline.history_endpoint, "custom-1-2-100")
    assert reply is not None
    assert "is not an event channel" in reply.error


def test_the_broker_places_a_held_published_channel_on_the_recorder(pipeline: Pipeline) -> None:
    channel = "pub-held"
    spy = Spy(pipeline, f"{channel}\0".encode())
    with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as plugin:
        plugin.linger = 0
        plugin.connect(pipeline.control_endpoint)
        plugin.send_multipart(protocol.encode(protocol.Subscribe("p-test", channel)))
        assert plugin.poll(2000)
        reply = protocol.expect(plugin.recv_multipart(), protocol.SubscribeReply)
        assert reply.error == ""
        assert reply.epoch == 0, "placed before any recorder offered it"
        try:
            with Publisher(pipeline.publish_endpoint) as publisher:
                publisher.publish(channel, rows(now_ms() - 1000, 1))
            [(_, events)] = spy.events()
        finally:
            spy.close()
        placement = None
        deadline = time.monotonic() + 3
        while placement is None and time.monotonic() < deadline:
            if plugin.poll(100):
                message = protocol.decode(plugin.recv_multipart())
                if isinstance(message, protocol.Placement):
                    placement = message
        assert placement == protocol.Placement(channel, events.epoch)
        status = fetch(pipeline.control_endpoint, 2)
        assert status.channels[channel]["worker"] == "recorder"
        assert status.channels[channel]["epoch"] == events.epoch
        assert status.workers["recorder"]["role"] == protocol.RECORDER
        plugin.send_multipart(protocol.encode(protocol.Unsubscribe("p-test", channel)))


def test_source_rows_are_recorded_newest_epoch_only_in_time_order(pipeline: Pipeline) -> None:
    """A worker's PUB into frames_in, as a source's worker sends; the recorder keeps what the plugin would."""
    channel = "source-fake-100"
    base = time.time_ns() - 10_000_000_000

    def batch(*offsets: int) -> Batch:
        return Batch([base + o for o in offsets], [Column("v", fields.INT64, list(offsets))])

    with source_worker(pipeline, channel, protocol.events_frame(channel, 10, batch(1, 2))) as worker:
        worker.send(protocol.topic(channel) + b"\x04\x0d\xc1")  # not msgpack
        worker.send(protocol.rows_frame(channel, 1, 12, [protocol.float_bytes([1.0])]))  # not Events
        worker.send(protocol.events_frame(channel, 9, batch(5)))  # an older placement: dropped
        worker.place({channel: 11})  # moved: the recorder learns it when it asks the broker
        worker.send(protocol.events_frame(channel, 11, batch(2, 3)))  # waits for it; only 3 is new
        worker.send(protocol.events_frame(channel, 10, batch(5)))  # behind it: the placement before
        worker.send(
            protocol.events_frame(channel, 11, Batch([base + 4], [Column("v", fields.STRING, ["x"])]))
        )
        worker.send(protocol.events_frame(channel, 11, batch(6)))
        times = recorded_once(pipeline, channel, base + 6)
    assert [t - base for t in times] == [1, 2, 3, 6]


def test_a_restarted_recorder_with_a_record_dir_serves_what_it_stored(tmp_path: Path) -> None:
    record = tmp_path / "record"
    with recording_pipeline(["--record-dir", str(record)]) as pipeline:
        start = now_ms() - 10_000
        with Publisher(pipeline.publish_endpoint) as publisher:
            publisher.publish("pub-kept", rows(start, 50))
        before = history(pipeline.history_endpoint, "pub-kept")
        assert before is not None
        assert len(before.times) == 50
        assert pipeline.recorder is not None
        began = time.monotonic()
        pipeline.recorder.send_signal(signal.SIGTERM)
        assert pipeline.recorder.wait(5) == 0
        stopped_s = time.monotonic() - began
        print(f"\n[figure] recorder exit after SIGTERM: {stopped_s:.2f} s")
        assert stopped_s < 1
        assert os.stat(record).st_mode & 0o777 == 0o700
        pipeline.start_recorder()
        wait_for_recorder(pipeline)
        after = history(pipeline.history_endpoint, "pub-kept")
        assert recorded(after) == recorded(before)
        with Publisher(pipeline.publish_endpoint) as publisher, pytest.raises(Refused, match="not after"):
            publisher.publish("pub-kept", rows(start + 100, 1))  # the stored last time still holds
        status = fetch(pipeline.control_endpoint, 2)
        assert status.workers["recorder"]["role"] == protocol.RECORDER


def test_a_batch_sent_again_after_a_recorder_kill_is_answered_as_applied_and_stored_once(
    tmp_path: Path,
) -> None:
    """Applied and stored, its reply lost (the recorder killed with -9 just after): the publisher
    sends the batch again to the restarted recorder. On main its sequence was kept in memory only,
    so the timed batch was refused as not after the last row, and the stamped one went in twice."""
    start_ns = round((now_ms() - 10_000) * 1e6)
    timed = fields.from_records([{"time": start_ns / 1e6 + i, "v": i} for i in range(3)], None, 10)
    stamped = fields.from_records([{"v": 7}, {"v": 8}], None, 10, stamp=True)
    sent = [
        protocol.Publish(1, "pub-timed-again", timed.times, timed.columns, "publisher-k", 4),
        protocol.Publish(2, "pub-stamped-again", stamped.times, stamped.columns, "publisher-k", 5, True),
    ]
    with recording_pipeline(["--record-dir", str(tmp_path / "record")]) as pipeline:
        assert [(r.accepted, r.error) for r in raw_publish(pipeline.publish_endpoint, *sent)] == [
            (3, ""),
            (2, ""),
        ]
        before = [recorded(history(pipeline.history_endpoint, m.channel)) for m in sent]
        assert pipeline.recorder is not None
        pipeline.recorder.kill()
        pipeline.recorder.wait()
        pipeline.start_recorder()
        wait_for_recorder(pipeline)
        again = raw_publish(pipeline.publish_endpoint, *sent)
        assert [(r.accepted, r.error) for r in again] == [(3, ""), (2, "")]
        assert [recorded(history(pipeline.history_endpoint, m.channel)) for m in sent] == before
        assert before[1][1][0].values == [7, 8]


def test_with_curve_only_authorized_publishers_get_in_and_a_refused_one_leaves_no_trace(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    create_keys(keys, ["broker", "w1", "recorder", "plugin", "publisher", "intruder"])
    allowed, publishers = tmp_path / "allowed", tmp_path / "publishers"
    for folder, names in ((allowed, ["w1", "recorder", "plugin"]), (publishers, ["publisher"])):
        folder.mkdir()
        for name in names:
            (folder / f"{name}.key").write_bytes((keys / f"{name}.key").read_bytes())
    server = ["--curve-server-secret", str(keys / "broker.key_secret")]

    def client(name: str) -> list[str]:
        return [
            "--curve-client-secret",
            str(keys / f"{name}.key_secret"),
            "--curve-server-public",
            str(keys / "broker.key"),
        ]

    def key(name: str) -> ClientKeys:
        return ClientKeys.from_files(str(keys / f"{name}.key_secret"), str(keys / "broker.key"))

    with recording_pipeline(
        [
            *server,
            "--curve-authorized-dir",
            str(allowed),
            "--publish-authorized-dir",
            str(publishers),
            *client("recorder"),
        ],
        [*server, "--curve-authorized-dir", str(allowed)],
        client("w1"),
        (str(keys / "plugin.key_secret"), str(keys / "broker.key")),
    ) as pipeline:
        spy = Spy(pipeline, b"pub-", key("plugin"), key("publisher"))
        try:
            with (
                Publisher(pipeline.publish_endpoint, key("intruder"), timeout_s=2) as intruder,
                pytest.raises(Unreachable, match="CURVE refused by the recorder"),
            ):
                intruder.publish("pub-secure", rows(now_ms() - 1000, 1))
            with Publisher(pipeline.publish_endpoint, timeout_s=1) as plain, pytest.raises(Unreachable):
                plain.publish("pub-secure", rows(now_ms() - 1000, 1))
            intruder_keys = ["--curve-client-secret", str(keys / "intruder.key_secret")]
            cli = publish_cli(
                pipeline.run_dir,
                "pub-secure",
                [orjson.dumps({"time": now_ms() - 1000, "v": 1}).decode()],
                *intruder_keys,
                *["--curve-server-public", str(keys / "broker.key"), "--timeout", "2"],
            )
            assert cli.returncode == 1
            assert "CURVE refused by the recorder" in cli.stderr
            assert spy.events(wait_s=0.5) == [], "a refused publisher's rows reached frames_out"
            assert history(pipeline.history_endpoint, "pub-secure", keys=key("plugin")).error  # type: ignore[union-attr]

            with Publisher(pipeline.publish_endpoint, key("publisher")) as publisher:
                assert publisher.publish("pub-secure", rows(now_ms() - 1000, 2)) == 2
            [(channel, events)] = spy.events()
            assert channel == "pub-secure"
            assert len(events.times) == 2
        finally:
            spy.close()
        reply = history(pipeline.history_endpoint, "pub-secure", keys=key("plugin"))
        assert reply is not None
        assert len(reply.times) == 2
        assert history(pipeline.history_endpoint, "pub-secure", keys=key("publisher"), timeout_s=1) is None
        assert history(pipeline.history_endpoint, "pub-secure", timeout_s=1) is None


def test_a_restarted_broker_learns_the_published_channels_from_the_recorder() -> None:
    with recording_pipeline() as pipeline:
        with Publisher(pipeline.publish_endpoint) as publisher:
            publisher.publish("pub-survivor", rows(now_ms() - 1000, 1))
        pipeline.restart_broker()
        wait_for_recorder(pipeline)
        with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as plugin:
            plugin.linger = 0
            plugin.connect(pipeline.control_endpoint)
            plugin.send_multipart(protocol.encode(protocol.Subscribe("p-after", "pub-survivor")))
            assert plugin.poll(2000)
            reply = protocol.expect(plugin.recv_multipart(), protocol.SubscribeReply)
        assert reply.error == ""
        assert reply.epoch != 0, "the new broker did not place the channel the recorder offers"
        assert fetch(pipeline.control_endpoint, 2).channels["pub-survivor"]["worker"] == "recorder"


def test_a_publisher_a_few_requests_ahead_is_served_in_the_next_turn_not_refused(pipeline: Pipeline) -> None:
    """24 publishes sent at once, then their replies read: a turn checks 16 of a peer's, the
    rest wait for the next turn. Refusing them instead refused fast publishers that did wait
    for each reply (bench `events`: 18 refused in 3 s) whenever a turn read on."""
    start = time.time_ns() - 60_000_000_000
    with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as sock:
        sock.linger = 0
        sock.connect(pipeline.publish_endpoint)
        for i in range(24):
            sock.send_multipart(
                protocol.encode(
                    protocol.Publish(i, "pub-ahead", [start + i], [Column("v", fields.INT64, [i])])
                )
            )
        replies = []
        while len(replies) < 24 and sock.poll(5000):
            replies.append(protocol.expect(sock.recv_multipart(), protocol.PublishReply))
    assert [(reply.accepted, reply.error) for reply in replies] == [(1, "")] * 24


def test_a_source_row_from_a_worker_whose_clock_runs_ahead_does_not_end_the_channels_history(
    pipeline: Pipeline,
) -> None:
    """A worker on a host whose clock is an hour ahead sends one row (its own check passes it):
    the recorder must not take it, or every correct row after it is 'not after the last' for an hour."""
    channel = "source-ahead-100"
    now = time.time_ns()

    def batch(time_ns: int, value: int) -> Batch:
        return Batch([time_ns], [Column("v", fields.INT64, [value])])

    with source_worker(
        pipeline, channel, protocol.events_frame(channel, 10, batch(now - 5_000_000_000, 1))
    ) as worker:
        worker.send(protocol.events_frame(channel, 10, batch(now + 3600 * 1_000_000_000, 2)))
        worker.send(protocol.events_frame(channel, 10, batch(time.time_ns(), 3)))
        time.sleep(0.5)
    times, columns = recorded(history(pipeline.history_endpoint, channel))
    assert columns[0].values == [1, 3], (
        f"the row from the future was recorded and the next one dropped: {[(t - now) / 1e9 for t in times]}"
    )


def test_a_source_moved_to_a_worker_with_other_fields_is_recorded_in_its_new_schema(
    pipeline: Pipeline,
) -> None:
    """The host source on a 2-core worker has cpu0, cpu1; moved to an 8-core one (a newer epoch),
    cpu0..cpu7. Its new rows must be recorded, not dropped for ever as not fitting the old schema."""
    channel = "source-moved-100"
    base = time.time_ns() - 10_000_000_000

    def batch(offset: int, names: list[str]) -> Batch:
        return Batch([base + offset], [Column(name, fields.FLOAT64, [float(offset)]) for name in names])

    with source_worker(
        pipeline, channel, protocol.events_frame(channel, 10, batch(1, ["cpu0", "cpu1"]))
    ) as worker:
        worker.send(
            protocol.events_frame(channel, 10, batch(2, ["cpu0", "cpu1", "cpu2"]))
        )  # same run: dropped
        worker.place({channel: 11})  # moved
        worker.send(protocol.events_frame(channel, 11, batch(3, ["cpu0", "cpu1", "cpu2"])))
        worker.send(protocol.events_frame(channel, 11, batch(4, ["cpu0", "cpu1", "cpu2"])))
        recorded_once(pipeline, channel, base + 4)
    times, columns = recorded(history(pipeline.history_endpoint, channel))
    assert [c.name for c in columns] == ["cpu0", "cpu1", "cpu2"], "the moved source's rows were dropped"
    assert [t - base for t in times] == [3, 4]


def test_source_channels_a_viewer_invents_cannot_take_every_channel_from_publishers() -> None:
    """Any viewer may open source-host-<tick> for a thousand ticks (each is another channel, placed
    and recorded): they must not fill the recorder so that no publisher can begin a channel."""
    with recording_pipeline(["--max-channels", "4"]) as pipeline:
        now = time.time_ns()

        def frame(tick: int) -> bytes:
            batch = Batch([now - tick], [Column("cpu", fields.FLOAT64, [1.0])])
            return protocol.events_frame(f"source-host-{tick}", 10, batch)

        with source_worker(pipeline, "source-host-100", frame(100)) as worker:
            worker.place({f"source-host-{tick}": 10 for tick in range(101, 110)})
            for tick in range(101, 110):
                worker.send(frame(tick))
            time.sleep(0.5)
        with Publisher(pipeline.publish_endpoint) as publisher:
            assert publisher.publish("pub-mine", rows(now_ms() - 1000, 1)) == 1


def test_the_recorder_tells_a_new_broker_its_channels_at_once_then_only_renews_its_lease() -> None:
    """The broker link the generator workers use: a Welcome from a broker not yet told gets a full
    heartbeat at once, not at the next beat; beats after it are `unchanged` while nothing changed."""
    pipeline = Pipeline(0, recorder=True, recorder_args=["--worker-heartbeat-s", "3"])
    try:
        pipeline.stop_broker()
        with zmq.Context() as ctx, ctx.socket(zmq.ROUTER) as broker:
            broker.linger = 0
            broker.bind(pipeline.control_endpoint)

            def beat(within_s: float) -> tuple[bytes, protocol.WorkerHeartbeat]:
                deadline = time.monotonic() + within_s
                while True:  # past the StatusRequests each beat also sends (the sources' placements)
                    left_ms = max(1, round((deadline - time.monotonic()) * 1000))
                    assert broker.poll(left_ms), f"no heartbeat within {within_s} s"
                    peer, *frames = broker.recv_multipart()
                    message = protocol.decode(frames)
                    if isinstance(message, protocol.WorkerHeartbeat):
                        return peer, message

            peer, first = beat(10)
            assert first.role == protocol.RECORDER
            welcome = protocol.Welcome(f"ipc://{pipeline.run_dir}/frames_in", "broker-new")
            broker.send_multipart([peer, *protocol.encode(welcome)])
            _, told = beat(0.5)  # its beats are 3 s apart: this one answers the Welcome
            assert not told.unchanged
            _, next_beat = beat(4)
            assert next_beat.unchanged
            assert next_beat.channels == {}
    finally:
        pipeline.close()


def test_a_refusal_over_the_rate_counts_one_row_as_one_row_and_says_when_to_send_it() -> None:
    with recording_pipeline(recorder_args=["--max-rows-per-s", "1"]) as pipeline:
        start_ns = round((now_ms() - 60_000) * 1e6)
        first, second = (
            fields.from_records([{"time": (start_ns + i) / 1e6, "v": i}], None, 1) for i in (0, 10_000_000)
        )
        accepted, over = raw_publish(
            pipeline.publish_endpoint,
            protocol.Publish(1, "pub-slow", first.times, first.columns),
            protocol.Publish(2, "pub-slow", second.times, second.columns),
        )
    assert accepted.accepted == 1
    assert over.error.startswith(
        "pub-slow accepts at most 1 row/s (bursts of 1 row): 1 row now is over it for "
    ), over.error
    assert 0 < over.wait_ms <= 1000
