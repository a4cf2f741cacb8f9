"""Event channels (issue #15): rows a program publishes, through the recorder, to a panel.

A published row takes a path no generator row takes: a request/reply to the recorder
(checked completely, kept in its ring), its PUB, the broker, and the plugin's typed
frames. Two figures of it on real processes (broker, one worker, the recorder, the
plugin through its launcher):
- publish throughput: one Publisher sending as fast as the recorder answers, in batches
  of BATCH rows (float, string, bool) and one row at a time (a round trip per row). The
  recorder's per-channel budget (`--max-rows-per-s`, 1,000 by default) is raised out of
  the way; its CPU per row says how much of the figure is the recorder's own work.
- publish → panel: a RunStream of the channel held open as Grafana holds one, rows
  published one at a time at RATE_PER_S; the latency of each is from the start of its
  publish call (the row's own time) to its arrival in a packet, and rows lost must be 0.
- the same two throughputs with the recorder's store on (`--record-dir`, SQLite: every
  publish committed before its reply), whose CPU per row less the figure without is what
  storing costs per row.
Sources (`source-host-1000`) are not measured: they tick once a second by design.
"""

from __future__ import annotations

import tempfile
import threading
import time

import grpc
import orjson

from bench.measure import Result, cpu_seconds, percentile
from services.common.fields import BOOL, FLOAT64, STRING, Batch, Column
from services.hostemu.host import PluginHost
from services.hostemu.localpipeline import Pipeline, wait_for_workers
from services.publish import Publisher, Refused

BATCH = 500
RATE_PER_S = 200
BUDGET = ["--max-rows-per-s", "1e9"]
READY_S = 20.0
TOO_MANY = "more than"
"""The start of the recorder's refusal of a peer that sent publishes far ahead of their replies."""
GRACE_S = 2.0
"""How long after the last publish its rows may take to arrive before they count as lost."""


class Rows:
    """Batches of `size` rows of (float, string, bool), each later than the last, stamped now."""

    def __init__(self, size: int) -> None:
        self.columns = [
            Column("temp", FLOAT64, [20.0 + i / size for i in range(size)]),
            Column("door", STRING, ["open" if i % 2 else "shut" for i in range(size)]),
            Column("ok", BOOL, [i % 3 != 0 for i in range(size)]),
        ]
        self.size = size
        self.last = 0

    def next(self) -> Batch:
        start = max(self.last + 1_000, time.time_ns())  # 1 µs apart: the recorder wants increasing times
        self.last = start + (self.size - 1) * 1_000
        return Batch(list(range(start, self.last + 1, 1_000)), self.columns)


def throughput(
    publisher: Publisher, channel: str, size: int, seconds: float, recorder_pid: int
) -> tuple[float, float, int]:
    """Rows/s the recorder accepted from back-to-back publishes, its CPU µs per row, and the
    publishes it refused as "too many at once" though each waited for its reply."""
    rows = Rows(size)
    publisher.publish_batch(channel, rows.next())  # the channel begins (a log line, a heartbeat)
    accepted = refused = 0
    cpu_before = cpu_seconds(recorder_pid)
    started = time.monotonic()
    end = started + seconds
    while time.monotonic() < end:
        try:
            accepted += publisher.publish_batch(channel, rows.next())
        except Refused as exc:
            if not str(exc).startswith(TOO_MANY):
                raise
            refused += 1
    elapsed = time.monotonic() - started
    return accepted / elapsed, 1e6 * (cpu_seconds(recorder_pid) - cpu_before) / max(accepted, 1), refused


