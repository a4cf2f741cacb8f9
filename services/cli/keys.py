"""`zmqstream keys <folder> <name>...`: CURVE certificates for a multi-host pipeline."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from services.common.security import create_keys


def run(args: argparse.Namespace) -> int:
    for path in create_keys(args.folder, args.names):
        print(path)
    return 0


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("keys", help="write CURVE certificate pairs for a multi-host pipeline")
    parser.add_argument("folder", type=Path, help="where to write <name>.key and <name>.key_secret")
    parser.add_argument("names", nargs="+", help="one pair per name, e.g. broker worker-a plugin")
    parser.set_defaults(run=run)
