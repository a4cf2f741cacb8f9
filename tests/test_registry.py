"""The broker's bookkeeping, driven with explicit clock values (no sockets, no processes).

Commands are read from the registry's outbox as (routing id, message) pairs; a worker's
routing id here is its name as bytes.
"""

from services.broker.registry import Registry
from services.common import protocol
from services.common.channels import Limits

PLUGIN_LEASE_S = 3.0
WORKER_LEASE_S = 1.0
TUTORIAL = "custom-10-20-100"  # 10 rows/s
HEAVY = "custom-0-1-1"  # 1,000 rows/s
LIGHT = "custom-0-1-50"  # 20 rows/s


def registry(max_channels: int = 100, limits: Limits | None = None) -> Registry:
    """A registry whose epochs count 1, 2, … per channel (a clock stuck at 0)."""
    return Registry(
        limits or Limits(),
        plugin_lease_s=PLUGIN_LEASE_S,
        worker_lease_s=WORKER_LEASE_S,
        max_channels=max_channels,
        epoch_clock=lambda: 0,
    )


def beat(
    reg: Registry,
    worker: str,
    now: float,
    running: list[str] | dict[str, int] | None = None,
    routing: str = "",
) -> None:
    """A full worker heartbeat; a list runs each channel under its current epoch (1 if new to us)."""
    if not isinstance(running, dict):
        running = {path: reg.channels[path].epoch if path in reg.channels else 1 for path in running or []}
    message = protocol.WorkerHeartbeat(worker, running, pid=100 + int(worker[1:]))
    reg.worker_heartbeat(message, (routing or worker).encode(), now)


def subscribe(reg: Registry, plugin: str, path: str, now: float) -> str:
    """Subscribe; the refusal, or '' when accepted."""
    return reg.subscribe(plugin, path, now, plugin.encode()).error


def hold(reg: Registry, plugin: str, paths: list[str], now: float) -> dict[str, str]:
    """A plugin heartbeat holding `paths`, knowing their current epochs; {path: refusal}."""
    known = {path: reg.channels[path].epoch if path in reg.channels else 0 for path in paths}
    replies = reg.plugin_heartbeat(plugin, known, now, plugin.encode())
    return {reply.channel: reply.error for reply in replies if reply.error}


def sent(reg: Registry) -> list[tuple[bytes, protocol.Message]]:
    """The commands to workers queued since the last call (Placements to plugins are dropped)."""
    commands, reg.outbox = reg.outbox, []
    return [(to, message) for to, message in commands if not isinstance(message, protocol.Placement)]


def told(reg: Registry) -> list[tuple[bytes, protocol.Message]]:
    """The Placements to plugins queued since the last call (commands to workers are dropped)."""
    commands, reg.outbox = reg.outbox, []
    return [(to, message) for to, message in commands if isinstance(message, protocol.Placement)]


def owners(reg: Registry) -> dict[str, str | None]:
    return {path: channel.worker for path, channel in reg.channels.items()}


def test_the_first_subscriber_starts_the_ticker_on_the_least_loaded_worker() -> None:
    reg = registry()
    beat(reg, "w1", 0)
    beat(reg, "w2", 0)
    assert subscribe(reg, "p1", HEAVY, 0) == ""
    assert sent(reg) == [(b"w1", protocol.StartTicker(HEAVY, 1))], "a tie goes to the first worker by name"
    assert subscribe(reg, "p1", TUTORIAL, 0) == ""
    assert sent(reg) == [(b"w2", protocol.StartTicker(TUTORIAL, 1))]
    assert subscribe(reg, "p1", LIGHT, 0) == ""
    assert sent(reg) == [(b"w2", protocol.StartTicker(LIGHT, 1))], "placed by load (rows/s), not by count"


def test_a_second_subscriber_or_a_repeat_starts_nothing() -> None:
    reg = registry()
    beat(reg, "w1", 0)
    subscribe(reg, "p1", TUTORIAL, 0)
    sent(reg)
    assert subscribe(reg, "p1", TUTORIAL, 0) == ""
    assert subscribe(reg, "p2", TUTORIAL, 0) == ""
    assert sent(reg) == []
    assert reg.channels[TUTORIAL].holders == {"p1", "p2"}


