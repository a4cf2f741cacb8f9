"""`zmqstream publish <channel>`: JSON lines on stdin become rows of a published channel.

    echo '{"time": "2026-11-29T12:00:00Z", "temp": 21.5, "door": "open"}' | zmqstream publish pub-room

Lines are sent in batches (up to --batch-rows lines, or what arrived within --batch-ms of
the first), each all or none. A refused batch is sent again line by line, so each
refused line is named with its number and the recorder's reason on stderr and the
others still go in. Exit status 1 if any line was refused or the recorder could not be
reached, else 0.
"""

from __future__ import annotations

import argparse
import io
import queue
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

import orjson

from services.cli.flags import add_access_flags, add_run_dir_flag
from services.common.errors import PipelineError
from services.common.security import ClientKeys
from services.publish import Publisher, Refused

BATCH_BYTES = 256 * 1024
"""A batch is sent once its lines reach this many bytes, well under the recorder's message limit."""
MAX_LINE_BYTES = 128 * 1024
"""A row has at most 64 fields of 1,024-character strings: a longer line is refused unread."""
QUEUED_LINES = 1000
"""Lines read ahead of the publishing: at most 128 MiB, mostly far less."""
END = None


class Lines(threading.Thread):
    """stdin's lines (numbered from 1) into a bounded queue, so batching can wait with a timeout."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(name="stdin", daemon=True)
        self.stream = stream
        self.queue: queue.Queue[tuple[int, str | None] | None] = queue.Queue(maxsize=QUEUED_LINES)
        """(line number, its text or None if it is too long), then END."""

    def run(self) -> None:
        number = 0
        try:
            while line := self.stream.readline(MAX_LINE_BYTES + 1):
                number += 1
                if len(line) > MAX_LINE_BYTES and not line.endswith("\n"):
                    while (rest := self.stream.readline(MAX_LINE_BYTES)) and not rest.endswith("\n"):
                        pass  # the rest of a line too long to keep
                    self.queue.put((number, None))
                elif line.strip():
                    self.queue.put((number, line))
        except (OSError, ValueError) as exc:  # stdin unreadable: what was read still goes, then the end
            print(f"zmqstream publish: stdin unreadable after line {number}: {exc}", file=sys.stderr)
        finally:
            self.queue.put(END)  # else the batching would wait for ever


def batches(lines: Lines, rows: int, wait_s: float) -> Iterator[list[tuple[int, str | None]]]:
    """Up to `rows` lines (or BATCH_BYTES), whatever came within `wait_s` of the batch's first line."""
    done = False
    while not done:
        first = lines.queue.get()
        if first is END:
            return
        batch, size = [first], len(first[1] or "")
        deadline = time.monotonic() + wait_s
        while len(batch) < rows and size < BATCH_BYTES:
            try:
                item = lines.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is END:
                done = True
                break
            batch.append(item)
            size += len(item[1] or "")
        yield batch


class Run:
    def __init__(self, publisher: Publisher, channel: str) -> None:
        self.publisher = publisher
        self.channel = channel
        self.published = 0
        self.refused = 0

    def refuse(self, number: int, reason: str) -> None:
        self.refused += 1
        print(f"zmqstream publish: line {number} refused: {reason}", file=sys.stderr)

    def send(self, lines: list[tuple[int, str | None]]) -> None:
        """Publish the lines as one batch; if refused, line by line (Unreachable goes up)."""
        records: list[tuple[int, Any]] = []
        for number, line in lines:
            if line is None:
                self.refuse(number, f"the line is longer than {MAX_LINE_BYTES} characters")
                continue
            try:
                records.append((number, orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                self.refuse(number, f"not JSON: {exc}")
        if not records:
            return
        try:
            self.published += self.publisher.publish(self.channel, [r for _, r in records])
            return
        except Refused as exc:
            if len(records) == 1:
                self.refuse(records[0][0], str(exc))
                return
        for number, record in records:
            try:
                self.published += self.publisher.publish(self.channel, [record])
            except Refused as exc:
                self.refuse(number, str(exc))


def run(args: argparse.Namespace) -> int:
    endpoint = args.endpoint or f"ipc://{args.run_dir}/publish"
    try:
        keys = None
        if args.curve_client_secret or args.curve_server_public:
            keys = ClientKeys.from_files(args.curve_client_secret, args.curve_server_public)
        publisher = Publisher(endpoint, keys, timeout_s=args.timeout, socket_group=args.socket_group)
    except PipelineError as exc:
        print(f"zmqstream publish: {exc}", file=sys.stderr)
        return 1
    if isinstance(sys.stdin, io.TextIOWrapper):  # bytes that are not UTF-8: a line orjson refuses, by number
        sys.stdin.reconfigure(errors="surrogateescape")
    lines = Lines(sys.stdin)
    lines.start()
    job = Run(publisher, args.channel)
    try:
        for batch in batches(lines, args.batch_rows, args.batch_ms / 1000):
            job.send(batch)
    except PipelineError as exc:  # Unreachable, an untrusted run folder: nothing more can go
        print(f"zmqstream publish: {exc}; {job.published} rows were published before", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1
    finally:
        publisher.close()
    print(
        f"zmqstream publish: {job.published} rows published to {args.channel}, {job.refused} lines refused",
        file=sys.stderr,
    )
    return 1 if job.refused else 0


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "publish", help="publish JSON lines from stdin into a channel pub-<name> (through the recorder)"
    )
    parser.add_argument("channel", help="the channel, pub-<name>")
    add_run_dir_flag(parser)
    parser.add_argument(
        "--endpoint", default="", help="the recorder's publish endpoint (default: <run-dir>/publish)"
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the recorder")
    parser.add_argument("--batch-rows", type=int, default=500, help="most lines sent in one publish")
    parser.add_argument("--batch-ms", type=float, default=50.0, help="how long a batch waits for more lines")
    add_access_flags(parser, "the recorder", "the recorder's (the broker's)")
    parser.set_defaults(run=run)
