"""The compiled client (bench/goclient): built once per run, driven by the client-bound scenarios.

A Go client launched through hashicorp/go-plugin takes a fraction of the CPU the Python
client does, so on this machine's 2 shared cores it measures the plugin rather than
itself. Where it cannot be built (no Go packages), `client()` says why and the scenario
falls back to its Python client and says so in its figures.
"""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import Result
from services.hostemu.localpipeline import Pipeline
from services.packaging.bundle import ROOT, write_launchers

BUILD = Path(__file__).parent / "goclient" / "build.sh"
BINARY = ROOT / "build" / "goclient" / "zsbench-client"
MISSING = 3
"""build.sh's exit status when Go or a package is not installed."""
DUMP_S = 5.0
"""How long a hung client gets to print its goroutines after SIGQUIT."""
DUMP_CHARS = 6000


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
    """Build the client once per run (Go's cache makes a rebuild quick), or say why it cannot be."""
    return build()


def build(env: dict[str, str] | None = None) -> Client:
    """Run build.sh (in `env`, if given); the binary, or None with the reason."""
    try:
        built = subprocess.run([BUILD], capture_output=True, text=True, timeout=600, check=False, env=env)
    except (OSError, subprocess.TimeoutExpired) as error:
        return Client(None, f"bench/goclient/build.sh did not run ({error})")
    if built.returncode != 0:
        lines = (built.stderr.strip() or built.stdout.strip() or "no output").splitlines()
        reason = lines[-1] if built.returncode == MISSING else f"build failed: {lines[-1]}"
        return Client(None, f"Go client not built ({reason})")
    return Client(BINARY)


PLUGIN_UP = "zsbench-client: plugin up, pid"
WINDOW_OPEN = "zsbench-client: window open"
"""The lines main.go writes on stderr as it goes."""


class Running:
    """The client running with `args`; its stderr is read as it comes (the milestones above)."""

    def __init__(self, binary: Path, args: list[str]) -> None:
        self.args = args
        self.process = subprocess.Popen(
            [str(binary), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.stderr: list[str] = []
        self.stdout: list[str] = []
        self.changed = threading.Condition()
        self.ended = False
        # Each pipe has its own reader: `communicate` beside the stderr reader could block in a
        # read of stderr the reader had emptied, while the client blocked writing its figures
        # (over a pipe's 64 KiB) to a stdout no one read; both waited for ever.
        self.readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_figures, daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self.changed:
                self.stderr.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def _read_figures(self) -> None:
        assert self.process.stdout is not None
        self.stdout.append(self.process.stdout.read())

    def wait_for(self, marker: str, timeout_s: float = 120) -> str:
        """The first stderr line starting with `marker`; RuntimeError if the client ends first."""
        with self.changed:
            self.changed.wait_for(
                lambda: self.ended or any(line.startswith(marker) for line in self.stderr), timeout_s
            )
            line = next((line for line in self.stderr if line.startswith(marker)), None)
        if line is None:
            self.process.kill()
            self.finish()  # raises with the client's error
            raise RuntimeError(f"zsbench-client {' '.join(self.args)}: no {marker!r} in {timeout_s:g} s")
        return line

    def finish(self, timeout_s: float = 300) -> dict[str, Any]:
        """Its JSON figures once it ends (RuntimeError with its stderr if it failed).

        A client still running after `timeout_s` is stopped with SIGQUIT, so the error shows
        where its goroutines wait (the main one first), then killed.
        """
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGQUIT)  # Go prints every goroutine's stack and exits
            try:
                self.process.wait(DUMP_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self._join()  # stderr read to its end: the dump
            raise RuntimeError(
                f"zsbench-client {' '.join(self.args)} still running after {timeout_s:g} s: {self._dump()}"
            ) from None
        self._join()
        if self.process.returncode != 0:
            raise RuntimeError(f"zsbench-client {' '.join(self.args)} failed: {self._dump()}")
        figures: dict[str, Any] = json.loads("".join(self.stdout))
        return figures

    def _join(self) -> None:
        for reader in self.readers:
            reader.join(5)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()

    def _dump(self) -> str:
        """Its stderr: the head (its own lines, then a dump's main goroutine) and the tail."""
        text = "\n".join(self.stderr).strip()
        return text if len(text) <= 2 * DUMP_CHARS else f"{text[:DUMP_CHARS]}\n…\n{text[-DUMP_CHARS:]}"


def drive(binary: Path, args: list[str]) -> dict[str, Any]:
    """Run the client with `args` to its end; its JSON figures."""
    return Running(binary, args).finish()


def launch_on(binary: Path, pipeline: Pipeline, args: list[str], settings: dict[str, str]) -> Running:
    """The client launching the plugin on `pipeline` as Grafana would, its ini section `settings`."""
    shim = write_launchers(pipeline.run_dir)[0]
    ini = [f"-setting={key}={value}" for key, value in {"run_dir": str(pipeline.run_dir), **settings}.items()]
    return Running(binary, ["-plugin", str(shim), "-workers", str(len(pipeline.workers)), *ini, *args])


def failures(scenario: str, figures: dict[str, Any], what: str = "streams") -> Result:
    """The streams that ended with an error, by call and status, and when (from the first request)."""
    at = figures.get("failed_at_s") or []
    span = f", {min(at):.2f} to {max(at):.2f} s after the first request" if at else ""
    return Result(
        scenario,
        f"{what} that failed: " + (", ".join(sorted(figures["failed"])) or "none") + span,
        sum(figures["failed"].values()),
        what,
        "0",
        not figures["failed"],
    )


def arrived(seconds: list[float]) -> list[float]:
    """The client's per-stream times, without the streams that sent nothing (-1)."""
    return [s for s in seconds if s >= 0]


def run_pipeline(
    binary: Path, workers: int, args: list[str], settings: dict[str, str] | None = None
) -> dict[str, Any]:
    """A fresh pipeline of `workers`, the client launching the plugin on it, then everything stopped."""
    pipeline = Pipeline(workers)
    try:
        return launch_on(binary, pipeline, args, settings or {}).finish()
    finally:
        pipeline.close()
