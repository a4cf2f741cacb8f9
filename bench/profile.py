"""Where the CPU goes in the scenarios whose targets are missed: py-spy over one process.

    .venv/bin/python -m bench.profile [--scenario NAME] [--seconds 8] [--tick-ms MS] [--raw FILE]

NAME is one of:

- streams (default): the plugin while 1,000 RunStreams carry 20,000 rows/s, once every
  stream has sent.
- start: the plugin while 1,000 RunStreams are opened at once (bench.start's Python client).
- go-start: the plugin while the Go client (bench/goclient) opens 1,000 channels at 1 Hz in
  Grafana's order (SubscribeStream 32 at a time, then every RunStream); the recording
  begins just before the first request. `--tick-ms 50` profiles bench.start's own ticks,
  where the streams already started carry 20,000 rows/s while the others start.
- go-dashboard: the plugin while the Go client opens bench.dashboard's 200 panels (QueryData
  over 6 h, SubscribeStream with {"after": …}, RunStream); the recording begins just before
  the first request.
- many: the plugin carrying 10,000 streams at 1 Hz (bench.many), once every stream has sent.
- ticker: the worker running 10,000 channels x 10 Hz with its ticker thread on CPU 1 and
  the broker and this reader on CPU 0 (bench.ticker's pinned run).

It prints each process's CPU over the window and where the profiled process's samples
fall: asyncio and gRPC's C core (samples whose innermost Python frame is the event loop
running a callback), other threads, and zmqstream's own functions (the innermost frame
under services/); then the innermost frames of all samples (what the time is spent in,
whoever called it). Needs py-spy (dev extra) and the right to ptrace (root, or
kernel.yama.ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench import dashboard as dashboard_scenario
from bench import goclient
from bench import many as many_scenario
from bench import start as start_scenario
from bench import ticker as ticker_scenario
from bench.harness import RawPlugin, read_streams
from bench.measure import cpu_seconds
from bench.streams import OFFERED_ROWS_PER_S
from services.hostemu.localpipeline import Pipeline, wait_for_workers

STREAMS = 1000
TICKER_CHANNELS = 10_000
EVENT_LOOP_CALLBACK = "Handle._run (asyncio/events.py"
LOOP_TURN = "BaseEventLoop._run_once ("


def _py_spy() -> str:
    """The venv's py-spy when run from the venv's python, else the one on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else "py-spy"


def where(stack: str) -> str:
    """A py-spy raw stack (frames outermost first, `;`-separated) → the bucket it counts in."""
    frames = stack.split(";")
    loop = [i for i, frame in enumerate(frames) if frame.startswith(LOOP_TURN)]
    inner = frames[loop[-1] + 1 :] if loop else frames  # below the loop: what one callback runs
    ours = [frame for frame in inner if "services/" in frame]
    if ours:
        return "zmqstream: " + ours[-1].split(" (")[0]
    if frames[-1].startswith(EVENT_LOOP_CALLBACK):
        return "asyncio + gRPC C core (callbacks of the event loop)"
    if any(frame.startswith("Thread.run") for frame in frames):
        return "other threads (gRPC poller, to_thread)"
    return "other: " + frames[-1].split(" (")[0]


def summarize(raw: str) -> list[tuple[str, float]]:
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, samples = line.rpartition(" ")
        counts[where(stack)] += int(samples)
    total = sum(counts.values()) or 1
    return [(bucket, 100 * n / total) for bucket, n in counts.most_common()]


def leaves(raw: str) -> list[tuple[str, float]]:
    """Shares of the innermost frames of every sample (the function the time is spent in)."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, samples = line.rpartition(" ")
        counts[stack.split(";")[-1].strip()] += int(samples)
    total = sum(counts.values()) or 1
    return [(frame, 100 * n / total) for frame, n in counts.most_common()]


OUTERMOST = {"<module>", "main"}
"""The plugin's entry frames, on every sample of its main thread."""


def inclusive(raw: str) -> list[tuple[str, float]]:
    """Shares of the samples each of zmqstream's functions is on the stack of (it and its callees)."""
    counts: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, samples = line.rpartition(" ")
        total += int(samples)
        names = {frame.split(" (")[0] for frame in stack.split(";") if "services/" in frame}
        for name in names - OUTERMOST:
            counts[name] += int(samples)
    return [(name, 100 * n / (total or 1)) for name, n in counts.most_common()]


