"""The broker process: control on a ROUTER, frames forwarded XSUB → XPUB.

Frames never touch Python here: a thread runs libzmq's proxy between the workers' XSUB
and the plugins' XPUB (subscriptions flow upstream, so a worker only sends what some
plugin reads). The main thread serves the control socket and the registry's clock.
Stopping terminates the context, which ends the proxy with ETERM.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Sequence

import zmq
from zmq.auth.thread import ThreadAuthenticator

from services.broker.registry import Registry
from services.common import protocol, rundir
from services.common.config import BrokerSettings
from services.common.errors import PipelineError, ProtocolError
from services.common.lifecycle import install_stop_handlers
from services.common.logs import fields, setup_logging
from services.common.receive import Refusing
from services.common.security import secure_server, start_authenticator
from services.common.sockets import advertised, configure

log = logging.getLogger("zmqstream.broker")
TICK_S = 0.05
"""How often leases are checked, and the longest the loop waits before seeing a stop."""
FRAMES_HWM = 100_000
STALL_S = 0.5
"""A loop turn this much later than the last means the broker itself was not running."""
STATUS_BYTES_PER_PEER = 4 * 1024 * 1024
"""StatusReply bytes a peer has not read yet that the broker holds for it; past this it drops them."""
STATUS_PEERS_KEPT = 1000
STRANGERS_KEPT = 1000
"""Refused workers remembered, so each is logged once; past this, they are logged again."""
"""Peers whose replies are tracked before those with nothing left unread are forgotten."""


class FrameProxy(threading.Thread):
    """Binds XSUB and XPUB and forwards between them until the context terminates."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], settings: BrokerSettings) -> None:
        super().__init__(name="frame-proxy", daemon=True)
        self.ctx = ctx
        self.settings = settings
        self.ready = threading.Event()
        self.error: Exception | None = None
        self.frames_in = ""
        self.frames_out = ""

    def run(self) -> None:
        xsub = configure(
            self.ctx.socket(zmq.XSUB), rcvhwm=FRAMES_HWM, max_message_bytes=protocol.MAX_DATA_BYTES
        )
        xpub = configure(self.ctx.socket(zmq.XPUB), sndhwm=FRAMES_HWM)
        try:
            if self.settings.curve_server_secret:
                secure_server(xsub, self.settings.curve_server_secret)
                secure_server(xpub, self.settings.curve_server_secret)
            xsub.bind(self.settings.frames_in_endpoint)
            xpub.bind(self.settings.frames_out_endpoint)
            self.frames_in = xsub.getsockopt_string(zmq.LAST_ENDPOINT)
            self.frames_out = xpub.getsockopt_string(zmq.LAST_ENDPOINT)
        except (zmq.ZMQError, PipelineError) as exc:
            self.error = exc
        self.ready.set()
        try:
            if self.error is None:
                zmq.proxy(xsub, xpub)
        except zmq.ContextTerminated:
            pass
        finally:
            xsub.close(linger=0)
            xpub.close(linger=0)