def test_two_plugins_keep_a_channel_until_both_leave() -> None:
    reg = registry()
    beat(reg, "w1", 0)
    subscribe(reg, "p1", TUTORIAL, 0)
    hold(reg, "p2", [TUTORIAL], 0)
    sent(reg)
    reg.unsubscribe("p1", TUTORIAL)
    assert sent(reg) == []
    assert reg.channels[TUTORIAL].holders == {"p2"}
    hold(reg, "p2", [], 1)  # a heartbeat without the channel lets it go too
    assert sent(reg) == [(b"w1", protocol.StopTicker(TUTORIAL, 1))]
    assert reg.channels == {}
    assert reg.workers["w1"].assigned == set()
    assert reg.workers["w1"].load == 0


def test_unsubscribing_what_one_does_not_hold_changes_nothing() -> None:
    reg = registry()
    beat(reg, "w1", 0)
    subscribe(reg, "p1", TUTORIAL, 0)
    sent(reg)
    reg.unsubscribe("p2", TUTORIAL)
    reg.unsubscribe("p1", LIGHT)
    assert sent(reg) == []
    assert reg.channels[TUTORIAL].holders == {"p1"}


def test_a_silent_plugin_loses_its_channels_when_its_lease_runs_out() -> None:
    reg = registry()
    beat(reg, "w1", 0)
    hold(reg, "p1", [TUTORIAL, LIGHT], 0)
    hold(reg, "p2", [LIGHT], 0)
    sent(reg)
    for now in (1.0, 2.0, PLUGIN_LEASE_S):
        beat(reg, "w1", now, [TUTORIAL, LIGHT])
        hold(reg, "p2", [LIGHT], now)
        reg.expire(now)
    assert set(reg.channels) == {TUTORIAL, LIGHT}, "not before the lease is over"
    beat(reg, "w1", PLUGIN_LEASE_S + 0.1, [TUTORIAL, LIGHT])
    hold(reg, "p2", [LIGHT], PLUGIN_LEASE_S + 0.1)
    reg.expire(PLUGIN_LEASE_S + 0.1)
    assert sent(reg) == [(b"w1", protocol.StopTicker(TUTORIAL, 1))]
    assert reg.channels[LIGHT].holders == {"p2"}, "the other plugin's channel stays"
    assert "p1" not in reg.plugins


def test_a_dead_worker_s_channels_move_to_a_live_one() -> None:
    reg = registry()
    beat(reg, "w1", 0)
    beat(reg, "w2", 0)
    subscribe(reg, "p1", TUTORIAL, 0)
    subscribe(reg, "p1", LIGHT, 0)
    assert owners(reg) == {TUTORIAL: "w1", LIGHT: "w2"}
    sent(reg)
    beat(reg, "w2", 1.05, [LIGHT])  # w1 fell silent at 0
    hold(reg, "p1", [TUTORIAL, LIGHT], 1.05)
    reg.expire(1.0)
    assert sent(reg) == [], "not before the worker lease is over"
    reg.expire(1.05)
    assert sent(reg) == [(b"w2", protocol.StartTicker(TUTORIAL, 2))], "a new placement, a new epoch"
    assert owners(reg) == {TUTORIAL: "w2", LIGHT: "w2"}
    assert set(reg.workers) == {"w2"}


def test_with_no_worker_left_a_channel_waits_for_the_next_one() -> None:
    reg = registry()
    beat(reg, "w1", 0)
    subscribe(reg, "p1", TUTORIAL, 0)
    sent(reg)
    hold(reg, "p1", [TUTORIAL], 1.5)
    reg.expire(1.5)
    assert owners(reg) == {TUTORIAL: None}
    assert sent(reg) == []
    beat(reg, "w3", 2.0)
    assert sent(reg) == [(b"w3", protocol.StartTicker(TUTORIAL, 2))]
    assert owners(reg) == {TUTORIAL: "w3"}


def test_a_restarted_worker_is_asked_again_for_what_it_no_longer_runs() -> None:
    reg = registry()
    beat(reg, "w1", 0)
    subscribe(reg, "p1", TUTORIAL, 0)
    sent(reg)
    beat(reg, "w1", 0.5, [], routing="w1-new")  # supervisord restarted it within the lease
    assert sent(reg) == [(b"w1-new", protocol.StartTicker(TUTORIAL, 1))]
    beat(reg, "w1", 0.7, [TUTORIAL], routing="w1-new")
    assert sent(reg) == []


