"""Health status derivation and the traffic circuit breaker.

STUB: the health-monitoring work replaces this module. The router depends only on
the two functions below, which must stay cheap, synchronous and in-memory.
"""

from __future__ import annotations


def record_attempt(tenant_id: int, provider_id: int, ok: bool, latency_ms: float, error: str = "") -> None:
    """Passive health: the router reports every attempt's outcome here."""


def is_circuit_open(provider_id: int) -> bool:
    """True while traffic has opened this provider's circuit (treat as unhealthy)."""
    return False
