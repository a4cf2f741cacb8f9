"""CPU per row carried at 20,000 rows/s over 1,000 streams, against bare grpcio (issue #22).

In one run, read by the Go client: the bare grpcio server of the streams scenario
(prebuilt packets as fast as it can send them: its CPU per packet is what grpcio itself
costs here), then the plugin carrying 1,000 channels at 50 ms (20,000 rows/s), then the
same channels at 500 ms (10 % of the load). The target is the plugin's CPU per row at
full load at most bare grpcio's per packet; beside it, what pacing costs in latency
(p99 tick → client at full load and at 10 %).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import goclient
from bench.measure import Result
from bench.streams import OFFERED_ROWS_PER_S, bare_server

STREAMS = 1000


def bare(binary: Path, seconds: float) -> dict[str, Any]:
    """The Go client reading the bare server's 1,000 streams."""
    with bare_server() as (port, pid):
        args = ["-addr", f"127.0.0.1:{port}", "-server-pid", str(pid), "-n", str(STREAMS)]
        return goclient.drive(binary, [*args, "-warmup", "1s", "-seconds", f"{seconds}s"])


def carried(binary: Path, tick_ms: float, seconds: float) -> dict[str, Any]:
    args = ["-n", str(STREAMS), "-paths", f"custom-0-{{i}}-{tick_ms:g}", "-tick-ms", f"{tick_ms:g}"]
    return goclient.run_pipeline(binary, 2, [*args, "-seconds", f"{seconds}s"])


def run(quick: bool) -> list[Result]:
    seconds = 3 if quick else 8
    client = goclient.client()
    if client.binary is None:
        return [Result("rowcost", f"not run: needs the Go client ({client.why_not})", 0, "")]
    tick_ms = STREAMS * 1000 / OFFERED_ROWS_PER_S
    base = bare(client.binary, seconds)
    full = carried(client.binary, tick_ms, seconds)
    tenth = carried(client.binary, tick_ms * 10, seconds)
    bare_us = 1e6 * base["plugin_cpu_s"] / max(base["packets"], 1)
    row_us = 1e6 * full["plugin_cpu_s"] / max(full["rows"], 1)
    ratio = row_us / bare_us
    return [
        Result(
            "rowcost", f"bare grpcio, {STREAMS} streams: packets/s", base["packets"] / seconds, "packets/s"
        ),
        Result("rowcost", "bare grpcio: server CPU per packet", bare_us, "µs"),
        Result(
            "rowcost",
            f"plugin: rows/s carried ({OFFERED_ROWS_PER_S:,} offered)",
            full["rows"] / seconds,
            "rows/s",
        ),
        Result("rowcost", "plugin: CPU per row carried", row_us, "µs"),
        Result("rowcost", "plugin CPU per row / bare grpcio's per packet", ratio, "x", "≤ 1", ratio <= 1),
        Result("rowcost", "plugin: rows per packet", full["rows"] / max(full["packets"], 1), "rows"),
        Result(
            "rowcost", "p99 tick → client at 20,000 rows/s", full["latency_ms"].get("p99", float("nan")), "ms"
        ),
        Result(
            "rowcost",
            "p99 tick → client at 2,000 rows/s (10 %)",
            tenth["latency_ms"].get("p99", float("nan")),
            "ms",
        ),
        Result(
            "rowcost",
            "plugin: CPU per row carried at 10 %",
            1e6 * tenth["plugin_cpu_s"] / max(tenth["rows"], 1),
            "µs",
        ),
        Result(
            "rowcost",
            "streams that failed or sent nothing (both plugin runs)",
            sum(full["failed"].values()) + sum(tenth["failed"].values()) + full["silent"] + tenth["silent"],
            "streams",
            "0",
            not (full["failed"] or tenth["failed"] or full["silent"] or tenth["silent"]),
        ),
    ]
