"""One request to the broker and its reply within a deadline, or what is wrong, in words.

A DEALER with IMMEDIATE and no peer blocks a plain send forever, so nothing here blocks:
the request is queued with NOBLOCK on a socket without IMMEDIATE, and a socket monitor
watches the connection. A refused connect means there is no broker; a failed handshake
means the broker's CURVE refused us. Before connecting, an ipc endpoint's folder must be
one we trust (services.common.rundir) and its socket must be there and ours to use.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils.monitor import recv_monitor_message

from services.common import protocol, rundir
from services.common.errors import PipelineError
from services.common.security import ClientKeys, secure_client
from services.common.sockets import configure, host_of

RETRIED = zmq.EVENT_CONNECT_RETRIED
"""libzmq retries a connect the peer refused (the only sign it gives), and one it lost."""
CURVE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
"""A key the broker refuses (AUTH), or CURVE at one end only: then mostly NO_DETAIL (the broker
just closes), now and then PROTOCOL (mechanism mismatch)."""
EVENTS = RETRIED | CURVE_FAILED | zmq.EVENT_CONNECTED


class Unreachable(PipelineError):
    """The broker cannot be asked: absent, out of reach, refusing us, or silent."""


@dataclass(frozen=True)
class Access:
    """How to reach the broker: its endpoint and our CURVE keys and socket group, if any."""

    endpoint: str
    curve_client_secret: str = ""
    curve_server_public: str = ""
    socket_group: str = ""


def check_ipc(access: Access) -> None:
    """Unreachable with the reason if an ipc endpoint cannot be connected to at all."""
    folder = rundir.ipc_folder(access.endpoint)
    if folder is None:
        return
    rundir.check(folder, access.socket_group)
    path = access.endpoint.removeprefix("ipc://")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if not os.path.lexists(folder):
            raise Unreachable(f"no broker at {access.endpoint}: {missing_folder(folder)}") from None
        raise Unreachable(f"no broker at {access.endpoint}: {path} does not exist. Is it running?") from None
    except PermissionError:
        raise Unreachable(
            f"permission denied on {access.endpoint}: you may not enter {folder}. "
            "Run as the broker's user, or give both a --socket-group"
        ) from None
    if not stat.S_ISSOCK(mode):
        raise Unreachable(f"no broker at {access.endpoint}: {path} is not a socket")
    if not os.access(path, os.R_OK | os.W_OK):
        raise Unreachable(
            f"permission denied on {access.endpoint}: run as the broker's user, "
            "or give both a --socket-group you belong to"
        )


def missing_folder(folder: Path) -> str:
    """Why a run folder may be missing, in words: no pipeline there, or a service's private /tmp."""
    said = f"the run folder {folder} does not exist as this process sees it"
    if str(folder).startswith(("/tmp/", "/var/tmp/")):
        return (
            f"{said}: no pipeline made it here, or this is Grafana's plugin and Grafana runs as a service "
            "(grafana-server.service), which gives its plugins a private /tmp where a pipeline's folder "
            "in /tmp is invisible. Start the pipeline (make run); for such a Grafana, install it with "
            "deploy/install.sh and set run_dir = /run/zmqstream (README: Grafana installed as a service)"
        )
    return f"{said}: start its pipeline (make run; the system install: systemctl start zmqstream)"


def ipc_listening(endpoint: str) -> bool:
    """Whether a process accepts connections on an ipc endpoint now (a socket file left by a
    process that died refuses them); a connect and a close, never blocking."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        try:
            probe.connect(endpoint.removeprefix("ipc://"))
        except BlockingIOError:  # its backlog is full: it listens
            return True
        except OSError:
            return False
    return True


def ask(
    access: Access,
    request: protocol.Message,
    answers: Callable[[protocol.Message], bool],
    timeout_s: float,
) -> protocol.Message:
    """Send `request`, return the first reply for which `answers` is true; Unreachable otherwise."""
    check_ipc(access)
    deadline = time.monotonic() + timeout_s
    with zmq.Context() as ctx, configure(ctx.socket(zmq.DEALER)) as sock:
        if access.curve_client_secret:
            secure_client(sock, ClientKeys.from_files(access.curve_client_secret, access.curve_server_public))
        monitor = sock.get_monitor_socket(EVENTS)
        connected = False
        try:
            sock.connect(access.endpoint)
            sock.send_multipart(protocol.encode(request), zmq.NOBLOCK)  # queued until connected
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(monitor, zmq.POLLIN)
            while (left_ms := (deadline - time.monotonic()) * 1000) > 0:
                for ready, _ in poller.poll(max(1, int(left_ms))):
                    if ready is monitor:
                        event = recv_monitor_message(monitor)["event"]
                        _raise_for(event, access.endpoint, connected)
                        connected = connected or event == zmq.EVENT_CONNECTED
                        continue
                    reply = protocol.decode(sock.recv_multipart())
                    if answers(reply):
                        return reply
            raise Unreachable(f"the broker at {access.endpoint} did not answer within {timeout_s:g} s")
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)


CLI_CURVE_HINT = (
    "check --curve-client-secret is a key the broker authorizes and --curve-server-public is the broker's"
)


def named_host(endpoint: str) -> str:
    """The host name a tcp endpoint must resolve ('' for an address, a wildcard, or ipc)."""
    host = host_of(endpoint)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "" if host in ("", "*") else host
    return ""


def unresolved(host: str, error: OSError) -> str:
    """Why a connect to `host` is retried for ever: libzmq tells it as a refused connection."""
    return f"cannot resolve {host} ({error.strerror or error}): check the host name"


def unresolvable(endpoint: str) -> str:
    """'' unless the host name of a tcp endpoint does not resolve; else why (may wait for DNS)."""
    host = named_host(endpoint)
    if host:
        try:
            socket.getaddrinfo(host, None)
        except socket.gaierror as exc:
            return unresolved(host, exc)
    return ""


def event_problem(event: int, endpoint: str, connected: bool, curve_hint: str = CLI_CURVE_HINT) -> str:
    """What monitor `event` says is wrong ('': nothing); a retry after a connection is a failed handshake."""
    if event & CURVE_FAILED:
        return f"CURVE refused by the broker at {endpoint}: {curve_hint}"
    if event == RETRIED and not connected:
        return f"no broker at {endpoint}: connection refused"
    return ""


def _raise_for(event: int, endpoint: str, connected: bool) -> None:
    """Unreachable if `event` says why (a refused connect may be a name that does not resolve)."""
    problem = event_problem(event, endpoint, connected)
    if problem and event == RETRIED:
        problem = f"no broker at {endpoint}: {why}" if (why := unresolvable(endpoint)) else problem
    if problem:
        raise Unreachable(problem)
