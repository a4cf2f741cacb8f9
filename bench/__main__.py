"""python -m bench [--quick] [--only NAME ...] [--check]: run the benchmarks, print a table."""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable, Sequence

from bench import (
    cost,
    dashboard,
    events,
    latency,
    many,
    rowcost,
    rowpath,
    rows,
    scaling,
    start,
    streams,
    ticker,
)
from bench.measure import Result

SCENARIOS: dict[str, Callable[[bool], list[Result]]] = {
    "rows": rows.run,
    "streams": streams.run,
    "start": start.run,
    "latency": latency.run,
    "ticker": ticker.run,
    "scaling": scaling.run,
    "cost": cost.run,
    "events": events.run,
    "dashboard": dashboard.run,
    "many": many.run,
    "rowcost": rowcost.run,
    "rowpath": rowpath.run,
}


def table(results: list[Result]) -> str:
    header = ("scenario", "figure", "value", "unit", "target", "")
    lines = [header]
    for r in results:
        verdict = "" if r.ok is None else ("pass" if r.ok else "FAIL")
        lines.append(
            (
                r.scenario,
                r.figure,
                f"{r.value:,.3g}" if abs(r.value) < 999.5 else f"{r.value:,.0f}",  # 999.7 is not 1e+03
                r.unit,
                r.target,
                verdict,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rendered = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in lines
    ]
    rendered.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(rendered)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs and smaller sizes (what CI runs)")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, help="run only these scenarios")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    results: list[Result] = []
    started = time.monotonic()
    for name in args.only or SCENARIOS:
        print(f"running {name}…", file=sys.stderr, flush=True)
        results += SCENARIOS[name](args.quick)
    print(
        f"{'quick' if args.quick else 'full'} run, {time.monotonic() - started:.0f} s, "
        f"Python {platform.python_version()}, {platform.machine()}\n"
    )
    print(table(results))
    return 1 if args.check and any(r.ok is False for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
