"""Pacing: a stream pauses after a packet only while the plugin's event loop runs late."""

import asyncio
import time

from services.plugin.pacing import BURST_PACKETS_PER_S, BURST_S, MAX_BURST_PAUSE_S, MAX_PAUSE_S, LoopLag


def test_an_idle_loop_adds_no_pause_and_a_busy_one_spaces_packets_out() -> None:
    async def scenario() -> tuple[float, float]:
        lag = LoopLag()
        assert lag.pause_s() == 0.0, "nothing measured yet: no pause"
        await asyncio.sleep(0.3)
        idle = lag.pause_s()

        async def hog() -> None:  # what a thousand busy streams do to the loop: long turns
            for _ in range(30):
                time.sleep(0.03)  # noqa: ASYNC251  # blocking on purpose: a long turn of the loop
                await asyncio.sleep(0)

        await hog()
        return idle, lag.pause_s()

    idle, busy = asyncio.run(scenario())
    assert idle == 0.0
    assert 0.0 < busy <= MAX_PAUSE_S


def test_while_streams_start_the_running_ones_pause_for_their_share_of_a_packet_budget() -> None:
    async def scenario() -> list[float]:
        now = [100.0]
        lag = LoopLag(clock=lambda: now[0])
        for _ in range(800):
            lag.opened()
        lag.pause_s()  # starts the sampling
        for _ in range(30):  # a loop late by 30 ms a turn, as during a burst of starts
            time.sleep(0.03)  # noqa: ASYNC251  # blocking on purpose: a long turn of the loop
            await asyncio.sleep(0)
        starting = lag.pause_s()
        now[0] += BURST_S  # no stream started for a while: the burst is over
        after = lag.pause_s()
        for _ in range(600):
            lag.closed()
        lag.opened()  # 201 streams, one of them starting
        fewer = lag.pause_s()
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
        lag.pause_s()
        await asyncio.sleep(0.3)
        return lag.pause_s()

    assert asyncio.run(scenario()) == 0.0
