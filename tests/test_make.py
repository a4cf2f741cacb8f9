"""The Makefile: npm ci and the frontend build run only when their inputs changed; `make test`
names a missing tool at once."""

import os
import shutil
import subprocess
import time
from pathlib import Path

from support import ROOT

FRONTEND_FILES = (
    "frontend/package-lock.json",
    "frontend/package.json",
    "frontend/src/module.ts",
    "deploy/plugin/plugin.json",
    "frontend/node_modules/.package-lock.json",
    "frontend/dist/module.js",
)
"""Inputs first, outputs last: written in this order, each output is newer than its inputs."""


def dry_run(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-n", *args],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_frontend_is_built_again_only_when_its_inputs_changed(tmp_path: Path) -> None:
    shutil.copy(ROOT / "Makefile", tmp_path)
    stamp = time.time() - 100
    for relative in FRONTEND_FILES:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
        stamp += 1
        os.utime(path, (stamp, stamp))
    assert "npm" not in dry_run(tmp_path, "frontend").stdout
    (tmp_path / "frontend/src/module.ts").touch()
    rebuilt = dry_run(tmp_path, "frontend").stdout
    assert "npm run build" in rebuilt
    assert "npm ci" not in rebuilt
    (tmp_path / "frontend/package-lock.json").touch()
    assert "npm ci" in dry_run(tmp_path, "frontend").stdout


def test_make_test_names_a_missing_chromium_before_doing_anything() -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "test-tools", "CHROMIUM_PATH=/nonexistent/chromium"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "make test: missing chromium at /nonexistent/chromium" in result.stderr
    assert "apt-get install chromium" in result.stderr
    makefile = (ROOT / "Makefile").read_text()
    assert "\ntest: test-tools " in makefile  # checked first, before setup's minutes of installs