def to_panel(
    host: PluginHost, publisher: Publisher, channel: str, seconds: float
) -> tuple[list[float], int, int]:
    """Latencies (ms) of rows published at RATE_PER_S during `seconds`, rows published, rows lost."""
    rows = Rows(1)
    publisher.publish_batch(channel, rows.next())  # the channel exists before the panel opens
    stream = host.run_stream(channel)
    arrived: dict[int, int] = {}  # row time (ns) → arrival (ns)

    def read() -> None:
        try:
            for packet in stream.call:
                now = time.time_ns()
                data = orjson.loads(packet.data).get("data")
                if not data:
                    continue  # a notice only
                nanos = (data.get("nanos") or [None])[0] or [0] * len(data["values"][0])
                for ms, ns in zip(data["values"][0], nanos, strict=True):
                    arrived[ms * 1_000_000 + ns] = now
        except grpc.RpcError:
            pass  # cancelled at the end

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    measured: list[int] = []
    warmup = 1.0  # the first live rows are bridged from the recorder's history: not measured
    started = time.monotonic()
    for k in range(round((warmup + seconds) * RATE_PER_S)):
        time.sleep(max(0.0, started + k / RATE_PER_S - time.monotonic()))
        batch = rows.next()
        publisher.publish_batch(channel, batch)
        if k >= warmup * RATE_PER_S:
            measured.append(batch.times[0])
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and measured[-1] not in arrived:
        time.sleep(0.01)
    time.sleep(0.1)
    stream.cancel()
    reader.join(5)
    latencies = [(arrived[t] - t) / 1e6 for t in measured if t in arrived]
    return latencies, len(measured), len(measured) - len(latencies)


def wait_for_recorder(host: PluginHost) -> None:
    deadline = time.monotonic() + READY_S
    while "a recorder is alive" not in (message := host.check_health().message):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no recorder within {READY_S:g} s: {message}")
        time.sleep(0.1)


def stored(seconds: float) -> list[Result]:
    """The publish throughputs with the recorder storing every publish before it answers."""
    with tempfile.TemporaryDirectory(prefix="bench-record") as folder:
        pipeline = Pipeline(0, recorder=True, recorder_args=[*BUDGET, "--record-dir", f"{folder}/record"])
        try:
            assert pipeline.recorder is not None
            deadline = time.monotonic() + READY_S
            while not (pipeline.run_dir / "publish").exists():  # the recorder has bound its socket
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no recorder within {READY_S:g} s")
                time.sleep(0.05)
            with Publisher(pipeline.publish_endpoint, timeout_s=READY_S) as publisher:
                pid = pipeline.recorder.pid
                batched, batched_us, _ = throughput(publisher, "pub-batched", BATCH, seconds, pid)
                single, single_us, _ = throughput(publisher, "pub-single", 1, seconds, pid)
        finally:
            pipeline.close()
    return [
        Result("events", f"publish rows/s, {BATCH}-row batches, stored (--record-dir)", batched, "rows/s"),
        Result("events", f"recorder CPU per row, {BATCH}-row batches, stored", batched_us, "µs"),
        Result("events", "publish rows/s, 1 row per publish, stored", single, "rows/s"),
        Result("events", "recorder CPU per row, 1 row per publish, stored", single_us, "µs"),
    ]


def run(quick: bool) -> list[Result]:
    seconds = 1.5 if quick else 5.0
    pipeline = Pipeline(1, recorder=True, recorder_args=BUDGET)
    host = pipeline.plugin()
    try:
        wait_for_workers(host, 1)
        wait_for_recorder(host)
        assert pipeline.recorder is not None
        with Publisher(pipeline.publish_endpoint) as publisher:
            pid = pipeline.recorder.pid
            batched, batched_us, batched_refused = throughput(publisher, "pub-batched", BATCH, seconds, pid)
            single, single_us, single_refused = throughput(publisher, "pub-single", 1, seconds, pid)
            latencies, published, lost = to_panel(host, publisher, "pub-panel", 3.0 if quick else 10.0)
    finally:
        host.stop()
        pipeline.close()
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return [
        Result("events", f"publish rows/s, {BATCH}-row batches (float, string, bool)", batched, "rows/s"),
        Result("events", f"recorder CPU per row, {BATCH}-row batches", batched_us, "µs"),
        Result("events", "publish rows/s, 1 row per publish (round trip each)", single, "rows/s"),
        Result("events", "recorder CPU per row, 1 row per publish", single_us, "µs"),
        *(
            Result(
                "events",
                f"publishes refused as sent too far ahead, though each waited, {how}",
                n,
                "publishes",
                "0",
                n == 0,
            )
            for how, n in ((f"{BATCH}-row", batched_refused), ("1-row", single_refused))
        ),
        Result("events", f"publish → panel p50, {RATE_PER_S} rows/s one at a time", p50, "ms"),
        Result("events", "publish → panel p99", p99, "ms"),
        Result("events", f"rows lost of {published:,} published", lost, "rows", "0", lost == 0),
        *stored(seconds),
    ]
