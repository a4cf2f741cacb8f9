"""`zmqstream`: the command line for people without Grafana at hand.

zmqstream status              the broker's view: workers, channels, subscribers
zmqstream watch <path>        a channel's live values, through the real plugin
zmqstream publish <channel>   JSON lines from stdin as rows of pub-<name>
zmqstream keys <dir> <name>…  CURVE certificates for a multi-host pipeline
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from services.cli import keys, publish, status, watch


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="zmqstream",
        description=__doc__,
        epilog="`zmqstream <command> --help` shows a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the docstring: one line per command
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>", title="commands")
    status.add_parser(commands)
    watch.add_parser(commands)
    publish.add_parser(commands)
    keys.add_parser(commands)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result