def test_a_restarted_broker_adopts_running_channels_and_stops_duplicates() -> None:
    reg = registry()  # a fresh broker: workers still run what the old one assigned
    beat(reg, "w1", 0, [TUTORIAL])
    beat(reg, "w2", 0, [TUTORIAL, LIGHT])
    assert sent(reg) == [(b"w2", protocol.StopTicker(TUTORIAL, 1))], "one ticker per channel"
    assert owners(reg) == {TUTORIAL: "w1", LIGHT: "w2"}
    hold(reg, "p1", [TUTORIAL, LIGHT], 0.3)  # the plugin's next heartbeat claims them
    for now in (1.0, 2.0, 3.0, 3.5):
        beat(reg, "w1", now, [TUTORIAL])
        beat(reg, "w2", now, [LIGHT])
        hold(reg, "p1", [TUTORIAL, LIGHT], now)
        reg.expire(now)
    assert sent(reg) == [], "no ticker restarted or stopped: the streams never paused"
    assert {path: c.holders for path, c in reg.channels.items()} == {TUTORIAL: {"p1"}, LIGHT: {"p1"}}
    assert (reg.workers["w1"].load, reg.workers["w2"].load) == (10, 20)


def test_an_adopted_channel_nobody_claims_stops_after_a_plugin_lease() -> None:
    reg = registry()
    beat(reg, "w1", 0, [TUTORIAL])
    beat(reg, "w1", PLUGIN_LEASE_S, [TUTORIAL])
    reg.expire(PLUGIN_LEASE_S)
    assert TUTORIAL in reg.channels
    beat(reg, "w1", PLUGIN_LEASE_S + 0.1, [TUTORIAL])
    reg.expire(PLUGIN_LEASE_S + 0.1)
    assert sent(reg) == [(b"w1", protocol.StopTicker(TUTORIAL, 1))]
    assert reg.channels == {}


def test_a_running_channel_the_broker_cannot_parse_is_stopped_at_once() -> None:
    reg = registry(limits=Limits(min_tick_ms=50))
    beat(reg, "w1", 0, ["custom-0-1-10", "garbage"])
    assert sorted(sent(reg), key=str) == [
        (b"w1", protocol.StopTicker("custom-0-1-10", 1)),
        (b"w1", protocol.StopTicker("garbage", 1)),
    ]
    assert reg.channels == {}


def test_refusals_name_the_reason_and_create_nothing() -> None:
    reg = registry(limits=Limits(min_tick_ms=10))
    beat(reg, "w1", 0)
    assert subscribe(reg, "p1", "custom-10.0-20-100", 0) == (
        "path 'custom-10.0-20-100' is not canonical, use 'custom-10-20-100'"
    )
    assert "lower (2) must be below upper (1)" in subscribe(reg, "p1", "custom-2-1-100", 0)
    assert "tick interval 5 ms is outside [10, 3600000] ms" in subscribe(reg, "p1", "custom-0-1-5", 0)
    assert "is not custom-" in subscribe(reg, "p1", "custom-a-b-c", 0)
    assert reg.channels == {}
    assert sent(reg) == []
    assert reg.plugins["p1"].channels == set()


def test_the_channel_limit_refuses_new_channels_but_not_new_subscribers() -> None:
    reg = registry(max_channels=2)
    beat(reg, "w1", 0)
    assert subscribe(reg, "p1", TUTORIAL, 0) == ""
    assert subscribe(reg, "p1", LIGHT, 0) == ""
    assert subscribe(reg, "p1", HEAVY, 0) == "the broker runs its maximum of 2 channels"
    assert subscribe(reg, "p2", TUTORIAL, 0) == "", "joining a running channel costs nothing"
    reg.unsubscribe("p1", LIGHT)
    assert subscribe(reg, "p1", HEAVY, 0) == ""


