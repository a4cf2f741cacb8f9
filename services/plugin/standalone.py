"""Debug mode, as the Go SDK does it: run the plugin yourself, let Grafana attach to it.

    python -m services.plugin --standalone [--plugin-dir build/plugins/<id>]

serves the pluginv2 services on 127.0.0.1 (a free port, or the address in
GF_PLUGIN_GRPC_ADDRESS_<ID>), writes `standalone.txt` (the address) and `pid.txt` into
the plugin folder, and kills the copy Grafana had launched. Grafana restarts its copy
within a second; that copy finds `standalone.txt` (and a live `pid.txt`) beside its
`gpx_` launcher and, instead of serving, prints a handshake that points Grafana at the
developer's process, then waits. Restart your process at will; Grafana keeps its
streams. Stop it and the files go, the launcher exits, and Grafana's next copy serves
normally. The developer's process has no go-plugin controller, so Grafana cannot shut it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path

from services.common.logs import fields

log = logging.getLogger("zmqstream.plugin.standalone")
ADDRESS_FILE = "standalone.txt"
PID_FILE = "pid.txt"
PLUGIN_DIR_ENV = "ZMQSTREAM_PLUGIN_DIR"
"""Set by the gpx_ launcher: the folder it lives in."""
LAUNCHED_MARK = b"grafana_plugin_type=datasource"


def address_env(plugin_id: str) -> str:
    return "GF_PLUGIN_GRPC_ADDRESS_" + plugin_id.upper().replace("-", "_")


def attached_address(plugin_dir: Path, plugin_id: str, env: Mapping[str, str]) -> str:
    """The developer's server to point Grafana at, or '' to serve normally."""
    if env.get(address_env(plugin_id)):
        return env[address_env(plugin_id)]
    if not _announced(plugin_dir):
        return ""
    return (plugin_dir / ADDRESS_FILE).read_text().strip()


@contextlib.contextmanager
def announced(plugin_dir: Path, address: str) -> Iterator[None]:
    """Write standalone.txt and pid.txt for as long as the developer's server runs."""
    plugin_dir.mkdir(parents=True, exist_ok=True)
    files = {plugin_dir / ADDRESS_FILE: address, plugin_dir / PID_FILE: str(os.getpid())}
    for path, text in files.items():
        path.write_text(text + "\n")
    try:
        yield
    finally:
        for path in files:
            path.unlink(missing_ok=True)


def evict_launched_copies(plugin_dir: Path) -> list[int]:
    """SIGKILL the plugin processes Grafana launched from `plugin_dir`'s gpx_ launcher.

    They are recognised by their environment: the host's magic cookie and the launcher's
    ZMQSTREAM_PLUGIN_DIR naming this folder, so no other plugin install is touched.
    """
    marks = {LAUNCHED_MARK, f"{PLUGIN_DIR_ENV}={plugin_dir.resolve()}".encode()}
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = set((entry / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if marks <= environ:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed


async def point_host_at(address: str, plugin_dir: Path, stop: asyncio.Event, *, from_files: bool) -> None:
    """The launcher's whole job once it has printed the developer's address: wait.

    Ends when the host stops it or (when the address came from the files) when the
    developer's process is gone, so that Grafana relaunches a normal plugin.
    """
    log.info("host attached to a standalone plugin", extra=fields(address=address))
    while not stop.is_set():
        if from_files and not _announced(plugin_dir):
            log.info("standalone plugin gone; exiting so the host relaunches", extra=fields(address=address))
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def _announced(plugin_dir: Path) -> bool:
    pid_file = plugin_dir / PID_FILE
    if not (plugin_dir / ADDRESS_FILE).exists():
        return False
    return not pid_file.exists() or _alive(_read_pid(pid_file))


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
