"""usage/metrics.py: percentiles from the shared latency histogram, window bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from usage.metrics import LATENCY_BOUNDS_MS, bucket_index, empty_histogram, percentile, window_start


def histogram_of(latencies: list[float]) -> list[int]:
    histogram = empty_histogram()
    for latency in latencies:
        histogram[bucket_index(latency)] += 1
    return histogram


def test_an_empty_histogram_has_no_percentile():
    assert percentile(empty_histogram(), 0.95) is None


def test_the_percentile_interpolates_inside_its_bucket():
    assert percentile(histogram_of([60.0] * 10), 0.5) == 75.0  # halfway through 50-100 ms


def test_a_rank_in_the_overflow_bucket_reports_the_last_bound():
    assert percentile(histogram_of([10.0] + [90_000.0] * 99), 0.95) == LATENCY_BOUNDS_MS[-1]


def test_a_latency_on_a_bound_belongs_to_the_bucket_below():
    assert bucket_index(50.0) == LATENCY_BOUNDS_MS.index(50)


@pytest.mark.parametrize("window, minutes", [("5m", 4), ("1h", 59), ("24h", 24 * 60 - 1)])
def test_a_window_starts_that_many_minutes_back_including_the_current_one(window, minutes):
    now = datetime(2026, 3, 1, 12, 30, 42, tzinfo=UTC)
    assert window_start(window, now) == datetime(2026, 3, 1, 12, 30, tzinfo=UTC) - timedelta(minutes=minutes)


def test_an_unknown_window_is_a_key_error():
    with pytest.raises(KeyError):
        window_start("7d")
