"""The worker's deadline scheduler, driven with explicit `now_ns` values and a recording publish.

Tick k of a channel is due at `spec.tick_time(k)`: k intervals plus the channel's phase.
"""

from dataclasses import dataclass, field

import pytest

from services.common.channels import UNCHECKED, ChannelSpec, parse_path
from services.common.protocol import floats
from services.common.waveforms import BUILTINS, Generator, channel_seed
from services.generator.ticker import Scheduler

MS = 1_000_000
UNIFORM = BUILTINS["uniform"]


@dataclass
class Recorder:
    """What a Scheduler published and which channels failed, in order; also its clock."""

    messages: list[tuple[str, list[int], list[list[float]]]] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    now_ns: int = 0

    def publish(self, channel: str, first_tick: int, epoch: int, columns: list[bytes]) -> None:
        values = [floats(column) for column in columns]
        times = parse_path(channel, UNCHECKED).tick_times(range(first_tick, first_tick + len(values[0])))
        self.messages.append((channel, times, values))
        self.epochs.append(epoch)

    def failed(self, channel: str, error: Exception) -> None:
        self.failures.append((channel, str(error)))

    def clock(self) -> int:
        return self.now_ns

    def times(self, channel: str | None = None) -> list[int]:
        return [t for c, times, _ in self.messages if channel in (None, c) for t in times]

    def batch_sizes(self) -> list[int]:
        return [len(times) for _, times, _ in self.messages]


def scheduler(recorder: Recorder, publish_interval_ns: int = MS, max_rows: int = 1000) -> Scheduler:
    return Scheduler(
        recorder.publish,
        recorder.failed,
        publish_interval_ns=publish_interval_ns,
        max_rows=max_rows,
        clock=recorder.clock,
    )


def run_at(rec: Recorder, s: Scheduler, now_ns: int) -> int:
    rec.now_ns = now_ns
    return s.run_due(now_ns)


def run_until(rec: Recorder, s: Scheduler, end_ns: int) -> None:
    """Wake exactly at each deadline up to `end_ns`, as a punctual worker would."""
    while (deadline := s.next_deadline()) is not None and deadline <= end_ns:
        run_at(rec, s, deadline)


def ticks(spec: ChannelSpec, first: int, last: int) -> list[int]:
    return [spec.tick_time(k) for k in range(first, last + 1)]


def test_ticks_fall_on_the_channel_s_grid_and_carry_their_due_time() -> None:
    rec = Recorder()
    s = scheduler(rec)
    spec = ChannelSpec(10, 20, 100)
    assert 0 < spec.phase_ns < spec.tick_ns
    assert spec.phase_ns % 1000 == 0, "a whole number of microseconds"
    s.start(spec, UNIFORM, now_ns=spec.tick_time(10) + 3, epoch=1)
    assert s.next_deadline() == spec.tick_time(11), "the first tick strictly after now"
    run_at(rec, s, spec.tick_time(11) + 250_000)  # woke a quarter of a millisecond late
    run_at(rec, s, spec.tick_time(12) + 7)
    run_at(rec, s, spec.tick_time(12) + 50 * MS)  # nothing due
    assert rec.times() == ticks(spec, 11, 12)
    assert [c for c, _, _ in rec.messages] == [spec.path, spec.path]
    expected = UNIFORM.generate(spec, channel_seed(spec.path), range(11, 13))
    assert [column for _, _, columns in rec.messages for column in columns[0]] == expected[0]
    assert all(10 <= v <= 20 for v in expected[0])
    assert s.lateness.worst_ns == 250_000


def test_channels_of_one_interval_tick_at_different_instants() -> None:
    phases = {ChannelSpec(i, i + 1, 100).phase_ns for i in range(1000)}
    assert len(phases) > 990, "spread over the interval, not bunched"
    assert max(phases) - min(phases) > 90 * MS
    assert ChannelSpec(0, 1, 100).phase_ns == ChannelSpec(0.0, 1.0, 100.0).phase_ns, (
        "a spec's, not a spelling's"
    )


def test_a_start_exactly_on_a_tick_waits_for_the_next_one() -> None:
    rec = Recorder()
    s = scheduler(rec)
    spec = ChannelSpec(0, 1, 100)
    s.start(spec, UNIFORM, now_ns=spec.tick_time(5), epoch=1)
    assert s.next_deadline() == spec.tick_time(6)


