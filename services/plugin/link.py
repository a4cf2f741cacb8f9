"""Why the plugin cannot reach a broker, in words: its ipc socket as it looks, and what the
control socket's monitor saw (services.common.probe tells the same things to the CLI).

The plugin's control socket never blocks and never errors: with no broker, a refused key
or a socket it may not open, requests just go unanswered. So the reasons come from the
outside: the socket file (missing, not ours to use) and the ZeroMQ monitor's events
(connection refused, CURVE handshake refused, connection lost).
"""

from __future__ import annotations

import asyncio
import socket
import time

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from services.common import probe
from services.common.errors import ConfigError

CURVE_HINT = (
    "the plugin's CURVE secret key (the datasource's, else grafana.ini curve_client_secret) must be "
    "one whose public key is in the broker's --curve-authorized-dir, and the broker's public key "
    "must be the broker's"
)
ADDRESS_HINT = (
    "Is the broker running, and at this address? The plugin takes it from the datasource's "
    "Broker address, else grafana.ini [plugin.zmqstream-stream-datasource] control_endpoint or run_dir"
)
EVENTS = probe.EVENTS | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
RESOLVE_EVERY_S = 5.0
"""How often a broker's host name is looked up again while its connection keeps failing."""


NO_KEYS_HINT = (
    "the broker requires CURVE and the plugin has no keys: set grafana.ini curve_client_secret and "
    "curve_server_public (or the datasource's CURVE keys)"
)


class Link:
    def __init__(self, endpoint: str, socket_group: str, sock: zmq.asyncio.Socket, curve: bool) -> None:
        """Monitor `sock` from now on, before it connects: a refused handshake may be its first event
        (a broker asking for CURVE of a plugin without keys refuses it once, and never again)."""
        self.endpoint = endpoint
        self.socket_group = socket_group
        self.curve = curve
        self.handshaken = False
        self.reached = False
        """A connection was made since the last one lost: a retry follows a refused handshake."""
        self.seen = ""
        """What the monitor last said is wrong ('' once a handshake succeeds)."""
        self.sock = sock
        self.monitor = sock.get_monitor_socket(EVENTS)
        self.unresolved = ""
        """Why the broker's host name does not resolve ('' if it does, or has none)."""
        self.resolved_at = -RESOLVE_EVERY_S

    async def watch(self) -> None:
        """Follow the socket's monitor until cancelled (before the socket is closed)."""
        try:
            while True:
                event = parse_monitor_message(await self.monitor.recv_multipart())["event"]
                if event == probe.RETRIED and not self.handshaken:
                    await self._resolve()
                self.on_event(event)
        finally:
            self.sock.disable_monitor()
            self.monitor.close(linger=0)

    async def _resolve(self) -> None:
        """Whether the broker's host name resolves, asked off the event loop at most every RESOLVE_EVERY_S:
        libzmq retries a name that does not as if the broker refused the connection."""
        host = probe.named_host(self.endpoint)
        if not host or time.monotonic() - self.resolved_at < RESOLVE_EVERY_S:
            return
        self.resolved_at = time.monotonic()
        try:
            await asyncio.get_running_loop().getaddrinfo(host, None)
            self.unresolved = ""
        except socket.gaierror as exc:
            self.unresolved = probe.unresolved(host, exc)

    def on_event(self, event: int) -> None:
        if event == zmq.EVENT_CONNECTED:
            self.reached = True
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.handshaken, self.seen = True, ""
        elif event == zmq.EVENT_DISCONNECTED:  # after a failed handshake too: that reason stands
            if self.handshaken:  # lost: a retry refused from now on means no broker there
                self.seen = f"lost the connection to the broker at {self.endpoint}: is it still running?"
                self.reached = False
            self.handshaken = False
        elif problem := probe.event_problem(
            event, self.endpoint, self.reached, CURVE_HINT if self.curve else NO_KEYS_HINT
        ):
            if event == probe.RETRIED and self.unresolved:
                problem = f"no broker at {self.endpoint}: {self.unresolved}"
            self.seen = problem if event & probe.CURVE_FAILED else f"{problem}. {ADDRESS_HINT}"

    def problem(self) -> str:
        """'' unless something is known to be wrong with the connection; else why, and what to do."""
        try:
            probe.check_ipc(probe.Access(self.endpoint, socket_group=self.socket_group))
        except (probe.Unreachable, ConfigError) as exc:
            return str(exc)
        return self.seen
