"""The retry policy (SPEC §2 rule 4): how many upstream calls one request may make, how
long it may take, when a provider that failed it may be sent it again, and the
per-tenant budget that keeps re-sends from multiplying the load on a failing provider.

- Failover to another candidate is immediate and bounded only by `max_attempts` and
  the deadline.
- A re-send to a provider that already failed this request happens only when no other
  candidate is left, after an exponential backoff with jitter (or the provider's
  Retry-After, whichever is longer, if that fits `max_wait_seconds` and the deadline),
  and only while the tenant's retry budget has a token.
- A provider that answers with Retry-After (429, 503) is skipped by every request of
  this process until then (`cooling`), at most COOLDOWN_CAP_SECONDS.

A tenant overrides any field in `Tenant.retry_settings` (same keys). In-memory, per
process; nothing here touches the database.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

log = logging.getLogger("axonflow.routing")

COOLDOWN_CAP_SECONDS = 300.0  # a Retry-After of hours is an upstream bug, not a plan
clock = time.monotonic  # tests replace it


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 4  # upstream calls per request: failovers and re-sends together
    retries_per_provider: int = 1  # re-sends to one provider within a request
    backoff_base_ms: float = 100.0  # first re-send waits up to this, doubling each time
    backoff_max_ms: float = 2000.0
    max_wait_seconds: float = 2.0  # a longer Retry-After is not waited for: the request ends
    deadline_seconds: float = 120.0  # the whole request, attempts and waits (until a stream's first chunk)
    budget_ratio: float = 0.2  # re-sends may add this share of the tenant's requests…
    budget_per_second: float = 5.0  # …plus this many a second, so a quiet tenant may still retry

    def backoff(self, retry_number: int, rng: random.Random) -> float:
        """Seconds to wait before the `retry_number`-th re-send (0-based): "equal jitter",
        half fixed and half random, so waits grow but concurrent requests spread out."""
        ceiling = min(self.backoff_max_ms, self.backoff_base_ms * 2**retry_number) / 1000
        return ceiling / 2 + rng.random() * ceiling / 2


DEFAULT_POLICY = RetryPolicy()
_FIELDS = {f.name: f.type for f in fields(RetryPolicy)}


def parse_policy(data: Mapping[str, Any] | None) -> RetryPolicy:
    """The policy from a tenant's `retry_settings`; raise ValueError naming the first
    unknown key or bad value (numbers; counts whole and ≥ 0, max_attempts ≥ 1)."""
    if not data:
        return DEFAULT_POLICY
    if not isinstance(data, Mapping):
        raise ValueError("retry_settings must be an object")
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key not in _FIELDS:
            raise ValueError(f"unknown retry setting '{key}'")
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise ValueError(f"retry setting '{key}' must be a finite number")
        whole = _FIELDS[key] == "int"
        if raw < 0 or (whole and int(raw) != raw):
            raise ValueError(f"retry setting '{key}' must be a {'whole ' if whole else ''}number ≥ 0")
        values[key] = int(raw) if whole else float(raw)
    policy = replace(DEFAULT_POLICY, **values)
    if policy.max_attempts < 1 or policy.deadline_seconds <= 0:
        raise ValueError("retry settings 'max_attempts' and 'deadline_seconds' must be positive")
    return policy


def policy_for(settings: Mapping[str, Any] | None, tenant_id: int | None = None) -> RetryPolicy:
    """The tenant's policy; a bad `retry_settings` logs and falls back to the defaults
    (a typo in the admin must not stop routing)."""
    try:
        return parse_policy(settings)
    except ValueError as exc:
        log.warning("tenant %s: ignoring retry_settings (%s)", tenant_id, exc)
        return DEFAULT_POLICY


# --- Retry-After: providers to skip until then ---------------------------------------------

cooling: dict[int, float] = {}  # provider id -> monotonic time until which it is skipped


def cool(provider_id: int, seconds: float) -> None:
    """The provider asked for `seconds` of quiet (Retry-After): skip it until then."""
    until = clock() + min(max(seconds, 0.0), COOLDOWN_CAP_SECONDS)
    if until > cooling.get(provider_id, 0.0):
        cooling[provider_id] = until


def cooling_for(provider_id: int, now: float) -> float:
    """Seconds the provider is still to be skipped (0 when it is not)."""
    until = cooling.get(provider_id)
    if until is None:
        return 0.0
    if until <= now:
        cooling.pop(provider_id, None)
        return 0.0
    return until - now


# --- the per-tenant retry budget -----------------------------------------------------------


class Budget:
    """A token bucket: every request adds `budget_ratio` of a token, time adds
    `budget_per_second`, a re-send takes one. Counting a request is one addition (the
    hot path); the bucket is settled only when a re-send asks for a token."""

    __slots__ = ("requests", "settled", "balance", "stamp")

    def __init__(self) -> None:
        self.requests = 0
        self.settled = 0
        self.balance = 10.0  # a fresh process may retry at once
        self.stamp = clock()

    def take(self, policy: RetryPolicy) -> bool:
        now = clock()
        cap = max(10.0, 10 * policy.budget_per_second)
        earned = (self.requests - self.settled) * policy.budget_ratio + (now - self.stamp) * policy.budget_per_second
        self.balance, self.settled, self.stamp = min(cap, self.balance + earned), self.requests, now
        if self.balance < 1:
            return False
        self.balance -= 1
        return True


budgets: dict[int, Budget] = {}


def budget_for(tenant_id: int) -> Budget:
    budget = budgets.get(tenant_id)
    if budget is None:
        budget = budgets[tenant_id] = Budget()
    return budget


def reset() -> None:
    """Forget cooldowns and budgets (tests)."""
    cooling.clear()
    budgets.clear()