def test_a_plugin_heartbeat_answers_the_channels_it_adds_with_their_epoch_or_refusal() -> None:
    reg = registry()
    beat(reg, "w1", 0)
    replies = reg.plugin_heartbeat("p1", {TUTORIAL: 0, "custom-1-0-100": 0}, 0, b"p1")
    assert replies[0] == protocol.SubscribeReply(TUTORIAL, epoch=1), "a restarted broker's plugin learns it"
    assert "below upper" in replies[1].error
    assert reg.plugins["p1"].channels == {TUTORIAL}
    assert reg.plugin_heartbeat("p1", {TUTORIAL: 1}, 0.5, b"p1") == [], "nothing new, nothing said"


def test_a_heartbeat_adds_at_most_as_many_channels_as_a_subscribe() -> None:
    """One heartbeat of 30,000 new channels kept the broker from every other peer for about a
    second and took all its channels: the next heartbeats add the rest, as many at a time."""
    reg = registry(max_channels=10_000)
    beat(reg, "w1", 0)
    paths = {f"custom-{i}-{i + 1}-1000": 0 for i in range(protocol.MAX_SUBSCRIBE_CHANNELS * 2 + 10)}
    held = []
    for second in range(3):
        replies = reg.plugin_heartbeat("p1", paths, second, b"p1")
        held.append(len(reg.plugins["p1"].channels))
        assert all(not reply.error for reply in replies)
    assert held == [protocol.MAX_SUBSCRIBE_CHANNELS, 2 * protocol.MAX_SUBSCRIBE_CHANNELS, len(paths)]


def test_status_is_the_registry_s_view() -> None:
    reg = registry()
    beat(reg, "w1", 0)
    beat(reg, "w2", 0.25)
    subscribe(reg, "p1", TUTORIAL, 0)
    subscribe(reg, "p2", TUTORIAL, 0)
    status = reg.status("r1", "b1", now=0.5)
    assert status == protocol.StatusReply(
        "r1",
        "b1",
        {
            "w1": {
                "pid": 101,
                "channels": 1,
                "load": 10.0,
                "ticks_late": 0,
                "seen_s_ago": 0.5,
                "role": "generator",
            },
            "w2": {
                "pid": 102,
                "channels": 0,
                "load": 0.0,
                "ticks_late": 0,
                "seen_s_ago": 0.25,
                "role": "generator",
            },
        },
        {TUTORIAL: {"worker": "w1", "subscribers": 2, "epoch": 1}},
        plugins=2,
    )


def test_an_unchanged_heartbeat_renews_the_lease_and_reconciles_nothing() -> None:
    reg = registry()
    beat(reg, "w1", 0)
    subscribe(reg, "p1", TUTORIAL, 0)
    assert sent(reg) == [(b"w1", protocol.StartTicker(TUTORIAL, 1))]
    quiet = protocol.WorkerHeartbeat("w1", {}, pid=101, ticks_late=7, unchanged=True)
    reg.worker_heartbeat(quiet, b"w1", WORKER_LEASE_S * 0.9)
    assert sent(reg) == [], "no StartTicker again: the empty list does not mean 'running nothing'"
    reg.expire(WORKER_LEASE_S * 1.5)
    assert "w1" in reg.workers, "the lease was renewed"
    assert reg.workers["w1"].ticks_late == 7


def test_an_unchanged_heartbeat_from_an_unknown_worker_waits_for_its_full_one() -> None:
    reg = registry()
    reg.worker_heartbeat(protocol.WorkerHeartbeat("w9", {}, unchanged=True), b"w9", 0)
    assert reg.workers == {}, "a restarted broker learns a worker's channels from its full heartbeat"
    beat(reg, "w9", 0.1, running=[TUTORIAL])
    assert owners(reg) == {TUTORIAL: "w9"}, "adopted"


def test_a_move_tells_every_holder_the_new_epoch() -> None:
    reg = registry()
    beat(reg, "w1", 0)
    beat(reg, "w2", 0)
    subscribe(reg, "p1", TUTORIAL, 0)
    subscribe(reg, "p2", TUTORIAL, 0)
    assert told(reg) == [], "each learns the epoch from its SubscribeReply"
    assert reg.subscribe("p2", TUTORIAL, 0, b"p2") == protocol.SubscribeReply(TUTORIAL, epoch=1)
    beat(reg, "w2", 1.05)
    reg.expire(1.05)
    assert sorted(told(reg)) == [
        (b"p1", protocol.Placement(TUTORIAL, 2)),
        (b"p2", protocol.Placement(TUTORIAL, 2)),
    ]