class Spy:
    """py-spy recording one process for `seconds` into `raw_path`, and every process's CPU meanwhile."""

    def __init__(self, pids: dict[str, int], target: str, seconds: float, raw_path: Path) -> None:
        self.pids, self.seconds, self.raw_path = pids, seconds, raw_path
        self.before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.started = time.monotonic()
        command = [_py_spy(), "record", "--pid", str(pids[target]), "--duration", str(round(seconds))]
        command += ["--rate", "200", "--format", "raw", "--nonblocking", "--output", str(raw_path)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def cpu(self) -> dict[str, float]:
        """Cores each process used since the recording began."""
        elapsed = time.monotonic() - self.started
        return {name: (cpu_seconds(pid) - self.before[name]) / elapsed for name, pid in self.pids.items()}

    def buckets(self) -> list[tuple[str, float]]:
        self.process.wait(timeout=self.seconds + 30)
        return summarize(self.raw_path.read_text())


def go_profile(
    args: list[str], settings: dict[str, str], marker: str, seconds: float, raw_path: Path
) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """The Go client driving the plugin with `args`; py-spy from its stderr line `marker` on."""
    client = goclient.client()
    if client.binary is None:
        raise SystemExit(f"needs the Go client: {client.why_not}")
    pipeline = Pipeline(2)
    try:
        running = goclient.launch_on(client.binary, pipeline, ["-hold", "1s", *args], settings)
        plugin_pid = int(running.wait_for(goclient.PLUGIN_UP).rsplit(" ", 1)[1])
        running.wait_for(marker)
        pids = {"plugin": plugin_pid, **pipeline_pids(pipeline), "client (this process)": running.process.pid}
        spy = Spy(pids, "plugin", seconds, raw_path)
        time.sleep(seconds)
        cpu = spy.cpu()
        buckets = spy.buckets()
        running.finish()
    finally:
        pipeline.close()
    return cpu, buckets


def profile_go_start(
    seconds: float, raw_path: Path, tick_ms: int = 1000
) -> tuple[dict[str, float], list[tuple[str, float]]]:
    args = ["-n", str(STREAMS), "-paths", f"custom-0-{{i}}-{tick_ms}", "-tick-ms", str(tick_ms)]
    args += ["-seconds", f"{seconds + 2}s"]
    return go_profile(args, {}, goclient.PLUGIN_UP, seconds, raw_path)


def profile_go_dashboard(seconds: float, raw_path: Path) -> tuple[dict[str, float], list[tuple[str, float]]]:
    args = ["-n", str(dashboard_scenario.PANELS), "-paths", f"custom-0-{{i}}-{dashboard_scenario.TICK_MS}"]
    args += ["-query-hours", str(dashboard_scenario.HOURS), "-tick-ms", str(dashboard_scenario.TICK_MS)]
    args += ["-seconds", f"{seconds + 2}s"]
    return go_profile(args, {}, goclient.PLUGIN_UP, seconds, raw_path)


def profile_many(seconds: float, raw_path: Path) -> tuple[dict[str, float], list[tuple[str, float]]]:
    count = 10_000
    args = ["-n", str(count), "-paths", f"custom-0-{{i}}-{many_scenario.TICK_MS}", "-tick-ms", "1000"]
    args += ["-wait", "90s", "-warmup", "2s", "-seconds", f"{seconds + 2}s"]
    return go_profile(
        args, {"max_channels_per_datasource": str(count)}, goclient.WINDOW_OPEN, seconds, raw_path
    )


def pipeline_pids(pipeline: Pipeline) -> dict[str, int]:
    return {
        "client (this process)": os.getpid(),
        "broker": pipeline.broker.pid,
        **{f"worker {i + 1}": worker.pid for i, worker in enumerate(pipeline.workers)},
    }


def profile_streams(seconds: float, raw_path: Path) -> tuple[dict[str, float], list[tuple[str, float]]]:
    tick_ms = STREAMS * 1000 / OFFERED_ROWS_PER_S
    paths = [f"custom-{i}-{i + 1}-{tick_ms:g}" for i in range(STREAMS)]
    pipeline = Pipeline(2)
    host = pipeline.plugin()
    pids = {"plugin": host.process.pid, **pipeline_pids(pipeline)}
    spy: list[Spy] = []
    try:
        wait_for_workers(host, 2)

        def on_window() -> None:
            spy.append(Spy(pids, "plugin", seconds, raw_path))

        asyncio.run(read_streams(host.address, paths, 1.0, seconds, latency=False, on_window=on_window))
        cpu = spy[0].cpu()
    finally:
        host.stop()
        pipeline.close()
    return cpu, spy[0].buckets()


def profile_start(seconds: float, raw_path: Path) -> tuple[dict[str, float], list[tuple[str, float]]]:
    paths = [f"custom-{i}-{i + 1}-{start_scenario.TICK_MS}" for i in range(STREAMS)]
    pipeline = Pipeline(2)
    host = pipeline.plugin()
    try:
        wait_for_workers(host, 2)
        spy = Spy({"plugin": host.process.pid, **pipeline_pids(pipeline)}, "plugin", seconds, raw_path)
        asyncio.run(start_scenario.first_packets(host.address, paths, subscribe=False))
        cpu = spy.cpu()  # over the burst: the recording runs on, idle, to its end
    finally:
        host.stop()
        pipeline.close()
    return cpu, spy.buckets()


def profile_ticker(seconds: float, raw_path: Path) -> tuple[dict[str, float], list[tuple[str, float]]]:
    pipeline = Pipeline(1, worker_args=["--ticker-cpu", str(ticker_scenario.TICKER_CPU)])
    reader = RawPlugin.on(pipeline)
    try:
        reader.hold([f"custom-{i}-{i + 1}-{ticker_scenario.TICK_MS}" for i in range(TICKER_CHANNELS)])
        reader.wait_running(TICKER_CHANNELS)
        with ticker_scenario.kept_on_cpu0([os.getpid(), pipeline.broker.pid]):
            reader.count_rows(3.0)  # settle, as the scenario does
            spy = Spy(pipeline_pids(pipeline), "worker 1", seconds, raw_path)
            reader.count_rows(seconds)
            cpu = spy.cpu()
    finally:
        reader.close()
        pipeline.close()
    return cpu, spy.buckets()


PROFILES = {
    "streams": profile_streams,
    "start": profile_start,
    "go-start": profile_go_start,
    "go-dashboard": profile_go_dashboard,
    "many": profile_many,
    "ticker": profile_ticker,
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=PROFILES, default="streams")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--tick-ms", type=int, default=1000, help="go-start: the channels' tick (1000)")
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw stacks here")
    parser.add_argument("--from-raw", type=Path, help="only print the frames of stacks kept before")
    args = parser.parse_args()
    if args.from_raw:
        print_stacks(args.from_raw)
        return 0
    raw_path = args.raw or Path(tempfile.mkdtemp(prefix="zs-profile")) / f"{args.scenario}.txt"
    if args.scenario == "go-start":
        cpu, buckets = profile_go_start(args.seconds, raw_path, args.tick_ms)
    else:
        cpu, buckets = PROFILES[args.scenario](args.seconds, raw_path)
    print(f"{args.scenario}: CPU (cores) while profiled")
    for name, cores in cpu.items():
        print(f"  {name:<24} {cores:5.2f}")
    print(f"  {'total (of ' + str(os.cpu_count()) + ')':<24} {sum(cpu.values()):5.2f}")
    ours = sum(share for bucket, share in buckets if bucket.startswith("zmqstream:"))
    print(f"\nsamples (py-spy): {ours:.1f} % in zmqstream's own code")
    for bucket, share in buckets:
        if share >= 0.5:
            print(f"  {share:5.1f} %  {bucket}")
    print_stacks(raw_path)
    return 0


def print_stacks(raw_path: Path) -> None:
    """The innermost frames, and zmqstream's functions with their callees, of a recording."""
    raw = raw_path.read_text()
    print("\ninnermost frames (py-spy)")
    for frame, share in leaves(raw)[:15]:
        print(f"  {share:5.1f} %  {frame}")
    print("\nzmqstream's functions, callees included")
    for name, share in inclusive(raw)[:20]:
        print(f"  {share:5.1f} %  {name}")
    print(f"\nraw stacks: {raw_path}")


if __name__ == "__main__":
    sys.exit(main())
