"""Log lines in hclog's JSON shape, which go-plugin parses from the plugin's stderr.

go-plugin reads `@level`, `@message` and `@timestamp` with unchecked string assertions
(a number there panics Grafana's log goroutine) and accepts only a timestamp with exactly
six fractional digits; anything else on a line is shown as key=value.
"""

import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest

from services.common.logs import HclogJsonFormatter, fields, setup_logging

HCLOG_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")


def record(level: int, message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("zmqstream.test", level, __file__, 1, message, args, None)
    rec.__dict__.update(extra)
    return rec


def formatted(rec: logging.LogRecord) -> dict[str, object]:
    line = HclogJsonFormatter().format(rec)
    assert "\n" not in line, "one entry per line"
    entry = orjson.loads(line)
    assert isinstance(entry, dict)
    return entry


@pytest.mark.parametrize(
    ("level", "hclog"),
    [
        (logging.DEBUG, "debug"),
        (logging.INFO, "info"),
        (logging.WARNING, "warn"),
        (logging.ERROR, "error"),
        (logging.CRITICAL, "error"),
        (25, "info"),
    ],
)
def test_levels_are_hclog_s_names(level: int, hclog: str) -> None:
    assert formatted(record(level, "m"))["@level"] == hclog


def test_the_required_keys_are_strings_and_the_timestamp_has_six_fraction_digits() -> None:
    rec = record(logging.INFO, "stream %s of %d", "a", 3)
    rec.created = 1_700_000_000.000_001  # a microsecond past a second: zeros must be kept
    entry = formatted(rec)
    assert entry["@message"] == "stream a of 3"
    assert entry["@timestamp"] == "2023-11-14T22:13:20.000001+00:00"
    assert entry["@module"] == "zmqstream.test"
    for key in ("@level", "@message", "@timestamp"):
        assert isinstance(entry[key], str)


def test_the_timestamp_is_the_record_s_time_in_utc() -> None:
    rec = record(logging.INFO, "m")
    stamp = formatted(rec)["@timestamp"]
    assert isinstance(stamp, str)
    assert HCLOG_TIMESTAMP.fullmatch(stamp)
    parsed = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z")
    assert abs(parsed.timestamp() - rec.created) < 1e-6
    assert parsed.tzinfo is not None
    assert parsed.utcoffset() == UTC.utcoffset(None)


def test_fields_become_top_level_keys_and_odd_values_become_text() -> None:
    entry = formatted(
        record(logging.WARNING, "refused", **fields(channel="custom-a-b-c", count=2, where=object))
    )
    assert entry["channel"] == "custom-a-b-c"
    assert entry["count"] == 2
    assert entry["where"] == "<class 'object'>"


def test_a_multi_line_message_and_unicode_stay_on_one_line() -> None:
    entry = formatted(record(logging.ERROR, "first\nsecond — «ü»"))
    assert entry["@message"] == "first\nsecond — «ü»"


def test_an_exception_goes_into_the_error_key() -> None:
    try:
        raise ValueError("bad value")
    except ValueError:
        rec = record(logging.ERROR, "failed")
        rec.exc_info = sys.exc_info()
    entry = formatted(rec)
    assert entry["@message"] == "failed"
    assert isinstance(entry["error"], str)
    assert "ValueError: bad value" in entry["error"]


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, restored afterwards (setup_logging replaces its handlers)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_setup_logging_writes_json_lines_to_stderr_only(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("warning")
    log = logging.getLogger("zmqstream.test")
    log.info("hidden")
    log.warning("shown", extra=fields(path="custom-10-20-100"))
    captured = capsys.readouterr()
    assert captured.out == "", "stdout belongs to go-plugin's handshake"
    (line,) = captured.err.splitlines()
    entry = orjson.loads(line)
    assert (entry["@level"], entry["@message"], entry["path"]) == ("warn", "shown", "custom-10-20-100")
    assert len(root_logger.handlers) == 1
