"""Admission control on real processes: one dashboard cannot starve the others."""

import contextlib
import threading
import time

import grpc
from support import Pipeline, plugin_of, streams_refused, suffix

from services.hostemu.host import Datasource, LiveStream
from services.plugin._proto import pluginv2_pb2 as pb

FLOOD = Datasource(uid="flood")
OTHER = Datasource(uid="other")
FLOOD_PATHS = [f"custom-{i}-{i + 1}-1-uniform-10" for i in range(100)]
"""10,000 values/s each: a tenth of the default channel allowance, twenty times the rate budget."""
WINDOW_S = 10.0


class Drain:
    """Reads a stream in a thread as Grafana does, keeping what it got and how it ended."""

    def __init__(self, stream: LiveStream) -> None:
        self.stream = stream
        self.packets = 0
        self.bytes = 0
        self.error: grpc.RpcError | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for packet in self.stream.call:
                self.packets += 1
                self.bytes += len(packet.data)
        except grpc.RpcError as exc:
            self.error = exc

    @property
    def settled(self) -> bool:
        return self.packets > 0 or self.error is not None


def settle(drains: list[Drain], seconds: float = 20) -> None:
    """Until every stream has either sent or been refused."""
    deadline = time.monotonic() + seconds
    while not all(drain.settled for drain in drains):
        assert time.monotonic() < deadline, "a stream neither ran nor was refused"
        time.sleep(0.05)


def read_for(stream: LiveStream, seconds: float) -> None:
    """Read a stream for `seconds`, as a panel keeps reading; its rows stay in `stream.frame`."""
    with contextlib.suppress(TimeoutError):
        stream.read_rows(1_000_000, timeout_s=seconds)


def test_a_dashboard_over_its_budget_is_refused_and_starves_no_one(pipeline: Pipeline) -> None:
    with plugin_of(pipeline) as host:
        flood = [Drain(host.run_stream(path, FLOOD)) for path in FLOOD_PATHS]
        settle(flood)
        refused = [drain.error for drain in flood if drain.error is not None]
        assert sum(drain.error is None for drain in flood) == 5, "50,000 values/s of 10,000 each"
        assert len(refused) == 95
        assert {error.code() for error in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        reason = str(refused[0].details())
        assert "datasource flood streams 50,000 values/s of its budget of 50,000" in reason
        assert "needs 10,000 more" in reason
        assert host.subscribe(FLOOD_PATHS[-1], FLOOD).status == pb.SubscribeStreamResponse.PERMISSION_DENIED
        assert host.subscribe(FLOOD_PATHS[0], FLOOD).status == pb.SubscribeStreamResponse.OK, "already runs"

        other = host.run_stream("custom-10-20-100", OTHER)
        other.read_rows(1)
        started_ns = time.time_ns()
        reader = threading.Thread(target=read_for, args=(other, WINDOW_S + 1), daemon=True)
        reader.start()
        health_s = []
        while reader.is_alive():
            asked = time.monotonic()
            assert host.check_health(timeout_s=5).status == pb.CheckHealthResponse.OK
            health_s.append(time.monotonic() - asked)
            time.sleep(0.2)
        in_window = [t for t in other.frame.times_ns if started_ns < t <= started_ns + WINDOW_S * 1e9]
        served = sorted(drain.bytes for drain in flood if drain.error is None)
        metrics = host.collect_metrics()
        for drain in flood:
            drain.stream.cancel()
        shutdown_s = host.stop()
    print(
        f"\n[figure] 100 streams of 10,000 values/s from one datasource: 95 refused; the other panel "
        f"got {len(in_window)}/100 rows, CheckHealth max {max(health_s) * 1000:.0f} ms, "
        f"Shutdown {shutdown_s:.2f} s"
    )
    assert len(in_window) >= 95
    assert served[0] > 0.8 * served[-1], f"the admitted streams were served unevenly: {served}"
    assert max(health_s) < 1.0
    assert streams_refused(metrics)[("run", "datasource_rate")] == 95
    assert streams_refused(metrics)[("subscribe", "datasource_rate")] == 1
    assert any("budget of 50,000" in str(entry.get("error")) for entry in host.logs_at("warn"))
    assert shutdown_s < 1.0
    assert host.process.returncode == 0


def test_display_variants_of_a_channel_count_against_the_budget(pipeline: Pipeline) -> None:
    """Each unit or alias of a channel is a stream of its own: 20 of one 10,000 values/s
    channel from one datasource get its budget's 5, not 20 streams at one channel's price."""
    variants = [FLOOD_PATHS[0] + suffix(b'{"unit":"u%d"}' % i) for i in range(20)]
    with plugin_of(pipeline) as host:
        drains = [Drain(host.run_stream(path, FLOOD)) for path in variants]
        settle(drains)
        running = [path for path, drain in zip(variants, drains, strict=True) if drain.error is None]
        refused = [drain.error for drain in drains if drain.error is not None]
        again = Drain(host.run_stream(running[0], FLOOD))  # one it runs already: admitted at no cost
        settle([again])
        again_refused = again.error
        subscribed = host.subscribe(FLOOD_PATHS[0] + suffix(b'{"unit":"other"}'), FLOOD).status
        metrics = host.collect_metrics()
        for drain in [*drains, again]:
            drain.stream.cancel()
        host.stop()
    assert len(running) == 5, "50,000 values/s of 10,000 each"
    assert {error.code() for error in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    reason = str(refused[0].details())
    assert "streams 50,000 values/s of its budget of 50,000" in reason
    assert "each unit or alias of a channel streams, and counts, on its own" in reason
    assert again_refused is None
    assert subscribed == pb.SubscribeStreamResponse.PERMISSION_DENIED
    assert streams_refused(metrics)[("run", "datasource_rate")] == 15
