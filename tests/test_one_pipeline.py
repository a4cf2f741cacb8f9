"""One pipeline per run folder: a second recorder, a worker of another pipeline and a second
`make run` on a folder in use each refuse, saying so where the user looks (its log, stderr)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import zmq
from recording import recording_pipeline
from support import ROOT, Pipeline

from services.cli.status import fetch
from services.common import protocol
from services.common.errors import PipelineError
from services.common.probe import Access

EXIT_S = 20.0
MAKE_S = 120.0
"""`make run` sets up first (stubs, plugin folder): seconds when nothing changed."""
GENERATOR = [sys.executable, "-m", "services.generator"]


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    with recording_pipeline() as pipeline:
        yield pipeline


def finished(process: subprocess.Popen[bytes], log: Path) -> list[dict[str, object]]:
    """The JSON lines a process wrote before it exited (which it must, within EXIT_S)."""
    process.wait(EXIT_S)
    return [orjson.loads(line) for line in log.read_bytes().splitlines() if line.startswith(b"{")]


def workers(pipeline: Pipeline) -> set[str]:
    """The workers the pipeline's broker knows (none while it is not up yet)."""
    try:
        return set(fetch(Access(pipeline.control_endpoint), 2).workers)
    except PipelineError:
        return set()


def test_a_second_recorder_on_a_folder_refuses_to_start(pipeline: Pipeline) -> None:
    second = pipeline.start("recorder2", ["-m", "services.recorder", "--recorder-id", "recorder2"])
    lines = finished(second, pipeline.run_dir / "recorder2.log")
    assert second.returncode == 1
    error = next(line for line in lines if line.get("@message") == "cannot start")
    assert pipeline.recorder is not None
    assert f"another recorder (pid {pipeline.recorder.pid}) owns run folder {pipeline.run_dir}" in str(
        error["error"]
    )
    assert "recorder2" not in workers(pipeline)


def test_a_worker_of_another_pipeline_refuses_its_broker(pipeline: Pipeline, tmp_path: Path) -> None:
    """Its own run folder is another one, but its control endpoint names this pipeline's broker."""
    log = tmp_path / "stray.log"
    with log.open("wb") as out:
        stray = subprocess.Popen(
            [*GENERATOR, "--worker-id", "stray", "--control-endpoint", pipeline.control_endpoint],
            cwd=ROOT,
            env={**pipeline.env, "ZMQSTREAM_RUN_DIR": str(tmp_path)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    lines = finished(stray, log)
    assert stray.returncode == 1
    refused = next(
        line for line in lines if line.get("@message") == "broker of another pipeline refused; stopping"
    )
    assert f"serves pipeline {str(pipeline.run_dir)!r}, this generator belongs to {str(tmp_path)!r}" in str(
        refused["error"]
    )
    assert "stray" not in workers(pipeline)


def test_make_run_on_a_folder_another_broker_owns_says_so_in_one_line(pipeline: Pipeline) -> None:
    make = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        env={**os.environ, "ZMQSTREAM_RUN_DIR": str(pipeline.run_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # if it runs a supervisord after all, it goes with its group
    )
    try:
        stdout, stderr = make.communicate(timeout=MAKE_S)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
    result = subprocess.CompletedProcess(make.args, make.returncode, stdout, stderr)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("zmqstream:")]
    assert ours == [
        f"zmqstream: another broker (pid {pipeline.broker.pid}) owns run folder {pipeline.run_dir}: one "
        "pipeline per folder. Stop that pipeline first, or give this one another folder "
        "(--run-dir or ZMQSTREAM_RUN_DIR)"
    ]
    assert "supervisord" not in result.stdout + result.stderr.replace("zmqstream:", "")


def test_workers_given_the_same_pipeline_name_join_across_run_folders() -> None:
    """Across hosts the run folders differ: the same --pipeline on every process joins them."""
    folder = tempfile.mkdtemp(prefix="zs", dir="/tmp")
    pipeline = Pipeline(0, ["--pipeline", "site-a"])
    try:
        worker = subprocess.Popen(
            [
                *GENERATOR,
                "--worker-id",
                "far",
                "--pipeline",
                "site-a",
                "--control-endpoint",
                pipeline.control_endpoint,
            ],
            cwd=ROOT,
            env={**pipeline.env, "ZMQSTREAM_RUN_DIR": folder},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pipeline.workers.append(worker)
        deadline = time.monotonic() + EXIT_S
        while "far" not in workers(pipeline):
            assert time.monotonic() < deadline, "the worker of the same pipeline did not join"
            time.sleep(0.1)
    finally:
        pipeline.close()
        os.rmdir(folder)


def test_a_second_recorder_on_the_broker_does_not_move_the_plugins(pipeline: Pipeline) -> None:
    """Across hosts the folder lock cannot see it: the broker keeps telling the first live one."""
    with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as stray, ctx.socket(zmq.DEALER) as plugin:
        for sock in (stray, plugin):
            sock.linger = 0
            sock.connect(pipeline.control_endpoint)
        elsewhere = {"publish": "tcp://192.0.2.1:5573", "history": "tcp://192.0.2.1:5574"}
        for _ in range(3):
            beat = protocol.WorkerHeartbeat("recorder2", {}, role=protocol.RECORDER, endpoints=elsewhere)
            stray.send_multipart(protocol.encode(beat))
            plugin.send_multipart(protocol.encode(protocol.PluginHeartbeat("p-test", {})))
            assert plugin.poll(5000)
            welcome = protocol.expect(plugin.recv_multipart(), protocol.Welcome)
            assert welcome.recorder["history"] == f"ipc://{pipeline.run_dir}/history"
            time.sleep(0.1)
    assert (
        "a second recorder joined: plugins keep using the first"
        in (pipeline.run_dir / "broker.log").read_text()
    )