def test_a_frozen_worker_that_wakes_up_is_told_to_stop_what_moved_and_takes_nothing_back() -> None:
    reg = registry()
    beat(reg, "w1", 0)
    beat(reg, "w2", 0)
    subscribe(reg, "p1", TUTORIAL, 0)
    assert owners(reg) == {TUTORIAL: "w1"}
    beat(reg, "w2", 1.05)
    reg.expire(1.05)  # w1 was SIGSTOPped at 0
    assert owners(reg) == {TUTORIAL: "w2"}
    assert reg.channels[TUTORIAL].epoch == 2
    sent(reg)
    beat(reg, "w1", 3.0, {TUTORIAL: 1})  # SIGCONT: it still runs the channel under epoch 1
    assert sent(reg) == [(b"w1", protocol.StopTicker(TUTORIAL, 1))]
    assert owners(reg) == {TUTORIAL: "w2"}
    assert told(reg) == [], "the holders keep relaying epoch 2"


def test_after_a_broker_restart_the_newer_of_two_claims_wins() -> None:
    reg = registry()  # w1 was frozen when the old broker moved the channel to w2 (epoch 7)
    hold(reg, "p1", [], 0)
    beat(reg, "w1", 0, {TUTORIAL: 3})
    beat(reg, "w2", 0, {TUTORIAL: 7})
    assert sent(reg) == [(b"w1", protocol.StopTicker(TUTORIAL, 3))]
    assert owners(reg) == {TUTORIAL: "w2"}
    assert reg.channels[TUTORIAL].epoch == 7
    assert (reg.workers["w1"].load, reg.workers["w2"].load) == (0, 10)
    beat(reg, "w1", 0.1, {TUTORIAL: 3})
    assert sent(reg) == [(b"w1", protocol.StopTicker(TUTORIAL, 3))], "told again until it stops"


def test_a_worker_running_an_older_epoch_of_its_own_channel_is_told_the_current_one() -> None:
    reg = registry()
    beat(reg, "w1", 0)
    subscribe(reg, "p1", TUTORIAL, 0)
    sent(reg)
    reg.channels[TUTORIAL].epoch = 5  # as if our StartTicker for epoch 5 was lost
    beat(reg, "w1", 0.1, {TUTORIAL: 4})
    assert sent(reg) == [(b"w1", protocol.StartTicker(TUTORIAL, 5))]


def test_a_plugin_that_does_not_know_the_epoch_is_told_again() -> None:
    reg = registry()
    beat(reg, "w1", 0)
    subscribe(reg, "p1", TUTORIAL, 0)
    told(reg)
    reg.plugin_heartbeat("p1", {TUTORIAL: 0}, 0.5, b"p1")
    assert told(reg) == [(b"p1", protocol.Placement(TUTORIAL, 1))]
    reg.plugin_heartbeat("p1", {TUTORIAL: 1}, 1.0, b"p1")
    assert told(reg) == []


def test_epochs_follow_the_clock_and_never_go_back() -> None:
    clock = iter([1_000, 500, 2_000])
    reg = Registry(
        Limits(), plugin_lease_s=3, worker_lease_s=1, max_channels=10, epoch_clock=lambda: next(clock)
    )
    beat(reg, "w1", 0)
    beat(reg, "w2", 0)
    subscribe(reg, "p1", TUTORIAL, 0)
    assert reg.channels[TUTORIAL].epoch == 1_000
    beat(reg, "w2", 1.05)
    reg.expire(1.05)
    assert reg.channels[TUTORIAL].epoch == 1_001, "the clock stepped back: last + 1"


def test_a_worker_whose_heartbeats_wander_gets_time_in_proportion() -> None:
    reg = registry()
    now = 0.0
    for interval in [0.2, 0.9, 0.3, 0.8, 0.2, 0.9, 0.4, 0.7] * 3:  # a loaded machine
        now += interval
        beat(reg, "w1", now)
    subscribe(reg, "p1", TUTORIAL, now)
    reg.expire(now + WORKER_LEASE_S + 0.1)
    assert "w1" in reg.workers, "a late heartbeat is likely on this record: not dead yet"
    reg.expire(now + 6)
    assert "w1" not in reg.workers, "but silence far beyond its record is death"


