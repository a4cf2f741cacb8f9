"""A worker's link to the broker (generator or recorder): DEALER to its control, PUB to its frames_in.

The worker heartbeats its full channel list when the broker may not know it (a broker it
has not told yet, a change since, a heartbeat that could not be sent) and at least every
FULL_HEARTBEAT_EVERY beats, else an `unchanged` one that only renews its lease; a Welcome
names where to publish, and a broker the worker did not know (a restart) is told its
channels at once, so it adopts them before any lease runs out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Hashable

import zmq

from services.common import protocol
from services.common.config import RecorderSettings, WorkerSettings
from services.common.logs import fields
from services.common.security import ClientKeys, secure_client
from services.common.sockets import advertised, configure, host_of, reconnect

log = logging.getLogger("zmqstream.workerlink")
FULL_HEARTBEAT_EVERY = 5
"""Every 5th heartbeat lists the channels even if none changed (1 s at the default 0.2 s)."""


class WorkerLink:
    """One worker's DEALER and PUB to the broker, and what its heartbeats last told it."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        settings: WorkerSettings | RecorderSettings,
        *,
        worker: str,
        role: str,
        send_hwm: int,
    ) -> None:
        self.pipeline = settings.joined_pipeline(settings.control_endpoint)
        """The pipeline whose broker this worker joins ('': any)."""
        self.endpoints: dict[str, str] = {}
        """A recorder's own sockets, told in every heartbeat (the broker tells its plugins)."""
        self.keys = None
        """This process's CURVE keys, for its other client sockets too."""
        if settings.curve_client_secret:
            self.keys = ClientKeys.from_files(settings.curve_client_secret, settings.curve_server_public)
        keys = self.keys
        self.control_endpoint = control_endpoint = settings.control_endpoint
        self.worker = worker
        self.role = role
        self.control = configure(ctx.socket(zmq.DEALER))
        self.control.setsockopt(zmq.IMMEDIATE, 1)  # queue nothing for a broker that is not there
        self.frames = configure(ctx.socket(zmq.PUB), sndhwm=send_hwm)
        try:
            for sock in (self.control, self.frames) if keys else ():
                secure_client(sock, keys)  # type: ignore[arg-type]
            self.control.connect(control_endpoint)
        except BaseException:  # closed, or the context's term would wait for them forever
            self.close()
            raise
        self.frames_endpoint = ""
        self.broker = ""
        """The broker instance id from its last Welcome."""
        self.reported: tuple[str, Hashable] | None = None
        """(broker, the worker's version) that the last full heartbeat told; None: tell again."""
        self.beats_since_full = 0
        self.refused = ""
        """Why this worker stops: its broker serves another pipeline ('' while all is well)."""

    def heartbeat(
        self, version: Hashable, channels: Callable[[], dict[str, int]], ticks_late: int = 0
    ) -> None:
        """Renew the lease; list `channels()` only if the broker may not know them yet.

        `version` moves on whenever the channels or their epochs change.
        """
        told = (self.broker, version)
        full = self.reported != told or self.beats_since_full + 1 >= FULL_HEARTBEAT_EVERY
        message = protocol.WorkerHeartbeat(
            worker=self.worker,
            channels=channels() if full else {},
            pid=os.getpid(),
            ticks_late=ticks_late,
            unchanged=not full,
            role=self.role,
            endpoints=self.endpoints,
            pipeline=self.pipeline,
        )
        try:  # never block: a broker gone for minutes must not stall the worker or SIGTERM
            self.control.send_multipart(protocol.encode(message), zmq.NOBLOCK)
        except zmq.Again:
            self.reported = None  # the broker may not have heard us: list the channels next time
            return
        if full:
            self.reported, self.beats_since_full = told, 0
        else:
            self.beats_since_full += 1

    def welcome(self, message: protocol.Welcome) -> bool:
        """Publish where the Welcome says; whether it came from a broker we have not told (heartbeat now).

        A broker of another pipeline is refused (`refused` says why, logged): the worker must stop.
        """
        if self.pipeline and message.pipeline and message.pipeline != self.pipeline:
            self.refused = (
                f"the broker at {self.control_endpoint} serves pipeline {message.pipeline[:200]!r}, "
                f"this {self.role} belongs to {self.pipeline!r}: not joining it. Point --control-endpoint "
                "at your own pipeline's broker (or --run-dir at its folder), or give both the same --pipeline"
            )
            log.error("broker of another pipeline refused; stopping", extra=fields(error=self.refused))
            return False
        endpoint = advertised(message.frames_endpoint, host_of(self.control_endpoint))
        if endpoint != self.frames_endpoint:
            self.frames_endpoint = reconnect(self.frames, self.frames_endpoint, endpoint)
            log.info("publishing frames", extra=fields(endpoint=endpoint))
        if message.broker == self.broker:
            return False
        self.broker = message.broker
        return True

    def close(self) -> None:
        self.control.close()
        self.frames.close()