class Broker:
    def __init__(
        self, settings: BrokerSettings, ctx: zmq.Context[zmq.Socket[bytes]], proxy: FrameProxy
    ) -> None:
        self.settings = settings
        self.instance = uuid.uuid4().hex[:12]
        self.registry = Registry(
            settings.limits,
            plugin_lease_s=settings.plugin_lease_s,
            worker_lease_s=settings.worker_lease_s,
            max_channels=settings.max_channels,
        )
        # Per peer: a flood waits in the sender's queue, not ours (a plugin queues up to 10,000 too).
        self.control = configure(
            ctx.socket(zmq.ROUTER),
            sndhwm=100_000,
            rcvhwm=10_000,
            max_message_bytes=protocol.MAX_REQUEST_BYTES,
        )
        self.guard = Refusing(log, "control message")
        """Counts the control messages refused or failed since start."""
        if settings.curve_server_secret:
            secure_server(self.control, settings.curve_server_secret)
        self.control.bind(settings.control_endpoint)
        host = settings.advertise_host
        pipeline = settings.pipeline_name
        self.worker_welcome = protocol.Welcome(advertised(proxy.frames_in, host), self.instance, pipeline)
        self.plugin_welcome = protocol.Welcome(advertised(proxy.frames_out, host), self.instance, pipeline)
        self.recorder = ""
        """The recorder whose endpoints plugins are told ('' until one joins)."""
        self.second_recorder = ""
        """The last other recorder warned about."""
        self.strangers: set[str] = set()
        """Workers of another pipeline already refused (logged once each)."""
        self.status_unread: dict[bytes, list[tuple[zmq.MessageTracker, int]]] = {}
        """Per peer, the StatusReplies still in our queue (not yet taken by the peer) and their sizes."""
        self.status_dropped = 0

    def run(self, stop: threading.Event) -> None:
        next_expiry = 0.0
        last_turn = time.monotonic()
        while not stop.is_set():
            if self.control.poll(int(TICK_S * 1000)):
                self._drain()
            now = time.monotonic()
            if now - last_turn > STALL_S:  # we were not running (starved, stopped): not the peers' fault
                self.registry.forgive(now - last_turn - TICK_S)
                log.warning(
                    "broker stalled; leases extended", extra=fields(stalled_s=round(now - last_turn, 3))
                )
            last_turn = now
            if now >= next_expiry:
                for peer, silent_s in self.registry.expire(now):
                    log.warning(
                        "presumed dead; its leases released",
                        extra=fields(peer=peer, silent_s=round(silent_s, 3)),
                    )
                next_expiry = now + TICK_S
            self._flush()

    def _drain(self) -> None:
        """Serve what is queued; a message that is malformed, or that we fail on, costs only itself."""
        for _ in range(10_000):
            try:
                routing_id, *frames = self.control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            with self.guard:
                self._handle(routing_id, protocol.decode(frames))

    def _handle(self, routing_id: bytes, message: protocol.Message) -> None:
        now = time.monotonic()
        registry = self.registry
        match message:
            case protocol.WorkerHeartbeat():
                if self._stranger(message):
                    self._send(routing_id, self.worker_welcome)  # which names our pipeline: it stops
                    return
                if not message.unchanged and message.worker not in registry.workers:
                    log.info("worker joined", extra=fields(worker=message.worker, pid=message.pid))
                registry.worker_heartbeat(message, routing_id, now)
                if message.role == protocol.RECORDER and message.endpoints:
                    self._recorder_at(message.worker, message.endpoints)
                self._send(routing_id, self.worker_welcome)
            case protocol.PluginHeartbeat(plugin=plugin, channels=channels):
                if plugin not in registry.plugins:
                    log.info("plugin joined", extra=fields(plugin=plugin, channels=len(channels)))
                for reply in registry.plugin_heartbeat(plugin, channels, now, routing_id):
                    self._send(routing_id, reply)
                self._send(routing_id, self.plugin_welcome)
            case protocol.Subscribe(plugin=plugin, channel=first, more=more):
                if len(more) >= protocol.MAX_SUBSCRIBE_CHANNELS:  # refused whole, as a malformed message
                    most = protocol.MAX_SUBSCRIBE_CHANNELS
                    raise ProtocolError(f"Subscribe: {len(more) + 1} channels, at most {most} in one")
                for path in (first, *more):
                    reply = registry.subscribe(plugin, path, now, routing_id)
                    if reply.error:
                        log.warning(
                            "subscription refused",
                            extra=fields(plugin=plugin, channel=path, error=reply.error),
                        )
                    self._send(routing_id, reply)
            case protocol.Unsubscribe(plugin=plugin, channel=path):
                registry.unsubscribe(plugin, path)
            case protocol.Goodbye(plugin=plugin):
                if registry.goodbye(plugin):
                    log.info("plugin left", extra=fields(plugin=plugin))
            case protocol.StatusRequest(request_id=request_id):
                self._send_status(routing_id, request_id, now)
            case _:
                log.warning("unexpected message", extra=fields(type=type(message).__name__))

    def _stranger(self, message: protocol.WorkerHeartbeat) -> bool:
        """Whether the heartbeat comes from a worker of another pipeline (logged once per worker)."""
        if not message.pipeline or message.pipeline == self.settings.pipeline_name:
            return False
        if message.worker not in self.strangers:
            if len(self.strangers) >= STRANGERS_KEPT:
                self.strangers.clear()
            self.strangers.add(message.worker)
            log.warning(
                "worker of another pipeline refused",
                extra=fields(
                    worker=message.worker, its_pipeline=message.pipeline, ours=self.settings.pipeline_name
                ),
            )
        return True

    def _recorder_at(self, recorder: str, endpoints: dict[str, str]) -> None:
        """Tell plugins, in every Welcome, where our recorder serves (as advertised, like the frames).

        One recorder at a time: a second one alive (a mistake) does not make plugins flap between them.
        """
        if self.recorder not in (recorder, "") and self.recorder in self.registry.workers:
            if recorder != self.second_recorder:
                self.second_recorder = recorder
                log.warning(
                    "a second recorder joined: plugins keep using the first; stop one of them",
                    extra=fields(first=self.recorder, second=recorder),
                )
            return
        self.recorder = recorder
        host = self.settings.advertise_host
        shown = {name: advertised(endpoint, host) for name, endpoint in endpoints.items()}
        if shown != self.plugin_welcome.recorder:
            self.plugin_welcome = dataclasses.replace(self.plugin_welcome, recorder=shown)
            log.info("recorder located", extra=fields(recorder=recorder, **shown))

    def _flush(self) -> None:
        outbox, self.registry.outbox = self.registry.outbox, []
        for routing_id, message in outbox:
            self._send(routing_id, message)

    def _send(self, routing_id: bytes, message: protocol.Message) -> None:
        try:
            self.control.send_multipart([routing_id, *protocol.encode(message)], zmq.NOBLOCK)
        except zmq.Again:
            log.warning("control reply dropped: peer not reading", extra=fields(type=type(message).__name__))

    def _send_status(self, routing_id: bytes, request_id: str, now: float) -> None:
        """A StatusReply, unless the peer leaves STATUS_BYTES_PER_PEER of them unread: then none.

        The high-water mark counts messages, and a reply listing many channels is large, so
        a peer that asks and never reads would grow the broker without end (20,000 asks: a
        GB). Each reply is sent zero-copy with a tracker that is done once libzmq has handed
        it on, so what stays queued for a peer is known in bytes; a live asker gets every
        reply. A dropped reply is not even built, so asking in a loop costs little CPU.
        """
        sent = self.status_unread.pop(routing_id, [])
        unread = [(tracker, size) for tracker, size in sent if not tracker.done]
        if sum(size for _, size in unread) >= STATUS_BYTES_PER_PEER:
            self.status_unread[routing_id] = unread
            self.status_dropped += 1
            if self.status_dropped % 1000 == 1:  # a log line per thousand, not per ask
                dropped = self.status_dropped
                log.warning("status replies dropped: peer not reading", extra=fields(dropped=dropped))
            return
        message = self.registry.status(request_id, self.instance, now)
        frames = [zmq.Frame(frame, copy=False, track=True) for frame in protocol.encode(message)]
        try:
            self.control.send_multipart([routing_id, *frames], zmq.NOBLOCK)
        except zmq.Again:
            log.warning("control reply dropped: peer not reading", extra=fields(type="StatusReply"))
            return
        unread.append((frames[-1].tracker, sum(len(frame) for frame in frames)))
        self.status_unread[routing_id] = unread
        if len(self.status_unread) > STATUS_PEERS_KEPT:  # forget peers whose replies all went out
            self.status_unread = {
                peer: sent
                for peer, sent in self.status_unread.items()
                if any(not tracker.done for tracker, _ in sent)
            }

    def close(self) -> None:
        self.control.close()