def test_fractional_ticks_stay_exact() -> None:
    rec = Recorder()
    s = scheduler(rec, publish_interval_ns=MS // 4)
    spec = ChannelSpec(0, 1, 0.25)
    s.start(spec, UNIFORM, now_ns=spec.tick_time(0), epoch=1)
    run_until(rec, s, spec.tick_time(20))
    assert rec.times() == ticks(spec, 1, 20)


def test_a_channel_as_fast_as_the_publish_interval_sends_each_tick_on_time() -> None:
    rec = Recorder()
    s = scheduler(rec, publish_interval_ns=MS)
    spec = ChannelSpec(0, 1, 1)
    s.start(spec, UNIFORM, now_ns=spec.tick_time(0), epoch=1)
    for k in range(1, 50):  # each wake-up a little late: the delay must not build up
        run_at(rec, s, spec.tick_time(k) + 200_000)
        assert s.next_deadline() == spec.tick_time(k + 1)
    assert rec.batch_sizes() == [1] * 49


def test_channels_faster_than_the_publish_interval_send_batches() -> None:
    rec = Recorder()
    s = scheduler(rec, publish_interval_ns=MS)
    spec = ChannelSpec(0, 1, 0.1)  # 10,000 ticks/s
    s.start(spec, BUILTINS["sine"], now_ns=0, epoch=1)
    run_until(rec, s, 20 * MS)
    times = rec.times()
    assert times == ticks(spec, 0, len(times) - 1), "every tick once, in order"
    assert times[-1] > 19 * MS, "no tick waits longer than one publish interval"
    assert len(rec.messages) <= 21, "about one message per publish interval"
    assert min(rec.batch_sizes()[1:]) >= 9


def test_a_late_scheduler_catches_up_in_one_call_without_skipping() -> None:
    rec = Recorder()
    s = scheduler(rec, max_rows=30)
    spec = ChannelSpec(0, 1, 10)
    s.start(spec, UNIFORM, now_ns=spec.tick_time(0), epoch=1)
    sent = run_at(rec, s, spec.tick_time(100) + 5)  # a second asleep: 100 ticks due
    assert sent == 4
    assert rec.batch_sizes() == [30, 30, 30, 10], "max_rows caps every message"
    assert rec.times() == ticks(spec, 1, 100)
    assert s.next_deadline() == spec.tick_time(101), "back on the grid afterwards"


def test_max_rows_caps_a_fast_channel_too() -> None:
    rec = Recorder()
    s = scheduler(rec, publish_interval_ns=5 * MS, max_rows=7)
    spec = ChannelSpec(0, 1, 0.5)
    s.start(spec, UNIFORM, now_ns=0, epoch=1)
    run_until(rec, s, 50 * MS)
    assert max(rec.batch_sizes()) == 7
    assert rec.times() == ticks(spec, 0, len(rec.times()) - 1)


def test_channels_are_served_in_deadline_order() -> None:
    rec = Recorder()
    s = scheduler(rec)
    slow, fast = ChannelSpec(0, 1, 30), ChannelSpec(0, 1, 20)
    s.start(slow, UNIFORM, now_ns=0, epoch=1)
    s.start(fast, UNIFORM, now_ns=0, epoch=1)
    run_until(rec, s, 100 * MS)
    sent = [(c, t[0]) for c, t, _ in rec.messages]
    assert sent == sorted(sent, key=lambda message: message[1])
    assert [t for c, t in sent if c == slow.path] == ticks(slow, 0, slow.last_tick(100 * MS))
    assert [t for c, t in sent if c == fast.path] == ticks(fast, 0, fast.last_tick(100 * MS))


def test_start_is_idempotent_and_stop_forgets_the_channel() -> None:
    rec = Recorder()
    s = scheduler(rec)
    spec = ChannelSpec(0, 1, 10)
    s.start(spec, UNIFORM, spec.tick_time(0), epoch=1)
    s.start(spec, UNIFORM, spec.tick_time(0) + 5 * MS, epoch=1)
    assert s.channels == {spec.path: 1}
    run_at(rec, s, spec.tick_time(1))
    assert rec.times() == ticks(spec, 1, 1), "one ticker, not two"
    s.stop(spec.path)
    s.stop("custom-never-started")
    assert spec.path not in s
    assert s.next_deadline() is None
    assert run_at(rec, s, spec.tick_time(10)) == 0


def test_a_restarted_channel_resumes_after_the_restart_without_replaying() -> None:
    rec = Recorder()
    s = scheduler(rec)
    spec = ChannelSpec(0, 1, 10)
    s.start(spec, UNIFORM, spec.tick_time(0), epoch=1)
    run_until(rec, s, spec.tick_time(3))
    s.stop(spec.path)
    s.start(spec, UNIFORM, spec.tick_time(5) + 5 * MS, epoch=1)
    run_until(rec, s, spec.tick_time(8))
    assert rec.times() == ticks(spec, 1, 3) + ticks(spec, 6, 8)


@dataclass
class Faulty:
    """A user's generator gone wrong: it raises, or returns columns of the wrong shape."""

    mode: str
    description: str = "broken on purpose"

    def generate(self, spec: ChannelSpec, seed: int, ticks: range) -> list[list[float]]:
        if self.mode == "raise":
            raise RuntimeError("boom")
        if self.mode == "text":
            return [["0.5"] * len(ticks)]  # type: ignore[list-item]
        return [[0.5] * (len(ticks) + 1)]


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("raise", "boom"),
        ("shape", "generate() must return 1 lists of 1 values"),
        ("text", "must be real number, not str"),
    ],
)
def test_a_broken_generator_stops_its_channel_not_the_scheduler(mode: str, error: str) -> None:
    rec = Recorder()
    s = scheduler(rec)
    broken: Generator = Faulty(mode)
    bad, good = ChannelSpec(0, 1, 10, "custom"), ChannelSpec(0, 1, 10)
    s.start(bad, broken, 0, epoch=1)
    s.start(good, UNIFORM, 0, epoch=1)
    run_until(rec, s, 20 * MS)
    assert rec.failures == [(bad.path, error)]
    assert {c for c, _, _ in rec.messages} == {good.path}
    assert s.channels == {good.path: 1}
    assert rec.times(good.path) == ticks(good, 0, good.last_tick(20 * MS))


