"""The one place that makes ZeroMQ sockets, so every socket gets the same policy.

Linger is short (200 ms) so a stopping process never hangs in ctx.term() on a dead peer;
high-water marks are explicit because PUB and XPUB drop beyond them; a receiving socket
has a largest message (libzmq drops the connection of a peer that sends more), so one
peer cannot make a process allocate without bound.
"""

from __future__ import annotations

from typing import TypeVar
from urllib.parse import urlsplit

import zmq

from services.common.protocol import MAX_CONTROL_BYTES

LINGER_MS = 200
S = TypeVar("S", bound=zmq.Socket)  # type: ignore[type-arg]


def configure(
    sock: S, *, sndhwm: int = 1000, rcvhwm: int = 1000, max_message_bytes: int = MAX_CONTROL_BYTES
) -> S:
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    sock.setsockopt(zmq.SNDHWM, sndhwm)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
    return sock


def advertised(bound: str, host: str) -> str:
    """`bound` with a wildcard tcp host replaced by `host` (unchanged if `host` is empty).

    The broker applies its advertise_host; a client then applies the host it used to
    reach the broker's control socket, so a wildcard never reaches connect().
    """
    parts = urlsplit(bound)
    if not host or parts.scheme != "tcp" or parts.hostname not in ("*", "0.0.0.0", "::"):
        return bound
    return f"tcp://{host}:{parts.port}"


def endpoint_problem(endpoint: str) -> str:
    """'' if `endpoint` is one a client can connect to (tcp://host:port, ipc://path), else what is wrong."""
    if endpoint.startswith("ipc://"):
        return "" if endpoint.removeprefix("ipc://") else "ipc:// needs the path of the socket after it"
    if not endpoint.startswith("tcp://"):
        return "it must begin with tcp:// or ipc://"
    parts = urlsplit(endpoint)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or parts.hostname == "*" or port is None or not 0 < port < 65536:
        return "tcp:// needs a host and a port (1 to 65535)"
    return ""


def host_of(endpoint: str) -> str:
    """The host part of a tcp endpoint, or '' for ipc/inproc."""
    parts = urlsplit(endpoint)
    return parts.hostname or "" if parts.scheme == "tcp" else ""


def reconnect(sock: zmq.Socket[bytes], current: str, endpoint: str) -> str:
    """Connect `sock` to `endpoint` instead of `current` ('' for none); returns `endpoint`.

    A Welcome names the broker's frames_in; after a broker moves, the old one must go.
    """
    if endpoint != current:
        if current:
            sock.disconnect(current)
        sock.connect(endpoint)
    return endpoint
