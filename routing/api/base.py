"""Base view for tenant-scoped REST endpoints: the whole handler runs in one
transaction with the token's tenant set for row-level security."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from rest_framework.views import APIView

from axonflow_site.errors import PayloadTooLarge, ValidationFailed
from tenants import audit
from tenants.models import ActorKind
from tenants.rls import set_tenant


def json_object(request, fields: set[str] | None = None) -> dict:
    """The request's JSON body as a dict; ValidationFailed when it is anything else or
    names a field outside `fields` (a typo must never be silently dropped). A body too
    deeply nested to parse is refused by routing/api/parsers.py."""
    data = request.data
    if not isinstance(data, dict):
        raise ValidationFailed("Expected a JSON object.")
    unknown = sorted(set(data) - fields) if fields is not None else []
    if unknown:
        raise ValidationFailed(f"Unknown field(s): {', '.join(unknown)}.", {"field": unknown[0], "fields": unknown})
    return dict(data)


def cursor_link(request, cursor: str | None) -> str | None:
    """This request's URL with `cursor=` set: the link to another keyset page."""
    if cursor is None:
        return None
    query = request.GET.copy()
    query["cursor"] = cursor
    return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")


def check_body_size(request) -> None:
    """Refuse bodies over AXONFLOW_MAX_BODY_BYTES before anything parses them."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > settings.AXONFLOW_MAX_BODY_BYTES:
        raise PayloadTooLarge(
            f"Request body is {length} bytes; the limit is {settings.AXONFLOW_MAX_BODY_BYTES}.",
            {"limit_bytes": settings.AXONFLOW_MAX_BODY_BYTES},
        )


class TenantAPIView(APIView):
    """`self.tenant_id` is the token's tenant; every query runs inside its RLS context."""

    tenant_id: int

    def dispatch(self, request, *args, **kwargs):
        with transaction.atomic(), audit.acting_as(ActorKind.TOKEN, "API token"):
            return super().dispatch(request, *args, **kwargs)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        check_body_size(request)
        self.tenant_id = request.auth.tenant_id
        set_tenant(self.tenant_id)
        audit.act_as(ActorKind.TOKEN, request.auth.label)  # dispatch's acting_as block restores it
