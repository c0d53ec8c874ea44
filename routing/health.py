"""Health status derivation (probe hysteresis) and the traffic circuit breaker.

Two sources feed a provider's status (docs/health.md):

- **Probes** (routing/monitor.py) produce one observation per check: `healthy` (ok and
  fast), `degraded` (ok but slower than `slow_ms`) or `unhealthy` (failed).
  `derive_status` turns the sequence into a status with hysteresis, so alternating
  outcomes never flap between healthy and unhealthy.
- **Traffic**: the router reports every attempt to `record_attempt`. When 50 % or more
  of a provider's recent attempts (at least 10 in 60 s) fail, its circuit opens at once:
  `is_circuit_open` turns true in this process and the change (unhealthy, source
  `traffic`) is written and broadcast off the request path. After the cooldown the
  circuit is half-open: the next probe or trial request decides whether it closes.

`record_attempt` and `is_circuit_open` are synchronous, in-memory and cheap: they run
on the router's hot path, in async code, and never touch the database themselves.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from typing import Any

from providers.models import HealthStatus

log = logging.getLogger("axonflow.health")

HEALTHY, DEGRADED, UNHEALTHY, UNKNOWN = (
    HealthStatus.HEALTHY.value,
    HealthStatus.DEGRADED.value,
    HealthStatus.UNHEALTHY.value,
    HealthStatus.UNKNOWN.value,
)
THRESHOLDS_TTL_SECONDS = 60.0
clock = time.monotonic  # the breaker's clock; tests replace it


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Every knob of status derivation; a tenant overrides any of them in
    `Tenant.health_settings` (same keys)."""

    slow_ms: float = 2000.0  # an ok probe slower than this is a `degraded` observation
    failures_to_unhealthy: int = 3  # consecutive failed probes
    successes_to_healthy: int = 2  # consecutive fast probes to leave degraded/unhealthy
    probe_timeout_seconds: float = 10.0  # also capped by the provider's timeout_seconds
    traffic_window_seconds: float = 60.0
    traffic_min_requests: int = 10
    traffic_sample_size: int = 20  # only the most recent attempts count, so a fresh failure trips fast
    traffic_error_rate: float = 0.5
    circuit_cooldown_seconds: float = 30.0


DEFAULT_THRESHOLDS = Thresholds()
_FIELDS = {f.name: f.type for f in fields(Thresholds)}


def parse_thresholds(data: Mapping[str, Any] | None) -> Thresholds:
    """Thresholds from a tenant's `health_settings`; raise ValueError naming the first
    unknown key or bad value (numbers only, positive; the error rate in (0, 1])."""
    if not data:
        return DEFAULT_THRESHOLDS
    if not isinstance(data, Mapping):
        raise ValueError("health_settings must be an object")
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key not in _FIELDS:
            raise ValueError(f"unknown health setting '{key}'")
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ValueError(f"health setting '{key}' must be a number")
        value = int(raw) if _FIELDS[key] == "int" else float(raw)
        if value <= 0 or (_FIELDS[key] == "int" and value != raw):
            raise ValueError(f"health setting '{key}' must be a positive {_FIELDS[key]}")
        values[key] = value
    thresholds = replace(DEFAULT_THRESHOLDS, **values)
    if thresholds.traffic_error_rate > 1:
        raise ValueError("health setting 'traffic_error_rate' must be at most 1")
    if thresholds.traffic_sample_size < thresholds.traffic_min_requests:
        raise ValueError("health setting 'traffic_sample_size' must be at least traffic_min_requests")
    return thresholds


def thresholds_for(tenant) -> Thresholds:
    """The tenant's thresholds; a bad `health_settings` logs and falls back to defaults
    (a typo in an admin form must not stop health checks)."""
    try:
        thresholds = parse_thresholds(tenant.health_settings)
    except ValueError as exc:
        log.warning("tenant %s: ignoring health_settings (%s)", tenant.pk, exc)
        thresholds = DEFAULT_THRESHOLDS
    remember_thresholds(tenant.pk, thresholds)
    return thresholds


# --- probe hysteresis -------------------------------------------------------------------


