"""`/api/v1/tokens/`: the tenant's API tokens (admin-scope tokens).

POST returns the raw token this once; reads show its prefix, never the token or its
hash. DELETE revokes (the row stays, with `revoked_at`, for the list and the audit log);
the next call with that token is refused in every process. The rules live in
tenants/tokens.py, shared with the console.
"""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from axonflow_site.errors import ValidationFailed
from routing.api.base import TenantAPIView, json_object
from routing.api.serializers import ErrorSerializer
from tenants.models import ApiToken, Tenant, TokenScope
from tenants.tokens import create_token, revoke_token

TYPES = {"name": (str,), "scope": (str,), "expires_at": (str, type(None)), "rpm_limit": (int,), "tpm_limit": (int,)}
NO_STORE = {"Cache-Control": "no-store"}


class TokenSerializer(serializers.ModelSerializer):
    """Read representation: the prefix identifies a token; the token itself is gone."""

    active = serializers.BooleanField(source="is_active", read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "name", "scope", "prefix", "created", "last_used", "expires_at", "revoked_at", "active",
                  "rpm_limit", "tpm_limit"]  # fmt: skip
        read_only_fields = fields


class TokenCreateSerializer(serializers.Serializer):
    """Documents the body; unknown fields are rejected."""

    name = serializers.CharField(max_length=100, help_text="1-100 characters, e.g. the application using it")
    scope = serializers.ChoiceField(
        choices=TokenScope.choices, required=False, default=TokenScope.COMPLETIONS,
        help_text="completions: completion, embedding and model-list endpoints only; admin: everything",
    )  # fmt: skip
    expires_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="ISO 8601, in the future; without an offset it is UTC"
    )
    rpm_limit = serializers.IntegerField(required=False, default=0, min_value=0, help_text="requests per minute; 0: none")
    tpm_limit = serializers.IntegerField(required=False, default=0, min_value=0, help_text="tokens per minute; 0: none")


class TokenCreatedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    scope = serializers.CharField()
    prefix = serializers.CharField()
    created = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)
    token = serializers.CharField(help_text="The token itself: shown this once, store it now")


def parse_body(request) -> dict:
    """name, scope (default completions) and expires_at from the JSON body; anything
    else is refused. The values themselves are checked by tenants.tokens.create_token."""
    data = json_object(request, set(TYPES), TYPES)
    if "name" not in data:
        raise ValidationFailed("name: required.", {"field": "name"})
    return {
        "name": data["name"],
        "scope": data.get("scope", TokenScope.COMPLETIONS),
        "expires_at": data.get("expires_at"),
        "rpm_limit": data.get("rpm_limit", 0),
        "tpm_limit": data.get("tpm_limit", 0),
    }


class TokenListView(TenantAPIView):
    """The tenant's API tokens."""

    @extend_schema(responses=TokenSerializer(many=True), operation_id="tokens_list")
    def get(self, request):
        """Every token of the tenant, newest first, revoked and expired ones included: by
        prefix, never the token or its hash."""
        tokens = ApiToken.objects.filter(tenant_id=self.tenant_id).order_by("-created", "-id")
        return Response(TokenSerializer(tokens, many=True).data)

    @extend_schema(
        request=TokenCreateSerializer,
        responses={201: TokenCreatedSerializer, 400: ErrorSerializer},
        operation_id="tokens_create",
    )
    def post(self, request):
        """Create a token. The response holds the token itself, this once: store it now."""
        values = parse_body(request)
        token, raw = create_token(Tenant.objects.get(pk=self.tenant_id), **values)
        shown = TokenSerializer(token).data
        body = {**{f: shown[f] for f in ("id", "name", "scope", "prefix", "created", "expires_at")}, "token": raw}
        return Response(body, status=201, headers=NO_STORE)


class TokenDetailView(TenantAPIView):
    """One API token of the tenant."""

    @extend_schema(
        parameters=[OpenApiParameter("token_id", int, OpenApiParameter.PATH)],
        responses={204: None, 404: ErrorSerializer},
        operation_id="tokens_revoke",
    )
    def delete(self, request, token_id: str):
        """Revoke the token: its next call is refused, in every process. Revoking again
        changes nothing (204 too)."""
        # A str in the URL, checked here: garbage and ids past bigint are a 404 too, not a 500.
        token = None
        if token_id.isascii() and token_id.isdecimal() and len(token_id) <= 18:
            token = ApiToken.objects.filter(tenant_id=self.tenant_id, pk=int(token_id)).first()
        if token is None:  # another tenant's token is as unknown as a missing one
            raise Http404("No such API token.")
        revoke_token(token)
        return Response(status=204)
