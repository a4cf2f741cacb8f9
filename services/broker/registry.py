"""The broker's bookkeeping, free of sockets: who holds which channel, which worker runs it.

Plugins hold channels under a lease renewed by their heartbeats; workers report the
channels they run. From those two views the registry decides, and queues in `outbox`,
the StartTicker/StopTicker commands that make the workers run exactly the channels
someone holds: start at the first holder, stop after the last, move when a worker dies,
adopt what workers already run after a broker restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.common import protocol
from services.common.channels import ChannelSpec, Limits, parse_path
from services.common.errors import InvalidChannel


@dataclass(slots=True)
class Channel:
    spec: ChannelSpec
    holders: set[str] = field(default_factory=set)
    worker: str | None = None
    orphan_since: float | None = None
    """When the channel lost (or never had) a holder; it stops a lease later."""

    @property
    def load(self) -> float:
        """What the channel costs a worker."""
        return self.spec.values_per_s


@dataclass(slots=True)
class Worker:
    routing_id: bytes
    last_seen: float
    pid: int = 0
    ticks_late: int = 0
    assigned: set[str] = field(default_factory=set)
    load: float = 0.0


@dataclass(slots=True)
class PluginLease:
    last_seen: float
    channels: set[str] = field(default_factory=set)


class Registry:
    def __init__(
        self, limits: Limits, *, plugin_lease_s: float, worker_lease_s: float, max_channels: int
    ) -> None:
        self.limits = limits
        self.plugin_lease_s = plugin_lease_s
        self.worker_lease_s = worker_lease_s
        self.max_channels = max_channels
        self.channels: dict[str, Channel] = {}
        self.workers: dict[str, Worker] = {}
        self.plugins: dict[str, PluginLease] = {}
        self.outbox: list[tuple[bytes, protocol.Message]] = []

    # -- plugins -------------------------------------------------------------------

    def subscribe(self, plugin: str, path: str, now: float) -> str:
        """Record that `plugin` holds `path`; return '' or why the subscription is refused."""
        lease = self._lease(plugin, now)
        if path in lease.channels:
            return ""
        channel = self.channels.get(path)
        if channel is None:
            try:
                spec = parse_path(path, self.limits)
            except InvalidChannel as exc:
                return str(exc)
            if spec.path != path:
                return f"path {path!r} is not canonical, use {spec.path!r}"
            if len(self.channels) >= self.max_channels:
                return f"the broker runs its maximum of {self.max_channels} channels"
            channel = self.channels[path] = Channel(spec)
        lease.channels.add(path)
        channel.holders.add(plugin)
        channel.orphan_since = None
        if channel.worker is None:
            self._assign(path, channel)
        return ""

    def unsubscribe(self, plugin: str, path: str) -> None:
        lease = self.plugins.get(plugin)
        if lease is not None and path in lease.channels:
            lease.channels.discard(path)
            self._release(plugin, path)

    def plugin_heartbeat(self, plugin: str, paths: list[str], now: float) -> dict[str, str]:
        """Make the plugin's holdings exactly `paths`; return {path: error} for refusals."""
        lease = self._lease(plugin, now)
        wanted = set(paths)
        for path in lease.channels - wanted:
            lease.channels.discard(path)
            self._release(plugin, path)
        errors = {}
        for path in wanted - lease.channels:
            error = self.subscribe(plugin, path, now)
            if error:
                errors[path] = error
        return errors

    def _lease(self, plugin: str, now: float) -> PluginLease:
        lease = self.plugins.get(plugin)
        if lease is None:
            lease = self.plugins[plugin] = PluginLease(now)
        lease.last_seen = now
        return lease

    def _release(self, plugin: str, path: str) -> None:
        channel = self.channels.get(path)
        if channel is None:
            return
        channel.holders.discard(plugin)
        if not channel.holders:
            self._drop(path, channel)

    def _drop(self, path: str, channel: Channel) -> None:
        del self.channels[path]
        worker = self.workers.get(channel.worker or "")
        if worker is not None:
            self._unassign(worker, path, channel)
            self.outbox.append((worker.routing_id, protocol.StopTicker(path)))

    # -- workers -------------------------------------------------------------------

    def worker_heartbeat(self, message: protocol.WorkerHeartbeat, routing_id: bytes, now: float) -> None:
        """Renew a worker's lease; a full heartbeat also reconciles its channels with ours.

        An `unchanged` one from a worker we do not know (we restarted) is ignored: our
        Welcome carries a new broker id, and the worker answers it with a full heartbeat.
        """
        worker = self.workers.get(message.worker)
        if worker is None:
            if message.unchanged:
                return
            worker = self.workers[message.worker] = Worker(routing_id, now)
        worker.routing_id = routing_id
        worker.last_seen = now
        worker.pid = message.pid
        worker.ticks_late = message.ticks_late
        if message.unchanged:
            return
        running = set(message.channels)
        for path in running:
            self._reconcile_running(message.worker, worker, path, now)
        for path in worker.assigned - running:
            self.outbox.append((routing_id, protocol.StartTicker(path)))
        for path, channel in self.channels.items():
            if channel.worker is None:
                self._assign(path, channel)

    def _reconcile_running(self, worker_id: str, worker: Worker, path: str, now: float) -> None:
        channel = self.channels.get(path)
        if channel is None:  # running before this broker started: adopt it for a lease
            try:
                spec = parse_path(path, self.limits)
            except InvalidChannel:
                self.outbox.append((worker.routing_id, protocol.StopTicker(path)))
                return
            channel = self.channels[path] = Channel(spec, orphan_since=now)
        if channel.worker is None:
            channel.worker = worker_id
            worker.assigned.add(path)
            worker.load += channel.load
        elif channel.worker != worker_id:
            self.outbox.append((worker.routing_id, protocol.StopTicker(path)))

    def _assign(self, path: str, channel: Channel) -> None:
        if not self.workers:
            return
        worker_id = min(self.workers, key=lambda w: (self.workers[w].load, len(self.workers[w].assigned), w))
        worker = self.workers[worker_id]
        channel.worker = worker_id
        worker.assigned.add(path)
        worker.load += channel.load
        self.outbox.append((worker.routing_id, protocol.StartTicker(path)))

    def _unassign(self, worker: Worker, path: str, channel: Channel) -> None:
        worker.assigned.discard(path)
        worker.load = max(0.0, worker.load - channel.load)
        channel.worker = None

    # -- time ----------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Release silent plugins' leases, stop orphaned channels, move dead workers' channels."""
        for plugin, lease in list(self.plugins.items()):
            if now - lease.last_seen > self.plugin_lease_s:
                del self.plugins[plugin]
                for path in lease.channels:
                    self._release(plugin, path)
        for path, channel in list(self.channels.items()):
            orphaned = channel.orphan_since is not None and not channel.holders
            if orphaned and now - channel.orphan_since > self.plugin_lease_s:  # type: ignore[operator]
                self._drop(path, channel)
        dead = [w for w, worker in self.workers.items() if now - worker.last_seen > self.worker_lease_s]
        for worker_id in dead:
            worker = self.workers.pop(worker_id)
            for path in list(worker.assigned):
                channel = self.channels[path]
                self._unassign(worker, path, channel)
                self._assign(path, channel)

    def status(self, request_id: str, broker: str, now: float) -> protocol.StatusReply:
        workers: dict[str, dict[str, Any]] = {
            worker_id: {
                "pid": w.pid,
                "channels": len(w.assigned),
                "load": round(w.load, 3),
                "ticks_late": w.ticks_late,
                "seen_s_ago": round(now - w.last_seen, 3),
            }
            for worker_id, w in self.workers.items()
        }
        channels: dict[str, dict[str, Any]] = {
            path: {"worker": c.worker or "", "subscribers": len(c.holders)}
            for path, c in self.channels.items()
        }
        return protocol.StatusReply(request_id, broker, workers, channels, len(self.plugins))
