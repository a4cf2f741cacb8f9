"""Assemble the plugin folder Grafana loads: plugin.json, the frontend, the gpx_ launchers.

    python -m services.packaging.bundle [--out build/plugins] [--backend-only]

Grafana execs `<executable>_<os>_<arch>` from the plugin folder with its own working
directory and (12.4 and later) without PATH, HOME or PYTHONPATH. So the launcher is a small shell script
that prints nothing, reads the interpreter's absolute path from `python.path` beside it
and `exec`s it (exec, so the host's kill reaches Python and no orphan keeps the pipes
open). The same launcher ships in the installable zip (services/packaging/package.py),
whose set-up script writes `python.path` on the target host.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from services.plugin.identity import ARCHES, PLUGIN_ID, PYTHON_PATH_FILE, launcher_name

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_JSON = ROOT / "deploy" / "plugin" / "plugin.json"
FRONTEND_DIST = ROOT / "frontend" / "dist"
LAUNCHER = f"""#!/bin/sh
# zmqstream's backend; Grafana execs this file. It must print nothing itself.
# Builtins only: Grafana 12.4+ gives it no PATH.
case $0 in */*) here=${{0%/*}} ;; *) here=. ;; esac
ZMQSTREAM_PLUGIN_DIR=$(cd -P -- "$here" >/dev/null && pwd)
export ZMQSTREAM_PLUGIN_DIR
if ! read -r python < "$ZMQSTREAM_PLUGIN_DIR/{PYTHON_PATH_FILE}"; then
  echo "[ERROR] zmqstream: $ZMQSTREAM_PLUGIN_DIR/{PYTHON_PATH_FILE} is missing; run setup-python.sh" >&2
  exit 1
fi
exec "$python" -m services.plugin "$@"
"""


def write_launchers(folder: Path, python: str | None = sys.executable) -> list[Path]:
    """Write the gpx_ launchers (and `python.path`, unless `python` is None) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    if python is not None:
        (folder / PYTHON_PATH_FILE).write_text(python + "\n")
    paths = []
    for arch in ARCHES:
        path = folder / launcher_name(arch)
        path.write_text(LAUNCHER)
        path.chmod(0o755)
        paths.append(path)
    return paths


def copy_plugin_files(folder: Path, *, backend_only: bool) -> None:
    """plugin.json and the frontend build into `folder`."""
    shutil.copy(PLUGIN_JSON, folder / "plugin.json")
    if backend_only:
        return
    if not (FRONTEND_DIST / "module.js").exists():
        raise SystemExit(f"{FRONTEND_DIST}/module.js is missing: build the frontend first (make frontend)")
    shutil.copytree(FRONTEND_DIST, folder, dirs_exist_ok=True)


def build(out: Path, *, backend_only: bool) -> Path:
    folder = out / PLUGIN_ID
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    copy_plugin_files(folder, backend_only=backend_only)
    write_launchers(folder)
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "plugins")
    parser.add_argument("--backend-only", action="store_true", help="skip the frontend build output")
    args = parser.parse_args(argv)
    print(build(args.out, backend_only=args.backend_only))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
