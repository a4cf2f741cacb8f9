"""`zmqstream watch <path>`: a channel's live values in the terminal, through the real plugin.

It launches the plugin the way Grafana does (services.hostemu), opens RunStream and
redraws one line per packet: a sparkline of the latest values of the first series, the
last value, rows per second and the tick-to-screen latency (median and p99).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import deque
from pathlib import Path
from typing import Any, TextIO

from services.hostemu.host import PluginHost
from services.plugin.bundle import ROOT
from services.plugin.identity import PLUGIN_ID, launcher_name

BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    finite = [v for v in values if v == v]
    if not finite:
        return ""
    low, high = min(finite), max(finite)
    span = (high - low) or 1.0
    return "".join(" " if v != v else BARS[min(7, int((v - low) / span * 8))] for v in values)


class Watcher:
    def __init__(self, width: int) -> None:
        self.values: deque[float] = deque(maxlen=width)
        self.latency_ms: deque[float] = deque(maxlen=500)
        self.arrivals: deque[tuple[float, int]] = deque()
        self.rows = 0

    def add(self, times_ns: list[int], values: list[float], received: float) -> None:
        self.values.extend(values)
        self.latency_ms.extend((received - t / 1e9) * 1000 for t in times_ns)
        self.rows += len(times_ns)
        self.arrivals.append((received, len(times_ns)))
        while self.arrivals and received - self.arrivals[0][0] > 2.0:
            self.arrivals.popleft()

    def line(self) -> str:
        span = self.arrivals[-1][0] - self.arrivals[0][0] if len(self.arrivals) > 1 else 0.0
        rate = sum(n for _, n in list(self.arrivals)[1:]) / span if span else 0.0
        latency = sorted(self.latency_ms)
        p99 = latency[min(len(latency) - 1, int(len(latency) * 0.99))] if latency else 0.0
        median = statistics.median(latency) if latency else 0.0
        last = self.values[-1] if self.values else float("nan")
        return (
            f"{sparkline(list(self.values))}  {last:10.4g}  {rate:8.1f} rows/s  "
            f"latency {median:6.2f} ms (p99 {p99:6.2f})"
        )


def watch(host: PluginHost, path: str, *, rows: int, width: int, plain: bool, out: TextIO) -> int:
    stream = host.run_stream(path)
    frame = stream.frame
    watcher = Watcher(width)
    seen = 0
    try:
        for _ in stream.packets_iter():
            times = frame.times_ns[seen:]
            watcher.add(times, frame.values[1][seen:], stream.received_at[-1])
            seen = len(frame.times_ns)
            out.write(watcher.line() + "\n" if plain else "\r\x1b[2K" + watcher.line())
            out.flush()
            if rows and watcher.rows >= rows:
                break
    except KeyboardInterrupt:
        pass
    finally:
        stream.cancel()
        if not plain:
            out.write("\n")
    return 0


def run(args: argparse.Namespace) -> int:
    host = PluginHost(
        args.plugin,
        env={"ZMQSTREAM_CONTROL_ENDPOINT": args.control_endpoint} if args.control_endpoint else None,
    )
    try:
        response = host.subscribe(args.path)
        if response.status != response.OK:
            reasons = [e["@message"] + ": " + str(e.get("error", "")) for e in host.logs_at("warn")]
            print(
                f"zmqstream watch: the plugin refused {args.path!r} ({'; '.join(reasons) or 'not found'})",
                file=sys.stderr,
            )
            return 1
        return watch(host, args.path, rows=args.rows, width=args.width, plain=args.plain, out=sys.stdout)
    finally:
        host.stop()


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("watch", help="draw a channel's live values in the terminal")
    parser.add_argument("path", help="channel path, e.g. custom-10-20-100")
    default_plugin = ROOT / "build" / "plugins" / PLUGIN_ID / launcher_name("linux_amd64")
    parser.add_argument(
        "--plugin", type=Path, default=default_plugin, help="plugin executable (default: %(default)s)"
    )
    parser.add_argument("--control-endpoint", default="", help="broker control endpoint for the plugin")
    parser.add_argument(
        "--rows", type=int, default=0, help="stop after this many rows (default: until Ctrl-C)"
    )
    parser.add_argument("--width", type=int, default=60, help="sparkline width in values")
    parser.add_argument("--plain", action="store_true", help="one line per update instead of redrawing")
    parser.set_defaults(run=run)
