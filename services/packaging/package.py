"""The installable plugin zip: `grafana cli --pluginUrl <zip> plugins install <id>`.

    python -m services.packaging.package [--out build]   →  build/<id>-<version>.zip

The zip holds one folder, `<id>/`: plugin.json, the frontend (module.js, img/), the gpx_
launchers, `python/` with the zmqstream wheel, and `setup-python.sh`. The target host
needs Linux, Python ≥ 3.11 with venv, and (once) `sh setup-python.sh [venv]` run from the
installed plugin folder: it makes a venv, installs the wheel with its dependencies from
PyPI and writes `python.path`, which the launchers read. The pipeline itself (broker,
workers, recorder) runs from the same venv: `zmqstream-broker`, `zmqstream-generator`,
`zmqstream-recorder`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from services.packaging.bundle import PLUGIN_JSON, ROOT, copy_plugin_files, write_launchers
from services.plugin.identity import PLUGIN_ID, PYTHON_PATH_FILE

SETUP_SCRIPT = f"""#!/bin/sh
# Run once on the Grafana host after installing the zmqstream plugin zip:
#   sh setup-python.sh [venv folder, default /opt/zmqstream/venv]
# Makes the venv, installs zmqstream and its dependencies, and tells the launchers
# (gpx_zmqstream_*) which interpreter to exec by writing {PYTHON_PATH_FILE}.
set -eu
here=$(cd -P -- "$(dirname -- "$0")" >/dev/null && pwd)
venv=${{1:-/opt/zmqstream/venv}}
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet "$here"/python/*.whl
echo "$venv/bin/python" > "$here/{PYTHON_PATH_FILE}"
echo "zmqstream: the plugin runs $venv/bin/python; start the pipeline with" \\
  "$venv/bin/zmqstream-broker, zmqstream-recorder and zmqstream-generator (or supervisord)"
"""


def build_wheel(into: Path) -> Path:
    """The zmqstream wheel, gRPC stubs included (run `make proto` first)."""
    if not (ROOT / "services" / "plugin" / "_proto" / "pluginv2_pb2.py").exists():
        raise SystemExit("gRPC stubs are missing: run `make proto` first")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(into), str(ROOT)],
        check=True,
    )
    (wheel,) = into.glob("zmqstream-*.whl")
    return wheel


def package(out: Path, *, backend_only: bool = False) -> Path:
    version = json.loads(PLUGIN_JSON.read_text())["info"]["version"]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / PLUGIN_ID
        folder.mkdir()
        copy_plugin_files(folder, backend_only=backend_only)
        write_launchers(folder, python=None)
        build_wheel(folder / "python")
        setup = folder / "setup-python.sh"
        setup.write_text(SETUP_SCRIPT)
        setup.chmod(0o755)
        out.mkdir(parents=True, exist_ok=True)
        archive = out / f"{PLUGIN_ID}-{version}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                zf.write(path, path.relative_to(scratch))  # keeps the exec bits of the launchers
    return archive


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "build")
    parser.add_argument("--backend-only", action="store_true", help="leave the frontend out (tests)")
    args = parser.parse_args(argv)
    print(package(args.out, backend_only=args.backend_only))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