def test_lateness_is_read_as_each_ticker_runs_and_counts_ticks_past_the_budget() -> None:
    rec = Recorder()
    s = Scheduler(
        rec.publish, rec.failed, publish_interval_ns=MS, max_rows=10, lateness_budget_ns=MS, clock=rec.clock
    )
    spec = ChannelSpec(0, 1, 10)
    s.start(spec, UNIFORM, spec.tick_time(0), epoch=1)
    run_at(rec, s, spec.tick_time(1) + MS)  # exactly the budget: on time
    run_at(rec, s, spec.tick_time(2) + 3 * MS)
    assert (s.lateness.late, s.lateness.worst_ns) == (1, 3 * MS)
    rec.now_ns = spec.tick_time(3) + 5 * MS  # the clock moved on while the burst ran
    s.run_due(spec.tick_time(3))
    assert (s.lateness.late, s.lateness.worst_ns) == (2, 5 * MS)


@dataclass
class Slow:
    """A generator that costs `cost_ns` of the recorder's clock per call."""

    rec: Recorder
    cost_ns: int
    description: str = "slow on purpose"

    def generate(self, spec: ChannelSpec, seed: int, ticks: range) -> list[list[float]]:
        self.rec.now_ns += self.cost_ns
        return [[0.5] * len(ticks)]


def test_an_overloaded_pass_stops_at_its_budget_and_the_next_one_carries_on() -> None:
    rec = Recorder()
    s = Scheduler(
        rec.publish, rec.failed, publish_interval_ns=MS, max_rows=10, pass_budget_ns=5 * MS, clock=rec.clock
    )
    specs = [ChannelSpec(i, i + 1, 100) for i in range(20)]
    for spec in specs:
        s.start(spec, Slow(rec, 2 * MS), 0, epoch=1)
    end = max(spec.tick_time(0) for spec in specs)
    assert run_at(rec, s, end) == 3, "5 ms of budget, 2 ms per channel: the third one ends the pass"
    passes = 1
    while (deadline := s.next_deadline()) is not None and deadline <= end:
        run_at(rec, s, end)
        passes += 1
    assert passes == 7
    assert sorted(c for c, _, _ in rec.messages) == sorted(spec.path for spec in specs), (
        "each once, none lost"
    )


def test_rows_carry_the_epoch_of_their_placement_and_a_newer_one_is_taken_on() -> None:
    rec = Recorder()
    s = scheduler(rec)
    spec = ChannelSpec(0, 1, 10)
    s.start(spec, UNIFORM, spec.tick_time(0), epoch=4)
    run_until(rec, s, spec.tick_time(2))
    assert set(rec.epochs) == {4}
    s.start(spec, UNIFORM, spec.tick_time(2), epoch=3)
    assert s.channels == {spec.path: 4}, "an older placement changes nothing"
    assert s.advance_epoch(spec.path, 9)
    run_until(rec, s, spec.tick_time(4))
    assert rec.epochs[-1] == 9
    assert rec.times() == ticks(spec, 1, 4), "the ticker went on without a repeat or a gap"


def test_a_stop_for_an_older_placement_leaves_a_newer_one_running() -> None:
    rec = Recorder()
    s = scheduler(rec)
    spec = ChannelSpec(0, 1, 10)
    s.start(spec, UNIFORM, 0, epoch=5)
    assert not s.stop(spec.path, 4)
    assert spec.path in s
    assert s.stop(spec.path, 5)
    assert spec.path not in s