def observe(ok: bool, latency_ms: float | None, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> str:
    """The status of one observation: unhealthy if it failed, degraded if slow, else healthy."""
    if not ok:
        return UNHEALTHY
    if latency_ms is not None and latency_ms > thresholds.slow_ms:
        return DEGRADED
    return HEALTHY


def _trailing(results: Sequence[str], match) -> int:
    count = 0
    for status in reversed(results):
        if not match(status):
            break
        count += 1
    return count


def _step(current: str, results: Sequence[str], t: Thresholds) -> str:
    """The status after results[-1], given the status before it and the streaks that
    end in it."""
    last = results[-1]
    if last == UNHEALTHY:
        failures = _trailing(results, lambda s: s == UNHEALTHY)
        return UNHEALTHY if failures >= t.failures_to_unhealthy or current == UNHEALTHY else DEGRADED
    fast = _trailing(results, lambda s: s == HEALTHY)
    if current == UNHEALTHY:
        if _trailing(results, lambda s: s != UNHEALTHY) < t.successes_to_healthy:
            return UNHEALTHY
        return HEALTHY if fast >= t.successes_to_healthy else DEGRADED
    if last == DEGRADED:
        return DEGRADED
    if current in (UNKNOWN, HEALTHY) or fast >= t.successes_to_healthy:
        return HEALTHY
    return DEGRADED


def derive_status(
    results: Sequence[str], thresholds: Thresholds = DEFAULT_THRESHOLDS, current: str | None = None
) -> str:
    """The provider status after a sequence of observations (oldest first).

    Without `current`, the whole sequence is replayed from `unknown`. With `current`
    (the status before the last observation), only the last step is taken; `results`
    must then hold enough recent history for the streaks (the monitor passes the last
    few probe results). Both agree: derive(r) == derive(r, current=derive(r[:-1])).

    Rules: a failure or a slow probe gives `degraded`; `failures_to_unhealthy`
    consecutive failures give `unhealthy`; leaving `degraded` or `unhealthy` takes
    `successes_to_healthy` consecutive ok observations (all fast for `healthy`). A
    first fast probe of a never-checked provider gives `healthy` at once.
    """
    if not results:
        return current or UNKNOWN
    if current is not None:
        return _step(current, results, thresholds)
    status = UNKNOWN
    for i in range(1, len(results) + 1):
        status = _step(status, results[:i], thresholds)
    return status


def status_sequence(results: Sequence[str], thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[str]:
    """The status after each observation, replayed from `unknown`."""
    return [derive_status(results[: i + 1], thresholds) for i in range(len(results))]


# --- traffic circuit breaker --------------------------------------------------------------


@dataclass(slots=True)
class _Circuit:
    tenant_id: int
    attempts: deque  # (monotonic time, ok), newest last
    opened_at: float | None = None  # set while open or half-open


_circuits: dict[int, _Circuit] = {}
_thresholds: dict[int, tuple[float, Thresholds]] = {}
_lock = threading.Lock()
_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="axonflow-health-writer")
_pending: set[Future] = set()


def remember_thresholds(tenant_id: int, thresholds: Thresholds) -> None:
    _thresholds[tenant_id] = (clock() + THRESHOLDS_TTL_SECONDS, thresholds)


def _cached_thresholds(tenant_id: int) -> Thresholds:
    """The tenant's thresholds from memory; a miss returns the defaults and loads the
    tenant's in the background (the hot path never queries)."""
    hit = _thresholds.get(tenant_id)
    if hit is None or hit[0] < clock():
        remember_thresholds(tenant_id, hit[1] if hit else DEFAULT_THRESHOLDS)  # one load per TTL
        submit(_load_thresholds, tenant_id)
        return hit[1] if hit else DEFAULT_THRESHOLDS
    return hit[1]


def _load_thresholds(tenant_id: int) -> None:
    from tenants.models import Tenant

    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is not None:
        thresholds_for(tenant)


def record_attempt(tenant_id: int, provider_id: int, ok: bool, latency_ms: float, error: str = "") -> None:
    """Passive health: the router reports every attempt's outcome here.

    Opens the circuit when the error share of the last `traffic_sample_size` attempts
    within `traffic_window_seconds` reaches `traffic_error_rate` over at least
    `traffic_min_requests`. Outcomes arriving during the cooldown belong to requests
    started before the circuit opened and are ignored; the first one after it (half-open)
    closes the circuit or opens it again. Persistence and broadcast run off this path.
    """
    t = _cached_thresholds(tenant_id)
    now = clock()
    with _lock:
        circuit = _circuits.get(provider_id)
        if circuit is None:
            circuit = _circuits[provider_id] = _Circuit(tenant_id, deque(maxlen=t.traffic_sample_size))
        if circuit.opened_at is not None:
            if now - circuit.opened_at < t.circuit_cooldown_seconds:
                return
            circuit.opened_at = None if ok else now
            change = "closed" if ok else "opened"
            detail = "trial request succeeded" if ok else f"trial request failed: {error}"
        else:
            attempts = circuit.attempts
            if attempts.maxlen != t.traffic_sample_size:
                attempts = circuit.attempts = deque(attempts, maxlen=t.traffic_sample_size)
            attempts.append((now, ok))
            while attempts and now - attempts[0][0] > t.traffic_window_seconds:
                attempts.popleft()
            failures = sum(1 for _, good in attempts if not good)
            if len(attempts) < t.traffic_min_requests or failures < t.traffic_error_rate * len(attempts):
                return
            detail = f"{failures} of the last {len(attempts)} requests failed; last error: {error}"
            circuit.opened_at = now
            attempts.clear()
            change = "opened"
    log.warning("provider %s: circuit %s (%s)", provider_id, change, detail[:200])
    _schedule_change(tenant_id, provider_id, change == "opened", detail, latency_ms)


def is_circuit_open(provider_id: int) -> bool:
    """True while traffic has opened this provider's circuit and the cooldown runs
    (treat as unhealthy). Half-open (cooldown over) reads as closed."""
    circuit = _circuits.get(provider_id)
    if circuit is None or circuit.opened_at is None:
        return False
    t = _cached_thresholds(circuit.tenant_id)
    return clock() - circuit.opened_at < t.circuit_cooldown_seconds


def close_circuit(provider_id: int) -> None:
    """A probe closed the circuit: forget this process's open state and old attempts."""
    with _lock:
        circuit = _circuits.get(provider_id)
        if circuit is not None:
            circuit.opened_at = None
            circuit.attempts.clear()


def reset() -> None:
    """Forget every circuit and cached threshold (tests; a provider's deletion)."""
    with _lock:
        _circuits.clear()
        _thresholds.clear()


# --- off-path persistence -------------------------------------------------------------------


def _run(fn, *args):
    """Run a job on the writer thread with a healthy connection, released afterwards as
    Django does around a request (CONN_MAX_AGE applies)."""
    from django.db import close_old_connections

    close_old_connections()
    try:
        return fn(*args)
    finally:
        close_old_connections()


def _log_failure(future: Future) -> None:
    _pending.discard(future)
    if not future.cancelled() and future.exception() is not None:
        log.error("health writer job failed", exc_info=future.exception())


def submit(fn, *args) -> Future:
    """Queue a fire-and-forget database job on the health writer thread (failures are
    logged). Jobs run one at a time, in order."""
    future = _writer.submit(_run, fn, *args)
    _pending.add(future)
    future.add_done_callback(_log_failure)
    return future


async def run_in_writer(fn, *args):
    """Await a database job on the health writer thread; its exception propagates.

    Async health code (the worker loop, publishing) does its ORM work here: one
    dedicated thread and connection, never the event loop and never the thread that
    serves sync views."""
    return await asyncio.wrap_future(_writer.submit(_run, fn, *args))


def _schedule_change(tenant_id: int, provider_id: int, opened: bool, detail: str, latency_ms: float) -> None:
    """Write the circuit change on the writer thread, then publish the new card.

    Called from async code (the router), the publish is handed back to the caller's
    event loop: the loop the in-memory channel layer and the board's sockets live on.
    The write itself never waits for that loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    submit(_persist_and_publish, loop, tenant_id, provider_id, opened, detail, latency_ms)


def _persist_and_publish(loop, tenant_id: int, provider_id: int, *change) -> None:
    from asgiref.sync import async_to_sync

    from routing import live, monitor

    if monitor.record_circuit_change(tenant_id, provider_id, *change) is None:
        return
    html = live.card_html(tenant_id, provider_id)
    if html is None:
        return
    if loop is not None and loop.is_running():
        future = asyncio.run_coroutine_threadsafe(live.apublish_html(tenant_id, html), loop)
        _pending.add(future)
        future.add_done_callback(_log_failure)
    else:
        async_to_sync(live.apublish_html)(tenant_id, html)


def flush(timeout: float = 10.0) -> None:
    """Wait until jobs queued on the writer thread are done (tests, shutdown)."""
    _writer.submit(lambda: None).result(timeout=timeout)


async def aflush(timeout: float = 10.0) -> None:
    """Wait until queued writes, and the publishes they hand back to loops, are done."""
    await asyncio.wait_for(asyncio.wrap_future(_writer.submit(lambda: None)), timeout)
    publishes = [asyncio.wrap_future(f) for f in list(_pending) if not f.done()]
    if publishes:
        await asyncio.wait(publishes, timeout=timeout)
