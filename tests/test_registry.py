"""The broker's bookkeeping, scenario by scenario (tests/test_fuzz.py checks its invariants)."""

from services.broker.registry import Registry
from services.common import protocol
from services.common.channels import Limits

TUTORIAL = "custom-10-20-100"


def make(max_channels: int = 100) -> Registry:
    return Registry(Limits(), plugin_lease_s=3.0, worker_lease_s=1.0, max_channels=max_channels)


def beat(registry: Registry, worker: str, now: float, running: list[str] | None = None) -> None:
    registry.worker_heartbeat(protocol.WorkerHeartbeat(worker, running or []), worker.encode(), now)


def commands(registry: Registry) -> list[tuple[bytes, protocol.Message]]:
    sent, registry.outbox = registry.outbox, []
    return sent


def test_first_subscriber_starts_the_ticker_on_the_least_loaded_worker() -> None:
    registry = make()
    beat(registry, "w1", 0, [])
    beat(registry, "w2", 0, [])
    assert registry.subscribe("p1", "custom-0-1-1", 0) == ""  # 1,000 rows/s on one worker
    (first,) = commands(registry)
    assert registry.subscribe("p1", TUTORIAL, 0) == ""
    (second,) = commands(registry)
    assert first[0] != second[0], "the second channel went to the busier worker"
    assert second[1] == protocol.StartTicker(TUTORIAL)


def test_a_channel_lives_until_its_last_holder_leaves() -> None:
    registry = make()
    beat(registry, "w1", 0)
    registry.subscribe("p1", TUTORIAL, 0)
    registry.subscribe("p2", TUTORIAL, 0)
    assert commands(registry) == [(b"w1", protocol.StartTicker(TUTORIAL))]
    registry.unsubscribe("p1", TUTORIAL)
    assert commands(registry) == []
    registry.unsubscribe("p2", TUTORIAL)
    assert commands(registry) == [(b"w1", protocol.StopTicker(TUTORIAL))]
    assert registry.channels == {}


def test_a_silent_plugin_loses_its_channels_after_the_lease() -> None:
    registry = make()
    beat(registry, "w1", 0)
    registry.plugin_heartbeat("p1", [TUTORIAL], 0)
    commands(registry)
    beat(registry, "w1", 2.9, [TUTORIAL])
    registry.expire(2.9)
    assert TUTORIAL in registry.channels
    beat(registry, "w1", 3.1, [TUTORIAL])
    registry.expire(3.1)
    assert registry.channels == {}
    assert commands(registry) == [(b"w1", protocol.StopTicker(TUTORIAL))]


def test_a_dead_worker_s_channels_move_to_a_live_one() -> None:
    registry = make()
    beat(registry, "w1", 0)
    registry.subscribe("p1", TUTORIAL, 0)
    beat(registry, "w2", 0)
    commands(registry)
    registry.plugin_heartbeat("p1", [TUTORIAL], 1.5)
    beat(registry, "w2", 1.5)
    registry.expire(1.5)
    assert registry.channels[TUTORIAL].worker == "w2"
    assert (b"w2", protocol.StartTicker(TUTORIAL)) in commands(registry)


def test_a_restarted_broker_adopts_running_channels_and_stops_duplicates() -> None:
    registry = make()
    beat(registry, "w1", 0, [TUTORIAL])
    beat(registry, "w2", 0, [TUTORIAL])
    assert registry.channels[TUTORIAL].worker == "w1"
    assert commands(registry) == [(b"w2", protocol.StopTicker(TUTORIAL))]
    registry.plugin_heartbeat("p1", [TUTORIAL], 1)  # the plugin's next heartbeat claims it
    beat(registry, "w1", 3.4, [TUTORIAL])
    beat(registry, "w2", 3.4)
    registry.expire(3.5)  # past the adoption lease, within the plugin's
    channel = registry.channels[TUTORIAL]
    assert (channel.holders, channel.worker, channel.orphan_since) == ({"p1"}, "w1", None)
    assert commands(registry) == [], "no ticker restarted: the stream never paused"


def test_an_adopted_channel_nobody_holds_stops_after_a_lease() -> None:
    registry = make()
    beat(registry, "w1", 0, [TUTORIAL])
    registry.expire(3.5)
    assert registry.channels == {}
    assert commands(registry) == [(b"w1", protocol.StopTicker(TUTORIAL))]


def test_refusals_name_the_reason() -> None:
    registry = make(max_channels=1)
    beat(registry, "w1", 0)
    assert "below upper" in registry.subscribe("p1", "custom-2-1-100", 0)
    assert "not canonical" in registry.subscribe("p1", "custom-1.0-2-100", 0)
    assert registry.subscribe("p1", TUTORIAL, 0) == ""
    assert "maximum of 1 channels" in registry.subscribe("p1", "custom-0-1-100", 0)
