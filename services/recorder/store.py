"""Each channel's rows on disk, in SQLite (stdlib sqlite3, WAL), so a restart, a crash or a full disk
loses no acknowledged row and no channel ever accepts a time twice.

Layout of the record folder (private, 0700; services.common.rundir refuses one another user
could write to, since its contents become history that Grafana shows):
- `rows.sqlite` (and SQLite's `-wal`, `-shm`): one row per accepted batch, its channel,
  first and last time, and the batch as the protocol encodes Events (msgpack; read back
  through the same complete check as any frame, so a damaged batch is refused, never served
  altered), with a CRC32 of it; each channel's schema and last time; and each publisher's
  last applied batch per channel (its sequence number and rows), written in the batch's own
  transaction, so a batch sent again after a restart is answered as applied, not applied twice.
- `last-times`: an append-only log of each channel's last time and schema, written before
  the batch's commit. The last time of a channel survives the loss of either file.

Durability, the policy the recorder acknowledges by: `write` returns once its transaction
is committed to the WAL in the operating system (synchronous=NORMAL), so an acknowledged
row survives the recorder's kill -9 at any byte, at once; `flush` (each FLUSH_S) checkpoints,
which fsyncs the WAL, and fsyncs the log, so a crash of the machine itself loses at most
that last second. A write that fails (a full disk, an I/O error) is rolled back whole and
raised as StoreError: the caller refuses those rows; the next write tries again.

Rows older than `keep_s` are deleted, and past `max_bytes` of stored batches the oldest go
first. A database SQLite finds damaged is kept aside (`rows.sqlite.damaged-<ns>`), its
readable batches copied into a new one.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sqlite3
import stat
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from services.common import protocol, rundir
from services.common.errors import PipelineError
from services.common.fields import Batch, Schema
from services.common.logs import fields as log_fields

log = logging.getLogger("zmqstream.recorder.store")
DATABASE = "rows.sqlite"
LAST_TIMES = "last-times"
COMPACT_BYTES = 1024 * 1024
"""The last-times log is rewritten (one line per channel) when it grows past this."""
LOG_EVERY_S = 1.0
"""Failed writes are counted always, logged at most this often."""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY, channel TEXT NOT NULL, first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL, crc INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS batches_by_channel ON batches (channel, last_ns);
CREATE INDEX IF NOT EXISTS batches_by_age ON batches (last_ns);
CREATE TABLE IF NOT EXISTS channels (
    channel TEXT PRIMARY KEY, schema TEXT NOT NULL, last_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS publishers (
    publisher TEXT NOT NULL, channel TEXT NOT NULL, sequence INTEGER NOT NULL,
    accepted INTEGER NOT NULL, applied_ns INTEGER NOT NULL, PRIMARY KEY (publisher, channel));
CREATE INDEX IF NOT EXISTS publishers_by_age ON publishers (applied_ns);
"""


MAX_PUBLISHERS = 100_000
"""(publisher, channel) pairs whose last applied batch is kept; the least recent go first."""


@dataclass(frozen=True, slots=True)
class Applied:
    """A publisher's batch as applied: what answers the same batch sent again."""

    publisher: str
    sequence: int
    accepted: int


class StoreError(PipelineError):
    """Rows that could not be written: nothing of them is stored, and they must not be acknowledged."""


@dataclass(slots=True)
class Recovered:
    """A channel as the disk has it: its schema, its last time ever, its newest rows (oldest first)."""

    schema: Schema
    last_ns: int
    batches: list[Batch] = field(default_factory=list)


def encode(batch: Batch) -> bytes:
    return protocol.encode(protocol.Events(0, batch.times, batch.columns))[1]


def decode(data: bytes) -> Batch:
    """A stored batch, checked completely (ProtocolError if damaged)."""
    return protocol.expect(
        [bytes((protocol.PROTOCOL_VERSION, protocol.MsgType.EVENTS)), data], protocol.Events
    ).batch


@functools.lru_cache(maxsize=1024)
def _schema_text(schema: Schema) -> str:
    """A schema as JSON (cached: a channel writes the same one every time)."""
    return json.dumps([list(pair) for pair in schema.fields], separators=(",", ":"))


def _schema_of(text: str) -> Schema:
    return Schema(tuple((str(name), str(kind)) for name, kind in json.loads(text)))


