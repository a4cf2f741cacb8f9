"""`zmqstream watch <path>`: a channel's live values in the terminal, through the real plugin.

It launches the plugin the way Grafana does (services.hostemu), opens RunStream and
redraws one line per packet: a sparkline of the latest values of the first number field,
the last value, rows per second and the tick-to-screen latency (median and p99). An
event channel (`source-host-1000`, `pub-<name>`), whose rows carry several fields of
any kind, also gets its latest row as `name=value` pairs. Whatever
stands in the way (no plugin, a broker that is absent or refused, no worker, a stream
the plugin ends or that stays silent past --timeout) is said in words, with exit 1.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, TextIO

import grpc

from services.cli.flags import add_run_dir_flag
from services.hostemu.dataframe import StreamingFrame
from services.hostemu.host import HandshakeError, LiveStream, PluginHost
from services.plugin._proto import pluginv2_pb2 as pb
from services.plugin.identity import CHECKOUT_PLUGIN_DIR, launcher_name

BARS = "▁▂▃▄▅▆▇█"
ROW_WIDTH = 200
"""Characters of an event channel's latest row shown after the sparkline."""


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

    def add(self, times_ns: list[int], values: list[float | None], received: float) -> None:
        self.values.extend(math.nan if v is None else v for v in values)
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


class Watchdog(threading.Thread):
    """Cancels a stream that brings no packet for `timeout_s`: a silent stream is an error too."""

    def __init__(self, stream: LiveStream, timeout_s: float) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.stream = stream
        self.timeout_s = timeout_s
        self.last = time.monotonic()
        self.fired = False
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            if time.monotonic() - self.last > self.timeout_s:
                self.fired = True
                self.stream.cancel()
                return


def watch(
    host: PluginHost, path: str, *, rows: int, width: int, plain: bool, out: TextIO, timeout_s: float
) -> int:
    stream = host.run_stream(path)
    frame = stream.frame
    watcher = Watcher(width)
    watchdog = Watchdog(stream, timeout_s)
    watchdog.start()
    seen = 0
    events = not path.startswith("custom-")  # rows of named fields of any kind, not series
    try:
        for _ in stream.packets_iter():
            watchdog.last = time.monotonic()
            times = frame.times_ns[seen:]
            number = first_number(frame)
            watcher.add(
                times, frame.values[number][seen:] if number is not None else [], stream.received_at[-1]
            )
            seen = len(frame.times_ns)
            line = watcher.line() + (" " + latest_row(frame, ROW_WIDTH) if events else "")
            out.write(line + "\n" if plain else "\r\x1b[2K" + line)
            out.flush()
            if rows and watcher.rows >= rows:
                break
    except grpc.RpcError as exc:
        if watchdog.fired:
            return fail(f"no rows of {path} for {timeout_s:g} s: is a worker running? (zmqstream status)")
        return fail(f"the plugin ended the stream of {path}: {exc.details()}")
    except KeyboardInterrupt:
        pass
    finally:
        watchdog.done.set()
        stream.cancel()
        if not plain:
            out.write("\n")
    return 0


def first_number(frame: StreamingFrame) -> int | None:
    """The column of the frame's first number field (a pure channel's first series)."""
    return next((i for i, f in enumerate(frame.fields) if f.get("type") == "number"), None)


def latest_row(frame: StreamingFrame, width: int) -> str:
    """The last row's fields as `name=value` pairs, cut to `width` characters."""
    columns = [
        (f.get("name", ""), column)
        for f, column in zip(frame.fields, frame.values, strict=True)
        if f.get("type") != "time"
    ]
    if not columns or not columns[0][1]:
        return ""
    text = " ".join(f"{name}={_cell(column[-1])}" for name, column in columns)
    return text if len(text) <= width else text[: width - 1] + "…"


def _cell(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    # A publisher's string: escape sequences and newlines would drive the operator's terminal.
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def fail(reason: str) -> int:
    print(f"zmqstream watch: {reason}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    try:
        host = PluginHost(  # as if forwarded: ZMQSTREAM_RUN_DIR and the rest of this shell apply
            args.plugin,
            {
                "run_dir": args.run_dir,
                **({"control_endpoint": args.control_endpoint} if args.control_endpoint else {}),
            },
            forward_host_env=True,
        )
    except (OSError, HandshakeError) as exc:
        return fail(f"cannot start the plugin {args.plugin}: {exc} (build it with make bundle)")
    try:
        health = host.check_health()
        if health.status != pb.CheckHealthResponse.OK:
            return fail(health.message)
        response = host.subscribe(args.path)
        if response.status != response.OK:
            reasons = [e["@message"] + ": " + str(e.get("error", "")) for e in host.logs_at("warn")]
            return fail(f"the plugin refused {args.path!r} ({'; '.join(reasons) or 'not found'})")
        return watch(
            host,
            args.path,
            rows=args.rows,
            width=args.width,
            plain=args.plain,
            out=sys.stdout,
            timeout_s=args.timeout,
        )
    finally:
        host.stop()


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("watch", help="draw a channel's live values in the terminal")
    parser.add_argument("path", help="channel path, e.g. custom-10-20-100")
    default_plugin = CHECKOUT_PLUGIN_DIR / launcher_name("linux_amd64")
    parser.add_argument(
        "--plugin", type=Path, default=default_plugin, help="plugin executable (default: %(default)s)"
    )
    add_run_dir_flag(parser)
    parser.add_argument(
        "--control-endpoint",
        default="",
        help="broker control endpoint for the plugin (default: <run-dir>/control)",
    )
    parser.add_argument(
        "--rows", type=int, default=0, help="stop after this many rows (default: until Ctrl-C)"
    )
    parser.add_argument("--width", type=int, default=60, help="sparkline width in values")
    parser.add_argument("--plain", action="store_true", help="one line per update instead of redrawing")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds without rows before giving up (default 5)"
    )
    parser.set_defaults(run=run)
