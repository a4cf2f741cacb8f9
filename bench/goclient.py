"""The compiled client (bench/goclient): built once per run, driven by the client-bound scenarios.

A Go client launched through hashicorp/go-plugin takes a fraction of the CPU the Python
client does, so on this machine's 2 shared cores it measures the plugin rather than
itself. Where it cannot be built (no Go packages), `client()` says why and the scenario
falls back to its Python client and says so in its figures.
"""

from __future__ import annotations

import functools
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.hostemu.localpipeline import Pipeline
from services.packaging.bundle import ROOT, write_launchers

BUILD = Path(__file__).parent / "goclient" / "build.sh"
BINARY = ROOT / "build" / "goclient" / "zsbench-client"
MISSING = 3
"""build.sh's exit status when Go or a package is not installed."""


@dataclass(frozen=True)
class Client:
    """The built binary, or None and why not."""

    binary: Path | None
    why_not: str = ""

    @property
    def label(self) -> str:
        return "Go client" if self.binary else f"Python client: {self.why_not}"


@functools.cache
def client() -> Client:
    """Build the client (Go's cache makes a rebuild quick); None with the reason if it cannot be."""
    try:
        built = subprocess.run([BUILD], capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return Client(None, f"bench/goclient/build.sh did not run ({error})")
    if built.returncode != 0:
        lines = (built.stderr.strip() or built.stdout.strip() or "no output").splitlines()
        reason = lines[-1] if built.returncode == MISSING else f"build failed: {lines[-1]}"
        return Client(None, f"Go client not built ({reason})")
    return Client(BINARY)


def drive(binary: Path, args: list[str], timeout_s: float = 300) -> dict[str, Any]:
    """Run the client with `args`; its JSON figures (RuntimeError with its stderr if it failed)."""
    done = subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"zsbench-client {' '.join(args)} failed: {done.stderr.strip()[:3000]}")
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


def on_pipeline(
    binary: Path, pipeline: Pipeline, args: list[str], settings: dict[str, str]
) -> dict[str, Any]:
    """The client launching the plugin on `pipeline` as Grafana would, its ini section `settings`."""
    shim = write_launchers(pipeline.run_dir)[0]
    ini = [f"-setting={key}={value}" for key, value in {"run_dir": str(pipeline.run_dir), **settings}.items()]
    return drive(binary, ["-plugin", str(shim), "-workers", str(len(pipeline.workers)), *ini, *args])


def arrived(seconds: list[float]) -> list[float]:
    """The client's per-stream times, without the streams that sent nothing (-1)."""
    return [s for s in seconds if s >= 0]


def run_pipeline(
    binary: Path, workers: int, args: list[str], settings: dict[str, str] | None = None
) -> dict[str, Any]:
    """A fresh pipeline of `workers`, the client launching the plugin on it, then everything stopped."""
    pipeline = Pipeline(workers)
    try:
        return on_pipeline(binary, pipeline, args, settings or {})
    finally:
        pipeline.close()