class LastTimes:
    """The append-only log of each channel's last time and schema, the copy beside the database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def read(self) -> dict[str, tuple[Schema, int]]:
        """Each channel's newest entry; a torn or damaged line (a crash mid-write) is skipped."""
        found: dict[str, tuple[Schema, int]] = {}
        try:
            with _open_read(self.path) as file:
                lines = file.read().split(b"\n")
        except FileNotFoundError:
            return found
        for line in lines:
            try:
                channel, last_ns, schema = json.loads(line)
                entry = (Schema(tuple((str(n), str(k)) for n, k in schema)), int(last_ns))
            except (ValueError, TypeError):
                continue
            if isinstance(channel, str) and entry[1] >= found.get(channel, (entry[0], -1))[1]:
                found[channel] = entry
        return found

    def rewrite(self, entries: dict[str, tuple[Schema, int]]) -> None:
        """One line per channel, written aside, synced, then renamed over the log."""
        temporary = self.path.with_name(self.path.name + ".new")
        lines = b"".join(_line(c, schema, last) for c, (schema, last) in entries.items())
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, lines)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        _sync_folder(self.path.parent)
        self.close()

    def append(self, channel: str, schema: Schema, last_ns: int) -> int:
        """Write one entry (OSError if it could not be); the log's size after it."""
        if self.fd < 0:
            self.fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
        line = _line(channel, schema, last_ns)
        if os.write(self.fd, line) != len(line):  # short: the disk filled mid-line
            raise OSError(f"{self.path}: short write")
        return os.fstat(self.fd).st_size

    def sync(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _line(channel: str, schema: Schema, last_ns: int) -> bytes:
    """An entry, beginning with its own newline: one after a torn entry still reads."""
    return f"\n[{json.dumps(channel)},{last_ns},{_schema_text(schema)}]".encode()


class Store:
    """Every channel's rows under `folder`."""

    def __init__(self, folder: Path, *, keep_s: float, max_bytes: int) -> None:
        self.shown = folder
        self.folder_fd = rundir.hold(folder, what="record folder", hint="Remove it or set --record-dir")
        self.folder = Path(f"/proc/self/fd/{self.folder_fd}")
        """The folder checked at start, through its descriptor: a parent another user may write to
        cannot swap it for a symlink under us (every file of the store is reached through it)."""
        self.keep_ns = round(keep_s * 1e9)
        self.max_bytes = max_bytes
        self.last_times = LastTimes(self.folder / LAST_TIMES)
        self.known: dict[str, tuple[Schema, int]] = {}
        """Each stored channel's schema and last time (what last-times is compacted to)."""
        self.bytes = 0
        self.failures = 0
        self._logged_at = -LOG_EVERY_S
        try:
            self.db = self._open()
        except sqlite3.DatabaseError as exc:
            if not _damaged(exc):  # a full disk, an I/O error: nothing to set aside; try again later
                raise StoreError(f"cannot open the record store {self.shown / DATABASE}: {exc}") from None
            self._salvage(exc)  # not even its header reads

    def _open(self) -> sqlite3.Connection:
        path = self.folder / DATABASE
        for suffix in ("", "-wal", "-shm"):
            _refuse_special(self.folder / (DATABASE + suffix), self.shown / (DATABASE + suffix))
        with contextlib.suppress(FileExistsError):  # created private: SQLite gives -wal and -shm its mode
            os.close(
                os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            )
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    # -- reading at start ------------------------------------------------------------

    def load(self, max_rows: int, now_ns: int | None = None) -> dict[str, Recovered]:
        """Each channel's last time and schema, and its rows of the last `keep_s` (its last
        `max_rows` at most), oldest first; a damaged database is set aside and salvaged."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        horizon = now_ns - self.keep_ns
        try:
            recovered = self._load(max_rows, horizon)
        except sqlite3.DatabaseError as exc:
            if not _damaged(exc):
                raise StoreError(f"cannot read the record store {self.shown / DATABASE}: {exc}") from None
            self.db.close()
            self._salvage(exc)
            recovered = self._load(max_rows, horizon)
        for channel, (schema, last_ns) in self.last_times.read().items():
            found = recovered.setdefault(channel, Recovered(schema, last_ns))
            found.last_ns = max(found.last_ns, last_ns)
        recovered = {c: found for c, found in recovered.items() if found.last_ns >= horizon}
        self.known = {c: (r.schema, r.last_ns) for c, r in recovered.items()}
        with contextlib.suppress(OSError):  # full disk: the log stays as it is, still read right
            self.last_times.rewrite(self.known)
        self.prune(now_ns)
        return recovered

    def _load(self, max_rows: int, horizon: int) -> dict[str, Recovered]:
        recovered: dict[str, Recovered] = {}
        for channel, schema, last_ns in self.db.execute("SELECT channel, schema, last_ns FROM channels"):
            recovered[channel] = Recovered(_schema_of(schema), last_ns)
        for channel, last_ns in self.db.execute("SELECT channel, max(last_ns) FROM batches GROUP BY channel"):
            found = recovered.get(channel)
            if found is not None and last_ns > found.last_ns:
                found.last_ns = last_ns
        self.bytes = self._stored_bytes()
        for channel, found in recovered.items():
            rows = self.db.execute(
                "SELECT first_ns, crc, data FROM batches WHERE channel = ? AND last_ns >= ? "
                "ORDER BY first_ns DESC",
                (channel, horizon),
            )
            found.batches = _newest(channel, found.schema, rows, max_rows, horizon)
        return recovered

    def _salvage(self, error: sqlite3.DatabaseError) -> None:
        """Set the damaged database aside and open a new one, with every batch still readable of it."""
        aside = self.folder / f"{DATABASE}.damaged-{time.time_ns()}"
        log.error(
            "record database damaged: set aside, its readable rows kept",
            extra=log_fields(path=str(self.shown / aside.name), error=str(error)),
        )
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.folder / (DATABASE + suffix), str(aside) + suffix)
        self.db = self._open()
        try:
            damaged = sqlite3.connect(f"file:{aside}?mode=ro", uri=True, isolation_level=None)
        except sqlite3.DatabaseError:
            return
        try:
            for channel, first_ns, last_ns, crc, data in _readable(damaged):
                with contextlib.suppress(ValueError, PipelineError):
                    if zlib.crc32(data) == crc:
                        self._insert(channel, decode(data).schema, first_ns, last_ns, data)
        finally:
            damaged.close()

    # -- writing ---------------------------------------------------------------------

    def applied(self) -> list[tuple[str, Applied]]:
        """Each publisher's last applied batch per channel, least recent first: (channel, it)."""
        try:
            rows = self.db.execute(
                "SELECT publisher, channel, sequence, accepted FROM publishers ORDER BY applied_ns"
            ).fetchall()
        except sqlite3.Error as exc:  # lost, a retry is refused as not after the last row: no row twice
            log.error("publishers' last batches not read", extra=log_fields(error=str(exc)[:300]))
            return []
        return [
            (channel, Applied(publisher, sequence, accepted))
            for publisher, channel, sequence, accepted in rows
        ]

    def write(self, channel: str, batch: Batch, applied: Applied | None = None) -> None:
        """Store rows the recorder accepted (and, in the same transaction, the publisher's batch
        they are), durable as the module says before this returns; StoreError (logged) if they
        could not be, and then nothing of them is stored."""
        data = encode(batch)
        first_ns, last_ns = batch.times[0], batch.times[-1]
        schema = batch.schema
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self._insert(channel, schema, first_ns, last_ns, data)
                if applied is not None:
                    self.db.execute(
                        "INSERT OR REPLACE INTO publishers VALUES (?, ?, ?, ?, ?)",
                        (applied.publisher, channel, applied.sequence, applied.accepted, time.time_ns()),
                    )
                size = self.last_times.append(channel, schema, last_ns)
                self.db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            self._failed(channel, exc)
            raise StoreError(
                f"the recorder could not store these rows ({exc}): nothing of them was recorded; "
                "free space on its --record-dir disk, then send them again"
            ) from None
        self.bytes += len(data)
        self.known[channel] = (schema, last_ns)
        if size > COMPACT_BYTES:
            with contextlib.suppress(OSError):
                self.last_times.rewrite(self.known)

    def _insert(self, channel: str, schema: Schema, first_ns: int, last_ns: int, data: bytes) -> None:
        self.db.execute(
            "INSERT INTO batches (channel, first_ns, last_ns, crc, data) VALUES (?, ?, ?, ?, ?)",
            (channel, first_ns, last_ns, zlib.crc32(data), data),
        )
        self.db.execute(
            "INSERT INTO channels VALUES (?, ?, ?) ON CONFLICT (channel) DO UPDATE SET "
            "schema = excluded.schema, last_ns = max(last_ns, excluded.last_ns)",
            (channel, _schema_text(schema), last_ns),
        )

    def _failed(self, channel: str, exc: BaseException) -> None:
        self.failures += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.error(
                "rows not stored: refused",
                extra=log_fields(channel=channel, error=str(exc)[:300], failures=self.failures),
            )

    def forget(self, channel: str) -> None:
        """Delete a channel's rows, for rows of another schema to come or to free its slot (its
        last time stays in last-times until the log is next compacted)."""
        with contextlib.suppress(sqlite3.Error):
            self._delete("channel = ?", channel)
            self.db.execute("DELETE FROM channels WHERE channel = ?", (channel,))
        self.known.pop(channel, None)

    def flush(self, now_ns: int | None = None) -> None:
        """Make what is acknowledged durable against a machine crash, and prune."""
        try:
            self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self.last_times.sync()
        except (sqlite3.Error, OSError) as exc:
            self._failed("", exc)
        self.prune(time.time_ns() if now_ns is None else now_ns)

    def prune(self, now_ns: int) -> None:
        """Delete rows older than keep_s, then the oldest while the store is over max_bytes (each
        through an index: a second's prune costs what it deletes, not what is kept)."""
        horizon = now_ns - self.keep_ns
        try:
            self._delete("last_ns < ?", horizon)
            excess = self.bytes - self.max_bytes
            if excess > 0:
                doomed: list[tuple[int]] = []
                oldest = self.db.execute("SELECT id, length(data) FROM batches ORDER BY last_ns, id")
                for row_id, size in oldest:
                    if excess <= 0:
                        break
                    doomed.append((row_id,))
                    excess -= size
                self.db.executemany("DELETE FROM batches WHERE id = ?", doomed)
                self.bytes = self.max_bytes + max(0, excess)
            self.db.execute(
                "DELETE FROM channels WHERE last_ns < ? AND NOT EXISTS "
                "(SELECT 1 FROM batches WHERE batches.channel = channels.channel)",
                (horizon,),
            )
            self.db.execute(
                "DELETE FROM publishers WHERE applied_ns < ? OR applied_ns <= (SELECT applied_ns FROM "
                "publishers ORDER BY applied_ns DESC LIMIT 1 OFFSET ?)",
                (horizon, MAX_PUBLISHERS),
            )
        except sqlite3.Error as exc:  # a full disk: deleting needs room in the WAL too; next time
            self._failed("", exc)

    def _delete(self, where: str, value: object) -> None:
        """Delete the batches `where` says (our condition on an indexed column), counting their bytes."""
        freed = self.db.execute(f"SELECT coalesce(sum(length(data)), 0) FROM batches WHERE {where}", (value,))
        size = int(freed.fetchone()[0])
        if size:
            self.db.execute(f"DELETE FROM batches WHERE {where}", (value,))
            self.bytes -= size

    def _stored_bytes(self) -> int:
        return int(self.db.execute("SELECT coalesce(sum(length(data)), 0) FROM batches").fetchone()[0])

    def close(self) -> None:
        self.flush()
        self.db.close()
        self.last_times.close()
        os.close(self.folder_fd)


def _newest(
    channel: str, schema: Schema, rows: Iterator[tuple[int, int, bytes]], max_rows: int, horizon: int
) -> list[Batch]:
    """The batches of `schema`, newest first from the database, as the oldest-first rows to load."""
    newest_first: list[Batch] = []
    count = 0
    for _, crc, data in rows:
        if count >= max_rows:
            break
        try:
            if zlib.crc32(data) != crc:
                raise ValueError("CRC mismatch")
            batch = decode(data)
        except (ValueError, PipelineError) as exc:
            log.warning(
                "stored batch damaged: skipped", extra=log_fields(channel=channel, error=str(exc)[:300])
            )
            continue
        if batch.schema == schema:
            batch = batch.after(horizon - 1)
            newest_first.append(batch)
            count += len(batch)
    ordered: list[Batch] = []
    last = -1
    for batch in reversed(newest_first):
        batch = batch.after(last)
        if len(batch):
            ordered.append(batch)
            last = batch.times[-1]
    return ordered


def _damaged(error: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the file is damaged or not a database (not: full, busy, unreadable)."""
    return error.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _readable(db: sqlite3.Connection) -> Iterator[tuple[str, int, int, int, bytes]]:
    """Every batch of a damaged database that SQLite can still read, one at a time."""
    try:
        top = db.execute("SELECT max(id) FROM batches").fetchone()[0] or 0
    except sqlite3.DatabaseError:
        top = 0
    for row_id in range(1, top + 1):
        try:
            row = db.execute(
                "SELECT channel, first_ns, last_ns, crc, data FROM batches WHERE id = ?", (row_id,)
            ).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row is not None:
            yield row


def _open_read(path: Path) -> BinaryIO:
    """A regular file for reading; StoreError for anything else (a FIFO would block the start)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StoreError(f"{path.name} in the record folder is not a regular file: remove it")
    return open(fd, "rb")


def _refuse_special(path: Path, shown: Path) -> None:
    """StoreError unless `path` is absent or a regular file: SQLite would block on a FIFO for
    good (deaf to SIGTERM) and follow a symlink."""
    try:
        _open_read(path).close()
    except FileNotFoundError:
        return
    except StoreError:
        raise StoreError(f"{shown} is not a regular file: remove it, or set another --record-dir") from None
    except OSError as exc:
        raise StoreError(f"cannot open {shown}: {exc.strerror} (a symlink is refused): remove it") from None


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
