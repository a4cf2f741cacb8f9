"""The recorder's rings and its store on disk, on their own."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the bench package sits at the repo root

from bench.ledger import fill, record_folder
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
from services.recorder.store import DATABASE, LAST_TIMES, Store, StoreError

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
    settings = {"keep_s": 3600.0, "max_bytes": 10**9} | overrides
    return Store(folder, **settings)  # type: ignore[arg-type]


def loaded_times(folder: Path, channel: str) -> tuple[list[int], int]:
    """A channel's rows and last time as a new store loads them."""
    reader = store(folder)
    found = reader.load(max_rows=10**6)[channel]
    reader.close()
    return [t for b in found.batches for t in b.times], found.last_ns


def test_the_store_keeps_typed_columns_privately_and_loads_them_back(tmp_path: Path) -> None:
    folder = tmp_path / "record"
    now = time.time_ns()
    rows = batch(now - 100 * SECOND, 50)
    writer = store(folder)
    writer.write("pub-a", rows)
    writer.flush()
    writer.write("pub-a", batch(now - 10 * SECOND, 2))
    writer.close()
    assert os.stat(folder).st_mode & 0o777 == 0o700
    assert os.stat(folder / DATABASE).st_mode & 0o777 == 0o600
    assert os.stat(folder / LAST_TIMES).st_mode & 0o777 == 0o600
    found = store(folder).load(max_rows=10**6)["pub-a"]
    assert fields.concat(found.batches) == fields.concat([rows, batch(now - 10 * SECOND, 2)])
    assert found.schema == rows.schema
    assert found.last_ns == now - 9 * SECOND


def test_rows_are_pruned_by_age_and_the_oldest_go_past_max_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "record"
    now = time.time_ns()
    writer = store(folder, keep_s=70.0)
    for k, channel in enumerate(["pub-a", "pub-b", "pub-a", "pub-b"]):
        writer.write(channel, batch(now - (100 - k * 20) * SECOND, 5))
    writer.flush(now)
    assert loaded_times(folder, "pub-a")[0] == batch(now - 60 * SECOND, 5).times
    writer.max_bytes = writer.bytes - 1
    writer.prune(now)
    writer.close()
    assert loaded_times(folder, "pub-a")[0] == []  # pub-a's batch was the oldest
    assert loaded_times(folder, "pub-b")[0] == batch(now - 40 * SECOND, 5).times
    assert store(folder, keep_s=1.0).load(max_rows=10**6) == {}


def test_a_source_channel_whose_schema_changed_loads_back_in_its_new_schema(tmp_path: Path) -> None:
    folder = tmp_path / "record"
    now = time.time_ns()
    writer = store(folder)
    writer.write("source-host-100", batch(now - 100 * SECOND, 5))
    other = Batch([now - 10 * SECOND], [Column("cpu7", fields.FLOAT64, [1.5])])
    writer.forget("source-host-100")
    writer.write("source-host-100", other)
    writer.close()
    found = store(folder).load(max_rows=10**6)["source-host-100"]
    assert found.batches == [other]
    assert found.schema == other.schema


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


@pytest.mark.parametrize("lost", [DATABASE, LAST_TIMES])
def test_the_last_time_of_a_channel_survives_the_loss_of_any_one_file(tmp_path: Path, lost: str) -> None:
    folder = tmp_path / "record"
    now = time.time_ns()
    writer = store(folder)
    writer.write("pub-a", batch(now - 10 * SECOND, 3))
    writer.close()
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            (folder / (lost + suffix)).unlink()
    found = store(folder).load(max_rows=10**6)["pub-a"]
    assert found.last_ns == now - 8 * SECOND
    assert found.schema == batch(0, 1).schema


