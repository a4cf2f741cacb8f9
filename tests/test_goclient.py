"""bench's Go client (bench/goclient): it launches the plugin as Grafana 12.4+ does and reads
its streams in order, and bench says which client it used when Go is absent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the bench package sits at the repo root

from bench import goclient
from bench.chaos import burst as bursts
from bench.chaos.load import display
from services.hostemu.localpipeline import Pipeline, wait_for_workers

VARIANT = "custom-0-1-1-uniform-10"


@pytest.fixture(scope="module")
def binary() -> Path:
    built = goclient.client()
    if built.binary is None:
        pytest.skip(built.why_not)
    return built.binary


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in raw if b"=" in entry)


def test_plugin_gets_grafanas_environment_and_streams_arrive_in_order(binary: Path) -> None:
    pipeline = Pipeline(1)
    try:
        args = ["-hold", "1s", "-n", "3", "-paths", "custom-0-{i}-50", "-warmup", "0.2s", "-seconds", "1s"]
        running = goclient.launch_on(binary, pipeline, args, {})
        pid = int(running.wait_for(goclient.PLUGIN_UP).rsplit(" ", 1)[1])
        env = environ(pid)  # during -hold: the plugin is up, no stream yet
        figures = running.finish()
    finally:
        pipeline.close()
    assert env["grafana_plugin_type"] == "datasource"
    assert env["GF_PLUGIN_RUN_DIR"] == str(pipeline.run_dir)
    assert env["PLUGIN_PROTOCOL_VERSIONS"] == "2"
    assert "PATH" not in env  # none of the host's own (Grafana 12.4+)
    assert "HOME" not in env
    assert figures["plugin_pid"] == pid
    assert figures["failed"] == {}
    assert figures["silent"] == 0
    assert figures["out_of_order"] == 0
    assert figures["rows"] >= 3 * 10  # 1 s of three 50 ms channels, less the slack of a busy machine
    assert all(0 <= s < 20 for s in figures["first_packet_s"])


def test_a_dashboard_panel_s_first_row_is_the_subscribe_reply_s_when_it_has_one(binary: Path) -> None:
    """The panel has rows after its query's range as soon as SubscribeStream answers (Grafana
    hands the reply's data to the subscriber): with 1 s ticks RunStream's own first row only
    comes with the next tick, and counting that one made `bench dashboard` miss by a tick."""
    pipeline = Pipeline(1)
    try:
        args = ["-n", "4", "-paths", "custom-0-{i}-1000", "-tick-ms", "1000", "-query-hours", "1"]
        figures = goclient.launch_on(binary, pipeline, [*args, "-wait", "10s"], {}).finish()
    finally:
        pipeline.close()
    assert figures["failed"] == {}
    shown, run_stream = figures["panel_first_row_s"], figures["first_live_row_s"]
    assert len(shown) == len(run_stream) == 4
    assert all(0 <= panel <= row for panel, row in zip(shown, run_stream, strict=True))
    assert any(panel < row for panel, row in zip(shown, run_stream, strict=True)), (shown, run_stream)


def test_a_hung_client_is_stopped_showing_where_its_main_goroutine_waits(binary: Path) -> None:
    """Twice in a day `bench many` waited for ever on a client whose goroutines all slept; the
    error it would have given showed only the tail of a dump, without the main goroutine."""
    running = goclient.Running(binary, ["-addr", "127.0.0.1:9", "-hold", "600s", "-n", "1"])
    with pytest.raises(RuntimeError, match="still running after 2 s") as raised:
        running.finish(timeout_s=2)
    assert "goroutine 1 [" in str(raised.value)
    assert "main.main" in str(raised.value)
    assert running.process.poll() is not None


def test_figures_larger_than_a_pipe_come_back_whatever_the_client_wrote_on_stderr(tmp_path: Path) -> None:
    """`bench many` waited for ever, twice in a day: `communicate` blocked reading the stderr the
    reader thread had emptied, while the client blocked writing its 0.5 MB of figures to a
    stdout no one read. Six of ten such clients hung before the fix."""
    client = tmp_path / "client"
    client.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "for i in range(2000):\n"
        "    print(f'zsbench-client: line {i}', file=sys.stderr, flush=True)\n"
        "json.dump({'first_packet_s': [0.25] * 100_000}, sys.stdout)\n"
    )
    client.chmod(0o755)
    for _ in range(5):
        figures = goclient.Running(client, []).finish(timeout_s=30)
        assert figures == {"first_packet_s": [0.25] * 100_000}


def test_without_go_bench_says_it_falls_back(tmp_path: Path) -> None:
    for tool in ("bash", "dirname"):  # what build.sh needs before it looks for Go
        found = shutil.which(tool)
        assert found is not None
        (tmp_path / tool).symlink_to(found)
    built = goclient.build({**os.environ, "PATH": str(tmp_path)})
    assert built.binary is None
    assert built.label.startswith("Python client: Go client not built (")
    assert (
        "go protoc protoc-gen-go protoc-gen-go-grpc not installed; apt-get install golang-go" in built.label
    )


def test_the_chaos_burst_counts_the_same_outcomes_in_go_as_in_its_python_fallback(
    binary: Path, tmp_path: Path
) -> None:
    """bench.chaos's burst of opens runs in the Go client where it is built (-burst): each path
    subscribed, run, its first packet awaited and read on; both clients' raw figures are judged
    alike (on main the Go client had no burst, and the burst took a core from the plugin)."""
    variants = [display(VARIANT, f"v{i}") for i in range(6)]  # 10,000 values/s each: 5 fit 55,000
    opened = [*variants, *(f"custom-0-{i}-100" for i in range(1, 5)), "custom-1-0-5"]
    listed = bursts.write(opened, tmp_path / "burst.paths")
    pipeline = Pipeline(1)
    host = pipeline.plugin({"max_values_per_s_per_datasource": "55000"})
    try:
        wait_for_workers(host, 1)
        counted = {}
        for client in (binary, None):
            done = subprocess.run(
                bursts.command(client, host.address, listed), capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stderr
            figures = orjson.loads(done.stdout)
            counted[figures["client"]] = bursts.outcome(opened, figures), bursts.timing(figures)
    finally:
        host.stop()
        pipeline.close()
    expected = {"plain_ok": 4, "plain_INVALID_ARGUMENT": 1, "variant_ok": 5, "variant_RESOURCE_EXHAUSTED": 1}
    assert {client: outcome for client, (outcome, _) in counted.items()} == {
        "Go, direct gRPC": expected,
        "Python, grpc.aio": expected,
    }
    for _, timing in counted.values():
        assert timing["unserved"] == 0
        assert 0 < timing["first_packet_median_s"] <= timing["last_first_packet_s"] < timing["took_s"]
