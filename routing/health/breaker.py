"""The traffic circuit breaker: passive health from the router's attempts.

The router reports every attempt to `record_attempt`. When 50 % or more of a
provider's recent attempts (at least 10 in 60 s) fail, its circuit opens at once:
`is_circuit_open` turns true in this process, and `events.circuit_changed` is sent so
that routing/health/probes.py stores the change (unhealthy, source `traffic`) and
announces it, off the request path. After the cooldown the circuit is half-open: the
next probe or trial request decides whether it closes.

Circuits are shared: every open and close is also published to the other server
processes (routing/peers.py), with the opening time on the wall clock, and each applies
it to its own table (`apply_peer_change`, converted to its monotonic clock), so a
provider tripped through one instance stops receiving traffic from all of them, with
the same cooldown and half-open trial. Only the process where it happened stores and
announces the change.

`record_attempt` and `is_circuit_open` are synchronous, in-memory and cheap: they run
on the router's hot path, in async code, and never touch the database themselves.
The per-tenant thresholds are cached here too (`thresholds_for`), loaded off the path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from axonflow_site import events
from routing import peers
from routing.health import db_thread
from routing.health.status import DEFAULT_THRESHOLDS, Thresholds, parse_thresholds

log = logging.getLogger("axonflow.health")

THRESHOLDS_TTL_SECONDS = 60.0
CREDENTIALS_REJECTED = "credentials rejected"  # how a circuit opened by a 401/403 says why
PEER_KIND = "circuit"  # routing/peers.py HANDLERS
clock = time.monotonic  # the breaker's clock; tests replace it


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


@dataclass(slots=True)
class _Circuit:
    tenant_id: int
    attempts: deque  # (monotonic time, ok), newest last
    opened_at: float | None = None  # set while open or half-open
    reason: str = ""  # CREDENTIALS_REJECTED when a 401/403 opened it


_circuits: dict[int, _Circuit] = {}
_thresholds: dict[int, tuple[float, Thresholds]] = {}
_lock = threading.Lock()


def remember_thresholds(tenant_id: int, thresholds: Thresholds) -> None:
    _thresholds[tenant_id] = (clock() + THRESHOLDS_TTL_SECONDS, thresholds)


def _cached_thresholds(tenant_id: int) -> Thresholds:
    """The tenant's thresholds from memory; a miss returns the defaults and loads the
    tenant's in the background (the hot path never queries)."""
    hit = _thresholds.get(tenant_id)
    if hit is None or hit[0] < clock():
        remember_thresholds(tenant_id, hit[1] if hit else DEFAULT_THRESHOLDS)  # one load per TTL
        db_thread.submit(_load_thresholds, tenant_id)
        return hit[1] if hit else DEFAULT_THRESHOLDS
    return hit[1]


def _load_thresholds(tenant_id: int) -> None:
    from tenants.models import Tenant

    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is not None:
        thresholds_for(tenant)


def _circuit(tenant_id: int, provider_id: int, t: Thresholds) -> _Circuit:
    """The provider's circuit, created closed on first use (call holding _lock)."""
    circuit = _circuits.get(provider_id)
    if circuit is None:
        circuit = _circuits[provider_id] = _Circuit(tenant_id, deque(maxlen=t.traffic_sample_size))
    return circuit


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
        circuit = _circuit(tenant_id, provider_id, t)
        if circuit.opened_at is not None:
            if now - circuit.opened_at < t.circuit_cooldown_seconds:
                return
            circuit.opened_at = None if ok else now
            circuit.reason = ""
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
            circuit.reason = ""
            attempts.clear()
            change = "opened"
    log.warning("provider %s: circuit %s (%s)", provider_id, change, detail[:200])
    _announce(tenant_id, provider_id, now, change == "opened", "", detail, latency_ms)


def reject_credentials(tenant_id: int, provider_id: int, latency_ms: float, error: str) -> None:
    """The upstream refused the provider's own key (401/403): open its circuit at once,
    whatever the error share, since a revoked key does not heal by itself; the detail
    starts with CREDENTIALS_REJECTED, which the board shows. After the cooldown the
    next probe is the trial, as for any open circuit."""
    t = _cached_thresholds(tenant_id)
    now = clock()
    with _lock:
        circuit = _circuit(tenant_id, provider_id, t)
        if circuit.opened_at is not None and now - circuit.opened_at < t.circuit_cooldown_seconds:
            return
        circuit.opened_at = now
        circuit.reason = CREDENTIALS_REJECTED
        circuit.attempts.clear()
    detail = f"{CREDENTIALS_REJECTED}: {error}"
    log.warning("provider %s: circuit opened (%s)", provider_id, detail[:200])
    _announce(tenant_id, provider_id, now, True, CREDENTIALS_REJECTED, detail, latency_ms)


