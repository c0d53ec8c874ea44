"""The router: candidates -> order -> failover loop -> RouteResult. Knows nothing of HTTP
requests; the faces (routing/api/completions.py, routing/v1/app.py, routing/embeddings.py)
call `complete`, `open_stream` or the loop itself with a tenant snapshot from
routing/cache.py.

Per request: the model asked for picks the pool (routing/pool.py, SPEC §2 rule 0); the
pool's enabled providers become selection Candidates (routing/candidates.py: health from
the snapshot, circuit state from routing.health.breaker, Retry-After quiet, the features
the request needs against what each adapter declares, the upstream model each is sent);
routing/selection.py orders them; the failover loop (routing/attempts.py) takes a token
from each provider's rate limiter before calling it (a provider without one is skipped,
and while nothing has been tried the first pick is drawn again without it), moves on to
the next provider on a retryable ProviderError, re-sends per the tenant's retry policy
(routing/retry.py) when no other is left, and ends the request on anything else.
Every attempt is reported to routing.health.breaker and listed in the result; every
routed request, served, failed or cancelled, leaves through `account`, which hands one
usage Entry to the usage writer. A stream continues in routing/stream.py.

Raises (all AxonFlowError, rendered as the envelope by either face):
ProviderNotFound (404) for a model that names nothing, UnsupportedFeature (400) when no
provider of the pool can serve what the request needs, NoHealthyProvider (503) when
nothing is eligible, RateLimited (429, Retry-After) when every eligible provider is over
its limit or asked for quiet, UpstreamFailed (502, details.attempts) when attempts were
made and none succeeded.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import TYPE_CHECKING

from providers.adapters.base import CompletionRequest
from providers.pricing import actual_cost
from routing.attempts import (  # noqa: F401 (the router's public names, for its callers)
    CANCELLED,
    CLIENT_CANCELLED,
    Attempts,
    ClientCancelled,
    _ms,
    account,
    provider_at_fault,
)
from routing.candidates import (  # noqa: F401
    CHAT_ONLY,
    UnsupportedFeature,
    candidates_of,
    check_features,
    validate_names,
)
from routing.ratelimit import Limiter, get_limiter
from routing.route import Caller, RouteResult
from routing.selection import RoutingOptions
from routing.stream import RouteStream, StreamFailed, _close, _first_chunk  # noqa: F401

if TYPE_CHECKING:
    from routing.cache import TenantSnapshot

_rng = random.Random()


async def complete(
    snapshot: TenantSnapshot,
    request: CompletionRequest,
    options: RoutingOptions,
    caller: Caller,
    *,
    rng: random.Random | None = None,
    limiter: Limiter | None = None,
    endpoint: str = "chat",
) -> RouteResult:
    """Route one non-streaming completion. Returns the result or raises (module docstring)."""
    loop = Attempts(snapshot, options, rng or _rng, limiter or get_limiter(), request.required_features())
    config, _, response = await loop.answer(
        lambda adapter, model: adapter.complete(for_model(request, model)), caller, request, stream=False, endpoint=endpoint
    )
    result = RouteResult(
        response, config, loop.attempts, _ms(loop.started), actual_cost(config, response.usage, response.model)
    )
    loop.account(caller, request, result.response_time_ms, stream=False, result=result, endpoint=endpoint)
    return result


def for_model(request: CompletionRequest, model: str | None) -> CompletionRequest:
    """The request as sent to one attempt: with the pool's upstream model for it."""
    return request if model is None or model == request.model else replace(request, model=model)


async def open_stream(
    snapshot: TenantSnapshot,
    request: CompletionRequest,
    options: RoutingOptions,
    caller: Caller,
    *,
    rng: random.Random | None = None,
    limiter: Limiter | None = None,
    endpoint: str = "chat",
) -> RouteStream:
    """Route a streaming completion up to its first chunk, failing over until then.

    Nothing has reached the client when this raises, so the error goes out as a plain
    error response (module docstring for which)."""
    loop = Attempts(snapshot, options, rng or _rng, limiter or get_limiter(), request.required_features())
    config, model, (first, rest) = await loop.answer(
        lambda adapter, model: _first_chunk(adapter, for_model(request, model)),
        caller,
        request,
        stream=True,
        endpoint=endpoint,
    )
    return RouteStream(
        config,
        loop.attempts,
        first,
        rest,
        caller,
        request,
        loop.started,
        snapshot,
        loop.trace(),
        model=(first.model if first else "") or "",
        model_requested=loop.pool.asked,
        endpoint=endpoint,
        upstream_model=model,
        ttft_ms=_ms(loop.started),
    )
