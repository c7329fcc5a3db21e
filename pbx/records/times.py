"""Epoch seconds as the records store them: UTC datetimes, durations rounded to the millisecond."""

from __future__ import annotations

from datetime import UTC, datetime


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)
