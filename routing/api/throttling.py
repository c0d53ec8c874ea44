"""The tenant's API rate limit (Tenant.api_rate_limit) for the REST API's sync views, as
DRF's throttle step: after authentication and permissions, before the handler. The
completions view checks the same budget on the event loop instead
(routing/api/completions.py), and /v1 in routing/v1/app.py."""

from __future__ import annotations

from rest_framework.throttling import BaseThrottle

from routing.ratelimit import check_tenant_sync
from tenants.authentication import TokenIdentity


class TenantRateThrottle(BaseThrottle):
    def allow_request(self, request, view) -> bool:
        """True, or raises RateLimited (429 with Retry-After: the envelope, not DRF's
        Throttled). Requests without a token (the schema) are not counted."""
        identity = request.auth
        if isinstance(identity, TokenIdentity):
            check_tenant_sync(identity)
        return True
