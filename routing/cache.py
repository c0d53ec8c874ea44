"""In-process routing cache (tenant snapshots: provider configs, weights, health).

STUB: the router work replaces this module; other code only calls these.
"""

from __future__ import annotations


def invalidate_tenant(tenant_id: int) -> None:
    """Drop this process's cached snapshot of the tenant."""


def broadcast_invalidation(tenant_id: int) -> None:
    """Drop the tenant's snapshot in every process (channel-layer broadcast) and here."""
    invalidate_tenant(tenant_id)
