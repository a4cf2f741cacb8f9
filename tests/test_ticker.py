"""The deadline-heap scheduler, driven with explicit clock values."""

from services.common.channels import ChannelSpec
from services.generator.ticker import Scheduler
from services.generator.waveforms import BUILTINS, Generator

MS = 1_000_000
Published = list[tuple[str, list[int], list[list[float]]]]


def scheduler(published: Published, failures: list[str] | None = None, max_rows: int = 1000) -> Scheduler:
    def failed(channel: str, error: Exception) -> None:
        (failures if failures is not None else []).append(f"{channel}: {error}")

    return Scheduler(
        lambda c, t, v: published.append((c, t, v)), failed, publish_interval_ns=MS, max_rows=max_rows
    )


def test_ticks_land_on_the_grid_and_carry_their_own_time() -> None:
    published: Published = []
    s = scheduler(published)
    spec = ChannelSpec(0, 1, 100)
    s.start(spec, BUILTINS["uniform"], now_ns=1_000 * MS + 3)
    assert s.next_deadline() == 1_100 * MS
    s.run_due(1_100 * MS + 250_000)  # a quarter of a millisecond late
    s.run_due(1_200 * MS)
    assert [t for _, times, _ in published for t in times] == [1_100 * MS, 1_200 * MS]
    assert s.lateness.worst_ns == 250_000


def test_fast_channels_send_their_ticks_in_batches() -> None:
    published: Published = []
    s = scheduler(published)
    spec = ChannelSpec(0, 1, 0.1)  # 10,000 ticks/s, published once per ms
    s.start(spec, BUILTINS["sine"], now_ns=0)
    now = 0
    while now < 10 * MS:
        now = s.next_deadline() or now
        s.run_due(now)
    times = [t for _, batch, _ in published for t in batch]
    assert times == [k * 100_000 for k in range(1, len(times) + 1)], "a tick was skipped or repeated"
    assert len(published) <= 11
    assert all(len(batch) >= 9 for _, batch, _ in published[1:])


def test_a_late_scheduler_catches_up_without_skipping() -> None:
    published: Published = []
    s = scheduler(published, max_rows=5)
    s.start(ChannelSpec(0, 1, 10), BUILTINS["uniform"], now_ns=0)
    s.run_due(123 * MS)  # woke 113 ms late: 12 ticks due, 5 per message at most
    while (deadline := s.next_deadline()) is not None and deadline <= 123 * MS:
        s.run_due(123 * MS)
    times = [t for _, batch, _ in published for t in batch]
    assert times == [k * 10 * MS for k in range(1, 13)]
    assert max(len(batch) for _, batch, _ in published) == 5


def test_stop_forgets_a_channel_and_start_is_idempotent() -> None:
    published: Published = []
    s = scheduler(published)
    spec = ChannelSpec(0, 1, 10)
    s.start(spec, BUILTINS["uniform"], 0)
    s.start(spec, BUILTINS["uniform"], 5 * MS)
    s.run_due(10 * MS)
    assert len(published) == 1
    s.stop(spec.path)
    assert s.next_deadline() is None
    s.run_due(100 * MS)
    assert len(published) == 1


class Broken:
    description = "raises"

    def generate(self, spec: ChannelSpec, seed: int, ticks: range) -> list[list[float]]:
        raise RuntimeError("boom")


def test_a_broken_generator_stops_its_channel_not_the_scheduler() -> None:
    published: Published = []
    failures: list[str] = []
    s = scheduler(published, failures)
    broken: Generator = Broken()
    s.start(ChannelSpec(0, 1, 10, "custom"), broken, 0)
    s.start(ChannelSpec(0, 1, 10), BUILTINS["uniform"], 0)
    s.run_due(10 * MS)
    assert failures == ["custom-0-1-10-custom-1: boom"]
    assert [c for c, _, _ in published] == ["custom-0-1-10"]
    assert s.channels == ["custom-0-1-10"]
