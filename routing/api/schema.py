"""drf-spectacular extensions: how our bearer tokens appear in the OpenAPI schema.
Imported from RoutingConfig.ready(), as drf-spectacular requires for extensions."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension

DESCRIPTION = (
    "An AxonFlow API token (axf_…). Scope `completions` reaches the completion endpoints only; "
    "scope `admin` reaches everything."
)


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.BearerTokenAuthentication"
    name = "bearerToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": DESCRIPTION}


class CompletionsTokenScheme(OpenApiAuthenticationExtension):
    """The same tokens, resolved ahead of DRF by the completions view (routing/api/completions.py)."""

    target_class = "routing.api.completions.ResolvedBearerAuthentication"
    name = "completionsToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": DESCRIPTION}
