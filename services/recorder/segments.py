"""Each channel's rows on disk as Arrow IPC segments, bounded by age and bytes, so a restart keeps them.

Layout: `<record_dir>/<channel path>/<first time ns>.arrows`, one folder per channel. A
segment is an Arrow IPC *stream* (`time` as timestamp[ns], then each field as float64,
int64, bool or utf8, nullable): a stream is readable up to its last complete batch, so
a recorder killed mid-write loses at most what it had not flushed (a second's worth),
where the IPC file format would lose the whole segment for want of its footer.

A segment is closed and a new one begun after `segment_s` or `segment_bytes`; segments
whose rows are all older than `keep_s` are deleted, and past `max_bytes` the oldest go
first. The folder is created private (0700) and refused if another user owns it or
could write to it (services.common.rundir), since its contents become history that
Grafana shows.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from services.common import fields, rundir
from services.common.channels import UNCHECKED, EventChannel, parse_channel
from services.common.errors import InvalidChannel
from services.common.fields import Batch, Column, Schema
from services.common.logs import fields as log_fields

log = logging.getLogger("zmqstream.recorder.segments")
SUFFIX = ".arrows"
TIME_FIELD = "time"
ARROW_TYPES = {
    fields.FLOAT64: pa.float64(),
    fields.INT64: pa.int64(),
    fields.BOOL: pa.bool_(),
    fields.STRING: pa.string(),
}
_KINDS = {str(arrow): kind for kind, arrow in ARROW_TYPES.items()}
_KINDS["large_string"] = fields.STRING
TIME_TYPE = pa.timestamp("ns")


def arrow_schema(schema: Schema) -> pa.Schema:
    return pa.schema(
        [pa.field(TIME_FIELD, TIME_TYPE, nullable=False)]
        + [pa.field(name, ARROW_TYPES[kind], nullable=True) for name, kind in schema.fields]
    )


def to_record_batch(batch: Batch, schema: pa.Schema) -> pa.RecordBatch:
    arrays = [pa.array(batch.times, TIME_TYPE)]
    arrays += [pa.array(column.values, ARROW_TYPES[column.kind]) for column in batch.columns]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def from_record_batch(record: pa.RecordBatch) -> Batch:
    """A Batch of a segment's record batch, checked as any input is (a segment may be damaged)."""
    schema = record.schema
    if record.num_columns < 1 or schema.field(0).name != TIME_FIELD:
        raise fields.InvalidRows("a segment's first column must be its time")
    times = record.column(0).cast(pa.int64()).to_pylist()
    columns = []
    for index in range(1, record.num_columns):
        arrow_field = schema.field(index)
        kind = _KINDS.get(str(arrow_field.type))
        if kind is None:
            raise fields.InvalidRows(f"field {arrow_field.name!r} has type {arrow_field.type}")
        columns.append(Column(arrow_field.name, kind, record.column(index).to_pylist()))
    return fields.checked(times, columns, max(1, len(times)))


def read_segment(path: str, max_rows: int, dir_fd: int | None = None) -> list[Batch]:
    """The last `max_rows` rows of one segment (`path` relative to `dir_fd`), up to a truncated or
    damaged tail (a crash mid-write).

    Only those rows become Python values: a small compressed segment can hold millions of
    rows (5M took 621 MiB when all were converted), so memory is bounded by `max_rows`
    and one decoded record batch, not by the file.
    """
    records: collections.deque[pa.RecordBatch] = collections.deque()
    kept = 0
    try:
        with _open_read(path, dir_fd) as file:
            reader = pa.ipc.open_stream(file)
            while True:
                try:
                    record = reader.read_next_batch()
                except StopIteration:
                    break
                if record.num_rows > max_rows:
                    record = record.slice(record.num_rows - max_rows)
                records.append(record)
                kept += record.num_rows
                while kept - records[0].num_rows >= max_rows:
                    kept -= records.popleft().num_rows
    except (OSError, pa.ArrowException) as exc:
        log.warning("segment read up to a damaged part", extra=log_fields(path=str(path), error=str(exc)))
    batches: list[Batch] = []
    for record in records:
        try:
            batches.append(from_record_batch(record))
        except fields.InvalidRows as exc:
            log.warning("segment read up to a damaged part", extra=log_fields(path=str(path), error=str(exc)))
            break
    if batches and kept > max_rows:
        batches[0] = batches[0].last(len(batches[0]) - (kept - max_rows))
    return batches


