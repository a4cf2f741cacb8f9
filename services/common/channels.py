"""Channel paths: the one place that turns a Grafana Live path into what a channel carries.

Grafana runs one RunStream per channel path and shares it with every subscriber, so
everything that makes two streams differ is in the path. Two families of channels:

Pure channels (ChannelSpec), whose values are a function of (path, tick), so any worker
can take one over and history is recomputed:

    custom-<lower>-<upper>-<tick ms>                     the tutorial's form (uniform, 1 series)
    custom-<lower>-<upper>-<tick ms>-<generator>-<series>

Event channels (EventChannel), whose rows carry their own times and typed fields and
cannot be recomputed, so the recorder keeps their history:

    source-<source>-<tick ms>      a stateful source a worker runs (host metrics, a device)
    pub-<name>                     rows an external program publishes (`zmqstream publish`)

Numbers are plain decimals (`-?\\d{1,15}(\\.\\d{1,9})?`); negatives simply follow the
separator (`custom--5-5-100`). Two paths that mean the same spec (`custom-10-20-100`,
`custom-10.0-20-100.00`) share one canonical path, which is the ZeroMQ topic, so they
share one ticker.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal

from services.common.errors import InvalidChannel

DEFAULT_GENERATOR = "uniform"
MAX_PATH_CHARS = 120
"""Grafana limits `ds/<uid>/<path>` to 160 characters; a datasource uid takes up to 40."""

_NUMBER = r"-?\d{1,15}(?:\.\d{1,9})?"
_GENERATOR_NAME = r"[a-z][a-z0-9_]{0,31}"
_PATH_RE = re.compile(
    rf"custom-(?P<lower>{_NUMBER})-(?P<upper>{_NUMBER})-(?P<tick>{_NUMBER})"
    rf"(?:-(?P<generator>{_GENERATOR_NAME})-(?P<series>\d{{1,4}}))?",
    re.ASCII,  # \d would also match other scripts' digits, which float() accepts
)
GENERATOR_NAME_RE = re.compile(_GENERATOR_NAME)
_SOURCE_RE = re.compile(rf"source-(?P<source>{_GENERATOR_NAME})-(?P<tick>{_NUMBER})", re.ASCII)
_PUBLISHED_RE = re.compile(r"pub-(?P<name>[a-z0-9][a-z0-9_.\-]{0,63})", re.ASCII)
SOURCE = "source"
PUBLISHED = "pub"


@dataclass(frozen=True, slots=True)
class Limits:
    """What a channel may ask for. The broker and the plugin enforce the same limits."""

    min_tick_ms: float = 1.0
    max_tick_ms: float = 3_600_000.0
    max_series: int = 10


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """What a ticker generates: `series` values in [lower, upper] every `tick_ms`."""

    lower: float
    upper: float
    tick_ms: float
    generator: str = DEFAULT_GENERATOR
    series: int = 1
    # Derived once: the plugin reads them for every data frame it receives.
    path: str = field(init=False, repr=False, compare=False)
    """The canonical path: the shortest spelling, and the ZeroMQ topic of the channel."""
    tick_ns: int = field(init=False, repr=False, compare=False)
    phase_ns: int = field(init=False, repr=False, compare=False)
    """Where in each interval this channel ticks: tick k is at `k * tick_ns + phase_ns`.

    A whole number of microseconds below `tick_ns`, from a hash of the path. Channels of
    one interval would otherwise all tick at the same instant, and a worker running
    thousands of them would emit every tick as one burst, most of it late (Prometheus
    offsets each target's scrapes by a hash for the same reason).
    """

    def __post_init__(self) -> None:
        path = _canonical(self)
        scaled = self.tick_ms * 1_000_000
        tick_ns = round(scaled) if math.isfinite(scaled) else 0  # check() refuses what has no tick
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "tick_ns", tick_ns)
        object.__setattr__(self, "phase_ns", _phase_ns(path, tick_ns))

    @property
    def values_per_s(self) -> float:
        """Rows per second times series: what the channel costs whoever carries it."""
        return self.series * 1000.0 / self.tick_ms

    def tick_time(self, tick: int) -> int:
        """When tick `tick` is due and the time stamped on its row (ns since the epoch)."""
        return tick * self.tick_ns + self.phase_ns

    def tick_times(self, ticks: range) -> list[int]:
        """`tick_time` of each of `ticks`."""
        tick_ns, phase_ns = self.tick_ns, self.phase_ns
        return [k * tick_ns + phase_ns for k in ticks]

    def last_tick(self, at_ns: int) -> int:
        """The index of the last tick due at or before `at_ns`."""
        return (at_ns - self.phase_ns) // self.tick_ns

    def first_tick(self, from_ns: int) -> int:
        """The index of the first tick due at or after `from_ns`."""
        return -(-(from_ns - self.phase_ns) // self.tick_ns)

    def check(self, limits: Limits) -> ChannelSpec:
        """Raise InvalidChannel unless the spec is sane and within `limits`; return self."""
        for name, value in (("lower", self.lower), ("upper", self.upper), ("tick", self.tick_ms)):
            if not math.isfinite(value):
                raise InvalidChannel(f"{name} must be a finite number, got {value!r}")
        if not self.lower < self.upper:
            raise InvalidChannel(f"lower ({_plain(self.lower)}) must be below upper ({_plain(self.upper)})")
        if not limits.min_tick_ms <= self.tick_ms <= limits.max_tick_ms:
            raise InvalidChannel(
                f"tick interval {_plain(self.tick_ms)} ms is outside "
                f"[{_plain(limits.min_tick_ms)}, {_plain(limits.max_tick_ms)}] ms"
            )
        if not 1 <= self.series <= limits.max_series:
            raise InvalidChannel(f"series {self.series} is outside [1, {limits.max_series}]")
        if not GENERATOR_NAME_RE.fullmatch(self.generator):
            raise InvalidChannel(f"generator name {self.generator!r} is not [a-z][a-z0-9_]*")
        return self


@dataclass(frozen=True, slots=True)
class EventChannel:
    """A channel of events: rows with their own times and typed fields, not recomputable.

    `kind` SOURCE: the source `name` runs on a worker, polled every `tick_ms`. `kind`
    PUBLISHED: external programs publish rows into `name` (tick_ms 0: no schedule).
    """

    kind: str
    name: str
    tick_ms: float = 0.0
    path: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        path = f"pub-{self.name}" if self.kind == PUBLISHED else f"source-{self.name}-{_plain(self.tick_ms)}"
        object.__setattr__(self, "path", path)

    @property
    def tick_ns(self) -> int:
        return round(self.tick_ms * 1_000_000)

    def check(self, limits: Limits) -> EventChannel:
        """Raise InvalidChannel unless a source's interval is within `limits`; return self."""
        if self.kind == SOURCE and not limits.min_tick_ms <= self.tick_ms <= limits.max_tick_ms:
            raise InvalidChannel(
                f"tick interval {_plain(self.tick_ms)} ms is outside "
                f"[{_plain(limits.min_tick_ms)}, {_plain(limits.max_tick_ms)}] ms"
            )
        return self


Channel = ChannelSpec | EventChannel


def parse_channel(path: str, limits: Limits) -> Channel:
    """Parse and check any channel path, pure or event; InvalidChannel says what is wrong."""
    if path.startswith("custom-"):
        return parse_path(path, limits)
    if len(path) > MAX_PATH_CHARS:
        raise InvalidChannel(f"path is {len(path)} characters, the limit is {MAX_PATH_CHARS}")
    if match := _SOURCE_RE.fullmatch(path):
        return EventChannel(SOURCE, match["source"], float(match["tick"])).check(limits)
    if match := _PUBLISHED_RE.fullmatch(path):
        return EventChannel(PUBLISHED, match["name"])
    raise InvalidChannel(
        f"path {path[:MAX_PATH_CHARS]!r} is not custom-<lower>-<upper>-<tick ms>[-<generator>-<series>], "
        "source-<source>-<tick ms> or pub-<name> (lower-case letters, digits, '_', '.', '-')"
    )


def parse_path(path: str, limits: Limits) -> ChannelSpec:
    """Parse and check a Live channel path; InvalidChannel says what is wrong with it."""
    if len(path) > MAX_PATH_CHARS:
        raise InvalidChannel(f"path is {len(path)} characters, the limit is {MAX_PATH_CHARS}")
    match = _PATH_RE.fullmatch(path)
    if match is None:
        raise InvalidChannel(f"path {path!r} is not custom-<lower>-<upper>-<tick ms>[-<generator>-<series>]")
    spec = ChannelSpec(
        lower=float(match["lower"]),
        upper=float(match["upper"]),
        tick_ms=float(match["tick"]),
        generator=match["generator"] or DEFAULT_GENERATOR,
        series=int(match["series"] or 1),
    )
    return spec.check(limits)


def _canonical(spec: ChannelSpec) -> str:
    if not all(math.isfinite(value) for value in (spec.lower, spec.upper, spec.tick_ms)):
        return ""  # check() refuses such a spec; it has no path
    head = f"custom-{_plain(spec.lower)}-{_plain(spec.upper)}-{_plain(spec.tick_ms)}"
    if spec.generator == DEFAULT_GENERATOR and spec.series == 1:
        return head
    return f"{head}-{spec.generator}-{spec.series}"


def _phase_ns(path: str, tick_ns: int) -> int:
    period_us = max(1, tick_ns // 1000)
    digest = hashlib.blake2b(path.encode(), digest_size=8, person=b"tick-phase").digest()
    return int.from_bytes(digest, "big") % period_us * 1000


def _plain(value: float) -> str:
    """A float as the shortest plain decimal (no exponent), `-0` as `0`."""
    text = format(Decimal(repr(value)).normalize(), "f")
    return "0" if text in ("-0", "0") else text


UNCHECKED = Limits(min_tick_ms=1e-6, max_tick_ms=1e15, max_series=9999)
"""For processes that run what the broker already checked against the configured limits."""
