"""Routing an embeddings request (POST /v1/embeddings): the same pool, candidates,
order, failover and accounting as a completion (routing/router.py), among the
providers whose adapters declare `embeddings`, each sent its own upstream model.
Usage is recorded with endpoint kind `embeddings`: input tokens, no output tokens.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from providers.adapters.base import (
    EMBEDDINGS,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Usage,
)
from providers.pricing import actual_cost
from routing.attempts import Attempts, _ms
from routing.ratelimit import Limiter, get_limiter
from routing.route import Caller, RouteResult
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
    config, model, answer = await loop.answer(
        lambda adapter, model: adapter.embed(request if model is None else replace(request, model=model)),
        caller,
        stored,
        stream=False,
        endpoint="embeddings",
        tokens=(max(1, sum(len(text) for text in request.inputs) // 4), 0),
    )
    usage = Usage(answer.prompt_tokens, 0)
    response = CompletionResponse("", answer.model or model or config.model, "stop", usage)
    result = RouteResult(response, config, loop.attempts, _ms(loop.started), actual_cost(config, usage, response.model))
    loop.account(caller, stored, result.response_time_ms, stream=False, result=result, endpoint="embeddings")
    return EmbedResult(answer, result)
