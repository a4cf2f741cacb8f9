"""`zmqstream status`: ask the broker for its view and print it as two tables."""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any

import orjson

from services.cli.flags import add_access_flags, add_run_dir_flag
from services.common import protocol
from services.common.errors import PipelineError
from services.common.probe import Access, ask
from services.common.wording import count


def fetch(access: Access | str, timeout_s: float) -> protocol.StatusReply:
    """One StatusRequest round trip; PipelineError saying what is wrong if there is no answer."""
    access = Access(access) if isinstance(access, str) else access
    request_id = uuid.uuid4().hex
    reply = ask(
        access,
        protocol.StatusRequest(request_id),
        lambda m: isinstance(m, protocol.StatusReply) and m.request_id == request_id,
        timeout_s,
    )
    assert isinstance(reply, protocol.StatusReply)
    return reply


def render(reply: protocol.StatusReply) -> str:
    workers, channels = count(len(reply.workers), "worker"), count(len(reply.channels), "channel")
    plugins = count(reply.plugins, "plugin connection", "plugin connections")
    lines = [
        f"broker {reply.broker}: {workers}, {channels}, {plugins}",
        "",
    ]
    lines += _table(
        ["worker", "role", "pid", "channels", "load rows/s", "late ticks", "seen s ago"],
        [
            [
                w,
                i.get("role", "generator"),
                i["pid"],
                i["channels"],
                i["load"],
                i["ticks_late"],
                i["seen_s_ago"],
            ]
            for w, i in sorted(reply.workers.items())
        ],
    )
    lines.append("")
    lines += _table(
        ["channel", "worker", "subscribers"],
        [[path, i["worker"] or "(none)", i["subscribers"]] for path, i in sorted(reply.channels.items())],
    )
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]


def run(args: argparse.Namespace) -> int:
    access = Access(
        args.control_endpoint or f"ipc://{args.run_dir}/control",
        args.curve_client_secret,
        args.curve_server_public,
        args.socket_group,
    )
    try:
        reply = fetch(access, args.timeout)
    except PipelineError as exc:
        print(f"zmqstream status: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps(_as_dict(reply)).decode() if args.json else render(reply))
    return 0


def _as_dict(reply: protocol.StatusReply) -> dict[str, Any]:
    return {
        "broker": reply.broker,
        "workers": reply.workers,
        "channels": reply.channels,
        "plugins": reply.plugins,
    }


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("status", help="the broker's workers, channels and subscribers")
    add_run_dir_flag(parser)
    parser.add_argument(
        "--control-endpoint", default="", help="the broker's control endpoint (default: <run-dir>/control)"
    )
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the broker")
    add_access_flags(parser, "the broker", "the broker's")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(run=run)
