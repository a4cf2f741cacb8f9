"""The client side of event channels with bare sockets, for tests of what the workers send.

It does what a plugin does and no more: heartbeats the channels it holds to the broker
(protocol.PluginHeartbeat), connects a SUB to the frames endpoint the Welcome names, and
keeps every Events frame of those channels with the time it arrived. It is not a
component under test: the plugin's own relaying is tested with the plugin.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import zmq

from services.common import protocol

HEARTBEAT_S = 0.3


@dataclass(frozen=True)
class Received:
    channel: str
    events: protocol.Events
    at_ns: int


class EventsClient:
    def __init__(self, control_endpoint: str, channels: list[str]) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.control = self.ctx.socket(zmq.DEALER)
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.connect(control_endpoint)
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        for channel in channels:
            self.sub.setsockopt(zmq.SUBSCRIBE, protocol.topic(channel))
        self.plugin = f"test-{uuid.uuid4().hex[:8]}"
        self.held = dict.fromkeys(channels, 0)
        self.frames_endpoint = ""
        self.received: list[Received] = []
        self.rows: list[tuple[str, protocol.Rows, int]] = []
        self._next_beat = 0.0

    def collect(self, until: Callable[[], bool], timeout_s: float) -> None:
        """Serve the sockets until `until()` holds; TimeoutError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.sub, zmq.POLLIN)
        while not until():
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"not within {timeout_s:g} s; {len(self.received)} Events received")
            if now >= self._next_beat:
                message = protocol.PluginHeartbeat(self.plugin, dict(self.held))
                self.control.send_multipart(protocol.encode(message))
                self._next_beat = now + HEARTBEAT_S
            for sock, _ in poller.poll(50):
                if sock is self.control:
                    self._control(protocol.decode(self.control.recv_multipart()))
                else:
                    self._data(self.sub.recv())

    def _control(self, message: protocol.Message) -> None:
        match message:
            case protocol.Welcome(frames_endpoint=endpoint) if endpoint != self.frames_endpoint:
                self.sub.connect(endpoint)
                self.frames_endpoint = endpoint
            case protocol.SubscribeReply(channel=channel, error="", epoch=epoch) if channel in self.held:
                self.held[channel] = epoch
            case protocol.Placement(channel=channel, epoch=epoch) if channel in self.held:
                self.held[channel] = epoch

    def _data(self, frame: bytes) -> None:
        channel, message = protocol.decode_data(frame)
        if isinstance(message, protocol.Events):
            self.received.append(Received(channel, message, time.time_ns()))
        else:
            self.rows.append((channel, message, time.time_ns()))

    def of(self, channel: str) -> list[protocol.Events]:
        return [r.events for r in self.received if r.channel == channel]

    def close(self) -> None:
        self.control.close()
        self.sub.close()
        self.ctx.term()
