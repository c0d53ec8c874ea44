"""Routing an embeddings request (POST /v1/embeddings): the same pool, candidates,
order, failover and accounting as a completion (routing/router.py), among the
providers whose adapters declare `embeddings`, each sent its own upstream model.
Usage is recorded with endpoint kind `embeddings`: input tokens, no output tokens.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from axonflow_site.errors import AxonFlowError
from providers.adapters.base import (
    EMBEDDINGS,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ProviderError,
    Usage,
)
from providers.pricing import actual_cost
from routing.ratelimit import Limiter, get_limiter
from routing.route import Caller, RouteResult
from routing.router import Attempts, _ms
from routing.selection import RoutingOptions

if TYPE_CHECKING:
    from routing.cache import TenantSnapshot

NEEDS = frozenset({EMBEDDINGS})
_rng = random.Random()


@dataclass(slots=True)
class EmbedResult:
    embeddings: EmbeddingResponse
    result: RouteResult  # provider, attempts, cost and usage, as for a completion


async def embed(
    snapshot: TenantSnapshot,
    request: EmbeddingRequest,
    options: RoutingOptions,
    caller: Caller,
    *,
    rng: random.Random | None = None,
    limiter: Limiter | None = None,
) -> EmbedResult:
    """Route one embeddings request. Raises as router.complete does."""
    loop = Attempts(snapshot, options, rng or _rng, limiter or get_limiter(), NEEDS)
    stored = "\n".join(request.inputs) if caller.store_prompts else None
    async for config, model in loop.providers():
        start = time.perf_counter()
        try:
            sent = request if model is None else replace(request, model=model)
            answer = await snapshot.adapter(config).embed(sent)
        except (ProviderError, AxonFlowError) as exc:
            loop.failed(config, exc, start)
            if isinstance(exc, ProviderError) and not exc.retryable:
                break
            continue
        loop.succeeded(config, start)
        usage = Usage(answer.prompt_tokens, 0)
        response = CompletionResponse("", answer.model or model or config.model, "stop", usage)
        result = RouteResult(response, config, loop.attempts, _ms(loop.started), actual_cost(config, usage, response.model))
        loop.account(caller, stored, result.response_time_ms, stream=False, result=result, endpoint="embeddings")
        return EmbedResult(answer, result)
    error = loop.exhausted()
    loop.account(caller, stored, _ms(loop.started), stream=False, error=error, endpoint="embeddings")
    raise error
