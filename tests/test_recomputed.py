"""Recomputed rows: the values the workers publish, for any tick range, strided without smoothing."""

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from services.common.channels import ChannelSpec
from services.common.errors import InvalidChannel
from services.common.protocol import floats
from services.common.waveforms import BUILTINS, registry
from services.generator.ticker import Scheduler
from services.plugin import bulk, recomputed


def published(spec: ChannelSpec, start_ns: int, until_ns: int) -> tuple[list[int], list[list[float]]]:
    """What a worker's scheduler publishes for `spec` between two instants."""
    times: list[int] = []
    columns: list[list[float]] = [[] for _ in range(spec.series)]

    def publish(channel: str, first_tick: int, epoch: int, c: list[bytes]) -> None:
        values = [floats(column) for column in c]
        times.extend(spec.tick_times(range(first_tick, first_tick + len(values[0]))))
        for target, column in zip(columns, values, strict=True):
            target.extend(column)

    def failed(channel: str, error: Exception) -> None:
        raise AssertionError(f"{channel}: {error!r}")

    scheduler = Scheduler(publish, failed, publish_interval_ns=1_000_000, max_rows=1000)
    scheduler.start(spec, registry()[spec.generator], start_ns, epoch=1)
    now = start_ns
    while now < until_ns:
        now += 7_000_000  # the worker wakes late and uneven: the values must not care
        scheduler.run_due(min(now, until_ns))
    return times, columns


@pytest.mark.parametrize("generator", sorted(BUILTINS))
def test_history_equals_what_a_worker_published(generator: str) -> None:
    spec = ChannelSpec(-5, 5, 2.5, generator, 3)
    start = 1_795_000_000_000_000_000
    times, columns = published(spec, start, start + 500_000_000)
    rows = recomputed.values(spec, recomputed.ticks_between(spec, times[0], times[-1]))
    assert rows.times_ns == times
    assert rows.columns == columns  # exactly, not approximately


@given(
    st.floats(-1e12, 1e12),
    st.floats(0, 1e12),
    st.integers(1, 4),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**50),
    st.integers(bulk.MIN_TICKS, 3000),
    st.integers(1, 50),
)
@example(0.0, 1.0, 1, 7, 2**50, bulk.MIN_TICKS, 1)  # times past int64
def test_bulk_uniform_is_bit_for_bit_the_workers_uniform(
    lower: float, width: float, series: int, seed: int, start: int, length: int, step: int
) -> None:
    spec = ChannelSpec(lower, lower + width, 10, "uniform", series)
    ticks = range(start, start + length * step, step)
    assert bulk.handles(spec, ticks) == (spec.tick_time(ticks[-1]) < 2**63), "int64 holds their times"
    if not bulk.handles(spec, ticks):
        return
    assert bulk.columns(spec, seed, ticks) == BUILTINS["uniform"].generate(spec, seed, ticks)
    assert bulk.times(spec, ticks) == spec.tick_times(ticks)


def test_ticks_between_is_inclusive_at_both_ends_and_empty_when_reversed() -> None:
    spec = ChannelSpec(0, 1, 100)
    one, three = spec.tick_time(1), spec.tick_time(3)
    assert recomputed.ticks_between(spec, one, three) == range(1, 4)
    assert recomputed.ticks_between(spec, one + 1, three - 1) == range(2, 3)
    assert len(recomputed.ticks_between(spec, three, one)) == 0


@given(st.integers(0, 10**12), st.integers(0, 10**6), st.integers(1, 5000))
def test_strided_keeps_at_most_max_points_aligned_to_the_stride(
    start: int, length: int, max_points: int
) -> None:
    ticks = range(start, start + length)
    kept = recomputed.strided(ticks, max_points)
    assert len(kept) <= max_points
    assert all(k in ticks for k in (kept[:1] or []))
    assert not kept or kept[-1] in ticks
    if length <= max_points:
        assert kept == ticks
    else:
        assert kept.step >= 2
        assert kept.start % kept.step == 0


def test_strided_is_stable_as_the_range_slides() -> None:
    a = set(recomputed.strided(range(1000, 11_000), 100))
    b = set(recomputed.strided(range(1037, 11_037), 100))
    assert len(a & b) >= 98


def test_an_unknown_generator_is_refused_with_the_known_ones() -> None:
    with pytest.raises(InvalidChannel, match="unknown generator 'nope'; known: uniform, random_walk, sine"):
        recomputed.values(ChannelSpec(0, 1, 10, "nope"), range(3))


class Broken:
    description = "raises"

    def generate(self, spec: ChannelSpec, seed: int, ticks: range) -> list[list[float]]:
        raise ZeroDivisionError("boom")


class Short:
    description = "one value short"

    def generate(self, spec: ChannelSpec, seed: int, ticks: range) -> list[list[float]]:
        return [[0.0] * (len(ticks) - 1)]


class Words:
    description = "not numbers"

    def generate(self, spec: ChannelSpec, seed: int, ticks: range) -> list[list[float]]:
        return [["x"] * len(ticks)]  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("generator", "message"),
    [
        (Broken(), "failed: ZeroDivisionError"),
        (Short(), "must return 1 lists of 3"),
        (Words(), "not a number"),
    ],
)
def test_a_misbehaving_generator_is_a_history_error(
    monkeypatch: pytest.MonkeyPatch, generator: object, message: str
) -> None:
    monkeypatch.setattr(recomputed, "registry", lambda: {"custom": generator})
    with pytest.raises(recomputed.RecomputeError, match=message):
        recomputed.values(ChannelSpec(0, 1, 10, "custom"), range(3))
