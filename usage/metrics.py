"""Per-provider traffic metrics: the latency histogram layout shared by the usage
writer (which fills MetricBucket rows) and the status API (which aggregates them
over 5m / 1h / 24h windows)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from usage.models import MetricBucket

# Upper bounds (ms) of the histogram buckets; the last bucket is everything above.
LATENCY_BOUNDS_MS: tuple[float, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
BUCKET_COUNT = len(LATENCY_BOUNDS_MS) + 1

WINDOWS: dict[str, timedelta] = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1), "24h": timedelta(hours=24)}
DEFAULT_WINDOW = "5m"
SERIES_POINTS = 30  # latency points per window, for the board's sparkline


def bucket_index(latency_ms: float) -> int:
    return bisect.bisect_left(LATENCY_BOUNDS_MS, latency_ms)


def empty_histogram() -> list[int]:
    return [0] * BUCKET_COUNT


def percentile(histogram: Sequence[int], q: float) -> float | None:
    """The q-quantile (0 < q <= 1) of a LATENCY_BOUNDS_MS histogram, or None when empty.

    Interpolates linearly inside the bucket holding the rank; a rank in the overflow
    bucket reports its lower bound (the histogram knows nothing above it)."""
    total = sum(histogram)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(histogram):
        if count and seen + count >= rank:
            lower = LATENCY_BOUNDS_MS[i - 1] if i > 0 else 0.0
            if i >= len(LATENCY_BOUNDS_MS):
                return float(lower)
            return float(lower + (LATENCY_BOUNDS_MS[i] - lower) * (rank - seen) / count)
        seen += count
    return float(LATENCY_BOUNDS_MS[-1])


@dataclass(slots=True)
class WindowMetrics:
    """One provider's traffic over a window, summed from its minute buckets."""

    request_count: int = 0
    error_count: int = 0
    retry_count: int = 0  # re-sends to a provider that had failed the same request
    latency_sum_ms: float = 0.0
    histogram: list[int] = field(default_factory=empty_histogram)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal("0")
    # Average latency per slot of the window, oldest first (None: no traffic then).
    series_sums: list[float] = field(default_factory=list)
    series_counts: list[int] = field(default_factory=list)

    @property
    def latency_series(self) -> list[float | None]:
        return [s / c if c else None for s, c in zip(self.series_sums, self.series_counts, strict=True)]

    def add(self, bucket) -> None:
        self.request_count += bucket.request_count
        self.error_count += bucket.error_count
        self.retry_count += bucket.retry_count
        self.latency_sum_ms += bucket.latency_sum_ms
        self.prompt_tokens += bucket.prompt_tokens
        self.completion_tokens += bucket.completion_tokens
        self.cost += bucket.cost or 0
        for i, count in enumerate((bucket.latency_histogram or [])[:BUCKET_COUNT]):
            self.histogram[i] += int(count)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def avg_response_time_ms(self) -> float | None:
        return round(self.latency_sum_ms / self.request_count, 1) if self.request_count else None

    @property
    def p95_response_time_ms(self) -> float | None:
        value = percentile(self.histogram, 0.95)
        return None if value is None else round(value, 1)

    @property
    def error_rate(self) -> float | None:
        return round(self.error_count / self.request_count, 4) if self.request_count else None

    def as_dict(self) -> dict:
        return {
            "request_count": self.request_count,
            "error_count": self.error_count,
            "retry_count": self.retry_count,
            "avg_response_time_ms": self.avg_response_time_ms,
            "p95_response_time_ms": self.p95_response_time_ms,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost": {"amount": format(self.cost.quantize(Decimal("0.00000001")), "f"), "currency": "USD"},
        }


def window_start(window: str, now: datetime | None = None) -> datetime:
    """The first minute bucket inside `window` (KeyError for an unknown window).

    A window of five minutes is the current, partly filled minute and the four before."""
    now = now or timezone.now()
    minute = now.replace(second=0, microsecond=0)
    return minute - WINDOWS[window] + timedelta(minutes=1)


def window_metrics(
    tenant_id: int, window: str = DEFAULT_WINDOW, provider_ids: Iterable[int] | None = None, now: datetime | None = None
) -> dict[int, WindowMetrics]:
    """{provider id: metrics over `window`} for the tenant's providers with traffic.

    Must run inside tenants.rls.tenant_context(tenant_id). One query; providers without
    buckets are absent (callers default to an empty WindowMetrics)."""
    start = window_start(window, now)
    minutes = int(WINDOWS[window].total_seconds() // 60)
    points = min(SERIES_POINTS, minutes)
    rows = MetricBucket.objects.filter(tenant_id=tenant_id, minute__gte=start).only(
        "provider_id",
        "minute",
        "request_count",
        "error_count",
        "retry_count",
        "latency_sum_ms",
        "latency_histogram",
        "prompt_tokens",
        "completion_tokens",
        "cost",
    )
    if provider_ids is not None:
        rows = rows.filter(provider_id__in=list(provider_ids))
    result: dict[int, WindowMetrics] = {}
    for bucket in rows.iterator(chunk_size=2000):
        metrics = result.get(bucket.provider_id)
        if metrics is None:
            metrics = result[bucket.provider_id] = WindowMetrics(series_sums=[0.0] * points, series_counts=[0] * points)
        metrics.add(bucket)
        slot = min(points - 1, max(0, int((bucket.minute - start).total_seconds() // 60) * points // minutes))
        metrics.series_sums[slot] += bucket.latency_sum_ms
        metrics.series_counts[slot] += bucket.request_count
    return result
