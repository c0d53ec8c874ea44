"""One error envelope everywhere: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions as drf
from rest_framework.response import Response

from axonflow_site import context as request_context
from axonflow_site import metrics
from axonflow_site.errors import AxonFlowError

LIMITS = frozenset({"rate_limited", "budget_exceeded"})  # counted in axonflow_rejections_total

DRF_CODES = {
    drf.ParseError: "validation_error",
    drf.ValidationError: "validation_error",
    drf.UnsupportedMediaType: "validation_error",
    drf.NotAuthenticated: "unauthorized",
    drf.AuthenticationFailed: "unauthorized",
    drf.PermissionDenied: "forbidden",
    drf.NotFound: "not_found",
    drf.MethodNotAllowed: "method_not_allowed",
    drf.Throttled: "rate_limited",
}


def envelope(code: str, message: str, details: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def exception_handler(exc, context):
    """DRF exception handler: AxonFlowError and DRF's own errors become the envelope."""
    if isinstance(exc, AxonFlowError):
        if exc.code in LIMITS:
            count_rejection(exc.code, context.get("request"))
        return Response(exc.envelope(), status=exc.http_status, headers=exc.headers)
    if isinstance(exc, Http404):
        return Response(envelope("not_found", "Not found."), status=404)
    if isinstance(exc, PermissionDenied):
        exc = drf.PermissionDenied()
    if isinstance(exc, drf.APIException):
        code = next((c for cls, c in DRF_CODES.items() if isinstance(exc, cls)), "error")
        details = exc.detail if isinstance(exc.detail, dict) else {"errors": exc.detail}
        message = "Invalid request." if isinstance(exc, drf.ValidationError) else str(exc.detail)
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        status = 401 if code == "unauthorized" else exc.status_code
        return Response(envelope(code, message, details), status=status, headers=headers)
    return None


def count_rejection(reason: str, request) -> None:
    served = request_context.current.get()
    path = getattr(request, "path", "")
    endpoint = "chat" if path.startswith("/api/v1/completions") else "api"
    metrics.reject(served.tenant if served is not None else "", endpoint, reason)
