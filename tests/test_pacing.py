"""Pacing: a stream pauses after a packet only while the plugin's event loop runs late."""

import asyncio
import time

from services.plugin.pacing import BURST_PACKETS_PER_S, BURST_S, MAX_BURST_PAUSE_S, MAX_PAUSE_S, LoopLag

FAST_TICK_S = 0.001
"""A channel whose rows come faster than any pause: a pause merges its rows into fewer packets."""


def test_an_idle_loop_adds_no_pause_and_a_busy_one_spaces_packets_out() -> None:
    async def scenario() -> tuple[float, float]:
        lag = LoopLag()
        assert lag.pause_s(FAST_TICK_S) == 0.0, "nothing measured yet: no pause"
        await asyncio.sleep(0.3)
        idle = lag.pause_s(FAST_TICK_S)

        async def hog() -> None:  # what a thousand busy streams do to the loop: long turns
            for _ in range(30):
                time.sleep(0.03)  # noqa: ASYNC251  # blocking on purpose: a long turn of the loop
                await asyncio.sleep(0)

        await hog()
        return idle, lag.pause_s(FAST_TICK_S)

    idle, busy = asyncio.run(scenario())
    assert idle == 0.0
    assert 0.0 < busy <= MAX_PAUSE_S


def test_while_streams_start_the_running_ones_pause_for_their_share_of_a_packet_budget() -> None:
    async def scenario() -> list[float]:
        now = [100.0]
        lag = LoopLag(clock=lambda: now[0])
        for _ in range(800):
            lag.opened()
        lag.pause_s(FAST_TICK_S)  # starts the sampling
        for _ in range(30):  # a loop late by 30 ms a turn, as during a burst of starts
            time.sleep(0.03)  # noqa: ASYNC251  # blocking on purpose: a long turn of the loop
            await asyncio.sleep(0)
        starting = lag.pause_s(FAST_TICK_S)
        now[0] += BURST_S  # no stream started for a while: the burst is over
        after = lag.pause_s(FAST_TICK_S)
        for _ in range(600):
            lag.closed()
        lag.opened()  # 201 streams, one of them starting
        fewer = lag.pause_s(FAST_TICK_S)
        return [starting, after, fewer]

    starting, after, fewer = asyncio.run(scenario())
    assert starting == min(MAX_BURST_PAUSE_S, 800 / BURST_PACKETS_PER_S), "800 streams share the budget"
    assert 0.0 < after <= MAX_PAUSE_S, "the burst over, the pause is the lateness's again"
    assert fewer == max(after, 201 / BURST_PACKETS_PER_S)


def test_a_burst_of_starts_on_a_loop_at_ease_adds_no_pause() -> None:
    async def scenario() -> float:
        lag = LoopLag()
        for _ in range(1000):
            lag.opened()
        lag.pause_s(FAST_TICK_S)
        await asyncio.sleep(0.3)
        return lag.pause_s(FAST_TICK_S)

    assert asyncio.run(scenario()) == 0.0


def test_a_channel_ticking_slower_than_the_pause_is_not_paused() -> None:
    """A pause merges the rows that come during it: a 1 s channel has none to merge within 0.1 s,
    so pausing it only added latency and a timer per packet (10,000 streams at 1 Hz)."""

    async def scenario() -> tuple[float, float, float, float]:
        now = [100.0]
        lag = LoopLag(clock=lambda: now[0])
        lag.pause_s(1.0)
        lag.opened()  # a stream starting: every running stream pauses for its share
        for _ in range(30):
            time.sleep(0.03)  # noqa: ASYNC251  # blocking on purpose: a long turn of the loop
            await asyncio.sleep(0)
        starting = lag.pause_s(1.0)
        now[0] += BURST_S  # no stream started for a while: the burst is over
        return starting, lag.pause_s(FAST_TICK_S), lag.pause_s(1.0), lag.pause_s(0.05)

    starting, fast, slow, fifty_ms = asyncio.run(scenario())
    assert starting > 0.0, "while streams start, a slow channel pauses too"
    assert 0.05 < fast <= MAX_PAUSE_S
    assert slow == 0.0
    assert fifty_ms == fast, "a 50 ms channel still merges rows in a pause over 50 ms"
