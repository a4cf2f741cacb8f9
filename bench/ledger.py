"""python -m bench.ledger [--seconds S] [--seed N]: publish through a random schedule of faults,
then check the recorder's history against the ledger of what it acknowledged.

A broker and a recorder run as real processes, the recorder's --record-dir on a small
tmpfs of its own (as root; without root the full-disk fault is skipped, and said so). A
Publisher sends batches of typed rows into two channels; between them, by a seeded
schedule: the recorder killed (SIGKILL, a few ms into a publish, at any byte of its write)
and started again, stopped (SIGSTOP) past the publisher's timeout and continued, its disk
filled and freed, restarted with SIGTERM; and an acknowledged batch sent again, which must
be refused. A publish without an answer is in doubt until a later one of the same
publisher is acknowledged (the recorder serves a peer in order): then its rows are either
all in the history (acknowledged after all) or none.

Each fault comes once first (in a random order), then at random until the time is up.
At the end the history of each channel must be exactly the acknowledged rows, in order,
with their times and values, and no time may have been accepted twice.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from services.common import protocol
from services.common.fields import BOOL, FLOAT64, INT64, STRING, Batch, Column, concat
from services.hostemu.localpipeline import Pipeline
from services.publish import Publisher, Refused, Unreachable

CHANNELS = ("pub-ledger-a", "pub-ledger-b")
FAULTS = ("kill", "stop", "disk_full", "restart", "replay")
TIMEOUT_S = 0.5
"""The publisher's timeout: what a stopped or dead recorder costs a publish."""
DISK = "64m"
RECORDER_ARGS = [
    "--max-rows-per-s", "1e9",
    "--ring-rows", "5000000",
    "--ring-bytes", str(2**30),
    "--ring-total-bytes", str(2**31),
]  # fmt: skip
"""The ring holds everything a run publishes, so the history shows every row."""
UP_S = 30.0


class LedgerViolation(AssertionError):
    """The history is not what the recorder acknowledged."""


@dataclass
class Report:
    seed: int
    acknowledged: int = 0
    """Rows acknowledged (at once, or found whole in the history after a publish in doubt)."""
    refused: int = 0
    in_doubt_kept: int = 0
    in_doubt_lost: int = 0
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULTS, 0))
    skipped: str = ""
    """A fault left out, and why."""

    def __str__(self) -> str:
        faults = ", ".join(f"{name} {count}" for name, count in self.faults.items())
        text = (
            f"ledger seed {self.seed}: {self.acknowledged} rows acknowledged, "
            f"{self.refused} batches refused, in doubt: {self.in_doubt_kept} kept, "
            f"{self.in_doubt_lost} lost; faults: {faults}"
        )
        return text + (f"; {self.skipped}" if self.skipped else "")


class Rows:
    """Batches of typed rows with strictly increasing times near now, from a seeded random."""

    def __init__(self, chance: random.Random) -> None:
        self.chance = chance
        self.last = dict.fromkeys(CHANNELS, 0)

    def next(self, channel: str) -> Batch:
        chance = self.chance
        n = chance.randint(1, 40)
        times = [max(self.last[channel], time.time_ns() - 1_000_000_000) + chance.randint(1, 1_000_000)]
        for _ in range(n - 1):
            times.append(times[-1] + chance.randint(1, 1000))
        self.last[channel] = times[-1]
        columns = [
            Column(
                "f", FLOAT64, [chance.choice([None, chance.uniform(-1e300, 1e300), 0.1]) for _ in range(n)]
            ),
            Column(
                "i", INT64, [chance.choice([None, chance.randint(-(2**63), 2**63 - 1)]) for _ in range(n)]
            ),
            Column("s", STRING, [chance.choice([None, "", "é" * chance.randint(0, 30)]) for _ in range(n)]),
            Column("b", BOOL, [chance.choice([None, True, False]) for _ in range(n)]),
        ]
        return Batch(times, columns)


def history(endpoint: str, channel: str, from_ns: int = 0, to_ns: int = 2**63 - 1) -> Batch | None:
    """Every recorded row of `channel` from `from_ns` to `to_ns`, page by page (a reply holds
    the last rows of its range: the next asks for those before them); None if never recorded."""
    pages: list[Batch] = []
    with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as sock:
        sock.linger = 0
        sock.connect(endpoint)
        while True:
            request_id = uuid.uuid4().hex
            request = protocol.HistoryRequest(request_id, channel, from_ns, to_ns, protocol.MAX_ROWS)
            sock.send_multipart(protocol.encode(request))
            reply = _reply(sock, request_id)
            if reply.error.startswith(protocol.NOT_RECORDED):
                return None
            if reply.error:
                raise LedgerViolation(f"history of {channel}: {reply.error}")
            pages.append(Batch(reply.times, reply.columns))
            if not reply.truncated or not reply.times:
                return concat(pages[::-1])
            to_ns = reply.times[0] - 1


