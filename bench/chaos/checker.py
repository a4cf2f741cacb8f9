"""The README's promises, checked against what the viewers, publishers and monitor recorded.

Written from the promises, not the code: values are the pure function of (path, tick)
that services/common/waveforms.py defines (the reference); everything else is what a
panel, a publisher or an operator would see.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from bench.chaos.faults import Injected
from bench.chaos.load import PUBLISHED, SOURCES, Packet, Published, Query, Session, channel_of
from services.common.channels import UNCHECKED, ChannelSpec, parse_path
from services.common.waveforms import channel_seed, registry

RECOVERY_BOUND_S = 5.0
"""After a fault ends, every stream moves again within this (README, Chaos)."""
NOTICE_BOUND_S = 3.0
"""A stream stalled longer than this (plus three of its ticks) shows a notice meanwhile."""
STALL_MIN_S = 1.5
"""Shorter silences are a loaded machine's jitter, not a gap."""
RECORDER_FLUSH_S = 1.0
"""What a recorder killed with -9 may lose: the rows it had not flushed (README, Reliability)."""
MEMORY_BOUND_MIB = {"broker": 150.0, "worker": 150.0, "recorder": 400.0, "plugin": 600.0}
SHUTDOWN_BOUND_S = 2.0
EVERY_STREAM = ("kill9", "stop", "broker_restart", "burst", "starved")
"""Faults that may stall any stream while they last; the others may stall none (a slow
reader only its own, which may drop rows but must say so). `starved` is not injected:
it is a stretch when the chaos run itself was not scheduled (a shared machine), during
which it could not have seen rows arrive."""


FIRST_PACKET = "a stream's first packet, or a notice, within the bound from its open"
"""Its own invariant, apart from silences after rows: a call not served yet cannot carry a notice,
so only a faster start keeps it (#21, #22)."""


@dataclass
class Violation:
    invariant: str
    at: float
    detail: str


@dataclass
class Verdict:
    checked: dict[str, int] = field(default_factory=dict)
    """Invariant → how many times it was checked."""
    violations: list[Violation] = field(default_factory=list)
    recoveries: dict[str, list[float]] = field(default_factory=dict)
    """Fault kind → seconds from its end until each stream open across it sent rows again."""
    burst_waits: list[tuple[float, bool]] = field(default_factory=list)
    """Each stream opened during a burst: seconds from its open to its first packet of rows or a
    notice (True), or to its close if none came (False)."""

    def check(self, invariant: str, ok: bool, at: float, detail: str) -> None:
        self.checked[invariant] = self.checked.get(invariant, 0) + 1
        if not ok:
            self.violations.append(Violation(invariant, at, detail))