def test_a_regular_worker_is_dead_right_after_its_lease() -> None:
    reg = registry()
    for step in range(20):
        beat(reg, "w1", step * 0.2)
    reg.expire(3.8 + WORKER_LEASE_S + 0.01)
    assert "w1" not in reg.workers


def test_time_the_broker_itself_was_stalled_counts_against_no_one() -> None:
    reg = registry()
    beat(reg, "w1", 0)
    hold(reg, "p1", [TUTORIAL], 0)
    reg.forgive(PLUGIN_LEASE_S * 2)  # the broker was SIGSTOPped; the peers' heartbeats are queued
    reg.expire(PLUGIN_LEASE_S * 2)
    assert set(reg.workers) == {"w1"}
    assert reg.plugins["p1"].channels == {TUTORIAL}


def test_a_worker_still_starting_its_channels_is_not_asked_again_at_every_heartbeat() -> None:
    reg = registry()
    beat(reg, "w1", 0)
    hold(reg, "p1", [f"custom-{i}-{i + 1}-100" for i in range(100)], 0)
    assert len(sent(reg)) == 100
    beat(reg, "w1", 0.2, [f"custom-{i}-{i + 1}-100" for i in range(10)])  # 10 started so far
    assert sent(reg) == [], "the other 90 StartTickers are still queued at the worker"
    beat(reg, "w1", WORKER_LEASE_S + 0.1, [f"custom-{i}-{i + 1}-100" for i in range(90)])
    assert len(sent(reg)) == 10, "a lease later, what it still does not run is asked again"


PUBLISHED = "pub-room.temp"
SOURCE = "source-host-1000"


def recorder_beat(reg: Registry, now: float, offered: dict[str, int], recorder: str = "r1") -> None:
    message = protocol.WorkerHeartbeat(recorder, offered, pid=7, role=protocol.RECORDER)
    reg.worker_heartbeat(message, recorder.encode(), now)


def test_a_published_channel_is_placed_on_the_recorder_that_offers_it_under_its_epoch() -> None:
    reg = registry()
    beat(reg, "w1", 0.0)
    recorder_beat(reg, 0.0, {PUBLISHED: 555})
    reply = reg.subscribe("p1", PUBLISHED, 0.1, b"p1")
    assert (reply.error, reply.epoch) == ("", 555)
    assert reg.channels[PUBLISHED].worker == "r1"
    assert sent(reg) == []  # nothing asked of anyone: the recorder runs it already


def test_status_lists_a_recorder_s_published_channels_that_nobody_holds_yet() -> None:
    """What the plugin's `streams` resource offers a query editor: every channel one could publish into."""
    reg = registry()
    recorder_beat(reg, 0.0, {PUBLISHED: 5, "pub-idle": 6})
    subscribe(reg, "p1", PUBLISHED, 0.1)
    channels = reg.status("q", "b1", now=0.2).channels
    assert channels["pub-idle"] == {"worker": "r1", "subscribers": 0, "epoch": 6}
    assert channels[PUBLISHED] == {"worker": "r1", "subscribers": 1, "epoch": 5}


def test_a_published_channel_waits_for_a_recorder_and_is_never_given_to_a_generator() -> None:
    reg = registry()
    beat(reg, "w1", 0.0)
    assert reg.subscribe("p1", PUBLISHED, 0.0, b"p1").epoch == 0
    beat(reg, "w1", 0.2)
    assert reg.channels[PUBLISHED].worker is None
    assert sent(reg) == []
    recorder_beat(reg, 0.3, {PUBLISHED: 9})
    commands, reg.outbox = reg.outbox, []
    assert commands == [(b"p1", protocol.Placement(PUBLISHED, 9))]


def test_a_generator_claiming_a_published_channel_is_told_to_stop() -> None:
    reg = registry()
    subscribe(reg, "p1", PUBLISHED, 0.0)
    beat(reg, "w1", 0.0, {PUBLISHED: 3})
    assert sent(reg) == [(b"w1", protocol.StopTicker(PUBLISHED, 3))]
    assert reg.channels[PUBLISHED].worker is None