def main(argv: Sequence[str] | None = None) -> int:
    settings = BrokerSettings.load(argv)
    setup_logging()
    stop = install_stop_handlers()
    endpoints = (settings.control_endpoint, settings.frames_in_endpoint, settings.frames_out_endpoint)
    try:
        with rundir.owned(endpoints, settings.socket_group):
            return serve(settings, endpoints, stop)
    except PipelineError as exc:
        log.error("cannot start", extra=fields(error=str(exc)))
        return 1


def serve(settings: BrokerSettings, endpoints: Sequence[str], stop: threading.Event) -> int:
    """Bind and run, in run folders this broker alone owns (see services.common.rundir)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    auth: ThreadAuthenticator | None = None
    proxy = FrameProxy(ctx, settings)
    try:
        if settings.curve_authorized_dir:
            auth = start_authenticator(ctx, settings.curve_authorized_dir)
        proxy.start()
        proxy.ready.wait()
        if proxy.error is not None:
            raise proxy.error
        broker = Broker(settings, ctx, proxy)
        rundir.share_sockets(endpoints, settings.socket_group)
    except (zmq.ZMQError, PipelineError, OSError) as exc:
        log.error("cannot start", extra=fields(error=str(exc)))
        _teardown(ctx, auth, proxy)
        return 1
    log.info(
        "broker ready",
        extra=fields(
            control=settings.control_endpoint, frames_in=proxy.frames_in, frames_out=proxy.frames_out
        ),
    )
    try:
        broker.run(stop)
    finally:
        broker.close()
        _teardown(ctx, auth, proxy)
        log.info("broker stopped")
    return 0


def _teardown(
    ctx: zmq.Context[zmq.Socket[bytes]], auth: ThreadAuthenticator | None, proxy: FrameProxy
) -> None:
    """Authenticator first (it owns a socket), then the context, which ends the proxy."""
    if auth is not None:
        auth.stop()
    ctx.term()
    if proxy.ident is not None:
        proxy.join(timeout=2)
