"""The recorder's rings and segment files, on their own."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import ROOT

from services.common import fields
from services.common.fields import Batch, Column
from services.common.rundir import UntrustedRunDir
from services.recorder.intake import (
    Budget,
    publish_problem,
    size_problem,
    stamp,
)
from services.recorder.ring import Rings, batch_bytes
from services.recorder.segments import SUFFIX, Store

SECOND = 1_000_000_000


def batch(start: int, count: int, step: int = SECOND) -> Batch:
    times = [start + i * step for i in range(count)]
    return Batch(
        times,
        [
            Column("f", fields.FLOAT64, [float(i) if i % 3 else None for i in range(count)]),
            Column("i", fields.INT64, list(range(count))),
            Column("b", fields.BOOL, [i % 2 == 0 for i in range(count)]),
            Column("s", fields.STRING, [f"s{i}" for i in range(count)]),
        ],
    )


def test_a_ring_keeps_the_last_rows_within_its_row_bound() -> None:
    rings = Rings(ring_rows=250, ring_bytes=10**9, total_bytes=10**9)
    for k in range(10):
        rings.add("pub-a", batch(k * 100 * SECOND, 100))
    ring = rings.channels["pub-a"]
    assert ring.rows == 250
    found, truncated = rings.query("pub-a", 0, 2**62, 1000) or (None, None)
    assert found is not None
    assert not truncated
    assert found.times == [i * SECOND for i in range(750, 1000)]
    assert found.columns[1].values == list(range(50, 100)) + list(range(100)) * 2


def test_small_batches_merge_into_the_ring_s_own_chunk_and_leave_the_added_ones_as_they_were() -> None:
    rings = Rings(ring_rows=10_000, ring_bytes=10**9, total_bytes=10**9)
    added = [batch(k * SECOND, 1) for k in range(50)]
    for each in added:
        rings.add("pub-a", each)
    assert [len(each) for each in added] == [1] * 50  # the segments hold these: never extended
    ring = rings.channels["pub-a"]
    assert len(ring.chunks) == 1
    assert ring.bytes == sum(batch_bytes(each) for each in added)
    found, _ = rings.query("pub-a", 0, 2**62, 1000) or (None, None)
    assert found is not None
    assert found.times == [k * SECOND for k in range(50)]


def test_a_ring_keeps_within_its_bytes_and_all_rings_within_the_total() -> None:
    one = batch_bytes(batch(0, 100))
    rings = Rings(ring_rows=10**9, ring_bytes=3 * one, total_bytes=4 * one)
    for k in range(10):
        rings.add("pub-a", batch(k * 100 * SECOND, 100))
    assert rings.channels["pub-a"].bytes <= 3 * one
    rings.add("pub-b", batch(10_000 * SECOND, 100))
    rings.add("pub-b", batch(10_100 * SECOND, 100))
    assert rings.bytes <= 4 * one
    assert rings.bytes == sum(r.bytes for r in rings.channels.values())
    assert rings.channels["pub-b"].rows == 200, "the newer channel's rows went before the older one's"
    assert rings.channels["pub-a"].last_time == 999 * SECOND
    found = rings.query("pub-a", 0, 2**62, 10**6)
    assert found is not None
    assert found[0].times[-1] == 999 * SECOND


def test_a_query_returns_the_last_rows_of_its_range() -> None:
    rings = Rings(10**6, 10**9, 10**9)
    for k in range(5):
        rings.add("pub-a", batch(k * 10 * SECOND, 10))  # merged into one chunk, and more
    found = rings.query("pub-a", 5 * SECOND, 30 * SECOND, 7)
    assert found is not None
    rows, truncated = found
    assert rows.times == [i * SECOND for i in range(24, 31)]
    assert truncated
    assert rings.query("pub-a", 100 * SECOND, 200 * SECOND, 7) == (
        Batch([], [Column(c.name, c.kind, []) for c in batch(0, 1).columns]),
        False,
    )
    assert rings.query("pub-nothing", 0, 1, 1) is None


def test_publish_checks_say_what_is_wrong() -> None:
    rows = batch(10 * SECOND, 3)
    check = {"schema": rows.schema, "now_ns": 100 * SECOND, "skew_ns": SECOND}
    assert publish_problem("pub-a", rows, last_time=9 * SECOND, **check) == ""  # type: ignore[arg-type]
    assert "not after the channel's last row (1970-01-01T00:00:10Z)" in publish_problem(
        "pub-a",
        rows,
        last_time=10 * SECOND,
        **check,  # type: ignore[arg-type]
    )
    other = Batch(rows.times, [Column("f", fields.STRING, ["x"] * 3)])
    problem = publish_problem("pub-a", other, last_time=None, **check)  # type: ignore[arg-type]
    assert problem.endswith(f"the channel's schema: {rows.schema.describe()}")
    assert size_problem(1000, 1000) == ""
    assert "the message is 1001 bytes, the limit is 1000" in size_problem(1001, 1000)
    assert stamp(1_500_000_000) == "1970-01-01T00:00:01.5Z"
    budget = Budget(100.0, 100.0, 0.0)
    assert budget.allows(100, 0.0)
    budget.take(100)
    assert not budget.allows(50, 0.1)
    assert budget.allows(50, 0.5)


def store(folder: Path, **overrides: float) -> Store:
    settings = {"keep_s": 3600.0, "max_bytes": 10**9, "segment_s": 300.0, "segment_bytes": 10**9} | overrides
    return Store(folder, **settings)  # type: ignore[arg-type]


def test_segments_keep_typed_columns_and_load_back(tmp_path: Path) -> None:
    folder = tmp_path / "record"
    now = time.time_ns()
    rows = batch(now - 100 * SECOND, 50)
    writer = store(folder)
    writer.write("pub-a", rows.last(50).after(0))
    writer.flush()
    writer.write("pub-a", batch(now - 10 * SECOND, 2))
    writer.close()
    assert os.stat(folder).st_mode & 0o777 == 0o700
    [segment] = list((folder / "pub-a").iterdir())
    assert segment.name.endswith(SUFFIX)
    assert os.stat(segment).st_mode & 0o777 == 0o600
    with pa.ipc.open_stream(segment.read_bytes()) as reader:
        schema = reader.schema
    assert [str(t) for t in schema.types] == ["timestamp[ns]", "double", "int64", "bool", "string"]
    assert [f.nullable for f in schema][1:] == [True] * 4

    loaded = store(folder).load(max_rows=10**6)
    assert fields.concat(loaded["pub-a"]) == fields.concat([rows, batch(now - 10 * SECOND, 2)])


def test_segments_rotate_and_are_pruned_by_age_and_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "record"
    now = time.time_ns()
    writer = store(folder, segment_bytes=1, keep_s=70.0)
    for k in range(4):  # every flush begins a new segment: each is over 1 byte
        writer.write("pub-a", batch(now - (100 - k * 20) * SECOND, 5))
        writer.flush(now)
    names = sorted(p.name for p in (folder / "pub-a").iterdir())
    assert len(names) == 2, "segments whose rows are all older than keep_s stay"
    assert store(folder, keep_s=1.0).load(max_rows=10**6) == {}
    assert not (folder / "pub-a").exists(), "a channel all of whose rows expired stays on disk"
    writer.close()


def test_the_oldest_segments_go_past_max_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "record"
    now = time.time_ns()
    writer = store(folder, segment_bytes=1)
    for k, channel in enumerate(["pub-a", "pub-b", "pub-a"]):
        writer.write(channel, batch(now - (100 - k * 20) * SECOND, 5))
        writer.flush(now)
    sizes = sum(p.stat().st_size for p in folder.glob("*/*"))
    writer.max_bytes = sizes - 1
    writer.prune(now)
    assert sorted(p.parent.name for p in folder.glob("*/*")) == ["pub-a", "pub-b"]
    assert min(int(p.stem) for p in folder.glob("pub-a/*")) == now - 60 * SECOND
    writer.close()


def test_a_segment_older_than_segment_s_is_closed_and_the_next_rows_begin_another(tmp_path: Path) -> None:
    now = time.time_ns()
    writer = store(tmp_path / "record", segment_s=0.05)
    writer.write("pub-a", batch(now - 10 * SECOND, 2))
    writer.flush()
    time.sleep(0.1)
    writer.flush()  # closes the old one, even with nothing to write
    writer.write("pub-a", batch(now - 5 * SECOND, 2))
    writer.close()
    assert len(list((tmp_path / "record" / "pub-a").iterdir())) == 2
    loaded = store(tmp_path / "record").load(max_rows=10**6)
    assert (
        fields.concat(loaded["pub-a"]).times
        == batch(now - 10 * SECOND, 2).times + batch(now - 5 * SECOND, 2).times
    )


def test_a_truncated_segment_loads_up_to_its_damage(tmp_path: Path) -> None:
    folder = tmp_path / "record"
    now = time.time_ns()
    writer = store(folder)
    writer.write("pub-a", batch(now - 100 * SECOND, 5))
    writer.flush()
    writer.write("pub-a", batch(now - 50 * SECOND, 5))
    writer.close()
    [segment] = list((folder / "pub-a").iterdir())
    data = segment.read_bytes()
    segment.write_bytes(data[: len(data) - 30])
    loaded = store(folder).load(max_rows=10**6)
    assert loaded["pub-a"] == [batch(now - 100 * SECOND, 5)]


def test_a_record_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    if os.geteuid() != 0:
        pytest.skip("needs root to give the folder away")
    os.chown(folder, 54321, 54321)
    with pytest.raises(UntrustedRunDir, match=r"record folder .* is owned by uid 54321"):
        store(folder)
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    with pytest.raises(UntrustedRunDir, match="writable by others"):
        store(loose)


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(
        st.tuples(st.sampled_from(["pub-a", "pub-b", "source-s-100"]), st.integers(1, 300)), max_size=30
    ),
    ring_rows=st.integers(1, 500),
    ring_kib=st.integers(1, 200),
    total_kib=st.integers(1, 300),
)
def test_rings_stay_within_every_bound_and_keep_each_channels_newest_rows(
    sizes: list[tuple[str, int]], ring_rows: int, ring_kib: int, total_kib: int
) -> None:
    rings = Rings(ring_rows, ring_kib * 1024, total_kib * 1024)
    added: dict[str, list[int]] = {}
    clock = 0
    for channel, count in sizes:
        rows = batch(clock, count, step=1)
        clock += count
        rings.add(channel, rows)
        added.setdefault(channel, []).extend(rows.times)
        assert rings.bytes <= rings.total_bytes
        assert rings.bytes == sum(r.bytes for r in rings.channels.values())
        for name, ring in rings.channels.items():
            assert ring.rows <= ring_rows
            assert ring.bytes <= ring_kib * 1024
            assert ring.last_time == added[name][-1]
            found = rings.query(name, 0, 2**62, 10**6)
            assert found is not None
            kept = found[0].times
            assert len(kept) == ring.rows
            assert kept == added[name][len(added[name]) - len(kept) :], "not the newest rows, in order"


def test_a_source_channel_whose_schema_changed_loads_back_in_its_new_schema(tmp_path: Path) -> None:
    folder = tmp_path / "record"
    now = time.time_ns()
    writer = store(folder)
    writer.write("source-host-100", batch(now - 100 * SECOND, 5))
    writer.flush()
    other = Batch([now - 10 * SECOND], [Column("cpu7", fields.FLOAT64, [1.5])])
    writer.reschema("source-host-100", other.schema)
    writer.write("source-host-100", other)
    writer.close()
    loaded = store(folder).load(max_rows=10**6)
    assert loaded["source-host-100"] == [other]


def test_a_file_whose_name_only_looks_like_digits_is_left_alone_at_load(tmp_path: Path) -> None:
    """str.isdigit() is true of '²', which int() refuses: not a segment of ours."""
    folder = tmp_path / "record"
    rows = two_rows_recorded(folder)
    (folder / "pub-a" / f"²{SUFFIX}").write_bytes(b"")
    loaded = store(folder).load(max_rows=10**6)
    assert fields.concat(loaded["pub-a"]) == rows


def two_rows_recorded(folder: Path) -> Batch:
    """Two rows of `pub-a`, ten seconds old, written to segments in `folder`."""
    rows = batch(time.time_ns() - 10 * SECOND, 2)
    writer = store(folder)
    writer.write("pub-a", rows)
    writer.close()
    return rows


def test_a_fifo_named_like_a_segment_is_skipped_at_load(tmp_path: Path) -> None:
    """Opening a FIFO blocks until someone writes to it: the recorder hung at start, deaf to SIGTERM."""
    folder = tmp_path / "record"
    rows = two_rows_recorded(folder)
    fifo = folder / "pub-a" / f"{time.time_ns() - 5 * SECOND}{SUFFIX}"
    os.mkfifo(fifo, 0o600)
    loaded: dict[str, list[Batch]] = {}
    loading = threading.Thread(target=lambda: loaded.update(store(folder).load(max_rows=10**6)), daemon=True)
    loading.start()
    loading.join(10)
    hung = loading.is_alive()
    if hung:  # let the blocked open return, so the test ends
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        loading.join(10)
    assert not hung, "load hung on the FIFO"
    assert fields.concat(loaded["pub-a"]) == rows


LOAD_PEAK = """
import resource, sys
from pathlib import Path
from services.recorder.segments import Store
store = Store(Path(sys.argv[1]), keep_s=3600, max_bytes=10**10, segment_s=60, segment_bytes=10**8)
loaded = store.load(100_000)
print(sum(len(b) for b in loaded["pub-big"]), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


@pytest.mark.timeout(120)
def test_a_small_compressed_segment_of_millions_of_rows_loads_in_bounded_memory(tmp_path: Path) -> None:
    """5M rows in a 5 MB zstd segment took 621 MiB at load (all converted to Python values)."""
    folder = tmp_path / "record"
    store(folder).close()
    (folder / "pub-big").mkdir(mode=0o700)
    rows = 5_000_000
    start = time.time_ns() - 60 * SECOND
    schema = pa.schema([pa.field("time", pa.timestamp("ns"), nullable=False), pa.field("v", pa.float64())])
    times = pa.array(range(start, start + rows), pa.int64()).cast(pa.timestamp("ns"))
    record = pa.RecordBatch.from_arrays([times, pa.array([1.0] * rows, pa.float64())], schema=schema)
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with (
        open(folder / "pub-big" / f"{start}{SUFFIX}", "wb") as out,
        pa.ipc.new_stream(out, schema, options=options) as w,
    ):
        w.write_batch(record)
    del times, record
    done = subprocess.run(
        [sys.executable, "-c", LOAD_PEAK, str(folder)], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded, peak_mib = map(int, done.stdout.split())
    print(f"\n[figure] a 5M-row zstd segment loaded: {loaded:,} rows kept, peak RSS {peak_mib} MiB")
    assert loaded == 100_000, "the last ring_rows rows, not all five million"
    assert peak_mib < 300


def test_the_record_folder_swapped_for_a_symlink_after_start_is_not_followed(tmp_path: Path) -> None:
    """A parent another user may write to lets them rename the folder and plant a symlink in
    its place: the store goes on in the folder it checked, through its descriptor."""
    parent = tmp_path / "shared"
    parent.mkdir()
    folder, elsewhere = parent / "record", tmp_path / "elsewhere"
    elsewhere.mkdir()
    now = time.time_ns()
    writer = store(folder)
    folder.rename(parent / "moved")
    folder.symlink_to(elsewhere)
    writer.write("pub-a", batch(now - 10 * SECOND, 2))
    writer.close()
    assert list(elsewhere.iterdir()) == [], "written through the planted symlink"
    loaded = store(parent / "moved").load(max_rows=10**6)
    assert fields.concat(loaded["pub-a"]) == batch(now - 10 * SECOND, 2)
