"""python -m bench.chaos --seconds N [--seed S]: seeded faults against the pipeline; exit 1 on a violation."""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import zmq

from bench import goclient
from bench.chaos import schedule
from bench.chaos.checker import Checker
from bench.chaos.cluster import Cluster
from bench.chaos.faults import Injector
from bench.chaos.load import PUBLISHED, Traffic
from bench.chaos.monitor import Monitor
from bench.chaos.report import render
from services.common import protocol


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60, help="how long the load and the faults last")
    parser.add_argument(
        "--seed", type=int, default=None, help="the schedule's seed (random and printed if absent)"
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    command = f"python -m bench.chaos --seconds {args.seconds:g} --seed {seed}"
    plan = schedule.plan(seed, args.seconds)
    print(f"chaos: seed {seed}, {len(plan)} faults in {args.seconds:g} s; replay: {command}", flush=True)
    for fault in plan:
        print(
            f"  t={fault.at_s:6.2f} {fault.label()}" + (f" for {fault.hold_s:g} s" if fault.hold_s else ""),
            flush=True,
        )

    burst_client = goclient.client()
    if burst_client.binary:
        print("chaos: the burst of opens runs in bench's Go client, as Grafana (Go) opens", flush=True)
    else:
        print(
            "chaos: the burst of opens runs in Python, which takes a core from the plugin it swamps: "
            + burst_client.why_not,
            flush=True,
        )
    cluster = Cluster()
    if not cluster.tmpfs:
        print(
            "chaos: not root, so no tmpfs for the record folder: the disk_full fault is skipped", flush=True
        )
    traffic = Traffic(cluster, seed)
    injector = Injector(cluster, traffic, seed, burst_client)
    monitor = Monitor(cluster, injector)
    watcher = threading.Thread(target=monitor.run, daemon=True)
    scheduling = threading.Thread(target=monitor.watch_scheduling, daemon=True)
    run_dir = str(cluster.pipeline.run_dir)
    shutdown_s = 0.0
    try:
        started = time.time()
        traffic.start()
        watcher.start()
        scheduling.start()
        for fault in plan:
            time.sleep(max(0.0, started + fault.at_s - time.time()))
            done = injector.inject(fault.kind, fault.target, fault.hold_s)
            print(
                f"  t={done.start - started:6.2f} {done.label()} done in {done.end - done.start:.2f} s",
                flush=True,
            )
        time.sleep(max(0.0, started + args.seconds - time.time()))
        traffic.join()
        monitor.stop.set()
        watcher.join(5)
        scheduling.join(5)
        histories = {channel: history(cluster, channel) for channel in PUBLISHED}
    finally:
        ended = time.time()
        traffic.stop.set()
        monitor.stop.set()
        shutdown_s = cluster.close()
    orphans = find_orphans(run_dir)

    checker = Checker([*injector.done, *monitor.starved], traffic.published)
    for session in traffic.sessions:
        checker.session(session)
    for query in traffic.queries:
        checker.query(query)
    for channel, (times, values, error) in histories.items():
        checker.history(channel, times, values, error, ended)
    deaths = [(d.name, d.at, d.code) for d in monitor.deaths]
    checker.processes(deaths, monitor.rss_peak_mib, orphans, shutdown_s, ended)
    verdict = checker.verdict
    print()
    print(
        f"chaos: seed {seed}, {ended - started:.0f} s, "
        f"{len(traffic.sessions)} streams, {len(traffic.queries)} queries"
    )
    print(render(verdict, [*injector.done, *monitor.starved], command, started))
    print(f"\n{len(verdict.violations)} violations; replay: {command}")
    return 1 if verdict.violations else 0


def history(cluster: Cluster, channel: str) -> tuple[list[int], list[float], str]:
    """Every row the recorder holds for `channel`, asked as the plugin asks (its history socket)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(cluster.pipeline.history_endpoint)
    try:
        request = protocol.HistoryRequest(uuid.uuid4().hex, channel, 0, 2**62, protocol.MAX_ROWS)
        sock.send_multipart(protocol.encode(request))
        if not sock.poll(10_000):
            return [], [], "no answer within 10 s"
        reply = protocol.decode(sock.recv_multipart())
        if not isinstance(reply, protocol.HistoryReply):
            return [], [], f"answered {type(reply).__name__}"
        values = next((c.values for c in reply.columns if c.name == "v"), [])
        return reply.times, [v for v in values if isinstance(v, float)], reply.error
    finally:
        sock.close()
        ctx.term()


def find_orphans(run_dir: str) -> list[str]:
    """Processes still running with our run folder in their environment or command line."""
    marker = run_dir.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes() or marker in (entry / "cmdline").read_bytes():
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")[:120]
                found.append(f"pid {entry.name}: {command.decode(errors='replace')}")
        except OSError:
            continue
    return found


if __name__ == "__main__":
    sys.exit(main())
