"""Counts in messages people read: "1 row", "2 rows", "1,000 channels", never "1 rows"."""

from __future__ import annotations


def count(n: float, noun: str, plural: str = "") -> str:
    """`n` and `noun`, plural unless `n` is 1 (`plural` for nouns not made with -s), with thousands commas."""
    number = f"{n:,}" if isinstance(n, int) else f"{n:,g}"
    return f"{number} {noun if n == 1 else plural or noun + 's'}"
