"""A fault schedule drawn from one seed, so one command replays it."""

from __future__ import annotations

import random
from dataclasses import dataclass

PROCESSES = ("broker", "w1", "w2", "w3", "recorder", "plugin")
"""What kill9 and stop pick from: every process of the pipeline."""
KINDS = ("kill9", "stop", "broker_restart", "disk_full", "slow_reader", "hostile", "burst")
WARMUP_S = 4.0
"""Load only, before the first fault: the streams' first rows set their cadence."""
QUIET_AFTER_S = 8.0
"""Load only, after the last fault ends: room for the recovery bound and the final reads."""


@dataclass(frozen=True, slots=True)
class Fault:
    at_s: float
    """Seconds after the load started."""
    kind: str
    target: str
    """The process for kill9 and stop; '' for the others."""
    hold_s: float
    """How long the fault lasts (a stop, a full disk, a stalled reader); 0 for the instant ones."""

    def label(self) -> str:
        return f"{self.kind}:{self.target}" if self.target else self.kind


def plan(seed: int, seconds: float, kinds: tuple[str, ...] = KINDS) -> list[Fault]:
    """Faults one after another (each ends before the next begins, so recoveries are attributed),
    every kind in turn in a shuffled order, targets and durations drawn from `seed`."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    at = WARMUP_S + rng.uniform(0, 2)
    order: list[str] = []
    while True:
        if not order:
            order = list(kinds)
            rng.shuffle(order)
        kind = order.pop()
        target = rng.choice(PROCESSES) if kind in ("kill9", "stop") else ""
        hold = {
            "stop": rng.uniform(0.3, 3.0),
            "disk_full": rng.uniform(2, 5),
            "slow_reader": rng.uniform(2, 6),
        }
        fault = Fault(round(at, 2), kind, target, round(hold.get(kind, 0.0), 2))
        if fault.at_s + fault.hold_s + QUIET_AFTER_S > seconds:
            return faults
        faults.append(fault)
        at = fault.at_s + fault.hold_s + rng.uniform(3, 7)
