"""The channel path grammar: what a Live path means, its canonical spelling, and every refusal."""

import math

import pytest

from services.common.channels import MAX_PATH_CHARS, UNCHECKED, ChannelSpec, Limits, parse_path
from services.common.errors import InvalidChannel

LIMITS = Limits()


def refusal(path: str, limits: Limits = LIMITS) -> str:
    with pytest.raises(InvalidChannel) as refused:
        parse_path(path, limits)
    return str(refused.value)


def test_the_tutorial_path_is_one_uniform_series() -> None:
    spec = parse_path("custom-10-20-100", LIMITS)
    assert spec == ChannelSpec(10.0, 20.0, 100.0, "uniform", 1)
    assert spec.path == "custom-10-20-100"
    assert spec.tick_ns == 100_000_000


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("custom-0.5-1.25-2.5", ChannelSpec(0.5, 1.25, 2.5)),
        ("custom--5-5-100", ChannelSpec(-5.0, 5.0, 100.0)),
        ("custom--10--5-100", ChannelSpec(-10.0, -5.0, 100.0)),
        ("custom--0.000000001-0.000000001-1", ChannelSpec(-1e-9, 1e-9, 1.0)),
        ("custom-0-999999999999999-3600000", ChannelSpec(0.0, 999_999_999_999_999.0, 3_600_000.0)),
        ("custom-0-1-100-sine-3", ChannelSpec(0.0, 1.0, 100.0, "sine", 3)),
        ("custom--1-1-20-random_walk-10", ChannelSpec(-1.0, 1.0, 20.0, "random_walk", 10)),
    ],
)
def test_decimals_negatives_and_generators_parse(path: str, expected: ChannelSpec) -> None:
    spec = parse_path(path, LIMITS)
    assert spec == expected
    assert spec.path == path, "already canonical, so the path is its own topic"


@pytest.mark.parametrize(
    "spelling",
    [
        "custom-10-20-100",
        "custom-10.0-20.00-100.000000000",
        "custom-010-0020-100",
        "custom-10-20-100-uniform-1",
        "custom-10.0-20-100-uniform-0001",
    ],
)
def test_equivalent_spellings_share_one_canonical_path(spelling: str) -> None:
    spec = parse_path(spelling, LIMITS)
    assert spec == ChannelSpec(10.0, 20.0, 100.0)
    assert spec.path == "custom-10-20-100"


def test_negative_zero_is_spelled_zero() -> None:
    assert parse_path("custom--0-1-100", LIMITS).path == "custom-0-1-100"


def test_a_canonical_path_parses_back_to_its_spec() -> None:
    for spec in (ChannelSpec(0.1, 0.3, 0.5), ChannelSpec(-2.5, 1e12, 1.25, "sine", 2)):
        assert parse_path(spec.path, UNCHECKED) == spec


def test_sub_millisecond_ticks_round_to_whole_nanoseconds() -> None:
    assert parse_path("custom-0-1-0.1", UNCHECKED).tick_ns == 100_000
    assert parse_path("custom-0-1-0.000001", UNCHECKED).tick_ns == 1


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("custom-1-2-0", "tick interval 0 ms is outside [1, 3600000] ms"),
        ("custom-1-2--5", "tick interval -5 ms is outside [1, 3600000] ms"),
        ("custom-1-2-0.5", "tick interval 0.5 ms is outside"),
        ("custom-1-2-3600001", "tick interval 3600001 ms is outside"),
        ("custom-20-10-100", "lower (20) must be below upper (10)"),
        ("custom-5-5-100", "lower (5) must be below upper (5)"),
        ("custom-0-1-100-sine-0", "series 0 is outside [1, 10]"),
        ("custom-0-1-100-sine-11", "series 11 is outside [1, 10]"),
    ],
)
def test_out_of_range_values_are_refused_with_the_reason(path: str, reason: str) -> None:
    assert reason in refusal(path)


