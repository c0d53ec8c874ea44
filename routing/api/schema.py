"""drf-spectacular extensions: how our bearer tokens appear in the OpenAPI schema, and
the AutoSchema every API view uses (the error responses all operations share).
Imported from RoutingConfig.ready(), as drf-spectacular requires for extensions."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema

from routing.api.serializers import ErrorSerializer

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


# What any operation of this API may answer besides its own responses, all in the error
# envelope: bad input (an unknown or garbled query parameter, a body that is not JSON),
# no or a bad token, a token without the scope, a body over the limit, the rate limit.
COMMON_ERRORS = {
    "400": "validation_error: a malformed body, an unknown or malformed query parameter",
    "401": "unauthorized: no token, or an unknown, expired or revoked one",
    "403": "forbidden: the token's scope does not reach this endpoint (or license_required)",
    "413": "payload_too_large: the body is over AXONFLOW_MAX_BODY_BYTES",
    "429": "rate_limited: over the tenant's API rate limit; see Retry-After",
}
NOT_FOUND = "the path names nothing of the token's tenant"


class APISchema(AutoSchema):
    """drf-spectacular's AutoSchema, plus the error responses every operation can give
    (COMMON_ERRORS, and 404 where the path names an object), so the schema lists every
    status the API answers with. A view whose list filters take an empty value as "any"
    (`blank_query_is_any`, what an HTML form sends for a field left blank) says so with
    `allowEmptyValue`. Objects list all their fields (`additionalProperties: false`): the
    API refuses unknown fields in a body and answers with no undocumented one."""

    def _map_basic_serializer(self, serializer, direction):
        return {**super()._map_basic_serializer(serializer, direction), "additionalProperties": False}

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        error = {"application/json": {"schema": self.resolve_serializer(ErrorSerializer, "response").ref}}
        errors = dict(COMMON_ERRORS)
        if any(p["in"] == "path" for p in operation.get("parameters", [])):
            errors["404"] = NOT_FOUND
        responses = operation.setdefault("responses", {})
        for code, description in errors.items():
            responses.setdefault(code, {"content": error, "description": description})
        operation["responses"] = dict(sorted(responses.items()))
        if getattr(self.view, "blank_query_is_any", False):
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query":
                    parameter["allowEmptyValue"] = True
        return operation
