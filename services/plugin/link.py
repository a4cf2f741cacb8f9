"""Why the plugin cannot reach a broker, in words: its ipc socket as it looks, and what the
control socket's monitor saw (services.common.probe tells the same things to the CLI).

The plugin's control socket never blocks and never errors: with no broker, a refused key
or a socket it may not open, requests just go unanswered. So the reasons come from the
outside: the socket file (missing, not ours to use) and the ZeroMQ monitor's events
(connection refused, CURVE handshake refused, connection lost).
"""

from __future__ import annotations

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


class Link:
    def __init__(self, endpoint: str, socket_group: str) -> None:
        self.endpoint = endpoint
        self.socket_group = socket_group
        self.handshaken = False
        self.seen = ""
        """What the monitor last said is wrong ('' once a handshake succeeds)."""

    async def watch(self, sock: zmq.asyncio.Socket) -> None:
        """Follow `sock`'s monitor until cancelled (before `sock` is closed)."""
        monitor = sock.get_monitor_socket(EVENTS)
        try:
            while True:
                self.on_event(parse_monitor_message(await monitor.recv_multipart())["event"])
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)

    def on_event(self, event: int) -> None:
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.handshaken, self.seen = True, ""
        elif event == zmq.EVENT_DISCONNECTED:  # after a failed handshake too: that reason stands
            if self.handshaken:
                self.seen = f"lost the connection to the broker at {self.endpoint}: is it still running?"
            self.handshaken = False
        elif problem := probe.event_problem(event, self.endpoint, self.handshaken, CURVE_HINT):
            self.seen = problem if event & probe.CURVE_FAILED else f"{problem}. {ADDRESS_HINT}"

    def problem(self) -> str:
        """'' unless something is known to be wrong with the connection; else why, and what to do."""
        try:
            probe.check_ipc(probe.Access(self.endpoint, socket_group=self.socket_group))
        except (probe.Unreachable, ConfigError) as exc:
            return str(exc)
        return self.seen
