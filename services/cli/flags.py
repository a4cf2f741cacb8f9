"""Flags more than one command takes: how to reach a CURVE peer and a shared run folder."""

from __future__ import annotations

import argparse
import os

from services.common.config import env_name
from services.common.rundir import default_run_dir


def add_access_flags(parser: argparse.ArgumentParser, peer: str, server_key: str) -> None:
    """--curve-client-secret, --curve-server-public and --socket-group, defaulting to their variables.

    `peer`: who may use CURVE ("the broker"); `server_key`: whose public key to give.
    """
    for flag, help in (
        ("curve-client-secret", f"your CURVE .key_secret file, if {peer} uses CURVE"),
        ("curve-server-public", f"{server_key} public CURVE .key file"),
        ("socket-group", "the group the run folder may belong to besides you and root"),
    ):
        env = env_name(flag.replace("-", "_"))
        parser.add_argument(f"--{flag}", default=os.environ.get(env, ""), help=f"{help} [env {env}]")


def add_run_dir_flag(parser: argparse.ArgumentParser) -> None:
    """--run-dir: the pipeline's folder of ipc sockets, as its broker's."""
    parser.add_argument(
        "--run-dir",
        default=default_run_dir(),
        help="the pipeline's run folder (default: %(default)s) [env ZMQSTREAM_RUN_DIR]",
    )
