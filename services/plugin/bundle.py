"""Assemble the plugin folder Grafana loads: plugin.json, the frontend, the gpx_ launchers.

    python -m services.plugin.bundle [--out build/plugins] [--backend-only]

Grafana execs `<executable>_<os>_<arch>` from the plugin folder with its own working
directory and maybe without PATH, so each launcher is a two-line shell script that
`exec`s this very interpreter by absolute path (exec, so the host's kill reaches Python
and no orphan keeps the pipes open) and prints nothing itself.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_JSON = ROOT / "deploy" / "plugin" / "plugin.json"
FRONTEND_DIST = ROOT / "frontend" / "dist"
ARCHES = ("linux_amd64", "linux_arm64")


def plugin_id() -> str:
    return str(json.loads(PLUGIN_JSON.read_text())["id"])


def launcher_name(arch: str) -> str:
    """The file Grafana execs on `arch` (`<executable>_<os>_<arch>`)."""
    return f"{json.loads(PLUGIN_JSON.read_text())['executable']}_{arch}"


def write_launchers(folder: Path, python: str = sys.executable) -> list[Path]:
    """Write the gpx_ launchers into `folder`; return their paths."""
    script = (
        "#!/bin/sh\n"
        "# zmqstream's backend, launched by Grafana; written by services/plugin/bundle.py\n"
        'ZMQSTREAM_PLUGIN_DIR=$(cd -P -- "$(dirname -- "$0")" >/dev/null && pwd)\n'
        "export ZMQSTREAM_PLUGIN_DIR\n"
        f'cd "{ROOT}" && exec "{python}" -m services.plugin "$@"\n'
    )
    paths = []
    for arch in ARCHES:
        path = folder / launcher_name(arch)
        path.write_text(script)
        path.chmod(0o755)
        paths.append(path)
    return paths


def build(out: Path, *, backend_only: bool) -> Path:
    folder = out / plugin_id()
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copy(PLUGIN_JSON, folder / "plugin.json")
    if not backend_only:
        if not (FRONTEND_DIST / "module.js").exists():
            raise SystemExit(
                f"{FRONTEND_DIST}/module.js is missing: build the frontend first (make frontend)"
            )
        shutil.copytree(FRONTEND_DIST, folder, dirs_exist_ok=True)
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
