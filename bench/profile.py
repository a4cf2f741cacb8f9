"""Where the plugin's CPU goes while it streams to 1,000 clients: the `streams` profile.

    .venv/bin/python -m bench.profile [--seconds 8] [--raw FILE]

It runs the streams scenario (two workers, the broker, the plugin, 1,000 RunStreams at
20,000 rows/s), attaches py-spy to the plugin once every stream has sent, and prints each
process's CPU and where the plugin's samples fall: asyncio and gRPC's C core (samples whose
innermost Python frame is the event loop running a callback), gRPC's poller thread, and
zmqstream's own functions (the innermost frame under services/). Needs py-spy (dev extra)
and the right to ptrace the plugin (root, or kernel.yama.ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.harness import read_streams
from bench.measure import cpu_seconds
from bench.streams import OFFERED_ROWS_PER_S
from services.hostemu.localpipeline import Pipeline, wait_for_workers

STREAMS = 1000
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


def profile(seconds: float, raw_path: Path) -> tuple[dict[str, float], list[tuple[str, float]]]:
    tick_ms = STREAMS * 1000 / OFFERED_ROWS_PER_S
    paths = [f"custom-{i}-{i + 1}-{tick_ms:g}" for i in range(STREAMS)]
    pipeline = Pipeline(2)
    host = pipeline.plugin()
    pids = {
        "plugin": host.process.pid,
        "client (this process)": os.getpid(),
        "broker": pipeline.broker.pid,
        **{f"worker {i + 1}": worker.pid for i, worker in enumerate(pipeline.workers)},
    }
    before: dict[str, float] = {}
    spy: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        before.update({name: cpu_seconds(pid) for name, pid in pids.items()})
        command = [_py_spy(), "record", "--pid", str(pids["plugin"]), "--duration", str(round(seconds))]
        command += ["--rate", "200", "--format", "raw", "--nonblocking", "--output", str(raw_path)]
        spy.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    try:
        wait_for_workers(host, 2)
        asyncio.run(read_streams(host.address, paths, 1.0, seconds, latency=False, on_window=start))
        cpu = {name: (cpu_seconds(pid) - before[name]) / seconds for name, pid in pids.items()}
        spy[0].wait(timeout=seconds + 30)
    finally:
        host.stop()
        pipeline.close()
    return cpu, summarize(raw_path.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw stacks here")
    args = parser.parse_args()
    raw_path = args.raw or Path(tempfile.mkdtemp(prefix="zs-profile")) / "plugin.txt"
    cpu, buckets = profile(args.seconds, raw_path)
    print(f"CPU (cores) over {args.seconds:g} s, {STREAMS} streams, {OFFERED_ROWS_PER_S:,} rows/s offered")
    for name, cores in cpu.items():
        print(f"  {name:<24} {cores:5.2f}")
    print(f"  {'total (of ' + str(os.cpu_count()) + ')':<24} {sum(cpu.values()):5.2f}")
    ours = sum(share for bucket, share in buckets if bucket.startswith("zmqstream:"))
    print(f"\nplugin samples (py-spy): {ours:.1f} % in zmqstream's own code")
    for bucket, share in buckets:
        if share >= 0.5:
            print(f"  {share:5.1f} %  {bucket}")
    print(f"\nraw stacks: {raw_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