def test_the_recorder_is_never_told_to_stop_and_never_given_generator_work() -> None:
    reg = registry()
    recorder_beat(reg, 0.0, {PUBLISHED: 5})
    subscribe(reg, "p1", PUBLISHED, 0.0)
    subscribe(reg, "p1", TUTORIAL, 0.0)
    assert reg.channels[TUTORIAL].worker is None  # no generator yet
    reg.unsubscribe("p1", PUBLISHED)
    assert sent(reg) == []
    beat(reg, "w1", 0.1)
    assert reg.channels[TUTORIAL].worker == "w1"


def test_a_restarted_recorder_moves_its_channels_to_its_new_epoch_and_a_dead_one_leaves_them_waiting() -> (
    None
):
    reg = registry()
    recorder_beat(reg, 0.0, {PUBLISHED: 5})
    subscribe(reg, "p1", PUBLISHED, 0.0)
    recorder_beat(reg, 0.2, {PUBLISHED: 8})
    assert reg.channels[PUBLISHED].epoch == 8
    hold(reg, "p1", [PUBLISHED], 2.0)  # the plugin stays alive, the recorder falls silent
    reg.expire(2.0)
    assert reg.channels[PUBLISHED].worker is None
    assert "r1" not in reg.workers


def test_a_source_channel_is_placed_on_a_generator_and_moves_when_it_dies() -> None:
    reg = registry()
    recorder_beat(reg, 0.0, {})
    beat(reg, "w1", 0.0)
    beat(reg, "w2", 0.0)
    subscribe(reg, "p1", SOURCE, 0.0)
    first = reg.channels[SOURCE].worker
    assert first in ("w1", "w2")
    survivor = "w2" if first == "w1" else "w1"
    for now in (0.4, 0.8, 1.2, 1.6, 2.0):
        beat(reg, survivor, now, [SOURCE] if reg.channels[SOURCE].worker == survivor else [])
        hold(reg, "p1", [SOURCE], now)
        recorder_beat(reg, now, {})
        reg.expire(now)
    assert reg.channels[SOURCE].worker == survivor


def test_an_unknown_role_is_ignored() -> None:
    reg = registry()
    reg.worker_heartbeat(protocol.WorkerHeartbeat("x1", {}, role="king"), b"x1", 0.0)
    assert reg.workers == {}


def test_an_epoch_claim_of_int64_max_is_refused_and_epochs_stay_in_range() -> None:
    reg = Registry(Limits(), plugin_lease_s=3, worker_lease_s=1, max_channels=10, epoch_clock=lambda: 1_000)
    beat(reg, "w1", 0)
    beat(reg, "w2", 0)
    subscribe(reg, "p1", TUTORIAL, 0)
    owner = reg.channels[TUTORIAL].worker
    other = "w2" if owner == "w1" else "w1"
    sent(reg)
    beat(reg, other, 0.1, {TUTORIAL: 2**63 - 1})  # forged: a worker that does not run it
    assert sent(reg) == [(other.encode(), protocol.StopTicker(TUTORIAL, 2**63 - 1))]
    assert reg.channels[TUTORIAL].worker == owner
    beat(reg, owner, 0.2, {TUTORIAL: 2**63 - 1})  # its own worker claiming it: run ours again
    assert sent(reg) == [
        (owner.encode(), protocol.StopTicker(TUTORIAL, 2**63 - 1)),
        (owner.encode(), protocol.StartTicker(TUTORIAL, 1_000)),
    ]
    beat(reg, other, 1.5)
    reg.expire(1.5)  # the owner died: the channel moves under the next epoch, which fits int64
    commands = reg.outbox
    assert reg.channels[TUTORIAL].epoch == 1_001
    for _, message in commands:
        assert protocol.decode(protocol.encode(message)) == message


def test_a_recorder_offering_int64_max_is_not_placed_under_it() -> None:
    reg = Registry(Limits(), plugin_lease_s=3, worker_lease_s=1, max_channels=10, epoch_clock=lambda: 1_000)
    subscribe(reg, "p1", "pub-room", 0)
    offer = protocol.WorkerHeartbeat("rec", {"pub-room": 2**63 - 1}, role=protocol.RECORDER)
    reg.worker_heartbeat(offer, b"rec", 0)
    assert reg.channels["pub-room"].worker is None
    assert told(reg) == []
