"""The worker's deadline scheduler, driven with explicit `now_ns` values and a recording publish."""

from dataclasses import dataclass, field

import pytest

from services.common.channels import ChannelSpec
from services.generator.ticker import Scheduler
from services.generator.waveforms import BUILTINS, Generator, channel_seed

MS = 1_000_000
UNIFORM = BUILTINS["uniform"]


@dataclass
class Recorder:
    """What a Scheduler published and which channels failed, in order."""

    messages: list[tuple[str, list[int], list[list[float]]]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def publish(self, channel: str, times_ns: list[int], columns: list[list[float]]) -> None:
        self.messages.append((channel, times_ns, columns))

    def failed(self, channel: str, error: Exception) -> None:
        self.failures.append((channel, str(error)))

    def times(self, channel: str | None = None) -> list[int]:
        return [t for c, times, _ in self.messages if channel in (None, c) for t in times]

    def batch_sizes(self) -> list[int]:
        return [len(times) for _, times, _ in self.messages]


def scheduler(recorder: Recorder, publish_interval_ns: int = MS, max_rows: int = 1000) -> Scheduler:
    return Scheduler(
        recorder.publish, recorder.failed, publish_interval_ns=publish_interval_ns, max_rows=max_rows
    )


def run_until(s: Scheduler, end_ns: int) -> None:
    """Wake exactly at each deadline up to `end_ns`, as a punctual worker would."""
    while (deadline := s.next_deadline()) is not None and deadline <= end_ns:
        s.run_due(deadline)


def test_ticks_fall_on_the_grid_and_carry_their_grid_time() -> None:
    rec = Recorder()
    s = scheduler(rec)
    spec = ChannelSpec(10, 20, 100)
    s.start(spec, UNIFORM, now_ns=1_000 * MS + 3)
    assert s.next_deadline() == 1_100 * MS, "the first tick strictly after now, on the grid"
    s.run_due(1_100 * MS + 250_000)  # woke a quarter of a millisecond late
    s.run_due(1_200 * MS + 7)
    s.run_due(1_250 * MS)  # nothing due
    assert rec.times() == [1_100 * MS, 1_200 * MS]
    assert [c for c, _, _ in rec.messages] == [spec.path, spec.path]
    expected = UNIFORM.generate(spec, channel_seed(spec.path), range(11, 13))
    assert [column for _, _, columns in rec.messages for column in columns[0]] == expected[0]
    assert all(10 <= v <= 20 for v in expected[0])
    assert s.lateness.worst_ns == 250_000


def test_a_start_exactly_on_a_tick_waits_for_the_next_one() -> None:
    rec = Recorder()
    s = scheduler(rec)
    s.start(ChannelSpec(0, 1, 100), UNIFORM, now_ns=500 * MS)
    assert s.next_deadline() == 600 * MS


def test_fractional_ticks_stay_exact() -> None:
    rec = Recorder()
    s = scheduler(rec, publish_interval_ns=MS // 4)
    s.start(ChannelSpec(0, 1, 0.25), UNIFORM, now_ns=0)
    run_until(s, 5 * MS)
    assert rec.times() == [k * 250_000 for k in range(1, 21)]


def test_channels_faster_than_the_publish_interval_send_batches() -> None:
    rec = Recorder()
    s = scheduler(rec, publish_interval_ns=MS)
    s.start(ChannelSpec(0, 1, 0.1), BUILTINS["sine"], now_ns=0)  # 10,000 ticks/s
    run_until(s, 20 * MS)
    times = rec.times()
    assert times == [k * 100_000 for k in range(1, len(times) + 1)], "every tick once, in order"
    assert times[-1] > 19 * MS, "no tick waits longer than one publish interval"
    assert len(rec.messages) <= 21, "about one message per publish interval"
    assert min(rec.batch_sizes()[1:]) >= 9


def test_a_late_scheduler_catches_up_in_one_call_without_skipping() -> None:
    rec = Recorder()
    s = scheduler(rec, max_rows=30)
    s.start(ChannelSpec(0, 1, 10), UNIFORM, now_ns=0)
    sent = s.run_due(1_000 * MS + 5)  # a second asleep: 100 ticks due
    assert sent == 4
    assert rec.batch_sizes() == [30, 30, 30, 10], "max_rows caps every message"
    assert rec.times() == [k * 10 * MS for k in range(1, 101)]
    assert s.next_deadline() == 1_010 * MS, "back on the grid afterwards"


def test_max_rows_caps_a_fast_channel_too() -> None:
    rec = Recorder()
    s = scheduler(rec, publish_interval_ns=5 * MS, max_rows=7)
    s.start(ChannelSpec(0, 1, 0.5), UNIFORM, now_ns=0)
    run_until(s, 50 * MS)
    assert max(rec.batch_sizes()) == 7
    assert rec.times() == [k * MS // 2 for k in range(1, len(rec.times()) + 1)]


def test_channels_are_served_in_deadline_order() -> None:
    rec = Recorder()
    s = scheduler(rec)
    slow, fast = ChannelSpec(0, 1, 30), ChannelSpec(0, 1, 20)
    s.start(slow, UNIFORM, now_ns=0)
    s.start(fast, UNIFORM, now_ns=0)
    run_until(s, 60 * MS)
    assert [(c, t[0] // MS) for c, t, _ in rec.messages] == [
        (fast.path, 20),
        (slow.path, 30),
        (fast.path, 40),
        (slow.path, 60),
        (fast.path, 60),
    ]


def test_start_is_idempotent_and_stop_forgets_the_channel() -> None:
    rec = Recorder()
    s = scheduler(rec)
    spec = ChannelSpec(0, 1, 10)
    s.start(spec, UNIFORM, 0)
    s.start(spec, UNIFORM, 5 * MS)
    assert s.channels == [spec.path]
    s.run_due(10 * MS)
    assert rec.times() == [10 * MS], "one ticker, not two"
    s.stop(spec.path)
    s.stop("custom-never-started")
    assert spec.path not in s
    assert s.next_deadline() is None
    assert s.run_due(100 * MS) == 0


def test_a_restarted_channel_resumes_after_the_restart_without_replaying() -> None:
    rec = Recorder()
    s = scheduler(rec)
    spec = ChannelSpec(0, 1, 10)
    s.start(spec, UNIFORM, 0)
    run_until(s, 30 * MS)
    s.stop(spec.path)
    s.start(spec, UNIFORM, 55 * MS)
    run_until(s, 80 * MS)
    assert rec.times() == [10 * MS, 20 * MS, 30 * MS, 60 * MS, 70 * MS, 80 * MS]


@dataclass
class Faulty:
    """A user's generator gone wrong: it raises, or returns columns of the wrong shape."""

    mode: str
    description: str = "broken on purpose"

    def generate(self, spec: ChannelSpec, seed: int, ticks: range) -> list[list[float]]:
        if self.mode == "raise":
            raise RuntimeError("boom")
        return [[0.5] * (len(ticks) + 1)]


@pytest.mark.parametrize(
    ("mode", "error"), [("raise", "boom"), ("shape", "generate() must return 1 lists of 1 values")]
)
def test_a_broken_generator_stops_its_channel_not_the_scheduler(mode: str, error: str) -> None:
    rec = Recorder()
    s = scheduler(rec)
    broken: Generator = Faulty(mode)
    bad, good = ChannelSpec(0, 1, 10, "custom"), ChannelSpec(0, 1, 10)
    s.start(bad, broken, 0)
    s.start(good, UNIFORM, 0)
    run_until(s, 20 * MS)
    assert rec.failures == [(bad.path, error)]
    assert {c for c, _, _ in rec.messages} == {good.path}
    assert s.channels == [good.path]
    assert rec.times(good.path) == [10 * MS, 20 * MS]


def test_lateness_counts_ticks_past_the_budget() -> None:
    rec = Recorder()
    s = Scheduler(rec.publish, rec.failed, publish_interval_ns=MS, max_rows=10, lateness_budget_ns=MS)
    s.start(ChannelSpec(0, 1, 10), UNIFORM, 0)
    s.run_due(10 * MS + MS)  # exactly the budget: on time
    s.run_due(20 * MS + 3 * MS)
    assert (s.lateness.late, s.lateness.worst_ns) == (1, 3 * MS)