def _reply(sock: zmq.Socket[bytes], request_id: str) -> protocol.HistoryReply:
    deadline = time.monotonic() + UP_S
    while time.monotonic() < deadline:
        if sock.poll(1000):
            reply = protocol.expect(sock.recv_multipart(), protocol.HistoryReply)
            if reply.request_id == request_id:
                return reply
    raise LedgerViolation("the recorder did not answer a history request")


@contextlib.contextmanager
def record_folder() -> Iterator[tuple[Path, str]]:
    """A folder for the recorder's store: on a tmpfs of its own (as root), so it can be filled;
    with why not, if not."""
    with tempfile.TemporaryDirectory(prefix="ledger") as temporary:
        disk = Path(temporary) / "disk"
        disk.mkdir(mode=0o700)
        if os.geteuid() != 0:
            yield disk / "record", "disk full skipped: mounting a tmpfs needs root"
            return
        mount = ["mount", "-t", "tmpfs", "-o", f"size={DISK},mode=0700", "tmpfs", str(disk)]
        mounted = subprocess.run(mount, capture_output=True, text=True, check=False)
        if mounted.returncode:  # root without the capability (a container)
            yield disk / "record", f"disk full skipped: {' '.join(mount)}: {mounted.stderr.strip()}"
            return
        try:
            yield disk / "record", ""
        finally:
            subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(path: Path) -> None:
    """Write `path` until its disk is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0" * 65536):
                pass
    finally:
        os.close(fd)


class Ledger:
    """The publisher's side: what was sent, what was acknowledged, what is in doubt."""

    def __init__(self, pipeline: Pipeline, chance: random.Random, report: Report) -> None:
        self.pipeline = pipeline
        self.chance = chance
        self.report = report
        self.rows = Rows(chance)
        self.publisher = Publisher(pipeline.publish_endpoint, timeout_s=TIMEOUT_S)
        self.acknowledged: dict[str, list[Batch]] = {channel: [] for channel in CHANNELS}
        self.in_doubt: list[tuple[str, Batch]] = []

    def publish(self, channel: str | None = None) -> bool:
        """One new batch; whether it was acknowledged."""
        channel = channel or self.chance.choice(CHANNELS)
        batch = self.rows.next(channel)
        try:
            accepted = self.publisher.publish_batch(channel, batch)
        except Refused:
            self.report.refused += 1
            return False
        except Unreachable:
            self.in_doubt.append((channel, batch))
            return False
        if accepted != len(batch):
            raise LedgerViolation(f"{accepted} of {len(batch)} rows accepted: all or none")
        self.acknowledged[channel].append(batch)
        self.report.acknowledged += len(batch)
        self.settle()
        return True

    def settle(self) -> None:
        """Publishes in doubt before an acknowledged one: their rows are all in the history, or none."""
        for channel, batch in self.in_doubt:
            recorded = history(self.pipeline.history_endpoint, channel, batch.times[0], batch.times[-1])
            times = set(recorded.times) if recorded is not None else set()
            found = [t in times for t in batch.times]
            if all(found):
                self.acknowledged[channel].append(batch)
                self.report.acknowledged += len(batch)
                self.report.in_doubt_kept += 1
            elif not any(found):
                self.report.in_doubt_lost += 1
            else:
                raise LedgerViolation(f"{channel}: {sum(found)} of {len(batch)} rows of one publish recorded")
        self.in_doubt.clear()

    def until_acknowledged(self) -> None:
        deadline = time.monotonic() + UP_S
        while not self.publish():
            if time.monotonic() > deadline:
                raise LedgerViolation(f"the recorder acknowledged nothing for {UP_S:g} s")

    def replay(self) -> None:
        """An acknowledged batch again: its times were accepted once, never twice."""
        channel = self.chance.choice(CHANNELS)
        if not self.acknowledged[channel]:
            return
        batch = self.chance.choice(self.acknowledged[channel][-5:])
        try:
            self.publisher.publish_batch(channel, batch)
        except (Refused, Unreachable):
            return
        raise LedgerViolation(f"{channel}: a time accepted twice ({batch.times[0]} ns, again)")

    def check(self) -> None:
        for channel in CHANNELS:
            expected = self.acknowledged[channel]
            recorded = history(self.pipeline.history_endpoint, channel)
            if not expected:
                continue
            want = concat(
                sorted(expected, key=lambda batch: batch.times[0])
            )  # those kept from doubt, in place
            if recorded is None:
                raise LedgerViolation(f"{channel}: nothing recorded, {len(want)} rows acknowledged")
            if recorded.times != want.times:
                lost = sorted(set(want.times) - set(recorded.times))
                extra = sorted(set(recorded.times) - set(want.times))
                raise LedgerViolation(
                    f"{channel}: {len(lost)} acknowledged rows missing (first {lost[:3]}), "
                    f"{len(extra)} rows never acknowledged (first {extra[:3]})"
                )
            for got, sent in zip(recorded.columns, want.columns, strict=True):
                if got != sent:
                    wrong = next(
                        i for i, (a, b) in enumerate(zip(got.values, sent.values, strict=True)) if a != b
                    )
                    raise LedgerViolation(f"{channel}.{sent.name}: row {wrong} changed")


