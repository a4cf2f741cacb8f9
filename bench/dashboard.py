"""Dashboard open: 200 panels, each as the frontend fills one (issue #22).

Each panel does QueryData over the last 6 hours (to now minus 1 s, 1,000 points), then
SubscribeStream with `{"after": <that range's end>}`, then RunStream; QueryData and
SubscribeStream 32 at a time, the panels otherwise independent. The figure is, per panel,
the time from the dashboard's first request to its first live row: a row after the query's
range, in the SubscribeStream reply (Grafana hands it to the subscriber as its first
message, shared/docs/grafana-plugin-protocol.md §3.5) or else in RunStream. RunStream's own
first row is shown beside it: with 1 s ticks it waits for the next tick after the reply's.
Needs the Go client: the Python client would take the CPU the plugin's answer is timed on.
"""

from __future__ import annotations

from bench import goclient
from bench.measure import Result, percentile

TICK_MS = 1000
"""The query editor's default tick."""
HOURS = 6
PANELS = 200


def run(quick: bool) -> list[Result]:
    panels = 50 if quick else PANELS
    client = goclient.client()
    if client.binary is None:
        return [Result("dashboard", f"not run: needs the Go client ({client.why_not})", 0, "")]
    args = ["-n", str(panels), "-paths", f"custom-0-{{i}}-{TICK_MS}", "-query-hours", str(HOURS)]
    figures = goclient.run_pipeline(client.binary, 2, [*args, "-tick-ms", str(TICK_MS), "-wait", "30s"])
    live = goclient.arrived(figures["panel_first_row_s"])
    p99 = percentile(live, 99) if len(live) == panels else float("inf")
    run_stream = goclient.arrived(figures["first_live_row_s"])
    queries = figures["query_data_s"]
    return [
        Result(
            "dashboard",
            f"{panels} panels: first request → panel's first live row, median",
            percentile(live, 50),
            "s",
        ),
        Result("dashboard", "first request → panel's first live row, p99", p99, "s", "≤ 1", p99 <= 1),
        Result(
            "dashboard", "first request → last panel's first live row", max(live, default=float("inf")), "s"
        ),
        Result(
            "dashboard",
            "first request → RunStream's first row, median (the reply's rows came before)",
            percentile(run_stream, 50),
            "s",
        ),
        Result("dashboard", f"QueryData over {HOURS} h, median", percentile(queries, 50), "s"),
        Result("dashboard", f"QueryData over {HOURS} h: slowest", max(queries, default=float("nan")), "s"),
        Result(
            "dashboard", "plugin CPU per panel opened", 1e6 * figures["start_plugin_cpu_s"] / panels, "µs"
        ),
        Result(
            "dashboard", "panels with no live row", figures["silent"], "panels", "0", figures["silent"] == 0
        ),
        goclient.failures("dashboard", figures, "panels"),
    ]
