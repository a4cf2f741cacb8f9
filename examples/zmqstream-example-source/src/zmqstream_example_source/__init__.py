"""A custom zmqstream source: follows a text file of `key=value` lines, like `tail -F`.

Each complete line appended to the file is one row: `door=open temp=21.5 alarm=false`
gives a string field `door`, a number `temp` and a bool `alarm` (`true`/`false`, in any
case); `null` is a null; an optional `time=2026-11-29T12:00:00Z` (RFC 3339, or epoch
milliseconds) is the row's time, else the time it was read. Numbers are always floats, so `temp=21` and
`temp=21.5` are the same field. A field's kind is fixed by the first row it appears in:
write `door=5` after `door=open` and that batch is refused with the field named.

The file is `$ZMQSTREAM_KVTAIL_FILE`, else `kvtail.txt` in the pipeline's run folder
(`$ZMQSTREAM_RUN_DIR`, private to its user). It need not exist yet; lines already in it
when the channel starts are skipped; a file truncated or replaced is read from its start.

zmqstream finds sources through the entry point group `zmqstream.sources` (this
package's pyproject.toml). A source is a class zmqstream instantiates per channel
(`source-kvtail-<tick ms>`) with the channel, whose `poll()` it calls every tick in a
thread of its own and whose `close()` it calls when the channel stops.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["KeyValueTail", "parse_line"]

MAX_READ = 64 * 1024
"""Bytes read per poll at most: a huge file is followed over several polls."""
WORDS = {"true": True, "false": False, "null": None}


def default_file() -> Path:
    run_dir = os.environ.get("ZMQSTREAM_RUN_DIR") or f"/tmp/zmqstream-{os.getuid()}"
    return Path(os.environ.get("ZMQSTREAM_KVTAIL_FILE") or Path(run_dir) / "kvtail.txt")


def parse_value(text: str) -> Any:
    if text.lower() in WORDS:
        return WORDS[text.lower()]
    try:
        number = float(text)
    except ValueError:
        return text
    return number if number == number and abs(number) != float("inf") else text


def parse_line(line: str) -> dict[str, Any]:
    """`a=1 b=x` as {"a": 1.0, "b": "x"}; words without `=` are ignored."""
    record: dict[str, Any] = {}
    for word in line.split():
        key, equals, value = word.partition("=")
        if equals and key:
            record[key] = value if key == "time" and not value.isdigit() else parse_value(value)
    return record


class KeyValueTail:
    description = "rows from key=value lines appended to a file (string, number and bool fields)"

    def __init__(self, channel: Any) -> None:
        self.path = default_file()
        self._file: Any = None
        self._inode = -1
        self._skip_existing = True
        """At the first look only: a file there already is followed from its end."""
        self._partial = b""

    def _reopen(self) -> None:
        """Open the file if it (re)appeared or was truncated; start at its end the first time."""
        try:
            status = self.path.stat()
        except FileNotFoundError:
            self._skip_existing = False  # created later: every line of it is new
            return
        if self._file is not None and status.st_ino == self._inode and status.st_size >= self._file.tell():
            return
        if self._file is not None:
            self._file.close()
        self._file = open(self.path, "rb")  # noqa: SIM115 - kept open between polls, closed in close()
        self._inode = status.st_ino
        self._partial = b""
        if self._skip_existing:
            self._file.seek(0, os.SEEK_END)
        self._skip_existing = False

    def poll(self) -> list[dict[str, Any]]:
        self._reopen()
        if self._file is None:
            return []
        data = self._partial + self._file.read(MAX_READ)
        *lines, self._partial = data.split(b"\n")
        if len(self._partial) > MAX_READ:  # a line without end: give up on it
            self._partial = b""
        records = [parse_line(line.decode(errors="replace")) for line in lines]
        return [record for record in records if record]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
