"""CURVE encryption and authentication for every broker socket, with keys from files.

Off by default: every endpoint is ipc or loopback. For multi-host pipelines:

    zmqstream keys /etc/zmqstream/keys broker worker-a plugin-grafana

writes `<name>.key` (public) and `<name>.key_secret` (both halves) per name, in the ZeroMQ
certificate format. Then:

- the broker gets `--curve-server-secret keys/broker.key_secret` and
  `--curve-authorized-dir` a folder holding the *public* `.key` files of every worker and
  plugin allowed in; a peer whose key is not there cannot send, subscribe or publish;
- each worker and plugin gets its own `--curve-client-secret keys/<name>.key_secret` and
  `--curve-server-public keys/broker.key`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from services.common.errors import ConfigError

log = logging.getLogger("zmqstream.security")


def _load(path: str, *, secret: bool) -> tuple[bytes, bytes]:
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read CURVE certificate {path}: {exc}") from exc
    if secret and secret_key is None:
        raise ConfigError(f"{path} holds no secret key (use the .key_secret file)")
    return public, secret_key or b""


def secure_server(sock: zmq.Socket[Any], secret_file: str) -> None:
    """Make `sock` a CURVE server with the broker's certificate."""
    public, secret = _load(secret_file, secret=True)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True


def secure_client(sock: zmq.Socket[Any], secret_file: str, server_public_file: str) -> None:
    """Make `sock` a CURVE client that only talks to the broker holding `server_public_file`."""
    public, secret = _load(secret_file, secret=True)
    server_public, _ = _load(server_public_file, secret=False)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = server_public


def start_authenticator(ctx: zmq.Context[zmq.Socket[bytes]], authorized_dir: str) -> ThreadAuthenticator:
    """Answer ZeroMQ's authentication requests: CURVE clients whose public key is in the folder."""
    if not Path(authorized_dir).is_dir():
        raise ConfigError(f"CURVE authorized-keys folder {authorized_dir} does not exist")
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("zmqstream.security.zap"))
    auth.start()
    auth.configure_curve(domain="*", location=authorized_dir)
    log.info("CURVE authentication on", extra={"fields": {"authorized_dir": authorized_dir}})
    return auth


def create_keys(folder: Path, names: list[str]) -> list[Path]:
    """Write a certificate pair per name into `folder` (secret files readable by the owner only)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        public, secret = zmq.auth.create_certificates(folder, name)
        Path(secret).chmod(0o600)
        written += [Path(public), Path(secret)]
    return written