class Checker:
    def __init__(self, faults: list[Injected], published: Published) -> None:
        self.faults = faults
        self.published = published
        self.verdict = Verdict()
        self.generators = registry()

    # -- streams -------------------------------------------------------------------

    def session(self, session: Session) -> None:
        channel = channel_of(session.path)
        acked: list[tuple[float, int, float]] | None = None
        if channel.startswith("custom-"):
            spec = parse_path(channel, UNCHECKED)
            self._generated(session, spec)
            tick_s = spec.tick_ns / 1e9
        elif channel in PUBLISHED:
            self._published_rows(session, channel)
            tick_s = 0.1
            acked = self.published.acked.get(channel, [])
        else:
            tick_s = 1.0 if channel in SOURCES else 0.1
        self._order(session)
        self._stalls(session, tick_s, acked)
        self._recoveries(session)
        self._burst_wait(session)
        if session.error:
            self.verdict.check(
                "streams end only when closed or during a fault",
                self._excused(session.closed, session.closed, session),
                session.closed,
                f"{session.path}: {session.error[:200]}",
            )

    def _order(self, session: Session) -> None:
        times = [t for p in session.packets for t in p.times]
        back = [(a, b) for a, b in itertools.pairwise(times) if b <= a]
        self.verdict.check(
            "stream times strictly increase (no repeat, no step back)",
            not back,
            session.opened,
            f"{session.path}: {len(back)} of {len(times)} rows repeat or step back, first {back[:1]}",
        )

    def _generated(self, session: Session, spec: ChannelSpec) -> None:
        generator = self.generators[spec.generator]
        seed = channel_seed(spec.path)
        wrong: list[str] = []
        off_grid = 0
        previous_tick: int | None = None
        for packet in session.packets:
            names = [n for n in packet.columns if n.startswith("value")]
            for row, time_ns in enumerate(packet.times):
                tick = spec.last_tick(time_ns)
                if spec.tick_time(tick) != time_ns:
                    off_grid += 1
                    continue
                expected = [column[0] for column in generator.generate(spec, seed, range(tick, tick + 1))]
                got = [packet.columns[n][row] for n in names]
                if got != expected and len(wrong) < 3:
                    wrong.append(f"tick {tick}: {got} != {expected}")
                if previous_tick is not None and tick > previous_tick + 1:
                    self._skipped(session, spec, previous_tick, tick, packet)
                previous_tick = tick
        self.verdict.check(
            "generator values are the pure function of (path, tick)",
            not wrong and not off_grid,
            session.opened,
            f"{session.path}: {off_grid} rows off the tick grid; {'; '.join(wrong)}",
        )

    def _skipped(self, session: Session, spec: ChannelSpec, before: int, tick: int, packet: Packet) -> None:
        """Ticks missing between `before` and `tick`: excused if they were due during a fault
        (or its recovery), or dropped for a slow reader with a notice saying so."""
        due_from, due_to = spec.tick_time(before + 1) / 1e9, spec.tick_time(tick - 1) / 1e9
        dropped_said = any("dropped" in text for text in packet.notices)
        ok = self._excused(due_from, due_to, session) or (session.paused is not None and dropped_said)
        self.verdict.check(
            "every tick arrives (skips only during a fault, drops said in the panel)",
            ok,
            packet.at,
            f"{session.path}: {tick - before - 1} ticks skipped, due from {due_from:.2f} to {due_to:.2f}",
        )

    def _published_rows(self, session: Session, channel: str) -> None:
        sent = self.published.values.get(channel, {})
        refused = self.published.refused.get(channel, set())
        bad = [
            (t, v)
            for p in session.packets
            for t, v in zip(p.times, p.columns.get("v", []), strict=False)
            if sent.get(t) != v or t in refused
        ]
        self.verdict.check(
            "published streams carry only the rows publishers sent and were not refused",
            not bad,
            session.opened,
            f"{session.path}: {len(bad)} rows never sent or refused, first {bad[:2]}",
        )
        streamed = {t for p in session.packets for t in p.times}
        if not streamed:
            return
        first, last = min(streamed), max(streamed)
        missing = [
            answered
            for answered, t, _ in self.published.acked.get(channel, [])
            if first < t < last and t not in streamed and not self._may_lose(answered)
        ]
        self.verdict.check(
            "published streams carry every acknowledged row in their span",
            not missing,
            session.opened,
            f"{session.path}: {len(missing)} acknowledged rows missing, first acknowledged at "
            + ", ".join(f"{a:.2f}" for a in missing[:3]),
        )

    def _stalls(
        self, session: Session, tick_s: float, acked: list[tuple[float, int, float]] | None = None
    ) -> None:
        """Silences between rows: only while a fault lasts plus the bound, and said in the panel.

        A published channel (`acked`: its rows acknowledged, in order, as (when, time, value))
        has a row to carry only once one is acknowledged that it has not carried: its silence
        counts from then (a full disk refuses rows, and a refused row is no row to show).
        """
        threshold = max(STALL_MIN_S, 4 * tick_s)
        arrivals = [session.opened] + [p.at for p in session.packets if p.times]
        last_rows = [0] + [p.times[-1] for p in session.packets if p.times]
        """The stream's last row time at each arrival (0: none yet)."""
        if not session.error:
            arrivals.append(session.closed)
        for (start, end), carried in zip(itertools.pairwise(arrivals), last_rows, strict=False):
            unserved = start == session.opened  # no packet of rows yet: the call may not be served
            if acked is not None:
                start = _owed_from(acked, start, end, carried)
            if end - start <= threshold or self._paused(session, start, end):
                continue
            fault = self._excusing(start, end, session)
            self.verdict.check(
                "gaps only during a fault plus the recovery bound",
                fault is not None and end <= fault.end + RECOVERY_BOUND_S,
                start,
                f"{session.path}: no rows from {start:.2f} to {end:.2f} ({end - start:.1f} s)"
                + (f", {end - fault.end:.1f} s after {fault.label()} ended" if fault else ", no fault then"),
            )
            # A silence seen while this process was not scheduled may have had no cause in the pipeline.
            if end - start > NOTICE_BOUND_S + 3 * tick_s and (fault is None or fault.kind != "starved"):
                said = any(p.notices for p in session.packets if start < p.at <= end)
                self.verdict.check(
                    FIRST_PACKET if unserved else "a gap is never silent (a notice in the panel meanwhile)",
                    said,
                    start,
                    f"{session.path}: {end - start:.1f} s without rows and without a notice"
                    + (" (from its open: no packet yet)" if unserved else ""),
                )

    def _recoveries(self, session: Session) -> None:
        """For each fault this stream was open across: from the fault's end to its next rows."""
        arrivals = [p.at for p in session.packets if p.times]
        for fault in self.faults:
            if fault.kind == "starved" or session.opened > fault.start:
                continue
            after = next((at for at in arrivals if at >= fault.end), None)
            if after is not None:
                self.verdict.recoveries.setdefault(fault.kind, []).append(after - fault.end)

    def _burst_wait(self, session: Session) -> None:
        """How long a stream opened during a burst waited for its first rows or notice, what FIRST_PACKET
        bounds (a measure, not a check)."""
        if any(f.kind == "burst" and f.start <= session.opened <= f.end for f in self.faults):
            first = next((p.at for p in session.packets if p.times or p.notices), None)
            waited = (first if first is not None else session.closed) - session.opened
            self.verdict.burst_waits.append((waited, first is not None))

    def _paused(self, session: Session, start: float, end: float) -> bool:
        return session.paused is not None and start <= session.paused[1] and end >= session.paused[0]

    def _excusing(self, start: float, end: float, session: Session) -> Injected | None:
        """What may explain a silence from `start` to `end`: of the faults it overlaps, the last to end."""
        overlapping = [
            f
            for f in self.faults
            if f.kind in EVERY_STREAM and start <= f.end + RECOVERY_BOUND_S and end >= f.start
        ]
        return max(overlapping, key=lambda f: f.end, default=None)

    def _excused(self, start: float, end: float, session: Session) -> bool:
        fault = self._excusing(start, end, session)
        return fault is not None and end <= fault.end + RECOVERY_BOUND_S

    # -- QueryData and history ---------------------------------------------------------

    def query(self, query: Query) -> None:
        if query.error:
            self.verdict.check(
                "QueryData answers (errors only during a fault)",
                self._excused(query.at, query.at, Session(query.path, query.at)),
                query.at,
                f"{query.path}: {query.error[:200]}",
            )
            return
        spec = parse_path(query.path, UNCHECKED)
        generator = self.generators[spec.generator]
        seed = channel_seed(spec.path)
        wrong = 0
        for row, time_ns in enumerate(query.times):
            tick = spec.last_tick(time_ns)
            expected = [c[0] for c in generator.generate(spec, seed, range(tick, tick + 1))]
            wrong += spec.tick_time(tick) != time_ns or [c[row] for c in query.columns] != expected
        self.verdict.check(
            "QueryData values are the pure function of (path, tick)",
            not wrong and all(b > a for a, b in itertools.pairwise(query.times)),
            query.at,
            f"{query.path}: {wrong} of {len(query.times)} rows differ or are off the grid",
        )

    def history(self, channel: str, times: list[int], values: list[float], error: str, at: float) -> None:
        """The recorder's history of a published channel: exactly the acknowledged rows."""
        self.verdict.check("the recorder answers history", not error, at, f"{channel}: {error}")
        got = dict(zip(times, values, strict=True))
        sent = self.published.values.get(channel, {})
        refused = self.published.refused.get(channel, set())
        foreign = [t for t, v in got.items() if sent.get(t) != v or t in refused]
        self.verdict.check(
            "history holds only rows sent and not refused",
            not foreign,
            at,
            f"{channel}: {len(foreign)} rows never sent or refused, first {foreign[:2]}",
        )
        lost = [
            (answered, t)
            for answered, t, _ in self.published.acked.get(channel, [])
            if t not in got and not self._may_lose(answered)
        ]
        self.verdict.check(
            "history holds every acknowledged row",
            not lost,
            lost[0][0] if lost else at,
            f"{channel}: {len(lost)} acknowledged rows missing, first acknowledged at "
            + ", ".join(f"{a:.2f}" for a, _ in lost[:3]),
        )

    def _may_lose(self, answered: float) -> bool:
        """Acknowledged just before a recorder was killed: not yet flushed nor relayed (README allows it)."""
        return any(
            f.kind == "kill9"
            and f.target == "recorder"
            and f.start - RECORDER_FLUSH_S - 0.5 <= answered <= f.end
            for f in self.faults
        )

    # -- processes -----------------------------------------------------------------------

    def processes(
        self,
        deaths: Iterable[tuple[str, float, int | None]],
        rss: dict[str, float],
        orphans: list[str],
        shutdown_s: float,
        end: float,
    ) -> None:
        for name, at, code in deaths:
            self.verdict.check("no process dies unless killed", False, at, f"{name} exited with {code}")
        self.verdict.check("no process dies unless killed", True, end, "")
        for role, peak in rss.items():
            bound = MEMORY_BOUND_MIB[role]
            self.verdict.check(
                "memory within its bound",
                peak <= bound,
                end,
                f"{role}: {peak:.0f} MiB peak, bound {bound:.0f} MiB",
            )
        self.verdict.check("no orphan at the end", not orphans, end, "; ".join(orphans)[:300])
        self.verdict.check(
            "plugin Shutdown within go-plugin's 2 s",
            shutdown_s <= SHUTDOWN_BOUND_S,
            end,
            f"Shutdown took {shutdown_s:.2f} s",
        )


def _owed_from(acked: list[tuple[float, int, float]], start: float, end: float, carried: int) -> float:
    """When a published stream silent from `start` to `end` first owed a row: the answer to the first
    row acknowledged after the last it carried (`carried`; with none carried, the first answered
    after `start`), or `start` if that answer came before; `end` if it owed none by then.

    The recorder relays a row before it answers its publisher, so a row may be carried before its
    answer is noted: it is carried, and owes nothing."""
    for answered, time_ns, _ in acked:
        owed = time_ns > carried if carried else answered > start
        if owed:
            return max(start, answered) if answered < end else end
    return end
