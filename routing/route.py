"""What a routed request is and becomes: who asked (Caller), each attempt, and the
result the faces render. Plain data; the router (routing/router.py) fills them in."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from axonflow_site.context import new_request_id  # noqa: F401 (the faces' import)
from providers.adapters.base import CompletionResponse

if TYPE_CHECKING:
    from providers.models import ProviderConfig

def usage_dict(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """Token counts as both APIs show them (OpenAI's field names)."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass(slots=True)
class Attempt:
    provider: str
    outcome: str  # success | http_<status> | timeout | connect_error | malformed | rate_limited | invalid_config | client_cancelled | stream_error
    status_code: int | None = None
    latency_ms: float = 0.0
    error: str = ""
    provider_id: int | None = None  # for metrics; not shown to clients
    model: str = ""  # the upstream model this attempt sent
    waited_ms: float | None = None  # set on a re-send to a provider that failed this request: the backoff

    def as_dict(self) -> dict[str, Any]:
        shown = {
            "provider": self.provider,
            "model": self.model,
            "outcome": self.outcome,
            "status_code": self.status_code,
            "latency_ms": round(self.latency_ms, 2),
            "error": self.error,
        }
        if self.waited_ms is not None:
            shown["retry"], shown["waited_ms"] = True, round(self.waited_ms, 1)
        return shown


@dataclass(slots=True)
class Caller:
    """Who is asking: enough for usage accounting, nothing about HTTP."""

    tenant_id: int
    token_id: int | None = None
    request_id: str = ""
    store_prompts: bool = False
    tenant: str = ""  # the tenant's slug (metrics, logs)
    received: float = 0.0  # time.perf_counter() when the request arrived (0: not known)
    hold: Any = None  # the request's budget reservation (usage.budgets.Hold), settled at its end
    tpm_estimate: int = 0  # the tokens its token's tokens-per-minute window took (routing/token_limits.py)


@dataclass(slots=True)
class RouteResult:
    response: CompletionResponse
    config: ProviderConfig
    attempts: list[Attempt]
    response_time_ms: float
    cost: Decimal

    @property
    def provider_name(self) -> str:
        return self.config.name

    @property
    def model(self) -> str:
        return self.response.model

    def route(self) -> dict[str, Any]:
        return route_dict(self.config.name, self.model, self.response_time_ms, self.attempts)


def route_dict(provider_name: str, model: str, response_time_ms: float, attempts: list[Attempt]) -> dict[str, Any]:
    return {
        "provider_name": provider_name,
        "model": model,
        "response_time_ms": round(response_time_ms, 2),
        "attempts": [a.as_dict() for a in attempts],
    }