def test_a_damaged_database_is_set_aside_and_its_readable_rows_kept(tmp_path: Path) -> None:
    folder = tmp_path / "record"
    now = time.time_ns()
    writer = store(folder)
    for k in range(200):  # many pages: the damage hits some, not all
        writer.write("pub-a", batch(now - (1000 - k) * SECOND, 1))
    writer.close()
    data = bytearray((folder / DATABASE).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = os.urandom(4096)
    (folder / DATABASE).write_bytes(bytes(data))
    times, last_ns = loaded_times(folder, "pub-a")
    assert last_ns == now - 801 * SECOND, "the last time was lost with the damaged page"
    expected = [now - (1000 - k) * SECOND for k in range(200)]
    assert set(times) <= set(expected), "a damaged row was served altered"
    assert times == sorted(times)
    assert list(folder.glob(f"{DATABASE}.damaged-*")), "the damaged database was not kept aside"


@pytest.mark.parametrize("damage", ["header", "truncated"])
def test_a_database_that_does_not_open_or_ends_early_is_set_aside_and_the_last_time_kept(
    tmp_path: Path, damage: str
) -> None:
    folder = tmp_path / "record"
    now = time.time_ns()
    writer = store(folder)
    for k in range(200):
        writer.write("pub-a", batch(now - (1000 - k) * SECOND, 1))
    writer.close()
    data = (folder / DATABASE).read_bytes()
    (folder / DATABASE).write_bytes(
        os.urandom(100) + data[100:] if damage == "header" else data[: len(data) // 3]
    )
    reader = store(folder)
    found = reader.load(max_rows=10**6)["pub-a"]
    assert found.last_ns == now - 801 * SECOND
    expected = [now - (1000 - k) * SECOND for k in range(200)]
    times = [t for b in found.batches for t in b.times]
    assert set(times) <= set(expected), "a row served altered"
    assert times == sorted(times)
    reader.write("pub-a", batch(now, 1))  # and it records again
    reader.close()
    assert loaded_times(folder, "pub-a")[1] == now


def test_a_torn_entry_of_the_last_times_log_does_not_hide_the_next(tmp_path: Path) -> None:
    folder = tmp_path / "record"
    now = time.time_ns()
    writer = store(folder)
    writer.write("pub-a", batch(now - 10 * SECOND, 1))
    writer.close()
    with open(folder / LAST_TIMES, "ab") as log:
        log.write(b'\n["pub-a", 12')  # a crash mid-entry
    writer = store(folder)
    writer.load(max_rows=10)
    writer.write("pub-a", batch(now - 5 * SECOND, 1))
    writer.close()
    (folder / DATABASE).unlink()
    assert store(folder).load(max_rows=10)["pub-a"].last_ns == now - 5 * SECOND


def test_a_write_to_a_full_disk_is_refused_whole_and_the_next_ones_after_space_comes_back_are_kept(
    tmp_path: Path,
) -> None:
    with record_folder() as (folder, skipped):
        if skipped:
            pytest.skip(skipped)
        now = time.time_ns() - 3000 * SECOND
        writer = store(folder)
        writer.load(max_rows=10)
        acknowledged: list[int] = []
        reasons: set[str] = set()
        filler = folder.parent / "filler"
        fill(filler)
        for k in range(400):
            rows = batch(now + k * SECOND, 1)
            if k == 200:
                filler.unlink()  # space comes back
            if k % 10 == 0:
                writer.flush()  # as the recorder does each second: the WAL is checkpointed
            try:
                writer.write("pub-a", rows)
            except StoreError as exc:
                reasons.add(str(exc).split(" (")[0])
                continue
            acknowledged += rows.times
        writer.close()
        assert reasons == {"the recorder could not store these rows"}, "the disk never filled"
        assert len(acknowledged) >= 150, "writes after space came back failed"
        times, last_ns = loaded_times(folder, "pub-a")
        assert times == acknowledged
        assert last_ns == acknowledged[-1]


def test_a_store_that_cannot_open_on_a_full_disk_says_so_and_sets_nothing_aside(tmp_path: Path) -> None:
    with record_folder() as (folder, skipped):
        if skipped:
            pytest.skip(skipped)
        now = time.time_ns()
        writer = store(folder)
        writer.write("pub-a", batch(now - 10 * SECOND, 3))
        writer.close()
        fill(folder.parent / "filler")
        with pytest.raises(StoreError, match="cannot open the record store"):
            store(folder)
        (folder.parent / "filler").unlink()
        assert not list(folder.glob(f"{DATABASE}.damaged-*")), "a sound database was set aside"
        assert loaded_times(folder, "pub-a")[0] == batch(now - 10 * SECOND, 3).times


WRITER = """
import sys, time
from pathlib import Path
from services.common import fields
from services.common.fields import Batch, Column
from services.recorder.store import Store
store = Store(Path(sys.argv[1]), keep_s=1e9, max_bytes=10**12)
store.load(max_rows=10)
start = int(sys.argv[2])
for k in range(100_000):
    store.write("pub-a", Batch([start + k], [Column("v", fields.INT64, [k])]))
    print(k, flush=True)
"""


def test_a_kill_9_at_any_moment_of_a_write_loses_no_acknowledged_row(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    chance = random.Random(seed)
    folder = tmp_path / "record"
    start = time.time_ns() - 10**12
    acknowledged = -1
    for _ in range(4):
        with subprocess.Popen(
            [sys.executable, "-c", WRITER, str(folder), str(start + acknowledged + 1)],
            stdout=subprocess.PIPE,
            text=True,
        ) as writer:
            assert writer.stdout is not None
            first = writer.stdout.readline()  # it runs: its store is open
            time.sleep(chance.uniform(0, 0.3))
            writer.send_signal(signal.SIGKILL)
            told = [first, *writer.stdout.read().split("\n")]
        done = [int(line) for line in told if line.strip()]
        times, _ = loaded_times(folder, "pub-a")
        ours = [t - start for t in times]
        acknowledged += len(done)
        assert ours[: acknowledged + 1] == list(range(acknowledged + 1)), f"seed {seed}"
        assert len(ours) <= acknowledged + 2, "rows appeared that were never written"
        acknowledged = len(ours) - 1  # a row written but killed before its acknowledgement may stay


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


def test_a_fifo_where_a_store_file_belongs_is_refused_not_waited_on(tmp_path: Path) -> None:
    """Opening a FIFO blocks until someone writes to it: the recorder hung at start, deaf to SIGTERM."""
    for name in (DATABASE, LAST_TIMES):
        folder = tmp_path / name / "record"
        store(folder).close()
        (folder / name).unlink(missing_ok=True)
        os.mkfifo(folder / name, 0o600)
        outcome: list[str] = []

        def start(folder: Path = folder, outcome: list[str] = outcome) -> None:
            try:
                opened = store(folder)
                opened.load(max_rows=10)
                opened.close()
                outcome.append("started")
            except StoreError as exc:
                outcome.append(str(exc))

        starting = threading.Thread(target=start, daemon=True)
        starting.start()
        starting.join(10)
        hung = starting.is_alive()
        if hung:  # let a blocked open return, so the test ends
            os.close(os.open(folder / name, os.O_WRONLY | os.O_NONBLOCK))
            starting.join(10)
        assert not hung, f"the store's start hung on a FIFO named {name}"
        assert "is not a regular file" in outcome[0], outcome


def test_the_record_folder_swapped_for_a_symlink_after_start_is_not_followed(tmp_path: Path) -> None:
    """A parent another user may write to lets them rename the folder and plant a symlink in
    its place: the store goes on in the folder it checked, through its descriptor."""
    parent = tmp_path / "shared"
    parent.mkdir()
    folder, elsewhere = parent / "record", tmp_path / "elsewhere"
    elsewhere.mkdir()
    rows = batch(time.time_ns() - 10 * SECOND, 2)
    writer = store(folder)
    folder.rename(parent / "moved")
    folder.symlink_to(elsewhere)
    writer.write("pub-a", rows)
    writer.close()
    assert list(elsewhere.iterdir()) == [], "written through the planted symlink"
    assert fields.concat(store(parent / "moved").load(max_rows=10**6)["pub-a"].batches) == rows
