"""Base view for tenant-scoped REST endpoints: the whole handler runs in one
transaction with the token's tenant set for row-level security."""

from __future__ import annotations

import math

from django.conf import settings
from django.db import transaction
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.views import APIView

from axonflow_site.errors import PayloadTooLarge, ValidationFailed
from routing.api.schema import APISchema
from tenants import audit
from tenants.models import ActorKind
from tenants.rls import set_tenant

# What a JSON value of a field may be, for json_object(types=...).
KINDS = {str: "a string", bool: "true or false", int: "an integer", float: "a number", dict: "an object",
         list: "a list", type(None): "null"}  # fmt: skip


def _is_kind(value, kind: type) -> bool:
    if kind in (int, float) and isinstance(value, bool):  # True is an int to Python, not to JSON
        return False
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


def has_nul(data) -> bool:
    """Whether a NUL character is in any string (key or value) of parsed JSON: PostgreSQL
    text cannot hold one, so it would be a 500 at the first save, not a 400."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def json_object(request, fields: set[str] | None = None, types: dict[str, tuple[type, ...]] | None = None) -> dict:
    """The request's JSON body as a dict; ValidationFailed when it is anything else (an
    empty body too), names a field outside `fields` (a typo must never be silently
    dropped), gives a field in `types` a value of another JSON type (no "50" for 50, no 1
    for true: the console's forms post strings, the API does not), or holds a NUL
    character anywhere. A body too deeply nested to parse is refused by
    routing/api/parsers.py."""
    data = request.data
    if not isinstance(data, dict):
        raise ValidationFailed("Expected a JSON object.")
    if not data and not request.META.get("CONTENT_LENGTH", "").strip("0"):
        # DRF reads no body without a Content-Length (empty, or sent chunked): {} then means nothing was read.
        raise ValidationFailed("Expected a JSON object body, with a Content-Length.")
    unknown = sorted(set(data) - fields) if fields is not None else []
    if unknown:
        names = [name[:40] for name in unknown[:10]]
        raise ValidationFailed(f"Unknown field(s): {', '.join(names)}.", {"field": names[0], "fields": names})
    for field, kinds in (types or {}).items():
        if field in data and not any(_is_kind(data[field], kind) for kind in kinds):
            expected = " or ".join(KINDS[kind] for kind in kinds)
            raise ValidationFailed(f"{field}: must be {expected}.", {"field": field})
    if has_nul(data):
        raise ValidationFailed("The body holds a NUL character (\\u0000); no field takes one.")
    return dict(data)


def check_query(request, allowed: frozenset[str] | None) -> None:
    """ValidationFailed for a query parameter given more than once, or (unless `allowed`
    is None: the view parses its own) one outside `allowed`. A typo must not silently
    widen a report, and a parameter no endpoint reads is a mistake worth hearing about."""
    params = request.query_params
    for name in params:
        if len(params.getlist(name)) > 1:
            raise ValidationFailed(f"{name[:40]}: given more than once.", {"field": name[:40]})
    unknown = sorted(set(params) - allowed) if allowed is not None else []
    if unknown:
        names = [name[:40] for name in unknown[:10]]
        known = ", ".join(sorted(allowed)) or "none"
        raise ValidationFailed(
            f"Unknown query parameter(s): {', '.join(names)}; this endpoint takes {known}.",
            {"field": names[0], "fields": names},
        )


class JSONOnly(DefaultContentNegotiation):
    """Every answer is JSON, whatever `Accept` or `?format=` ask for: `format` is no
    parameter of this API (refused as unknown, once the token is checked), and no 404 or
    406 is answered before authentication."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


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
    """`self.tenant_id` is the token's tenant; every query runs inside its RLS context.
    Query parameters outside `allowed_query` are refused (check_query)."""

    schema = APISchema()
    content_negotiation_class = JSONOnly
    allowed_query: frozenset[str] | None = frozenset()  # None: the view checks its own
    blank_query_is_any = False  # see APISchema
    tenant_id: int

    def dispatch(self, request, *args, **kwargs):
        with transaction.atomic(), audit.acting_as(ActorKind.TOKEN, "API token"):
            return super().dispatch(request, *args, **kwargs)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        check_body_size(request)
        check_query(request, self.allowed_query)
        self.tenant_id = request.auth.tenant_id
        set_tenant(self.tenant_id)
        audit.act_as(ActorKind.TOKEN, request.auth.label)  # dispatch's acting_as block restores it