def _announce(
    tenant_id: int, provider_id: int, at: float, opened: bool, reason: str, detail: str, latency_ms: float
) -> None:
    """Tell the other processes and this one's receivers (storage, the board). This runs
    on a request's path: nothing a receiver or Redis does may fail the request."""
    try:
        _share(tenant_id, provider_id, at, opened, reason)
    except Exception:
        log.exception("provider %s: circuit change not shared", provider_id)
    for receiver, result in events.circuit_changed.send_robust(
        sender=None, tenant_id=tenant_id, provider_id=provider_id, opened=opened, detail=detail, latency_ms=latency_ms
    ):
        if isinstance(result, Exception):
            log.error("provider %s: circuit change receiver %r failed: %r", provider_id, receiver, result)


def is_circuit_open(provider_id: int) -> bool:
    """True while traffic has opened this provider's circuit and the cooldown runs
    (treat as unhealthy). Half-open (cooldown over) reads as closed."""
    circuit = _circuits.get(provider_id)
    if circuit is None or circuit.opened_at is None:
        return False
    t = _cached_thresholds(circuit.tenant_id)
    return clock() - circuit.opened_at < t.circuit_cooldown_seconds


def circuit_state(provider_id: int) -> str:
    """closed, open (the cooldown runs) or half_open (cooldown over, waiting for a
    probe or an attempt to close it), as this process sees it (peers share changes)."""
    circuit = _circuits.get(provider_id)
    if circuit is None or circuit.opened_at is None:
        return "closed"
    return "open" if is_circuit_open(provider_id) else "half_open"


def circuit_reason(provider_id: int) -> str | None:
    """Why the circuit is open or half-open (CREDENTIALS_REJECTED, or "" for an error
    share), or None when it is closed."""
    circuit = _circuits.get(provider_id)
    return None if circuit is None or circuit.opened_at is None else circuit.reason


def close_circuit(provider_id: int) -> None:
    """A probe closed the circuit: forget this process's open state and old attempts,
    and tell the other processes."""
    with _lock:
        circuit = _circuits.get(provider_id)
        if circuit is None:
            return
        was_open = circuit.opened_at is not None
        circuit.opened_at = None
        circuit.reason = ""
        circuit.attempts.clear()
    if was_open:
        _share(circuit.tenant_id, provider_id, clock(), False, "")


# --- shared with the other processes ----------------------------------------------------------


def _share(tenant_id: int, provider_id: int, at: float, opened: bool, reason: str) -> None:
    """Publish a change made here (`at` on this process's clock, sent as wall-clock time:
    monotonic clocks mean nothing in another process)."""
    wall = time.time() - (clock() - at)
    payload = {"tenant_id": tenant_id, "provider_id": provider_id, "opened": opened, "at": wall, "reason": reason}
    peers.publish(PEER_KIND, payload)


def apply_peer_change(payload: dict) -> None:
    """Another process opened or closed a provider's circuit: hold the same state here,
    with the same cooldown (counted from when it opened there), without storing or
    announcing it again. A change older than this process's own last one is ignored."""
    tenant_id, provider_id = int(payload["tenant_id"]), int(payload["provider_id"])
    age = max(0.0, time.time() - float(payload["at"]))  # clocks of two hosts may disagree a little
    at = clock() - age
    t = _cached_thresholds(tenant_id)
    with _lock:
        circuit = _circuit(tenant_id, provider_id, t)
        if payload["opened"]:
            if circuit.opened_at is not None and circuit.opened_at >= at:
                return
            circuit.opened_at, circuit.reason = at, str(payload.get("reason") or "")
        else:
            if circuit.opened_at is None or circuit.opened_at > at:
                return
            circuit.opened_at, circuit.reason = None, ""
        circuit.attempts.clear()
    log.info(
        "provider %s: circuit %s in another process %.1f ms ago",
        provider_id, "opened" if payload["opened"] else "closed", age * 1000,
    )  # fmt: skip


def reset() -> None:
    """Forget every circuit and cached threshold (tests; a provider's deletion)."""
    with _lock:
        _circuits.clear()
        _thresholds.clear()
