"""`zmqstream publish` and the Publisher client, against a real recorder and broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
import recording
import zmq
from recording import Spy, history, now_ms, publish_cli, raw_publish, recorded, recording_pipeline
from support import ROOT, Pipeline, plugin_of

from services.common import fields, protocol
from services.hostemu.host import data_query
from services.publish import Publisher, Unreachable


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    with recording_pipeline() as pipeline:
        yield pipeline


def line(time_ms: float, **values: object) -> str:
    return orjson.dumps({"time": time_ms, **values}).decode()


def test_published_lines_reach_frames_out_and_history_with_their_own_times(pipeline: Pipeline) -> None:
    start = now_ms() - 60_000
    lines = [
        orjson.dumps({"time": "2026-11-29T12:00:00Z", "temp": 21.5, "door": "open"}).decode(),
        line(start, temp=22, door="closed"),  # an int into the float64 field
        line(start + 1000, temp=None, door="open"),
    ]
    spy = Spy(pipeline, b"pub-cli\0")
    try:
        result = publish_cli(pipeline.run_dir, "pub-cli", lines)
        received = spy.events(count=3)
    finally:
        spy.close()
    assert result.returncode == 0, result.stderr
    assert "3 rows published to pub-cli, 0 lines refused" in result.stderr
    expected = [
        fields.parse_time("2026-11-29T12:00:00Z"),
        fields.parse_time(start),
        fields.parse_time(start + 1000),
    ]
    assert [t for _, events in received for t in events.times] == expected
    times, columns = recorded(history(pipeline.history_endpoint, "pub-cli"))
    assert times == expected
    assert columns[0].kind == fields.FLOAT64
    assert columns[0].values == [21.5, 22.0, None]
    assert columns[1].values == ["open", "closed", "open"]


def test_refused_lines_are_named_with_their_reason_and_the_rest_go_in(pipeline: Pipeline) -> None:
    start = now_ms() - 60_000
    lines = [
        line(start, temp=1.5, door=True),
        line(start + 1, temp="warm", door=False),  # the field's type changed
        "not json",
        line(now_ms() + 86_400_000, temp=3.0, door=True),  # a day ahead
        line(start + 3, temp=4.0, door=True),
        line(start + 4, temp=5.0, door=True, note="x" * 200_000),  # longer than a line may be
    ]
    result = publish_cli(pipeline.run_dir, "pub-lines", lines)
    assert result.returncode == 1
    assert "line 2 refused:" in result.stderr
    assert "field 'temp' is string" in result.stderr
    assert "line 3 refused: not JSON" in result.stderr
    assert "line 4 refused: time" in result.stderr
    assert "ahead of the recorder's clock" in result.stderr
    assert "line 6 refused: the line is longer than 131072 characters" in result.stderr
    assert "2 rows published to pub-lines, 4 lines refused" in result.stderr
    times, columns = recorded(history(pipeline.history_endpoint, "pub-lines"))
    assert times == [fields.parse_time(start), fields.parse_time(start + 3)]
    assert columns[1].values == [True, True]


def test_lines_arrive_in_batches(pipeline: Pipeline) -> None:
    start = now_ms() - 30_000
    result = publish_cli(pipeline.run_dir, "pub-many", [line(start + i, v=i) for i in range(900)])
    assert result.returncode == 0, result.stderr
    times, _ = recorded(history(pipeline.history_endpoint, "pub-many", max_rows=2000))
    assert len(times) == 900


def test_no_recorder_is_said_at_once(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o700)
    started = time.monotonic()
    result = publish_cli(tmp_path, "pub-x", [line(now_ms(), v=1)])
    assert result.returncode == 1
    assert f"no recorder at ipc://{tmp_path}/publish" in result.stderr
    assert time.monotonic() - started < 10


def test_a_silent_recorder_is_a_timeout_not_a_hang(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o700)
    with zmq.Context() as ctx, ctx.socket(zmq.ROUTER) as silent:
        silent.linger = 0
        silent.bind(f"ipc://{tmp_path}/publish")
        started = time.monotonic()
        with (
            Publisher(f"ipc://{tmp_path}/publish", timeout_s=1) as publisher,
            pytest.raises(Unreachable) as caught,
        ):
            publisher.publish("pub-x", [{"time": now_ms(), "v": 1}])
        elapsed = time.monotonic() - started
    assert "did not answer within 1 s" in str(caught.value)
    assert 1 <= elapsed < 3


def test_a_client_learns_the_schema_from_the_refusal(pipeline: Pipeline) -> None:
    start = now_ms() - 10_000
    with Publisher(pipeline.publish_endpoint) as first:
        first.publish("pub-learn", [{"time": start, "temp": 21.5, "note": "x"}])
    with Publisher(pipeline.publish_endpoint) as second:  # knows nothing of the channel
        assert second.publish("pub-learn", [{"time": start + 1, "temp": 22, "note": None}]) == 1
    _, columns = recorded(history(pipeline.history_endpoint, "pub-learn"))
    assert columns[0].values == [21.5, 22.0]
    assert columns[1].values == ["x", None]


def test_status_shows_the_recorder_with_its_role(pipeline: Pipeline) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "status", "--control-endpoint", pipeline.control_endpoint],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    [row] = [r for r in result.stdout.splitlines() if r.startswith("recorder ")]
    assert row.split()[1] == "recorder"
    assert any(r.split()[:2] == ["w1", "generator"] for r in result.stdout.splitlines())


def test_published_lines_reach_a_panel_and_querydata_with_their_own_times_and_kinds(
    pipeline: Pipeline,
) -> None:
    """The whole path a user's rows take: `zmqstream publish` → recorder → broker → plugin → panel."""
    start = now_ms() - 5_000
    before = [
        line(start, temp=21.5, door="open", ok=True),
        line(start + 1000, temp=None, door="shut", ok=None),
    ]
    assert publish_cli(pipeline.run_dir, "pub-panel", before).returncode == 0
    with plugin_of(pipeline) as host:
        answer = host.subscribe("pub-panel")  # a panel opened now: the recorded rows
        stream = host.run_stream("pub-panel")
        viewer = stream.add_viewer(answer.data)
        later = threading.Timer(
            1.0,
            publish_cli,
            (pipeline.run_dir, "pub-panel", [line(start + 2000, temp=23, door="open", ok=False)]),
        )
        later.start()
        try:
            stream.read_rows(1)
        finally:
            later.join()
            stream.cancel()
        expected_ns = [fields.parse_time(start + offset) for offset in (0, 1000, 2000)]
        assert viewer.times_ns == expected_ns
        assert viewer.column("temp") == [21.5, None, 23.0]
        assert viewer.column("door") == ["open", "shut", "open"]
        assert viewer.column("ok") == [True, None, False]
        query = data_query("A", {"kind": "published", "channel": "panel"}, int(start) - 1000, int(now_ms()))
        response = host.query_data([query]).responses["A"]
    assert response.status == 200, response.error
    table = pa.ipc.open_file(pa.py_buffer(response.frames[0])).read_all()
    assert table.column("time").cast(pa.int64()).to_pylist() == expected_ns
    assert table.schema.field("ok").type == pa.bool_()
    assert table.column("door").to_pylist() == ["open", "shut", "open"]


