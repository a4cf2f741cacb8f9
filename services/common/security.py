"""CURVE encryption and authentication for every broker socket, with keys from files or text.

Off by default: every endpoint is ipc or loopback. For multi-host pipelines:

    zmqstream keys /etc/zmqstream/keys broker worker-a plugin-grafana

writes `<name>.key` (public) and `<name>.key_secret` (both halves) per name, in the ZeroMQ
certificate format. Then:

- the broker gets `--curve-server-secret keys/broker.key_secret` and
  `--curve-authorized-dir` a folder holding the *public* `.key` files of every worker and
  plugin allowed in; a peer whose key is not there cannot send, subscribe or publish;
- each worker and plugin gets its own `--curve-client-secret keys/<name>.key_secret` and
  `--curve-server-public keys/broker.key`; or, for the plugin, a datasource carries the
  key material itself in its secureJsonData (`ClientKeys.from_text`: the Z85 keys, or the
  files' whole text pasted), so each datasource may reach its broker with its own keys.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
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


Z85_KEY = re.compile(r"[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")
"""A 32-byte CURVE key in Z85, as ZeroMQ certificates write it."""


@dataclass(frozen=True)
class ClientKeys:
    """A CURVE client's keys (Z85, 40 bytes each): its own pair and the broker's public key."""

    secret: bytes
    public: bytes
    server_public: bytes

    @classmethod
    def from_files(cls, secret_file: str, server_public_file: str) -> ClientKeys:
        public, secret = _load(secret_file, secret=True)
        server_public, _ = _load(server_public_file, secret=False)
        return cls(secret, public, server_public)

    @classmethod
    def from_text(cls, secret: str, server_public: str) -> ClientKeys:
        """Keys typed or pasted into a datasource: each a Z85 key or a certificate file's text."""
        secret_key = _z85(secret, "secret-key", "the plugin's CURVE secret key")
        server_key = _z85(server_public, "public-key", "the broker's CURVE public key")
        return cls(secret_key, zmq.curve_public(secret_key), server_key)


def _z85(text: str, name: str, what: str) -> bytes:
    """The Z85 key in `text`: a bare key, or the `name = "…"` line of a certificate."""
    found = re.search(rf'{name}\s*=\s*"([^"]*)"', text)
    key = (found.group(1) if found else text).strip()
    if not Z85_KEY.fullmatch(key):
        raise ConfigError(
            f"{what} is not a CURVE key: paste the 40-character key (or the whole file) that "
            "`zmqstream keys` wrote"
        )
    return key.encode()


def secure_client(sock: zmq.Socket[Any], keys: ClientKeys) -> None:
    """Make `sock` a CURVE client that only talks to the broker holding `keys.server_public`."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = keys.server_public


def start_authenticator(
    ctx: zmq.Context[zmq.Socket[bytes]], authorized_dir: str, domain: str = "*"
) -> ThreadAuthenticator:
    """Answer ZeroMQ's authentication requests: CURVE clients whose public key is in the folder.

    `domain`: the ZAP domain it applies to ("*": every socket without another one).
    """
    _authorized_dir(authorized_dir)
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("zmqstream.security.zap"))
    auth.start()
    authorize(auth, domain, authorized_dir)
    return auth


def authorize(auth: ThreadAuthenticator, domain: str, authorized_dir: str) -> None:
    """Let the keys in `authorized_dir` into the sockets of ZAP `domain` (a recorder has two)."""
    _authorized_dir(authorized_dir)
    auth.configure_curve(domain=domain, location=authorized_dir)
    log.info(
        "CURVE authentication on", extra={"fields": {"authorized_dir": authorized_dir, "domain": domain}}
    )


def _authorized_dir(authorized_dir: str) -> None:
    if not Path(authorized_dir).is_dir():
        raise ConfigError(f"CURVE authorized-keys folder {authorized_dir} does not exist")


def create_keys(folder: Path, names: list[str]) -> list[Path]:
    """Write a certificate pair per name into `folder` (secret files readable by the owner only)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        public, secret = zmq.auth.create_certificates(folder, name)
        Path(secret).chmod(0o600)
        written += [Path(public), Path(secret)]
    return written
