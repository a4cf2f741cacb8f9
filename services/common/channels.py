"""Channel paths: the one place that turns a Grafana Live path into a generator spec.

Grafana runs one RunStream per channel path and shares it with every subscriber, so
everything that makes two streams differ is in the path:

    custom-<lower>-<upper>-<tick ms>                     the tutorial's form (uniform, 1 series)
    custom-<lower>-<upper>-<tick ms>-<generator>-<series>

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
        tick_ns = round(self.tick_ms * 1_000_000) if math.isfinite(self.tick_ms) else 0
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