def test_a_line_that_is_not_utf8_is_refused_by_number_and_the_others_go_in(pipeline: Pipeline) -> None:
    """Under a UTF-8 locale stdin decodes strictly: one Latin-1 byte killed the reading thread and
    `zmqstream publish` hung for ever. It is refused as any line that is not JSON."""
    start = now_ms() - 5000
    bad = b'{"time": %d, "v": "caf\xe9"}\n' % int(start)
    good = line(start + 1, v="ok").encode() + b"\n"
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "publish", "pub-latin1", "--run-dir", str(pipeline.run_dir)],
        cwd=ROOT,
        input=bad + good,
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"},
        timeout=20,
    )
    assert result.returncode == 1, result.stderr
    assert b"line 1 refused" in result.stderr, result.stderr
    assert b"1 row published to pub-latin1, 1 line refused" in result.stderr, result.stderr
    _, columns = recorded(history(pipeline.history_endpoint, "pub-latin1"))
    assert columns[0].values == ["ok"]


# -- publishing that cannot leave holes --------------------------------------------------------


def test_a_file_faster_than_the_channels_budget_goes_in_whole_paced_not_refused(pipeline: Pipeline) -> None:
    """4,000 lines against 1,000 rows/s: on main 1,261 of 3,000 were refused, interleaved, and
    could never be sent again (times must increase). Now the publisher waits, and says so."""
    start = now_ms() - 60_000
    result = publish_cli(pipeline.run_dir, "pub-paced", [line(start + i, v=i) for i in range(4000)])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "4,000 rows published to pub-paced, 0 lines refused" in result.stderr
    assert "waiting for its rows-per-second budget" in result.stderr
    times, columns = recorded(history(pipeline.history_endpoint, "pub-paced", max_rows=5000))
    assert times == [fields.parse_time(start + i) for i in range(4000)]
    assert columns[0].values == list(range(4000))