def _open_read(path: str, dir_fd: int | None) -> BinaryIO:
    """A regular file only: opening a FIFO named like a segment would block the recorder for good."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file: remove it from the record folder")
    os.set_blocking(fd, True)
    return open(fd, "rb")


@dataclass(slots=True)
class Segment:
    path: str
    """`<channel>/<first ns>.arrows`, relative to the record folder's descriptor."""
    first_ns: int
    last_ns: int
    size: int
    file: BinaryIO | None = None
    writer: Any = None
    opened_at: float = 0.0
    """time.monotonic() when it was begun (open segments only)."""

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()  # writes the end-of-stream marker
            self.writer = None
        if self.file is not None:
            self.file.flush()
            self.size = self.file.tell()
            self.file.close()
            self.file = None


@dataclass(slots=True)
class ChannelFiles:
    schema: Schema | None = None
    arrow: pa.Schema | None = None
    segments: list[Segment] = field(default_factory=list)
    """Oldest first; the last may be open."""
    pending: list[Batch] = field(default_factory=list)


class Store:
    """The segments of every channel under `folder`."""

    def __init__(
        self, folder: Path, *, keep_s: float, max_bytes: int, segment_s: float, segment_bytes: int
    ) -> None:
        self.fd = rundir.hold(folder, what="record folder", hint="Remove it or set --record-dir")
        """Every file is reached through it, never through the folder's path (see rundir.hold)."""
        self.folder = folder
        self.keep_ns = round(keep_s * 1e9)
        self.max_bytes = max_bytes
        self.segment_s = segment_s
        self.segment_bytes = segment_bytes
        self.channels: dict[str, ChannelFiles] = {}

    # -- reading at start ------------------------------------------------------------

    def load(self, max_rows: int, now_ns: int | None = None) -> dict[str, list[Batch]]:
        """Each channel's rows of the last `keep_s` on disk (its last `max_rows` at most), oldest first.

        Expired segments are deleted on the way; what is not a channel folder or a segment
        of ours is left alone.
        """
        now_ns = time.time_ns() if now_ns is None else now_ns
        horizon = now_ns - self.keep_ns
        loaded: dict[str, list[Batch]] = {}
        with os.scandir(self.fd) as entries:
            channels = sorted(
                e.name for e in entries if e.is_dir(follow_symlinks=False) and _is_channel(e.name)
            )
        for channel in channels:
            files = self.channels[channel] = ChannelFiles()
            batches = self._load_channel(channel, files, horizon, max_rows)
            if batches:
                loaded[channel] = batches
            if not files.segments:  # all expired: the channel is forgotten, its folder too
                del self.channels[channel]
                with contextlib.suppress(OSError):
                    os.rmdir(channel, dir_fd=self.fd)
        self.prune(now_ns)
        return loaded

    def _load_channel(self, channel: str, files: ChannelFiles, horizon: int, max_rows: int) -> list[Batch]:
        folder = os.open(channel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
        try:
            with os.scandir(folder) as entries:
                paths = sorted(
                    (
                        int(e.name.removesuffix(SUFFIX)),
                        f"{channel}/{e.name}",
                        e.stat(follow_symlinks=False).st_size,
                    )
                    for e in entries
                    # Regular files only: not a symlink, and not a FIFO, whose open would block for good.
                    if e.name.endswith(SUFFIX)
                    and _is_ns(e.name.removesuffix(SUFFIX))
                    and e.is_file(follow_symlinks=False)
                )
        finally:
            os.close(folder)
        newest_first: list[list[Batch]] = []
        rows = 0
        next_first = 2**63 - 1
        for first_ns, path, size in reversed(paths):
            batches = read_segment(path, max_rows - rows, self.fd) if rows < max_rows else []
            # Unread (enough rows already): its rows end before the next segment begins.
            last_ns = batches[-1].times[-1] if batches else next_first - 1
            next_first = first_ns
            if last_ns < horizon:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path, dir_fd=self.fd)
                continue
            files.segments.insert(0, Segment(path, first_ns, last_ns, size))
            if batches and files.schema is None:
                files.schema = batches[-1].schema  # the newest segment's: what publishers send now
            kept = [b.after(horizon - 1) for b in batches if b.schema == files.schema]
            kept = [b for b in kept if len(b)]
            newest_first.append(kept)
            rows += sum(len(b) for b in kept)
        ordered: list[Batch] = []
        last = -(2**63)
        for part in reversed(newest_first):
            for batch in part:
                batch = batch.after(last)
                if len(batch):
                    ordered.append(batch)
                    last = batch.times[-1]
        if files.schema is not None:
            files.arrow = arrow_schema(files.schema)
        return ordered

    # -- writing ---------------------------------------------------------------------

    def write(self, channel: str, batch: Batch) -> None:
        """Queue rows the recorder accepted; `flush` writes them."""
        files = self.channels.get(channel)
        if files is None:
            files = self.channels[channel] = ChannelFiles()
        if files.schema is None:
            files.schema = batch.schema
            files.arrow = arrow_schema(batch.schema)
        if batch.schema == files.schema:
            files.pending.append(batch)

    def reschema(self, channel: str, schema: Schema) -> None:
        """Rows of `schema` follow: what is queued is written, the open segment closed, and the
        next segment begun with the new schema (the newest segment's schema is what `load` keeps)."""
        files = self.channels.get(channel)
        if files is None or files.schema == schema:
            return
        if files.pending:
            try:
                self._append(channel, files)
            except (OSError, pa.ArrowException) as exc:
                log.error("segment write failed", extra=log_fields(channel=channel, error=str(exc)))
            files.pending.clear()
        if files.segments:
            files.segments[-1].close()
        files.schema, files.arrow = schema, arrow_schema(schema)

    def flush(self, now_ns: int | None = None) -> None:
        """Write what is queued, rotate segments that are old or large, prune the folder."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        for channel, files in self.channels.items():
            if files.pending:
                try:
                    self._append(channel, files)
                except (OSError, pa.ArrowException) as exc:  # a full disk must not stop the recorder
                    log.error("segment write failed", extra=log_fields(channel=channel, error=str(exc)))
                files.pending.clear()
            current = files.segments[-1] if files.segments else None
            if current is not None and current.writer is not None and self._full(current):
                current.close()
        self.prune(now_ns)

    def _full(self, segment: Segment) -> bool:
        return segment.size >= self.segment_bytes or time.monotonic() - segment.opened_at >= self.segment_s

    def _append(self, channel: str, files: ChannelFiles) -> None:
        batch = fields.concat(files.pending)
        segment = files.segments[-1] if files.segments else None
        if segment is None or segment.writer is None:
            segment = self._begin(channel, files, batch.times[0])
        segment.writer.write_batch(to_record_batch(batch, files.arrow))
        assert segment.file is not None
        segment.file.flush()
        segment.size = segment.file.tell()
        segment.last_ns = batch.times[-1]

    def _begin(self, channel: str, files: ChannelFiles, first_ns: int) -> Segment:
        with contextlib.suppress(FileExistsError):
            os.mkdir(channel, 0o700, dir_fd=self.fd)
        path = f"{channel}/{first_ns}{SUFFIX}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600, dir_fd=self.fd)
        file = open(fd, "wb")  # noqa: SIM115 - closed by Segment.close
        segment = Segment(path, first_ns, first_ns, 0, file, None, time.monotonic())
        segment.writer = pa.ipc.new_stream(file, files.arrow)
        files.segments.append(segment)
        return segment

    def prune(self, now_ns: int) -> None:
        """Delete segments older than keep_s, then the oldest while the folder is over max_bytes."""
        horizon = now_ns - self.keep_ns
        for files in self.channels.values():
            for segment in [s for s in files.segments if s.writer is None and s.last_ns < horizon]:
                self._delete(files, segment)
        total = sum(s.size for files in self.channels.values() for s in files.segments)
        while total > self.max_bytes:
            candidates = [(s.last_ns, id(s), s, f) for f in self.channels.values() for s in f.segments]
            if not candidates:
                return
            _, _, segment, files = min(candidates)
            total -= segment.size
            self._delete(files, segment)

    def _delete(self, files: ChannelFiles, segment: Segment) -> None:
        segment.close()
        files.segments.remove(segment)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(segment.path, dir_fd=self.fd)

    def close(self) -> None:
        self.flush()
        for files in self.channels.values():
            for segment in files.segments:
                segment.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _is_ns(name: str) -> bool:
    """A segment's name: ASCII digits (str.isdigit() is true of '²', which int() refuses)."""
    return name.isascii() and name.isdigit()


def _is_channel(name: str) -> bool:
    try:
        channel = parse_channel(name, UNCHECKED)
    except InvalidChannel:
        return False
    return isinstance(channel, EventChannel) and channel.path == name
