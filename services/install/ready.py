"""`make run`'s summary, once the pipeline answers: its sockets, the plugin, grafana.ini, how to stop.

    python -m services.install.ready [--timeout 60]

`make run` starts it beside supervisord, whose log lines scroll above it; it leaves quietly
if the shell that started it ends first (supervisord stopped), and says so if the pipeline
never answers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence

from services.cli.status import fetch
from services.common import protocol
from services.common.errors import PipelineError
from services.common.probe import Access
from services.common.rundir import default_run_dir
from services.plugin.identity import CHECKOUT_PLUGIN_DIR, PLUGIN_ID

STARTSECS_S = 1.5
"""supervisord.conf's startsecs (1 s) and a margin."""


def summary(run_dir: str, reply: protocol.StatusReply) -> str:
    """What a user needs next, in a few lines."""
    roles = [str(info.get("role", "generator")) for info in reply.workers.values()]
    generators = roles.count("generator")
    plural = "" if generators == 1 else "s"
    recorder = " and the recorder" if "recorder" in roles else " (no recorder)"
    lines = [
        f"zmqstream ready: {generators} generator worker{plural}{recorder}, sockets in {run_dir}",
        f"  plugin folder  {CHECKOUT_PLUGIN_DIR}",
        f"                 (grafana.ini [paths] plugins = {CHECKOUT_PLUGIN_DIR.parent}, or copy it there)",
        f"  grafana.ini    [plugins] allow_loading_unsigned_plugins = {PLUGIN_ID}",
        f"                 [plugin.{PLUGIN_ID}] run_dir = {run_dir}",
    ]
    if run_dir.startswith("/tmp/"):
        lines.append(
            "                 (a Grafana installed as a service cannot see /tmp: see the README, "
            "Grafana installed as a service)"
        )
    lines += [
        "  status         make ctl         (supervisorctl status; .venv/bin/zmqstream status)",
        "  stop           Ctrl-C here, or make stop",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.install.ready", description=__doc__)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the pipeline")
    args = parser.parse_args(argv)
    run_dir = default_run_dir()
    access = Access(f"ipc://{run_dir}/control", socket_group=os.environ.get("ZMQSTREAM_SOCKET_GROUP", ""))
    starter = os.getppid()
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if os.getppid() != starter:  # make run's shell is gone: supervisord stopped
            return 0
        try:
            reply = fetch(access, 1.0)
        except PipelineError:
            reply = None
        if reply is not None and any(
            w.get("role", "generator") == "generator" for w in reply.workers.values()
        ):
            time.sleep(STARTSECS_S)  # after supervisord's "entered RUNNING" lines, so the summary comes last
            with contextlib.suppress(PipelineError):
                reply = fetch(access, 1.0)  # by now every program that started has joined
            print(summary(run_dir, reply), flush=True)
            return 0
        time.sleep(0.5)
    print(
        f"zmqstream: the pipeline did not answer at ipc://{run_dir}/control within {args.timeout:g} s: "
        "see supervisord's lines above",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
