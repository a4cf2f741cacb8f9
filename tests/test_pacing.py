"""Pacing: a stream pauses after a packet only while the plugin's event loop runs late."""

import asyncio
import time

from services.plugin.pacing import MAX_PAUSE_S, LoopLag


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
