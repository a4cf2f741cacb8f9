"""The broker's bookkeeping, free of sockets: who holds which channel, which worker runs it.

Plugins hold channels under a lease renewed by their heartbeats; workers report the
channels they run. From those two views the registry decides, and queues in `outbox`,
the StartTicker/StopTicker commands that make the workers run exactly the channels
someone holds: start at the first holder, stop after the last, move when a worker dies,
adopt what workers already run after a broker restart.

Workers have roles. Generators take placements of pure channels and of sources. The
recorder (services.recorder) takes none: it carries the published channels (`pub-*`)
under epochs of its own choosing and lists them in its heartbeats, so a published
channel is placed on the recorder that offers it, waits while none does, and is never
stopped there (publishers publish whether or not anyone watches).

Every placement of a channel on a worker gets an epoch, larger than any before it
(the wall clock in ns, or the last epoch + 1), and the channel's holders are told
(Placement). When two workers claim one channel, the larger epoch wins and the other is
told to stop: a worker that wakes from a freeze after its channel moved cannot take it back.

"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.broker.liveness import Liveness
from services.common import protocol
from services.common.channels import PUBLISHED, ChannelSpec, EventChannel, Limits, parse_channel
from services.common.errors import InvalidChannel
from services.common.logs import fields

log = logging.getLogger("zmqstream.broker")

EVENT_FIELDS_GUESS = 10
"""Values per row an event channel is assumed to carry, for placing it (its fields are its source's)."""


@dataclass(slots=True)
class Channel:
    spec: ChannelSpec | EventChannel
    holders: set[str] = field(default_factory=set)
    worker: str | None = None
    epoch: int = 0
    """The current placement's fencing token; 0 before the first."""
    asked_at: float = -1e18
    """When its worker was last sent StartTicker: one not yet reported is asked again only a
    worker lease later (10,000 StartTickers queue for seconds; asking at every heartbeat
    would bury the worker in repeats)."""

    @property
    def load(self) -> float:
        """What the channel costs a worker."""
        spec = self.spec
        if isinstance(spec, ChannelSpec):
            return spec.values_per_s
        return EVENT_FIELDS_GUESS * 1000.0 / spec.tick_ms if spec.tick_ms else 0.0

    @property
    def published(self) -> bool:
        return isinstance(self.spec, EventChannel) and self.spec.kind == PUBLISHED


@dataclass(slots=True)
class Worker:
    routing_id: bytes
    liveness: Liveness
    pid: int = 0
    ticks_late: int = 0
    assigned: set[str] = field(default_factory=set)
    load: float = 0.0
    role: str = protocol.GENERATOR
    offered: dict[str, int] = field(default_factory=dict)
    """A recorder's published channels and their epochs, held by anyone or not."""


@dataclass(slots=True)
class PluginLease:
    routing_id: bytes
    liveness: Liveness
    channels: set[str] = field(default_factory=set)


class Registry:
    def __init__(
        self,
        limits: Limits,
        *,
        plugin_lease_s: float,
        worker_lease_s: float,
        max_channels: int,
        epoch_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.limits = limits
        self.plugin_lease_s = plugin_lease_s
        self.worker_lease_s = worker_lease_s
        self.max_channels = max_channels
        self.epoch_clock = epoch_clock
        self.channels: dict[str, Channel] = {}
        self.orphans: dict[str, float] = {}
        """Channels adopted from a worker that no plugin holds yet, and since when: each stops a
        lease later unless claimed. Kept apart so that expiry, every broker tick, does not scan
        every channel (with 10,000 held, that scan was 0.04 of the broker's 0.30 cores)."""
        self.workers: dict[str, Worker] = {}
        self.plugins: dict[str, PluginLease] = {}
        self.outbox: list[tuple[bytes, protocol.Message]] = []

    # -- plugins -------------------------------------------------------------------

    def subscribe(
        self, plugin: str, path: str, now: float, routing_id: bytes = b""
    ) -> protocol.SubscribeReply:
        """Record that `plugin` holds `path`; the reply says why not, or the channel's epoch."""
        lease = self._lease(plugin, now, routing_id)
        channel = self.channels.get(path)
        if path in lease.channels and channel is not None:
            return protocol.SubscribeReply(path, epoch=channel.epoch)
        if channel is None:
            try:
                spec = parse_channel(path, self.limits)
            except InvalidChannel as exc:
                return protocol.SubscribeReply(path, str(exc))
            if spec.path != path:
                return protocol.SubscribeReply(path, f"path {path!r} is not canonical, use {spec.path!r}")
            if len(self.channels) >= self.max_channels:
                return protocol.SubscribeReply(
                    path, f"the broker runs its maximum of {self.max_channels} channels"
                )
            channel = self.channels[path] = Channel(spec)
        lease.channels.add(path)
        channel.holders.add(plugin)
        self.orphans.pop(path, None)
        if channel.worker is None:
            self._assign(path, channel, now, replying_to=plugin)
        return protocol.SubscribeReply(path, epoch=channel.epoch if channel.worker else 0)

    def unsubscribe(self, plugin: str, path: str) -> None:
        lease = self.plugins.get(plugin)
        if lease is not None and path in lease.channels:
            lease.channels.discard(path)
            self._release(plugin, path)

    def plugin_heartbeat(
        self, plugin: str, held: dict[str, int], now: float, routing_id: bytes = b""
    ) -> list[protocol.SubscribeReply]:
        """Make the plugin's holdings `held`; return the replies to the channels it adds.

        A held channel whose epoch the plugin does not know (a Placement was lost, or the
        broker restarted) is told again. At most MAX_SUBSCRIBE_CHANNELS channels are added per
        heartbeat, as per Subscribe: one heartbeat of 30,000 new channels kept the broker from
        every other peer for about a second and took all its channels. The next heartbeats
        add the rest; a plugin meeting a new broker subscribes its channels itself.
        """
        lease = self._lease(plugin, now, routing_id)
        for path in lease.channels - held.keys():
            lease.channels.discard(path)
            self._release(plugin, path)
        replies = []
        added = 0
        for path, known in held.items():
            if path not in lease.channels:
                if added == protocol.MAX_SUBSCRIBE_CHANNELS:
                    continue
                added += 1
                reply = self.subscribe(plugin, path, now, routing_id)
                if reply.error or reply.epoch != known:
                    replies.append(reply)
                continue
            channel = self.channels[path]
            if channel.worker is not None and channel.epoch != known:
                self.outbox.append((lease.routing_id, protocol.Placement(path, channel.epoch)))
        return replies

    def goodbye(self, plugin: str) -> bool:
        """A plugin left on purpose: release what it held now; whether it was known."""
        lease = self.plugins.pop(plugin, None)
        for path in lease.channels if lease is not None else ():
            self._release(plugin, path)
        return lease is not None

    def _lease(self, plugin: str, now: float, routing_id: bytes) -> PluginLease:
        lease = self.plugins.get(plugin)
        if lease is None:
            lease = self.plugins[plugin] = PluginLease(routing_id, Liveness(now))
        lease.liveness.beat(now)
        if routing_id:
            lease.routing_id = routing_id
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
        self.orphans.pop(path, None)
        worker = self.workers.get(channel.worker or "")
        if worker is not None:
            self._unassign(worker, path, channel)
            if worker.role == protocol.GENERATOR:  # a recorder carries its channels regardless
                self.outbox.append((worker.routing_id, protocol.StopTicker(path, channel.epoch)))

    # -- workers -------------------------------------------------------------------

    def worker_heartbeat(self, message: protocol.WorkerHeartbeat, routing_id: bytes, now: float) -> None:
        """Renew a worker's lease; a full heartbeat also reconciles its channels with ours.

        An `unchanged` one from a worker we do not know (we restarted) is ignored: our
        Welcome carries a new broker id, and the worker answers it with a full heartbeat.
        """
        if message.role not in protocol.ROLES:
            return
        worker = self.workers.get(message.worker)
        if worker is None:
            if message.unchanged:
                return
            worker = self.workers[message.worker] = Worker(routing_id, Liveness(now), role=message.role)
        if worker.role != message.role:  # the same id restarted as another role: start its books anew
            self._forget_worker(message.worker, worker, now)
            worker = self.workers[message.worker] = Worker(routing_id, Liveness(now), role=message.role)
        reconnected = worker.routing_id != routing_id  # restarted: what we asked of it is lost
        worker.routing_id = routing_id
        worker.liveness.beat(now)
        worker.pid = message.pid
        worker.ticks_late = message.ticks_late
        if message.unchanged:
            return
        if worker.role == protocol.RECORDER:
            self._recorder_offers(message.worker, worker, message.channels)
            return
        for path, epoch in message.channels.items():
            self._reconcile_running(message.worker, worker, path, epoch, now)
        for path in worker.assigned - message.channels.keys():
            channel = self.channels[path]
            if reconnected or now - channel.asked_at > self.worker_lease_s:  # not one still on its way
                channel.asked_at = now
                self.outbox.append((routing_id, protocol.StartTicker(path, channel.epoch)))
        for path, channel in self.channels.items():
            if channel.worker is None:
                self._assign(path, channel, now)

    def _recorder_offers(self, worker_id: str, worker: Worker, offered: dict[str, int]) -> None:
        """A recorder's full list of published channels: place the held ones on it, under its epochs.

        Anything else it lists is ignored (not stopped): it is only a recorder's claim.
        """
        worker.offered = {path: epoch for path, epoch in offered.items() if path.startswith("pub-")}
        for path in worker.assigned - worker.offered.keys():
            self._unassign(worker, path, self.channels[path])
        for path, epoch in worker.offered.items():
            channel = self.channels.get(path)
            if channel is None or not channel.published:
                continue
            if epoch > channel.epoch and not self._plausible(worker_id, path, epoch):
                continue
            if channel.worker == worker_id:
                if epoch != channel.epoch:  # the recorder restarted: its rows carry its new epoch
                    self._place(path, channel, epoch)
                continue
            if channel.worker is None or epoch > channel.epoch:
                previous = self.workers.get(channel.worker or "")
                if previous is not None:
                    self._unassign(previous, path, channel)
                channel.worker = worker_id
                worker.assigned.add(path)
                self._place(path, channel, epoch)

    def _reconcile_running(self, worker_id: str, worker: Worker, path: str, epoch: int, now: float) -> None:
        """A worker runs `path` under `epoch`: adopt it, correct its epoch, or stop it if superseded."""
        channel = self.channels.get(path)
        if epoch > (channel.epoch if channel else 0) and not self._plausible(worker_id, path, epoch):
            self.outbox.append((worker.routing_id, protocol.StopTicker(path, epoch)))
            if channel is not None and channel.worker == worker_id:  # ours: run it under our epoch
                self.outbox.append((worker.routing_id, protocol.StartTicker(path, channel.epoch)))
            return
        if channel is None:  # running before this broker started: adopt it for a lease
            try:
                spec = parse_channel(path, self.limits)
            except InvalidChannel:
                spec = None
            if spec is None or (isinstance(spec, EventChannel) and spec.kind == PUBLISHED):
                self.outbox.append((worker.routing_id, protocol.StopTicker(path, epoch)))
                return
            channel = self.channels[path] = Channel(spec)
            self.orphans[path] = now
        elif channel.published:  # not a generator's to run
            self.outbox.append((worker.routing_id, protocol.StopTicker(path, epoch)))
            return
        if channel.worker == worker_id:
            if epoch < channel.epoch:  # it missed our StartTicker: tell it the current epoch
                self.outbox.append((worker.routing_id, protocol.StartTicker(path, channel.epoch)))
            elif epoch > channel.epoch:
                self._place(path, channel, epoch)
            return
        if epoch < channel.epoch or (epoch == channel.epoch and channel.worker is not None):
            # Superseded (or an old placement of a channel waiting for a worker: it starts anew).
            self.outbox.append((worker.routing_id, protocol.StopTicker(path, epoch)))
            return
        previous = self.workers.get(channel.worker or "")
        if previous is not None:  # two claims after a broker restart: the newer placement wins
            self._unassign(previous, path, channel)
            self.outbox.append((previous.routing_id, protocol.StopTicker(path, channel.epoch)))
        channel.worker = worker_id
        worker.assigned.add(path)
        worker.load += channel.load
        self._place(path, channel, epoch)

    def _plausible(self, worker_id: str, path: str, epoch: int) -> bool:
        """Whether a worker's claimed epoch may be adopted: the next placements must stay in int64."""
        problem = protocol.epoch_problem(epoch, self.epoch_clock())
        if problem:
            log.warning("epoch claim refused", extra=fields(worker=worker_id, channel=path, error=problem))
        return not problem

    def _assign(self, path: str, channel: Channel, now: float, replying_to: str = "") -> None:
        if channel.published:
            self._assign_published(path, channel, replying_to)
            return
        generators = [w for w, worker in self.workers.items() if worker.role == protocol.GENERATOR]
        if not generators:
            return
        worker_id = min(generators, key=lambda w: (self.workers[w].load, len(self.workers[w].assigned), w))
        worker = self.workers[worker_id]
        channel.worker = worker_id
        worker.assigned.add(path)
        worker.load += channel.load
        epoch = max(channel.epoch + 1, self.epoch_clock())
        channel.asked_at = now
        self.outbox.append((worker.routing_id, protocol.StartTicker(path, epoch)))
        self._place(path, channel, epoch, replying_to)

    def _assign_published(self, path: str, channel: Channel, replying_to: str) -> None:
        """On the recorder that offers it under the newest epoch; else it waits for one."""
        offers = [(w.offered[path], worker_id) for worker_id, w in self.workers.items() if path in w.offered]
        if not offers:
            return
        epoch, worker_id = max(offers)
        channel.worker = worker_id
        self.workers[worker_id].assigned.add(path)
        self._place(path, channel, epoch, replying_to)

    def _place(self, path: str, channel: Channel, epoch: int, replying_to: str = "") -> None:
        """The channel runs under `epoch` from now on; its holders relay that epoch's rows only.

        A plugin whose Subscribe this answers learns the epoch from the SubscribeReply.
        """
        channel.epoch = epoch
        for plugin in channel.holders - {replying_to}:
            lease = self.plugins.get(plugin)
            if lease is not None and lease.routing_id:
                self.outbox.append((lease.routing_id, protocol.Placement(path, epoch)))

    def _unassign(self, worker: Worker, path: str, channel: Channel) -> None:
        worker.assigned.discard(path)
        worker.load = max(0.0, worker.load - channel.load)
        channel.worker = None

    # -- time ----------------------------------------------------------------------

    def forgive(self, pause_s: float) -> None:
        """The broker itself was stalled for `pause_s`: no peer's lease runs out because of it."""
        for worker in self.workers.values():
            worker.liveness.forgive(pause_s)
        for lease in self.plugins.values():
            lease.liveness.forgive(pause_s)

    def expire(self, now: float) -> list[tuple[str, float]]:
        """Release dead plugins' leases, stop orphaned channels, move dead workers' channels.

        Returns each peer presumed dead ("worker w1", "plugin p1") with its silence in seconds.
        """
        presumed_dead = []
        for plugin, lease in list(self.plugins.items()):
            if lease.liveness.dead(now, self.plugin_lease_s):
                presumed_dead.append((f"plugin {plugin}", now - lease.liveness.last_seen))
                self.goodbye(plugin)
        for path, since in list(self.orphans.items()):
            if now - since > self.plugin_lease_s:
                self._drop(path, self.channels[path])
        dead = [w for w, worker in self.workers.items() if worker.liveness.dead(now, self.worker_lease_s)]
        for worker_id in dead:
            worker = self.workers[worker_id]
            presumed_dead.append((f"{worker.role} {worker_id}", now - worker.liveness.last_seen))
            self._forget_worker(worker_id, worker, now)
        return presumed_dead

    def _forget_worker(self, worker_id: str, worker: Worker, now: float) -> None:
        """A worker is gone: its channels move to the others (published ones wait for a recorder)."""
        del self.workers[worker_id]
        for path in list(worker.assigned):
            channel = self.channels[path]
            self._unassign(worker, path, channel)
            self._assign(path, channel, now)

    def status(self, request_id: str, broker: str, now: float) -> protocol.StatusReply:
        workers: dict[str, dict[str, protocol.Scalar]] = {
            worker_id: {
                "pid": w.pid,
                "channels": len(w.assigned),
                "load": round(w.load, 3),
                "ticks_late": w.ticks_late,
                "seen_s_ago": round(now - w.liveness.last_seen, 3),
                "role": w.role,
            }
            for worker_id, w in self.workers.items()
        }
        channels: dict[str, dict[str, protocol.Scalar]] = {}
        for worker_id, w in self.workers.items():  # a recorder's published channels, held or not
            for path, epoch in w.offered.items():
                channels[path] = {"worker": worker_id, "subscribers": 0, "epoch": epoch}
        for path, c in self.channels.items():
            channels[path] = {"worker": c.worker or "", "subscribers": len(c.holders), "epoch": c.epoch}
        return protocol.StatusReply(request_id, broker, workers, channels, len(self.plugins))
