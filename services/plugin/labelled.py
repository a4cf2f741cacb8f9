"""Label fields and logs in event frames: what Grafana's legend, "Labels to fields" and Logs panel read.

A query may name text fields of an event channel as `labels` (services.plugin.display):
those columns leave the frame and their values become the `labels` of every other field,
so a channel whose rows say `{"room": "kitchen", "temp": 21}` shows as `temp kitchen`.
A frame has one set of labels, so rows are cut into runs of equal label values (`runs`):
a stream sends a new schema when they change, as it does when the fields change, and
QueryData answers one frame per set of labels. A value that is null (or a label field
the rows lack) is no label. A query asking for `logs` gets frame meta
`preferredVisualisationType: "logs"`, which makes Grafana pick its Logs panel.
"""

from __future__ import annotations

from typing import Any

from services.common.fields import Batch, Column, Schema, concat
from services.plugin import eventframes
from services.plugin.display import Display

Labels = tuple[tuple[str, str], ...]
"""One run's labels, in the query's order of its label fields."""


def runs(batch: Batch, names: tuple[str, ...]) -> list[tuple[Batch, Labels]]:
    """`batch` cut where the values of its label fields `names` change, those fields taken out."""
    label_columns = [c for c in batch.columns if c.name in names]
    if not label_columns or not batch.times:
        return [(batch, ())]
    kept = [c for c in batch.columns if c.name not in names]
    label_columns.sort(key=lambda c: names.index(c.name))
    cut: list[tuple[Batch, Labels]] = []
    start = 0
    for row in range(1, len(batch.times) + 1):
        if row < len(batch.times) and _labels(label_columns, row) == _labels(label_columns, start):
            continue
        times = batch.times[start:row]
        cut.append(
            (
                Batch(times, [Column(c.name, c.kind, c.values[start:row]) for c in kept]),
                _labels(label_columns, start),
            )
        )
        start = row
    return cut


def groups(batch: Batch, names: tuple[str, ...]) -> list[tuple[Batch, Labels]]:
    """The rows of each set of labels together (QueryData's frames), the set of the newest row first.

    The browser streams on from a query's first frame, so it must be the one the stream continues.
    """
    if not batch.times:
        return [(batch, ())]
    by_labels: dict[Labels, list[Batch]] = {}
    for run, labels in runs(batch, names):
        by_labels.setdefault(labels, []).append(run)
    newest_first = sorted(by_labels.items(), key=lambda item: item[1][-1].times[-1], reverse=True)
    return [(concat(parts), labels) for labels, parts in newest_first]


def _labels(columns: list[Column], row: int) -> Labels:
    return tuple((c.name, _text(c.values[row])) for c in columns if c.values[row] is not None)


def _text(value: Any) -> str:
    """A label's text as Grafana would write it (true/false, not Python's True/False)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def frame_schema(batch_schema: Schema | None, shown: Display, labels: Labels = ()) -> dict[str, Any]:
    """eventframes.schema of the fields, with the run's labels on each value field and the logs meta."""
    built = eventframes.schema(batch_schema, shown)
    if labels:
        for entry in built["fields"][1:]:
            entry["labels"] = dict(labels)
    if shown.logs:
        built = {"meta": {"typeVersion": [0, 0], "preferredVisualisationType": "logs"}, **built}
    return built


def meta(shown: Display) -> dict[str, Any]:
    """The frame meta a query's display options ask for (QueryData's frames)."""
    return {"preferredVisualisationType": "logs"} if shown.logs else {}
