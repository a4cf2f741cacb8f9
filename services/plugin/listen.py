"""Where the plugin listens for Grafana: a Unix socket only its user can reach, as go-plugin's own do.

A loopback TCP port is open to every local user, who could then call the plugin as if
they were Grafana. So, as hashicorp/go-plugin's servers on Unix: a socket in a private
0700 folder made under PLUGIN_UNIX_SOCKET_DIR (else TMPDIR, else /run/grafana where its user
may write there, else /tmp), mode 0600, or,
when PLUGIN_UNIX_SOCKET_GROUP names a group, 0660 and that group's (the folder 0710 so the
group can reach it); the handshake then says `unix|<path>`. Both go when the plugin exits.
Only when the path would not fit a sockaddr_un does it fall back to TCP on 127.0.0.1,
on the first free port in PLUGIN_MIN_PORT..PLUGIN_MAX_PORT, as go-plugin does on Windows.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from services.common.errors import ConfigError
from services.common.rundir import group_id

SUN_PATH_MAX = 107
"""sockaddr_un holds 108 bytes on Linux, the last one the terminating NUL."""
RUNTIME_FOLDER = "/run/grafana"
"""A packaged Grafana's RuntimeDirectory: unlike its private /tmp, systemd-tmpfiles never ages
it out, so a long-lived plugin's socket is still there when Grafana reconnects (grafana#131592)."""
SERVER_OPTIONS = [("grpc.so_reuseport", 0)]
"""Without this a TCP bind succeeds on a port another process listens on, and shares it."""


@dataclass(frozen=True)
class Listener:
    network: str
    """"unix" or "tcp", as go-plugin's handshake names it."""
    address: str
    """The socket's path, or 127.0.0.1:<port>."""
    folder: Path | None = None
    """The private folder holding the socket, removed by close()."""

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def listen(server: grpc.aio.Server, env: Mapping[str, str]) -> Listener:
    """Bind `server` where the host expects it (see the module's docstring)."""
    base = env.get("PLUGIN_UNIX_SOCKET_DIR") or socket_base(env)
    try:
        folder = Path(tempfile.mkdtemp(prefix="plugin", dir=base))
    except OSError as exc:
        raise ConfigError(
            f"cannot make the plugin's socket folder in {base}: {exc.strerror} "
            "(set PLUGIN_UNIX_SOCKET_DIR or TMPDIR to a folder the plugin may write to)"
        ) from None
    path = folder / "plugin.sock"
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        folder.rmdir()
        return listen_tcp(server, env)
    try:
        server.add_insecure_port(f"unix:{path}")
        group = env.get("PLUGIN_UNIX_SOCKET_GROUP", "")
        if group:
            gid = group_id(group)
            for item in (folder, path):
                os.chown(item, -1, gid)
            folder.chmod(0o710)
        path.chmod(0o660 if group else 0o600)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return Listener("unix", str(path), folder)


def socket_base(env: Mapping[str, str]) -> str:
    """TMPDIR if the host set one, else Grafana's runtime folder when writable, else /tmp."""
    if env.get("TMPDIR") or not os.access(RUNTIME_FOLDER, os.W_OK | os.X_OK):
        return tempfile.gettempdir()
    return RUNTIME_FOLDER


def listen_tcp(server: grpc.aio.Server, env: Mapping[str, str]) -> Listener:
    """127.0.0.1 on the first free port of the host's range (10000..25000 unless it says otherwise)."""
    low = int(env.get("PLUGIN_MIN_PORT") or 10000)
    high = int(env.get("PLUGIN_MAX_PORT") or 25000)
    for port in range(low, high + 1):
        try:
            server.add_insecure_port(f"127.0.0.1:{port}")
        except RuntimeError:  # grpcio's way of saying the port is taken
            continue
        return Listener("tcp", f"127.0.0.1:{port}")
    raise ConfigError(f"no free port on 127.0.0.1 in PLUGIN_MIN_PORT..PLUGIN_MAX_PORT ({low}..{high})")