def test_limits_are_the_caller_s() -> None:
    strict = Limits(min_tick_ms=50, max_tick_ms=1000, max_series=2)
    assert "outside [50, 1000] ms" in refusal("custom-0-1-20", strict)
    assert "series 3 is outside [1, 2]" in refusal("custom-0-1-100-sine-3", strict)
    assert parse_path("custom-0-1-50-sine-2", strict).series == 2


@pytest.mark.parametrize(
    "path",
    [
        "custom-a-b-c",
        "custom-NaN-1-100",
        "custom-nan-nan-100",
        "custom-0-inf-100",
        "custom-0-Infinity-100",
        "custom--inf-0-100",
        "custom-1e3-1e4-100",
        "custom-0x10-0x20-100",
        "custom-1,5-2-100",
        "custom-.5-1-100",
        "custom-1.-2-100",
        "custom-+1-2-100",
        "custom-1-2-100-sine",
        "custom-1-2-100-Sine-1",
        "custom-1-2-100-9sine-1",
        "custom-1-2-100-sine-12345",
        "custom-1-2-100-",
        "custom-1-2",
        "custom-10-20-100\n",
        " custom-10-20-100",
        "custom-\u0661-\u0662-\u0661\u0660\u0660",  # Arabic-Indic digits
        "custom-\uff11-\uff12-\uff11\uff10\uff10",  # fullwidth digits
        "other-1-2-3",
        "",
    ],
)
def test_anything_outside_the_grammar_is_refused_by_naming_it(path: str) -> None:
    assert "is not custom-<lower>-<upper>-<tick ms>[-<generator>-<series>]" in refusal(path)


def test_numbers_have_at_most_15_integer_and_9_fraction_digits() -> None:
    assert parse_path("custom-0-100000000000000-100", LIMITS).upper == 1e14
    assert "is not custom-" in refusal("custom-0-1000000000000000-100")
    assert parse_path("custom-0-0.000000001-100", LIMITS).upper == 1e-9
    assert "is not custom-" in refusal("custom-0-0.0000000001-100")


def test_generator_names_are_lowercase_identifiers_of_up_to_32_characters() -> None:
    assert parse_path(f"custom-0-1-100-g{'x' * 31}-1", LIMITS).generator == "g" + "x" * 31
    assert "is not custom-" in refusal(f"custom-0-1-100-g{'x' * 32}-1")
    assert "generator name 'Bad' is not" in _check_error(ChannelSpec(0, 1, 100, "Bad"))


def test_a_10_kb_path_is_refused_by_its_length_before_any_parsing() -> None:
    assert refusal("custom-1-2-" + "1" * 10_240) == "path is 10251 characters, the limit is 120"


def test_the_length_limit_is_120_characters() -> None:
    assert MAX_PATH_CHARS == 120
    assert "is not custom-" in refusal("x" * 120)
    assert refusal("x" * 121) == "path is 121 characters, the limit is 120"


def _check_error(spec: ChannelSpec) -> str:
    with pytest.raises(InvalidChannel) as refused:
        spec.check(LIMITS)
    return str(refused.value)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (ChannelSpec(math.nan, 1, 100), "lower must be a finite number, got nan"),
        (ChannelSpec(0, math.inf, 100), "upper must be a finite number, got inf"),
        (ChannelSpec(0, 1, math.nan), "tick must be a finite number, got nan"),
        (ChannelSpec(-math.inf, 0, 100), "lower must be a finite number, got -inf"),
    ],
)
def test_specs_built_in_code_are_checked_for_nan_and_infinity(spec: ChannelSpec, reason: str) -> None:
    assert _check_error(spec) == reason


def test_tick_times_are_each_tick_s_tick_time_on_the_channel_s_phase() -> None:
    spec = ChannelSpec(0, 1, 0.25, "sine", 3)
    assert spec.tick_times(range(-2, 5)) == [spec.tick_time(k) for k in range(-2, 5)]
    assert spec.tick_times(range(0, 9, 4)) == [spec.phase_ns + k * 250_000 for k in (0, 4, 8)]