class Recorder:
    """The recorder process of the pipeline, and the faults done to it."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self.pipeline.recorder is not None
        return self.pipeline.recorder

    def kill_soon(self, after_s: float) -> threading.Timer:
        timer = threading.Timer(after_s, self.process.send_signal, (signal.SIGKILL,))
        timer.start()
        return timer

    def start_again(self) -> None:
        self.process.wait()
        self.pipeline.start_recorder()


def run(seconds: float, seed: int, report_to: Report | None = None) -> Report:
    """The ledger for `seconds` of faults; LedgerViolation if the history is not what was acknowledged."""
    chance = random.Random(seed)
    report = report_to or Report(seed)
    with record_folder() as (folder, skipped):
        report.skipped = skipped
        pipeline = Pipeline(0, recorder=True, recorder_args=[*RECORDER_ARGS, "--record-dir", str(folder)])
        recorder = Recorder(pipeline)
        ledger = Ledger(pipeline, chance, report)
        try:
            ledger.until_acknowledged()
            faults = [f for f in FAULTS if not (skipped and f == "disk_full")]
            schedule = chance.sample(faults, len(faults))  # each fault once first, however short the run
            end = time.monotonic() + seconds
            while schedule or time.monotonic() < end:
                for _ in range(chance.randint(1, 20)):
                    ledger.publish()
                fault = schedule.pop() if schedule else chance.choice(faults)
                report.faults[fault] += 1
                _fault(fault, ledger, recorder, folder, chance)
            ledger.until_acknowledged()
            ledger.check()
        finally:
            ledger.publisher.close()
            if pipeline.recorder is not None and pipeline.recorder.poll() is None:
                pipeline.recorder.send_signal(signal.SIGCONT)
            pipeline.close()
    return report


def _fault(fault: str, ledger: Ledger, recorder: Recorder, folder: Path, chance: random.Random) -> None:
    if fault == "kill":  # during a publish: at some byte of its write, or between writes
        timer = recorder.kill_soon(chance.uniform(0, 0.01))
        while timer.is_alive() or recorder.process.poll() is None:
            ledger.publish()
        recorder.start_again()
        ledger.until_acknowledged()
        ledger.replay()
    elif fault == "stop":
        recorder.process.send_signal(signal.SIGSTOP)
        ledger.publish()  # past its timeout: in doubt
        time.sleep(chance.uniform(0, 0.5))
        recorder.process.send_signal(signal.SIGCONT)
    elif fault == "disk_full":
        filler = folder.parent / "filler"
        fill(filler)
        for _ in range(chance.randint(1, 10)):
            ledger.publish()
        filler.unlink()
    elif fault == "restart":
        recorder.process.send_signal(signal.SIGTERM)
        recorder.start_again()
        ledger.until_acknowledged()
        ledger.replay()
    else:
        ledger.replay()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long faults go on")
    parser.add_argument("--seed", type=int, default=None, help="the schedule's seed (random if not given)")
    args = parser.parse_args(argv)
    seed = random.randrange(2**32) if args.seed is None else args.seed
    print(f"ledger seed {seed}", flush=True)
    report = Report(seed)
    try:
        run(args.seconds, seed, report)
    except LedgerViolation as exc:
        print(f"{report}\nFAILED: {exc}", flush=True)
        return 1
    print(report, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
