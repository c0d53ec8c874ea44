"""Health status derivation: pure functions of observations and thresholds.

Probes (routing/health/probes.py) produce one observation per check: `healthy` (ok
and fast), `degraded` (ok but slower than `slow_ms`) or `unhealthy` (failed).
`derive_status` turns the sequence into a status with hysteresis, so alternating
outcomes never flap between healthy and unhealthy. The traffic side (the circuit
breaker) is routing/health/breaker.py; docs/health.md has the whole picture.

Pure: no Django, no database, no templates, no channels (an import-linter contract
in pyproject.toml keeps it so).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

# The values of providers.models.HealthStatus, repeated so that this module imports no
# Django (tests/test_layout.py checks they agree).
HEALTHY, DEGRADED, UNHEALTHY, UNKNOWN = "healthy", "degraded", "unhealthy", "unknown"


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
