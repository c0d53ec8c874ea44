"""Each routed request into the Prometheus metrics (axonflow_site/metrics.py).

The usage writer calls `observe(batch)` as it takes entries off its queue, in its own
thread: the request path pays nothing, a scrape lags the traffic by at most one writer
round (AXONFLOW_USAGE_FLUSH_SECONDS), and an entry waiting out a database outage is
counted once, when first taken (`Entry.observed`). Counters are summed per batch and
added once per label set; so are histograms: each batch's observations of one series
are sorted into its buckets here and added with one increment per bucket (`add_to`),
rather than one locked `observe()` each. That is a third of the cost per request
(docs/benchmarks.md, "Step 10").
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from collections import defaultdict

from axonflow_site import metrics
from axonflow_site.metrics import (
    ATTEMPTS,
    COST,
    FAILOVERS,
    FIRST_TOKEN_SECONDS,
    OVERHEAD_SECONDS,
    REQUEST_SECONDS,
    REQUESTS,
    RETRIES,
    TOKENS,
    UPSTREAM_SECONDS,
    child,
)
from usage.entry import Entry

# Attempt outcomes (routing/route.py Attempt.outcome) that are not upstream failures.
SKIPPED, CANCELLED = "rate_limited", "client_cancelled"
ERROR_CLASSES = {"timeout", "connect_error", "malformed", "stream_error", "invalid_config"}
CLASSES: dict[str, tuple[str, str]] = {}  # error_class() of each outcome seen (a few dozen at most)


def error_class(outcome: str) -> tuple[str, str]:
    """(outcome, error class) of one attempt, both from small fixed sets."""
    if outcome == "success":
        return "success", "none"
    if outcome == SKIPPED:
        return "skipped", "rate_limited"
    if outcome == CANCELLED:
        return "cancelled", "client_cancelled"
    if outcome.startswith("http_") and outcome[5:].isdigit():
        status = int(outcome[5:])
        if status == 429:
            return "failure", "rate_limited"
        if status in (401, 403):
            return "failure", "credentials_rejected"
        return "failure", "server_error" if status >= 500 else "client_error"
    return "failure", outcome if outcome in ERROR_CLASSES else "other"


def observe(batch: list[Entry]) -> None:
    """Count every entry of `batch` not counted before; never raises into the writer."""
    if not metrics.enabled:
        return
    counts: Tally = Tally()
    timings: defaultdict[tuple, list[float]] = defaultdict(list)
    for entry in batch:
        if entry.observed:
            continue
        entry.observed = True
        _observe_one(entry, counts, timings)
    for (family, labels), amount in counts.items():
        child(family, *labels).inc(float(amount))  # cost is summed as Decimal, exactly
    for (family, labels), seconds in timings.items():
        add_to(child(family, *labels), seconds)


def add_to(histogram, seconds: list[float]) -> None:
    """What `observe()` on each value would do, with one increment per bucket touched.
    Reads prometheus-client's Histogram internals (`_upper_bounds`, `_buckets`, `_sum`:
    the same since 0.4); tests/test_prometheus.py checks the counts and sums exactly."""
    bounds = histogram._upper_bounds  # ascending, +Inf last: a value goes to the first bound >= it
    per_bucket = [0] * len(bounds)
    for value in seconds:
        per_bucket[bisect_left(bounds, value)] += 1
    histogram._sum.inc(sum(seconds))
    for index, count in enumerate(per_bucket):
        if count:
            histogram._buckets[index].inc(count)


def _observe_one(entry: Entry, counts: Tally, timings: defaultdict) -> None:
    tenant = entry.tenant if metrics.tenant_labels else ""
    provider = entry.provider_name or "none"
    outcome = "success" if entry.status == "success" else (entry.error_code or "error")
    counts[REQUESTS, (tenant, entry.endpoint, entry.model_requested or "auto", provider, outcome)] += 1
    timings[REQUEST_SECONDS, (tenant, entry.endpoint, provider)].append(entry.latency_ms / 1000)
    upstream_ms, previous = 0.0, None
    for attempt in entry.attempts:
        name = attempt["provider"]
        outcome = attempt["outcome"]
        classes = CLASSES.get(outcome)
        if classes is None:
            classes = CLASSES[outcome] = error_class(outcome)
        result, kind = classes
        counts[ATTEMPTS, (tenant, name, result, kind)] += 1
        if result == "skipped":
            continue
        if attempt.get("retry"):
            counts[RETRIES, (tenant, name)] += 1
            upstream_ms += attempt.get("waited_ms") or 0.0
        elif previous is not None:
            counts[FAILOVERS, (tenant, previous)] += 1
        previous = name
        upstream_ms += attempt["latency_ms"]
        timings[UPSTREAM_SECONDS, (tenant, name, result)].append(attempt["latency_ms"] / 1000)
    if entry.stream:
        if entry.ttft_ms is not None:
            timings[FIRST_TOKEN_SECONDS, (tenant, provider)].append(entry.ttft_ms / 1000)
    elif previous is not None:
        elapsed = entry.elapsed_ms if entry.elapsed_ms is not None else entry.latency_ms
        timings[OVERHEAD_SECONDS, (entry.endpoint,)].append(max(0.0, elapsed - upstream_ms) / 1000)
    if entry.status == "success":
        counts[TOKENS, (tenant, provider, "input")] += entry.prompt_tokens
        counts[TOKENS, (tenant, provider, "output")] += entry.completion_tokens
        counts[COST, (tenant, provider)] += entry.cost
