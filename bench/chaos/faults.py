"""Each fault kind, injected into the running cluster; when it began and ended is recorded."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import msgpack
import orjson
import zmq

from bench.chaos import burst as bursts
from bench.chaos.cluster import Cluster
from bench.chaos.load import FAST, GENERATED, PUBLISHED, Traffic
from bench.goclient import Client
from services.common import protocol
from services.common.channels import UNCHECKED, parse_path
from services.hostemu.host import data_query
from services.packaging.bundle import ROOT
from services.plugin._proto import pluginv2_pb2 as pb

VARIANT_VALUES_PER_S = 1000
"""What one display variant of bench.chaos.burst's channel costs if it does its own work."""
FORGED = 666.0
"""A value no generator channel of the load can have (their ranges end at 100)."""


@dataclass
class Injected:
    kind: str
    target: str
    start: float
    end: float = 0.0
    """Wall-clock seconds; the fault's effect may last past `end` by the recovery bound."""
    notes: dict[str, float | str] = field(default_factory=dict)

    def label(self) -> str:
        return f"{self.kind}:{self.target}" if self.target else self.kind


class Injector:
    def __init__(self, cluster: Cluster, traffic: Traffic, seed: int, burst_client: Client) -> None:
        self.cluster = cluster
        self.burst_client = burst_client
        """The burst's client: bench's Go client where it is built (as Grafana, a Go process), else Python."""
        self.traffic = traffic
        self.rng = random.Random(seed ^ 0x5EED)
        self.faulted: set[str] = set()
        """Processes a fault has down or stopped now: the monitor does not count them as dead."""
        self.done: list[Injected] = []

    def inject(self, kind: str, target: str, hold_s: float) -> Injected:
        record = Injected(kind, target, time.time())
        handlers: dict[str, Callable[[Injected, str, float], None]] = {
            "kill9": self.kill9,
            "stop": self.stop,
            "broker_restart": self.broker_restart,
            "disk_full": self.disk_full,
            "slow_reader": self.slow_reader,
            "hostile": self.hostile,
            "burst": self.burst,
        }
        try:
            handlers[kind](record, target, hold_s)
        finally:
            record.end = time.time()
            self.done.append(record)
        return record

    def kill9(self, record: Injected, name: str, _: float) -> None:
        """kill -9, then a new process at once (supervisord restarts within a second)."""
        self.faulted.add(name)
        try:
            self.cluster.kill9(name)
            self.cluster.start(name)
        finally:
            self.faulted.discard(name)

    def stop(self, record: Injected, name: str, hold_s: float) -> None:
        self.faulted.add(name)
        try:
            self.cluster.signal(name, signal.SIGSTOP)
            time.sleep(hold_s)
            self.cluster.signal(name, signal.SIGCONT)
        finally:
            self.faulted.discard(name)

    def broker_restart(self, record: Injected, _: str, __: float) -> None:
        self.faulted.add("broker")
        try:
            self.cluster.restart_broker()
        finally:
            self.faulted.discard("broker")

    def disk_full(self, record: Injected, _: str, hold_s: float) -> None:
        """Fill the record folder's tmpfs, hold it full, free it (skipped without one: not root)."""
        if not self.cluster.tmpfs:
            record.notes["skipped"] = "not root: no tmpfs for the record folder"
            return
        filler = self.cluster.disk / "filler"
        try:
            with open(filler, "wb") as out:
                chunk = b"\0" * (1 << 20)
                with contextlib.suppress(OSError):
                    while True:
                        out.write(chunk)
                        out.flush()
            time.sleep(hold_s)
        finally:
            filler.unlink(missing_ok=True)

    def slow_reader(self, record: Injected, _: str, hold_s: float) -> None:
        """A viewer of a fast channel that stops reading for `hold_s`, then reads on."""
        session = self.traffic.read(FAST, hold_s + 4, pause=(1.0, hold_s))
        record.notes["rows"] = sum(len(p.times) for p in session.packets)

    def hostile(self, record: Injected, _: str, __: float) -> None:
        """Malformed and forged messages on every socket: control, frames-in, publish, history, gRPC."""
        run_dir = self.cluster.pipeline.run_dir
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sockets = []
        try:
            for kind, name in ((zmq.DEALER, "control"), (zmq.DEALER, "publish"), (zmq.DEALER, "history")):
                sock = ctx.socket(kind)
                sock.linger = 0
                sock.connect(f"ipc://{run_dir}/{name}")
                sockets.append(sock)
                for message in _malformed(self.rng):
                    with contextlib.suppress(zmq.ZMQError):
                        sock.send_multipart(message, zmq.NOBLOCK)
            control = sockets[0]
            channel = GENERATED[0]
            forged_beat = protocol.WorkerHeartbeat(
                "w1", {channel: 2**63 - 1}, pid=1
            )  # w1's name, another socket
            control.send_multipart(protocol.encode(forged_beat))
            forger = ctx.socket(zmq.PUB)
            forger.linger = 0
            forger.connect(f"ipc://{run_dir}/frames-in")
            sockets.append(forger)
            time.sleep(0.3)  # the proxy's subscriptions reach the new PUB
            spec = parse_path(channel, UNCHECKED)
            tick = spec.last_tick(time.time_ns())
            fake = protocol.float_bytes([FORGED])
            for epoch in (1, 2**62, 2**63 - 1):  # superseded, and far ahead of any placement
                forger.send(protocol.rows_frame(channel, tick + 1, epoch, [fake]))
            forger.send(protocol.rows_frame(channel, tick + 1, 1, [fake, fake]))
            for message in _malformed(self.rng):
                forger.send(protocol.topic(PUBLISHED[0]) + b"".join(message))
            record.notes["grpc_refused"] = self._hostile_grpc()
            time.sleep(0.5)
        finally:
            for sock in sockets:
                sock.close()
            ctx.term()

    def _hostile_grpc(self) -> float:
        """Junk bytes on the plugin's socket, bad paths and bad queries: how many were refused."""
        with self.cluster.lock:
            host = self.cluster.host
        address = host.address
        if address.startswith("unix:"):
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as raw:
                raw.settimeout(1)
                raw.connect(address.removeprefix("unix:"))
                raw.sendall(os.urandom(4096))
        refused = 0
        for path in ("custom-1-0-5", "custom-0-1-0", "x" * 5000, "pub-", "custom-0-1-10/display=!!"):
            try:
                refused += host.subscribe(path).status != pb.SubscribeStreamResponse.OK
            except grpc.RpcError:
                refused += 1
        bad = data_query("A", {"lowerLimit": "nan", "tickInterval": -1}, 0, 10)
        with contextlib.suppress(grpc.RpcError):
            refused += host.query_data([bad]).responses["A"].status >= 400
        return refused

    def burst(self, record: Injected, _: str, __: float) -> None:
        """A thousand stream opens at once (bench.chaos.burst's client, in a process of its own), a
        hundred of them display variants of one channel; CheckHealth's time and the plugin's memory
        meanwhile."""
        with self.cluster.lock:
            host = self.cluster.host
        health: list[float] = []
        stop = threading.Event()
        peak = [_rss_mib(host.process.pid)]

        def watch() -> None:
            while not stop.is_set():
                started = time.monotonic()
                with contextlib.suppress(grpc.RpcError):
                    host.check_health(timeout_s=10)
                health.append(time.monotonic() - started)
                peak.append(_rss_mib(host.process.pid))
                stop.wait(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        opened = bursts.paths(self.rng.randrange(2**31))
        client = self.burst_client.binary
        listed = bursts.write(opened, self.cluster.pipeline.run_dir / "burst.paths")
        command = bursts.command(client, host.address, listed)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
        finally:
            stop.set()
            watcher.join(15)
        record.notes["client"] = "Go" if client else "Python"
        if done.returncode != 0:
            record.notes["failed"] = f"exit {done.returncode}: {done.stderr.strip()[-300:]}"
            return
        figures = orjson.loads(done.stdout)
        outcome = bursts.outcome(opened, figures)
        record.notes |= {f"opens_{k}": float(v) for k, v in outcome.items()}
        record.notes |= {k: round(v, 2) for k, v in bursts.timing(figures).items()}
        admitted = outcome.get("variant_ok", 0)
        record.notes["variant_values_per_s"] = float(admitted * VARIANT_VALUES_PER_S)
        record.notes["health_max_s"] = round(max(health, default=0.0), 2)
        record.notes["plugin_rss_peak_mib"] = round(max(peak))


def _malformed(rng: random.Random) -> list[list[bytes]]:
    """Messages that are not what their socket expects: junk, wrong versions, wrong field types."""
    header = protocol.PROTOCOL_VERSION
    junk = [[rng.randbytes(rng.randint(0, 64))] for _ in range(20)]
    junk += [[bytes((99, 1)), b"\x80"], [bytes((header, 250)), b"\x80"], [bytes((header,))]]
    for kind in protocol.MsgType:
        for body in ({}, {"channel": 5}, {"channels": [[1]]}, {"times": "x", "columns": {}}, [1, 2]):
            junk.append([bytes((header, kind)), msgpack.packb(body)])
    return junk


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
