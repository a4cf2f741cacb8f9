"""The run's table: faults by kind, invariants checked, violations with their replay command, recoveries."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, datetime

from bench.chaos.checker import RECOVERY_BOUND_S, Verdict
from bench.chaos.faults import Injected


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in [header, *rows]
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def render(verdict: Verdict, faults: list[Injected], command: str, started: float) -> str:
    kinds = Counter(f.kind if f.kind != "starved" else "starved (this process, not injected)" for f in faults)
    skipped = Counter(f.kind for f in faults if "skipped" in f.notes)
    parts = [
        "faults injected",
        table(
            ("kind", "injected", "recovery median s", "p99 s", "max s", f"bound {RECOVERY_BOUND_S:g} s"),
            [
                (
                    kind,
                    f"{count}" + (f" ({skipped[kind]} skipped)" if skipped[kind] else ""),
                    *_spread(verdict.recoveries.get(kind, [])),
                )
                for kind, count in sorted(kinds.items())
            ],
        ),
        "",
        "invariants",
        table(
            ("invariant", "checked", "violations"),
            [
                (name, f"{count:,}", f"{sum(v.invariant == name for v in verdict.violations)}")
                for name, count in sorted(verdict.checked.items())
            ],
        ),
    ]
    if verdict.burst_waits:
        parts += ["", _burst_waits(verdict.burst_waits)]
    notes = [f for f in faults if f.notes]
    if notes:
        parts += ["", "fault notes (t = seconds after the start)"]
        parts += [f"  t={f.start - started:6.1f} {f.label()}: {_notes(f)}" for f in notes]
    if verdict.violations:
        parts += ["", f"violations (replay: {command})"]
        parts += [
            f"  t={v.at - started:6.1f} ({_clock(v.at)}) {v.invariant}: {v.detail}"
            for v in verdict.violations[:200]
        ]
        if len(verdict.violations) > 200:
            parts.append(f"  … and {len(verdict.violations) - 200} more")
    return "\n".join(parts)


def _burst_waits(waits: list[tuple[float, bool]]) -> str:
    """When the viewers' streams opened while a burst ran got their first rows or notice."""
    served = sorted(wait for wait, came in waits if came)
    line = f"viewers' streams opened during a burst: {len(waits)}"
    if served:
        line += f"; rows or a notice after median {statistics.median(served):.2f} s, max {served[-1]:.2f} s"
    if none := sorted(wait for wait, came in waits if not came):
        line += f"; {len(none)} got none before they closed ({', '.join(f'{w:.1f}' for w in none)} s open)"
    return line


def _spread(values: list[float]) -> tuple[str, str, str, str]:
    if not values:
        return "—", "—", "—", "no stream open across"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    verdict = "pass" if ordered[-1] <= RECOVERY_BOUND_S else "FAIL"
    return (
        f"{statistics.median(ordered):.2f}",
        f"{p99:.2f}",
        f"{ordered[-1]:.2f}",
        f"{verdict} ({len(values)} streams)",
    )


def _notes(fault: Injected) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in fault.notes.items())


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S.%f")[:-3] + " UTC"