def test_a_publisher_sends_more_than_a_burst_in_bursts(pipeline: Pipeline) -> None:
    start = now_ms() - 60_000
    with Publisher(pipeline.publish_endpoint) as publisher:
        assert publisher.publish("pub-bursts", [{"time": start + i, "v": i} for i in range(2500)]) == 2500
    times, _ = recorded(history(pipeline.history_endpoint, "pub-bursts", max_rows=5000))
    assert len(times) == 2500


def test_a_batch_sent_again_with_its_sequence_is_applied_once_and_answered_as_accepted(
    pipeline: Pipeline,
) -> None:
    start_ns = round((now_ms() - 10_000) * 1e6)
    batch = fields.from_records([{"time": start_ns / 1e6 + i, "v": i} for i in range(3)], None, 10)
    message = protocol.Publish(7, "pub-once", batch.times, batch.columns, "publisher-a", 1)
    first, again = raw_publish(pipeline.publish_endpoint, message, message)
    assert (first.accepted, first.error) == (3, "")
    assert (again.accepted, again.error) == (3, "")  # on main: refused, "not after the channel's last row"
    times, columns = recorded(history(pipeline.history_endpoint, "pub-once"))
    assert times == batch.times
    assert columns[0].values == [0, 1, 2]


def test_publishing_the_same_rows_after_an_unanswered_publish_records_them_once(pipeline: Pipeline) -> None:
    """The recorder stopped (SIGSTOP) past the publisher's timeout: Unreachable, the rows may or may
    not be in. Publishing the same rows again with the same Publisher records them exactly once."""
    assert pipeline.recorder is not None
    records = [{"time": now_ms() - 5_000 + i, "v": i} for i in range(3)]
    with Publisher(pipeline.publish_endpoint, timeout_s=1) as publisher:
        publisher.publish("pub-retry", [{"time": now_ms() - 10_000, "v": -1}])  # connected, channel known
        os.kill(pipeline.recorder.pid, signal.SIGSTOP)
        try:
            with pytest.raises(Unreachable, match="publish the same rows again"):
                publisher.publish("pub-retry", records)
        finally:
            os.kill(pipeline.recorder.pid, signal.SIGCONT)
        assert publisher.publish("pub-retry", records) == 3  # on main: Refused, not after the last row
    _, columns = recorded(history(pipeline.history_endpoint, "pub-retry"))
    assert columns[0].values == [-1, 0, 1, 2]


def test_a_publish_whose_recorder_died_unanswered_is_sent_again_to_the_next_one(pipeline: Pipeline) -> None:
    """The Publish sat unread in a recorder killed before it answered: the Publisher sends it
    again on the new connection within its timeout (on main: Unreachable after the timeout)."""
    assert pipeline.recorder is not None
    records = [{"time": now_ms() - 5_000 + i, "v": i} for i in range(3)]
    answered: list[int] = []
    with Publisher(pipeline.publish_endpoint, timeout_s=20) as publisher:
        publisher.publish("pub-resent", [{"time": now_ms() - 10_000, "v": -1}])  # connected
        os.kill(pipeline.recorder.pid, signal.SIGSTOP)
        sending = threading.Thread(target=lambda: answered.append(publisher.publish("pub-resent", records)))
        sending.start()
        time.sleep(0.5)  # the Publish is in the stopped recorder's socket
        pipeline.recorder.kill()
        pipeline.recorder.wait()
        pipeline.start_recorder()
        sending.join(25)
    recording.wait_for_recorder(pipeline)
    assert answered == [3]
    _, columns = recorded(history(pipeline.history_endpoint, "pub-resent"))
    assert columns[0].values == [0, 1, 2]  # the new recorder: the resent rows, once


def test_records_without_a_time_are_stamped_by_the_recorder_on_arrival(pipeline: Pipeline) -> None:
    before_ns = time.time_ns()
    with Publisher(pipeline.publish_endpoint) as publisher:
        assert publisher.publish("pub-stamped", [{"v": 1}, {"v": 2}]) == 2
        assert publisher.publish("pub-stamped", [{"v": 3}]) == 1
    times, columns = recorded(history(pipeline.history_endpoint, "pub-stamped"))
    assert columns[0].values == [1, 2, 3]
    assert times == sorted(set(times)), "strictly increasing"
    assert before_ns <= times[0]
    assert times[-1] <= time.time_ns()
