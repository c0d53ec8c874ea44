"""Per-provider traffic metrics: the latency histogram layout shared by the usage
writer (which fills MetricBucket rows) and the status API (which aggregates them
over 5m / 1h / 24h windows)."""

from __future__ import annotations

import bisect

# Upper bounds (ms) of the histogram buckets; the last bucket is everything above.
LATENCY_BOUNDS_MS: tuple[float, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
BUCKET_COUNT = len(LATENCY_BOUNDS_MS) + 1


def bucket_index(latency_ms: float) -> int:
    return bisect.bisect_left(LATENCY_BOUNDS_MS, latency_ms)


def empty_histogram() -> list[int]:
    return [0] * BUCKET_COUNT
