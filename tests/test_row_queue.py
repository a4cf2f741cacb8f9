"""A stream's RowQueue: ticks of several series queued as one bytes object each, taken strictly increasing."""

from __future__ import annotations

import asyncio

from services.common import protocol
from services.plugin.queues import RowQueue

SERIES = 2


def ticks(first: int, count: int) -> bytes:
    """Values of ticks first… as a Rows payload carries them: series 0 is the tick, series 1 its negative."""
    numbers = [float(tick) for tick in range(first, first + count)]
    return protocol.float_bytes(numbers) + protocol.float_bytes([-n for n in numbers])


def rows(segment: tuple[int, bytes]) -> list[tuple[int, list[float]]]:
    """A taken segment as (tick, values of each series) rows."""
    first, values = segment
    columns = [protocol.floats(column) for column in protocol.split_columns(values, SERIES)]
    return [(first + i, [column[i] for column in columns]) for i in range(len(columns[0]))]


def take(queue: RowQueue, max_rows: int, after_tick: int) -> tuple[list[list[tuple[int, list[float]]]], int]:
    taken = asyncio.run(queue.take(max_rows, after_tick))
    return [rows(segment) for segment in taken.segments], taken.repeated


def test_consecutive_batches_are_taken_as_one_segment_series_after_series() -> None:
    queue = RowQueue(1 << 20, series=SERIES)
    for tick in (5, 6, 7):
        queue.put(tick, ticks(tick, 1))
    queue.put(8, ticks(8, 2))
    segments, repeated = take(queue, 100, 4)
    assert segments == [[(t, [t, -t]) for t in range(5, 10)]]
    assert repeated == 0
    assert queue.size_bytes == 0
    assert not queue.batches


def test_ticks_sent_already_are_left_out_and_the_rest_waits_past_max_rows() -> None:
    queue = RowQueue(1 << 20, series=SERIES)
    queue.put(5, ticks(5, 2))
    queue.put(3, ticks(3, 2))  # a stale worker's: sent already
    queue.put(7, ticks(7, 1))
    queue.put(9, ticks(9, 3))  # after a gap; only its first tick fits in 4 rows
    segments, repeated = take(queue, 4, 4)
    assert segments == [[(5, [5, -5]), (6, [6, -6]), (7, [7, -7])], [(9, [9, -9])]]
    assert repeated == 2
    assert queue.size_bytes == 2 * SERIES * protocol.FLOAT_BYTES, "ticks 10 and 11 still queued"
    assert take(queue, 4, 9) == ([[(10, [10, -10]), (11, [11, -11])]], 0)


def test_a_batch_partly_sent_keeps_only_its_later_ticks() -> None:
    queue = RowQueue(1 << 20, series=SERIES)
    queue.put(3, ticks(3, 4))
    assert take(queue, 100, 4) == ([[(5, [5, -5]), (6, [6, -6])]], 2)


def test_drops_past_the_bound_count_rows_not_values() -> None:
    dropped: list[int] = []
    tick_bytes = SERIES * protocol.FLOAT_BYTES
    queue = RowQueue(3 * tick_bytes, dropped.append, series=SERIES)
    queue.put(1, ticks(1, 2))
    queue.put(3, ticks(3, 2))  # 4 ticks queued, 3 fit: the oldest batch goes
    assert dropped == [2]
    assert queue.dropped_rows == 2
    assert take(queue, 100, 0) == ([[(3, [3, -3]), (4, [4, -4])]], 0)
