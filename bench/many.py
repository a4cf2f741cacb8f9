"""10,000 concurrent streams at 1 Hz in one plugin (issue #22).

The Go client opens `custom-0-<i>-1000` for i up to 10,000 in Grafana's order
(SubscribeStream 32 at a time, then every RunStream), waits for every first packet and
a warm-up, then measures a window: the plugin's CPU in cores, its memory per stream (its
RSS then, less its RSS before the first stream, over the streams), and the streams late by
more than 2 ticks (a row that arrived over 2 s after its tick time, or 2 s without a row),
with when in the window the late rows arrived.

Each channel ticks at its own phase of the second (services.common.channels), so rows come
all through the second, one message each. Beside the plugin, in the same run, a bare
grpcio server is read the same way, each stream sending one prebuilt packet at each tick of
its channel: what grpcio alone costs in CPU and memory for that pattern.
"""

from __future__ import annotations

from typing import Any

from bench import goclient
from bench.measure import Result
from bench.streams import bare_server

TICK_MS = 1000


def run(quick: bool) -> list[Result]:
    count = 1000 if quick else 10_000
    seconds = 4 if quick else 10
    client = goclient.client()
    if client.binary is None:
        return [Result("many", f"not run: needs the Go client ({client.why_not})", 0, "")]
    args = ["-n", str(count), "-paths", f"custom-0-{{i}}-{TICK_MS}", "-tick-ms", str(TICK_MS)]
    settings = {"max_channels_per_datasource": str(count)}
    args += ["-wait", "90s", "-warmup", "3s", "-seconds", f"{seconds}s"]
    with bare_server(at_ticks=True) as (port, pid):
        bare = goclient.drive(client.binary, ["-addr", f"127.0.0.1:{port}", "-server-pid", str(pid), *args])
    figures = goclient.run_pipeline(client.binary, 2, args, settings)
    cores = figures["plugin_cpu_s"] / figures["window_s"]
    kib = memory_per_stream(figures, count)
    bare_kib = memory_per_stream(bare, count)
    late = figures["late_streams"]  # a stream with no row in the window counts: 2 ticks without one
    return [
        Result("many", f"{count:,} streams at 1 Hz: all started in", figures["start_s"], "s"),
        Result("many", "plugin CPU", cores, "cores", "≤ 1", cores <= 1),
        Result("many", "plugin memory per stream", kib, "KiB", "≤ 20", kib <= 20),
        Result("many", "bare grpcio, a packet at each tick of each stream: CPU", bare_cores(bare), "cores"),
        Result("many", "bare grpcio: memory per stream", bare_kib, "KiB"),
        Result("many", "plugin memory per stream / bare grpcio's", kib / bare_kib, "x"),
        Result(
            "many",
            "streams late by more than 2 ticks (failed and silent ones too)",
            late,
            "streams",
            "0",
            late == 0,
        ),
        *late_rows_when(figures),
        Result("many", "rows/s carried", figures["rows"] / seconds, "rows/s"),
        Result("many", "p99 tick → client", figures["latency_ms"].get("p99", float("nan")), "ms"),
        Result("many", "client CPU (Go)", figures["client_cpu_s"] / figures["window_s"], "cores"),
        goclient.failures("many", figures),
    ]


def late_rows_when(figures: dict[str, Any]) -> list[Result]:
    """When the rows over 2 ticks late arrived, if any: right after the starts (the burst's
    backlog still going out) or all along (the plugin short of CPU at this load)."""
    if figures["late_rows_until_s"] < 0:
        return []
    span = f"{figures['late_rows_from_s']:.1f} s into the window"
    return [
        Result(
            "many",
            f"rows over 2 ticks late: the first arrived {span}, the last",
            figures["late_rows_until_s"],
            "s",
        )
    ]


def memory_per_stream(figures: dict[str, Any], count: int) -> float:
    """KiB: the server's RSS in the window, less its RSS before the first stream, over the streams."""
    return float(figures["plugin_rss_kib"] - figures["plugin_rss_before_kib"]) / count


def bare_cores(figures: dict[str, Any]) -> float:
    return float(figures["plugin_cpu_s"] / figures["window_s"])
