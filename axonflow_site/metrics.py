"""The Prometheus metrics AxonFlow exports (`GET /metrics`, docs/observability.md).

Every family is defined here, once, with the official prometheus-client; the layers
fill them in:

    usage/observe.py      each routed request as the usage writer takes it off its
                          queue: requests, attempts, failovers, re-sends, latencies,
                          tokens and cost (off the request path, in the writer thread)
    the faces             rejections (rate_limited, budget_exceeded) as they answer them
    routing/scrape.py     provider health, circuit and operator state, read when scraped
    SAMPLED gauges        in-flight requests and streams, the usage queue: each a
                          function sampled at scrape time (one process) or every second
                          (several)

Several worker processes: when PROMETHEUS_MULTIPROC_DIR names a directory (empty at
start, shared by the workers of one instance), prometheus-client keeps each process's
values in memory-mapped files there and a scrape of any worker sums them all
(https://prometheus.github.io/client_python/multiprocess/). Without it the values
live in this process, which is cheaper.

Label values come from configuration, never from a client: tenant slugs, provider
names, the model names a tenant's pool admits (an unknown name is refused before
routing), and fixed sets (endpoint, outcome, error class).
AXONFLOW_METRICS_TENANT_LABELS=false leaves the tenant label empty, for installs with
very many tenants.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir"))

# Seconds. A completion takes from tens of milliseconds (a cache, a small model) to
# minutes (a long answer), so the buckets span both.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# The gateway's own share of a request: tens of microseconds to a few milliseconds.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

REQUESTS = Counter(
    "axonflow_requests",
    "Routed requests by endpoint (chat, embeddings, messages), the model asked for, the provider "
    "that answered (or was tried last) and the outcome (success or the error code).",
    ["tenant", "endpoint", "model", "provider", "outcome"],
)
ATTEMPTS = Counter(
    "axonflow_attempts",
    "Upstream attempts by provider, outcome (success, failure, skipped for a rate limit, cancelled "
    "by the client) and error class.",
    ["tenant", "provider", "outcome", "error_class"],
)
FAILOVERS = Counter(
    "axonflow_failovers",
    "Requests moved on to another provider after this provider failed them.",
    ["tenant", "provider"],
)
RETRIES = Counter(
    "axonflow_retries",
    "Re-sends to a provider that had already failed the same request (after a backoff).",
    ["tenant", "provider"],
)
TOKENS = Counter(
    "axonflow_tokens",
    "Tokens of served requests, by direction (input: the prompt, output: the completion).",
    ["tenant", "provider", "direction"],
)
COST = Counter("axonflow_cost_usd", "Cost of served requests in US dollars.", ["tenant", "provider"])
REJECTIONS = Counter(
    "axonflow_rejections",
    "Requests answered 429 by a limit: reason rate_limited (the tenant's API limit, or every "
    "provider over its own) or budget_exceeded.",
    ["tenant", "endpoint", "reason"],
)
REQUEST_SECONDS = Histogram(
    "axonflow_request_duration_seconds",
    "End-to-end time of routed requests, from routing to the last byte of the answer.",
    ["tenant", "endpoint", "provider"],
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_SECONDS = Histogram(
    "axonflow_upstream_duration_seconds",
    "Time of each upstream attempt (for a stream: until its first chunk).",
    ["tenant", "provider", "outcome"],
    buckets=LATENCY_BUCKETS,
)
FIRST_TOKEN_SECONDS = Histogram(
    "axonflow_time_to_first_token_seconds",
    "Streams: time from routing to the first chunk, failovers included.",
    ["tenant", "provider"],
    buckets=LATENCY_BUCKETS,
)
OVERHEAD_SECONDS = Histogram(
    "axonflow_overhead_seconds",
    "The gateway's own time in a non-streaming request: end-to-end minus the upstream attempts "
    "and any backoff before a re-send.",
    ["endpoint"],
    buckets=OVERHEAD_BUCKETS,
)
USAGE_WRITE_FAILURES = Counter(
    "axonflow_usage_write_failures",
    "Usage writes that failed (kept for the next round) and records dropped, by what happened.",
    ["kind"],
)
IN_FLIGHT_REQUESTS = Gauge(
    "axonflow_in_flight_requests", "HTTP requests being served now.", multiprocess_mode="livesum"
)
IN_FLIGHT_STREAMS = Gauge("axonflow_in_flight_streams", "Streams being relayed now.", multiprocess_mode="livesum")
USAGE_QUEUE = Gauge(
    "axonflow_usage_queue_depth", "Usage records waiting to be written.", multiprocess_mode="livesum"
)

# (gauge, function giving its value): set at each scrape, and every SAMPLE_SECONDS by a
# thread when several processes share the metrics (a scrape reaches only one of them).
SAMPLED: list[tuple[Gauge, Callable[[], float]]] = []
SAMPLE_SECONDS = 1.0
_sampler: threading.Thread | None = None

_children: dict[tuple, object] = {}
tenant_labels = True  # settings.AXONFLOW_METRICS_TENANT_LABELS (axonflow_site/settings.py applies it)
enabled = True  # settings.AXONFLOW_METRICS


def child(family, *values: str):
    """The labelled child of `family`: prometheus-client's `labels()` validates and locks
    on every call; the children are few (label values are bounded), so keep them."""
    key = (family, values)
    found = _children.get(key)
    if found is None:
        found = _children[key] = family.labels(*values)
    return found


def tenant_label(slug: str) -> str:
    return slug if tenant_labels else ""


def reject(tenant: str, endpoint: str, reason: str) -> None:
    """Count a request answered 429 by a limit (the faces call this as they answer)."""
    if enabled:
        child(REJECTIONS, tenant_label(tenant), endpoint, reason).inc()


def sample(gauge: Gauge, value: Callable[[], float]) -> None:
    """Have `gauge` follow `value()` (an int or float the process keeps anyway)."""
    SAMPLED.append((gauge, value))


def take_samples() -> None:
    for gauge, value in SAMPLED:
        try:
            gauge.set(value())
        except Exception:  # a sample is worth less than the scrape or the thread
            pass


def start_sampler() -> None:
    """Several processes: keep this one's sampled gauges current in the shared files."""
    global _sampler
    if not (MULTIPROCESS and enabled) or (_sampler is not None and _sampler.is_alive()):
        return
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(SAMPLE_SECONDS):
            take_samples()

    take_samples()
    _sampler = threading.Thread(target=run, name="metrics-sampler", daemon=True)
    _sampler.start()


def mark_process_dead() -> None:
    """At shutdown, several processes: drop this process's live gauges from the sums."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())


async def start_metrics() -> None:
    """Lifespan startup hook (axonflow_site/lifespan.py)."""
    start_sampler()


async def stop_metrics() -> None:
    """Lifespan shutdown hook, after the usage flush (which counts the last requests)."""
    mark_process_dead()
