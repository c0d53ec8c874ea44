"""Errors that reach API clients, one class per code of the SPEC §3 envelope.

Each carries its HTTP status; the API faces (routing/api/errors.py, routing/v1/wire.py)
render any of them as `{"error": {"code", "message", "details"}}`. Imports nothing of
ours, so every layer may raise them.
"""

from __future__ import annotations

from typing import Any


class AxonFlowError(Exception):
    code = "internal_error"
    http_status = 500

    def __init__(self, message: str, details: dict[str, Any] | None = None, *, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class ValidationFailed(AxonFlowError):
    code = "validation_error"
    http_status = 400


class PayloadTooLarge(AxonFlowError):
    code = "payload_too_large"
    http_status = 413


class InvalidConfig(AxonFlowError):
    code = "invalid_config"
    http_status = 400


class Unauthorized(AxonFlowError):
    code = "unauthorized"
    http_status = 401


class Forbidden(AxonFlowError):
    code = "forbidden"
    http_status = 403


class LicenseRequired(AxonFlowError):
    code = "license_required"
    http_status = 403


class ProviderNotFound(AxonFlowError):
    code = "provider_not_found"
    http_status = 404


class DuplicateProvider(AxonFlowError):
    code = "duplicate_provider"
    http_status = 409


class RateLimited(AxonFlowError):
    code = "rate_limited"
    http_status = 429


class UpstreamFailed(AxonFlowError):
    code = "upstream_error"
    http_status = 502


class NoHealthyProvider(AxonFlowError):
    code = "no_healthy_provider"
    http_status = 503


class BudgetExceeded(AxonFlowError):
    """A budget the request would take past its limit (details: budget, period, spent, limit)."""

    code = "budget_exceeded"
    http_status = 429


class BudgetUnavailable(AxonFlowError):
    """Budgets cannot be checked (Redis away) and hard limits fail closed (the default)."""

    code = "budget_unavailable"
    http_status = 503
