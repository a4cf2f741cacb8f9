"""python -m bench.storecost: what storing one publish costs, per store the recorder could keep.

Each candidate writes the same batches (float, string, bool: bench/events.py's rows) one
publish at a time into a fresh folder, in this process, and the figure is the wall time
per publish and per row:
- `arrow segment`: append an Arrow IPC stream batch to the channel's open segment file and
  flush it to the OS (what the old segments did, had they written each publish at once);
  `+ fsync`: and fsync it.
- `sqlite, Events blob`: services.recorder.store.Store.write, the store kept: a WAL
  transaction (synchronous=NORMAL) holding the batch as the protocol's msgpack and the
  channel's last time, plus the last-times log entry.
- `sqlite, Arrow blob`: the same transaction with the batch as an Arrow IPC stream instead.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from bench.events import Rows
from services.common import fields
from services.common.fields import Batch, Schema
from services.recorder.store import Store

ARROW_TYPES = {
    fields.FLOAT64: pa.float64(),
    fields.INT64: pa.int64(),
    fields.BOOL: pa.bool_(),
    fields.STRING: pa.string(),
}


def arrow_schema(schema: Schema) -> pa.Schema:
    return pa.schema(
        [pa.field("time", pa.timestamp("ns"), nullable=False)]
        + [pa.field(name, ARROW_TYPES[kind]) for name, kind in schema.fields]
    )


def record_batch(batch: Batch, schema: pa.Schema) -> pa.RecordBatch:
    arrays = [pa.array(batch.times, pa.timestamp("ns"))]
    arrays += [pa.array(column.values, ARROW_TYPES[column.kind]) for column in batch.columns]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def segment(folder: Path, sync: bool) -> Callable[[Batch], None]:
    file = open(folder / "segment.arrows", "wb")  # noqa: SIM115 - lives as long as the measurement
    opened: list[tuple[pa.ipc.RecordBatchStreamWriter, pa.Schema]] = []

    def write(batch: Batch) -> None:
        if not opened:
            schema = arrow_schema(batch.schema)
            opened.append((pa.ipc.new_stream(file, schema), schema))
        writer, schema = opened[0]
        writer.write_batch(record_batch(batch, schema))
        file.flush()
        if sync:
            os.fsync(file.fileno())

    return write


def sqlite_events(folder: Path) -> Callable[[Batch], None]:
    store = Store(folder / "record", keep_s=1e9, max_bytes=2**40)
    store.load(max_rows=1)
    return lambda batch: store.write("pub-bench", batch)


def sqlite_arrow(folder: Path) -> Callable[[Batch], None]:
    db = sqlite3.connect(folder / "arrow.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE batches (id INTEGER PRIMARY KEY, first_ns INT, last_ns INT, crc INT, data BLOB)")

    def write(batch: Batch) -> None:
        sink = pa.BufferOutputStream()
        schema = arrow_schema(batch.schema)
        with pa.ipc.new_stream(sink, schema) as writer:
            writer.write_batch(record_batch(batch, schema))
        data = sink.getvalue().to_pybytes()
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO batches (first_ns, last_ns, crc, data) VALUES (?, ?, ?, ?)",
            (batch.times[0], batch.times[-1], zlib.crc32(data), data),
        )
        db.execute("COMMIT")

    return write


CANDIDATES: dict[str, Callable[[Path], Callable[[Batch], None]]] = {
    "arrow segment": lambda folder: segment(folder, sync=False),
    "arrow segment + fsync": lambda folder: segment(folder, sync=True),
    "sqlite, Events blob (kept)": sqlite_events,
    "sqlite, Arrow blob": sqlite_arrow,
}


def measure(make: Callable[[Path], Callable[[Batch], None]], size: int, seconds: float) -> float:
    """Seconds per publish of `size` rows."""
    with tempfile.TemporaryDirectory(prefix="storecost", dir=os.environ.get("TMPDIR")) as folder:
        write = make(Path(folder))
        rows = Rows(size)
        count = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            write(rows.next())
            count += 1
        return (time.perf_counter() - started) / count


def main() -> int:
    print("| store | µs per 1-row publish | µs per row, 500-row publishes |")
    print("|---|---|---|")
    for name, make in CANDIDATES.items():
        single = measure(make, 1, 2.0) * 1e6
        batched = measure(make, 500, 2.0) * 1e6 / 500
        print(f"| {name} | {single:,.0f} | {batched:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
