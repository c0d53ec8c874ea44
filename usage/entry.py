"""One routed request as the usage writer will store it: a UsageRecord, plus each
attempt's share of its provider's minute metrics.

The router builds one Entry when a request ends (served, failed or cut off) and hands
it to usage.writer; usage knows nothing of the router's types. `attempts` are plain
dicts ({provider, outcome, status_code, latency_ms, error}), as clients see them in
`route.attempts`, and `attempt_ids` the provider ids beside them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

log = logging.getLogger("axonflow.usage")

ZERO = Decimal("0")


@dataclass(slots=True)
class Entry:
    """One routed request, as it will become a UsageRecord (plus attempt metrics)."""

    tenant_id: int
    token_id: int | None
    provider_id: int | None
    provider_name: str
    attempts: list[dict[str, Any]]
    attempt_ids: list[int | None]
    status: str
    status_code: int
    error_code: str = ""
    model: str = ""
    stream: bool = False
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = ZERO
    request_id: str = ""
    prompt: str | None = None
    created: datetime = field(default_factory=timezone.now)
    endpoint: str = "chat"  # chat, embeddings, messages
    model_requested: str = ""
    # The routing trace: a dict, or a function returning one, which the writer thread
    # calls, so building it costs the request path nothing.
    trace: dict[str, Any] | Callable[[], dict[str, Any]] | None = None
    # For the metrics only (usage/observe.py), not stored:
    tenant: str = ""  # the tenant's slug, the metrics' label
    ttft_ms: float | None = None  # streams: routing to the first chunk
    elapsed_ms: float | None = None  # non-streaming: request received to answer in hand
    observed: bool = False  # counted in the metrics already (a requeued entry is not counted twice)
    # The budgets and periods (budget id, period start) this request counts against: the
    # usage writer adds its cost and tokens to their ledger (BudgetSpend).
    budgets: list = field(default_factory=list)

    def trace_dict(self) -> dict[str, Any]:
        """The trace as stored; a trace that cannot be built never holds up the record."""
        try:
            trace = self.trace() if callable(self.trace) else self.trace
        except Exception:
            log.exception("routing trace of request %s could not be built", self.request_id)
            return {"error": "trace unavailable"}
        return trace or {}


def prompt_text(system: str | None, messages) -> str:
    """The prompt as stored for tenants with store_prompts: one "role: content" line each."""
    parts = [f"system: {system}"] if system else []
    parts += [f"{m.role}: {m.content}" for m in messages]
    return "\n".join(parts)
