"""The router: candidates -> order -> failover loop -> RouteResult. Knows nothing of HTTP
requests; both completion faces (routing/api/completions.py, routing/v1/app.py) call
`complete` or `open_stream` with a tenant snapshot from routing/cache.py.

Per request: the model asked for picks the pool (routing/pool.py, SPEC §2 rule 0); the
pool's enabled providers become selection Candidates (health from the snapshot, circuit
state from routing.health.breaker, the features the request needs against what each
adapter declares, the upstream model each is sent); routing/selection.py orders them; each
attempt first takes a token from the provider's rate limiter (a provider without one is
skipped, and while nothing has been tried the first pick is drawn again without it);
a retryable ProviderError moves on to the next provider, anything else ends the request.
Every attempt is reported to routing.health.breaker.record_attempt and listed in the
result; every routed request, served or failed, leaves through `account`, which hands
one usage Entry to the usage writer.

Raises (all AxonFlowError, rendered as the envelope by either face):
ProviderNotFound (404) for a model that names nothing, UnsupportedFeature (400) when no
provider of the pool can serve what the request needs, NoHealthyProvider (503) when nothing is eligible, RateLimited (429, Retry-After) when
every eligible provider is over its limit, UpstreamFailed (502, details.attempts) when
attempts were made and none succeeded.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from axonflow_site.errors import AxonFlowError, NoHealthyProvider, RateLimited, UpstreamFailed, ValidationFailed
from providers.adapters.base import (
    CHAT,
    Chunk,
    CompletionRequest,
    CompletionResponse,
    ProviderError,
    ProviderTimeout,
    Usage,
    credentials_rejected,
)
from providers.adapters.chat import FEATURE_LABELS
from providers.pricing import actual_cost, estimate_prompt_tokens
from routing import pool as pools
from routing import retry, trace
from routing.health import breaker
from routing.ratelimit import Limiter, get_limiter
from routing.route import Attempt, Caller, RouteResult, route_dict
from routing.selection import Candidate, Draw, RoutingOptions, attempts
from usage.entry import Entry, prompt_text
from usage.writer import writer as usage_writer

if TYPE_CHECKING:
    from providers.models import ProviderConfig
    from routing.cache import TenantSnapshot

_rng = random.Random()


CHAT_ONLY = frozenset({CHAT})
CLIENT_CANCELLED = "client_cancelled"  # the attempt's outcome and the usage record's error code


class UnsupportedFeature(ValidationFailed):
    """No provider of the pool can serve a feature the request needs (SPEC §2 rule 1)."""


def candidates_of(
    snapshot: TenantSnapshot, pool: pools.Pool = pools.EVERY, needs: frozenset[str] = CHAT_ONLY
) -> list[Candidate]:
    """The pool's enabled providers as selection candidates for a request needing
    `needs`, with the circuit state of this moment (the rest is built once per snapshot,
    pool and needs)."""
    key = (pool.asked, needs)
    base = snapshot.pool_candidates.get(key)
    if base is None:
        base = snapshot.pool_candidates[key] = _pool_candidates(snapshot, pool, needs)
    if retry.cooling:  # some provider asked for quiet (Retry-After): skip it until then
        now = retry.clock()
        base = [replace(c, cooling=True) if retry.cooling_for(c.id, now) else c for c in base]
    return [replace(c, circuit_open=True) if breaker.is_circuit_open(c.id) else c for c in base]


def _pool_candidates(snapshot: TenantSnapshot, pool: pools.Pool, needs: frozenset[str]) -> list[Candidate]:
    by_id = {c.pk: c for c in snapshot.configs}
    chosen = []
    for candidate in _all_candidates(snapshot):
        member = pools.Member() if pool.members is None else pool.members.get(candidate.id)
        if member is None:
            continue
        features = snapshot.features(by_id[candidate.id])
        missing = sorted(needs - features) if features is not None else []
        if member.model is not None or member.weight is not None or missing:
            candidate = replace(
                candidate,
                model=member.model,
                weight=candidate.weight if member.weight is None else member.weight,
                unable=", ".join(missing),
            )
        chosen.append(candidate)
    return chosen


def _all_candidates(snapshot: TenantSnapshot) -> list[Candidate]:
    base = snapshot.candidates
    if base is None:
        # Operator states as of the snapshot's load: the snapshot expires when one of
        # them does (routing/cache.py), so an expired drain never outlives it.
        base = snapshot.candidates = [
            Candidate(
                id=c.pk,
                name=c.name,
                priority=c.priority,
                weight=c.weight,
                status=c.health_status,
                operator_state=c.operator_state_at(snapshot.loaded_at),
                licensed=snapshot.licensed(c),
            )
            for c in snapshot.configs
            if c.enabled
        ]
    return base


def check_features(candidates: list[Candidate], needs: frozenset[str]) -> None:
    """Raise UnsupportedFeature when the pool has providers and none of them can serve
    the request: a 400 naming the feature, before anything is sent upstream."""
    if not candidates or any(not c.unable for c in candidates):
        return
    missing = set.intersection(*(set(c.unable.split(", ")) for c in candidates)) or {
        f for c in candidates for f in c.unable.split(", ")
    }
    labels = [FEATURE_LABELS.get(f, f) for f in sorted(missing)]
    raise UnsupportedFeature(
        f"No provider for this model can serve {' and '.join(labels)}.",
        {"param": None, "features": sorted(missing), "providers": [c.name for c in candidates]},
    )


def validate_names(snapshot: TenantSnapshot, options: RoutingOptions) -> None:
    """Raise ValidationFailed if the options name a provider the tenant does not have
    (another tenant's provider is as unknown as a missing one)."""
    named = ([options.preferred_provider] if options.preferred_provider else []) + list(options.weights)
    unknown = sorted({name for name in named if name not in snapshot.by_name})
    if unknown:
        field_name = "preferred_provider" if options.preferred_provider in unknown else "weights"
        raise ValidationFailed(
            f"Unknown provider name(s): {', '.join(unknown)}.",
            {"field": field_name, "param": field_name, "names": unknown},
        )


def provider_at_fault(error: ProviderError) -> bool:
    """For passive health: a retryable failure or bad credentials count against the
    provider; a 4xx caused by the request (a 400 for a bad parameter) does not."""
    return error.retryable or error.status_code in (None, 401, 403)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def account(
    caller: Caller,
    request: CompletionRequest | str | None,
    attempts: list[Attempt],
    latency_ms: float,
    *,
    stream: bool,
    result: RouteResult | None = None,
    error: AxonFlowError | None = None,
    config: ProviderConfig | None = None,
    trace: Callable[[], dict] | None = None,
    model_requested: str = "",
    endpoint: str = "chat",
) -> None:
    """The router's one exit to usage: queue the Entry for a request that was served
    (`result`) or failed (`error`; `config` names the provider when a stream broke
    after it answered, else the last provider tried is named). `request` is the
    completion, or for embeddings the text to store when the tenant keeps prompts."""
    entry = Entry(
        caller.tenant_id,
        caller.token_id,
        None,
        "",
        [a.as_dict() for a in attempts],
        [a.provider_id for a in attempts],
        "success" if result is not None else "error",
        200,
        stream=stream,
        latency_ms=latency_ms,
        request_id=caller.request_id,
        prompt=(prompt_text(request.system, request.messages) if caller.store_prompts else None)
        if isinstance(request, CompletionRequest)
        else request,
        model_requested=model_requested,
        trace=trace,
        endpoint=endpoint,
    )
    if result is not None:
        usage = result.response.usage
        entry.provider_id, entry.provider_name, entry.model = result.config.pk, result.config.name, result.response.model
        entry.prompt_tokens, entry.completion_tokens, entry.cost = usage.prompt_tokens, usage.completion_tokens, result.cost
    else:
        assert error is not None
        tried = [a for a in attempts if a.outcome != "rate_limited"]
        if config is not None:
            entry.provider_id, entry.provider_name = config.pk, config.name
        elif tried:
            entry.provider_id, entry.provider_name = tried[-1].provider_id, tried[-1].provider
        entry.status_code, entry.error_code = error.http_status, error.code
    usage_writer.add(entry)


class Attempts:
    """One request's failover loop and its bookkeeping, shared by every kind of request
    (`first_answer`): the order of providers, rate-limit tokens, the retry policy
    (routing/retry.py: attempts, deadline, backoff before a re-send, Retry-After, the
    tenant's retry budget) and the attempts made."""

    def __init__(
        self,
        snapshot: TenantSnapshot,
        options: RoutingOptions,
        rng: random.Random,
        limiter: Limiter,
        needs: frozenset[str] = CHAT_ONLY,
    ):
        self.snapshot = snapshot
        self.options = options
        self.rng = rng
        self.limiter = limiter
        self.policy = snapshot.retry
        self.pool = pools.resolve(snapshot, options.model)
        self.candidates = self.initial = candidates_of(snapshot, self.pool, needs)
        check_features(self.candidates, needs)
        self.attempts: list[Attempt] = []
        self.calls = 0  # upstream calls made (attempts skipped for a rate limit are not)
        self.limited: dict[int, float] = {}
        self.draw = Draw()
        self.model = ""  # the upstream model of the attempt in progress
        self.waited: float | None = None  # the backoff before the attempt in progress, if a re-send
        self.resendable: dict[int, tuple[Candidate, float]] = {}  # failed retryably: (candidate, its Retry-After)
        self.started = time.perf_counter()
        self.deadline = self.started + self.policy.deadline_seconds
        budget = retry.budget_for(snapshot.tenant_id)
        budget.requests += 1
        self.budget = budget

    def trace(self) -> Callable[[], dict]:
        """The routing trace, to be built off the request path (routing/trace.py)."""
        return functools.partial(
            trace.build,
            self.snapshot.configs,
            self.initial,
            self.options,
            self.draw,
            frozenset(self.limited),
            self.pool.describe(),
            self.pool.members,  # keyed by provider id; never changed once resolved
        )

    def account(self, caller: Caller, request: CompletionRequest | str | None, latency_ms: float, **kwargs: Any) -> None:
        account(
            caller, request, self.attempts, latency_ms, trace=self.trace(), model_requested=self.pool.asked, **kwargs
        )

    def _may_attempt(self, wait: float = 0.0) -> bool:
        return self.calls < self.policy.max_attempts and time.perf_counter() + wait < self.deadline

    async def _take_token(self, config: ProviderConfig, candidate: Candidate) -> bool:
        wait = await self.limiter.acquire(str(config.pk), config.rate_limit) if config.rate_limit else 0.0
        if wait > 0:
            self.limited[candidate.id] = wait
            self.attempts.append(Attempt(config.name, "rate_limited", error="over its rate limit", provider_id=config.pk))
        return wait <= 0

    async def providers(self) -> AsyncIterator[tuple[ProviderConfig, str | None]]:
        """Yield each provider to try with the upstream model to send it (None: its
        own), rate-limit token already taken: every candidate once in order, then, when
        none is left, re-sends to those that failed retryably (routing/retry.py)."""
        order = attempts(self.candidates, self.options, self.rng, self.draw)
        for candidate in order:
            if self.calls and not self._may_attempt():
                return
            config = self.snapshot.by_name[candidate.name]
            if not await self._take_token(config, candidate):
                if not self.tried_any:
                    # Not a candidate after all (rule 1): draw the first attempt again without it.
                    self.candidates = [c for c in self.candidates if c.id != candidate.id]
                    async for pair in self.providers():
                        yield pair
                    return
                continue
            self.model, self.waited = candidate.model or config.model, None
            yield config, candidate.model
        if self.options.disable_failover:
            return
        for round_number in range(self.policy.retries_per_provider):
            for candidate, retry_after in list(self.resendable.values()):
                wait = max(self.policy.backoff(round_number, self.rng), retry_after)
                if wait > self.policy.max_wait_seconds or not self._may_attempt(wait):
                    continue
                if not self.budget.take(self.policy):
                    return  # the tenant's re-sends are spent: a failing provider gets no extra load
                await asyncio.sleep(wait)
                config = self.snapshot.by_name[candidate.name]
                if not await self._take_token(config, candidate):
                    continue
                self.model, self.waited = candidate.model or config.model, wait
                yield config, candidate.model

    async def first_answer(
        self, call: Callable[[Any, str | None], Awaitable[Any]]
    ) -> tuple[ProviderConfig, str | None, Any] | None:
        """The failover loop of every request: `call(adapter, upstream model)` on each
        provider in turn until one answers (for a stream: its first chunk). (config,
        the upstream model it was sent or None for its own, answer), or None when none
        did (the attempts say why; `exhausted()` is the error). Each call is bounded
        by what is left of the request's deadline. A cancelled request (the client
        left) records its attempt as `client_cancelled` and re-raises."""
        async for config, model in self.providers():
            self.calls += 1
            start = time.perf_counter()
            left = self.deadline - start
            try:
                if left < config.timeout_seconds:  # the adapter's own clocks would outlive the request
                    try:
                        async with asyncio.timeout(left):
                            answer = await call(self.snapshot.adapter(config), model)
                    except TimeoutError:
                        raise ProviderTimeout(
                            config.name, f"the request's deadline of {self.policy.deadline_seconds:g} s passed"
                        ) from None
                else:
                    answer = await call(self.snapshot.adapter(config), model)
            except (ProviderError, AxonFlowError) as exc:
                self.failed(config, exc, start)
                if isinstance(exc, ProviderError) and not exc.retryable:
                    return None
                continue
            except asyncio.CancelledError:
                self.attempts.append(
                    Attempt(config.name, CLIENT_CANCELLED, None, _ms(start), "the client left", config.pk, self.model)
                )
                raise
            self.succeeded(config, start)
            return config, model, answer
        return None

    async def answer(
        self,
        call: Callable[[Any, str | None], Awaitable[Any]],
        caller: Caller,
        request: CompletionRequest | str | None,
        *,
        stream: bool,
        endpoint: str,
    ) -> tuple[ProviderConfig, str | None, Any]:
        """`first_answer`, with the usage record of every way it can end but an answer:
        raises the error of a request that ran out of providers, and re-raises the
        cancellation of one whose client left (client_cancelled)."""
        try:
            answered = await self.first_answer(call)
        except asyncio.CancelledError:
            self.account(caller, request, _ms(self.started), stream=stream, error=CANCELLED, endpoint=endpoint)
            raise
        if answered is None:
            error = self.exhausted()
            self.account(caller, request, _ms(self.started), stream=stream, error=error, endpoint=endpoint)
            raise error
        return answered

    @property
    def tried_any(self) -> bool:
        return self.calls > 0

    def failed(self, config: ProviderConfig, error: ProviderError | AxonFlowError, start: float) -> None:
        latency = _ms(start)
        if isinstance(error, ProviderError):
            attempt = Attempt(
                config.name, error.outcome, error.status_code, latency, error.message, config.pk, self.model
            )
            if credentials_rejected(error):
                breaker.reject_credentials(self.snapshot.tenant_id, config.pk, latency, error.message)
            else:
                breaker.record_attempt(
                    self.snapshot.tenant_id, config.pk, not provider_at_fault(error), latency, error.message
                )
                if error.retryable:
                    candidate = next(c for c in self.initial if c.id == config.pk)
                    self.resendable[config.pk] = (candidate, error.retry_after or 0.0)
            if error.retry_after is not None and error.status_code in (429, 503):
                retry.cool(config.pk, error.retry_after)
        else:  # the adapter could not be built from its config
            attempt = Attempt(config.name, error.code, None, latency, error.message, config.pk, self.model)
        attempt.waited_ms = None if self.waited is None else self.waited * 1000
        self.attempts.append(attempt)

    def succeeded(self, config: ProviderConfig, start: float) -> None:
        latency = _ms(start)
        waited = None if self.waited is None else self.waited * 1000
        self.attempts.append(Attempt(config.name, "success", 200, latency, "", config.pk, self.model, waited))
        breaker.record_attempt(self.snapshot.tenant_id, config.pk, True, latency, "")

    def exhausted(self) -> AxonFlowError:
        """The error for a request that ran out of providers: 502 after failed
        attempts, 429 when every provider tried or left asked for quiet (rate limits,
        upstream 429s, Retry-After), 503 when none was eligible."""
        attempts = [a.as_dict() for a in self.attempts]
        tried = [a for a in self.attempts if a.outcome != "rate_limited"]
        now = retry.clock()
        quiet = [w for w in self.limited.values()]
        quiet += [retry.cooling_for(c.id, now) for c in self.initial if c.cooling]
        if tried and all(a.outcome == "http_429" for a in tried):
            quiet += [retry.cooling_for(a.provider_id, now) or 1.0 for a in tried if a.provider_id is not None]
        elif tried:
            last = tried[-1]
            return UpstreamFailed(
                f"Every provider tried failed; the last, {last.provider}, returned {last.outcome}.",
                {"attempts": attempts},
            )
        if quiet:
            retry_after = max(1, math.ceil(min(quiet)))
            return RateLimited(
                "Every eligible provider is over its rate limit or asked to wait.",
                {"retry_after": retry_after, "attempts": attempts},
                headers={"Retry-After": str(retry_after)},
            )
        return NoHealthyProvider("No enabled, healthy provider is available for this request.", {"attempts": []})


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


class ClientCancelled(AxonFlowError):
    """Usage only: the client left before its answer was delivered in full, streaming
    or not (nginx's 499); the upstream call was cancelled with it."""

    code = CLIENT_CANCELLED
    http_status = 499


CANCELLED = ClientCancelled("The client closed the connection before the answer was delivered.")


class StreamFailed(Exception):
    """An upstream failure after the first chunk reached the client: the stream must end
    with an error event. `error` is the UpstreamFailed to render into it."""

    def __init__(self, error: UpstreamFailed):
        super().__init__(error.message)
        self.error = error


@dataclass(slots=True)
class RouteStream:
    """An opened stream: the provider answered with its first chunk. Iterate `chunks()`
    once; it yields that chunk and the rest, records usage at the end, and raises
    StreamFailed if the upstream breaks midway."""

    config: ProviderConfig
    attempts: list[Attempt]
    first: Chunk | None
    rest: AsyncIterator[Chunk]
    caller: Caller
    request: CompletionRequest
    started: float
    snapshot: TenantSnapshot
    trace: Callable[[], dict] | None = None
    model: str = ""
    model_requested: str = ""
    endpoint: str = "chat"
    upstream_model: str | None = None  # the pool's model for this provider (None: its own)
    text: list[str] = field(default_factory=list)
    tool_calls: list = field(default_factory=list)  # every ToolCallDelta seen
    finish_reason: str | None = None
    usage: Usage | None = None  # set when the stream has ended
    cost: Decimal = Decimal("0")

    @property
    def provider_name(self) -> str:
        return self.config.name

    @property
    def answering_model(self) -> str:
        """The model as clients are told it: the upstream's word, else the one sent."""
        return self.model or self.upstream_model or self.config.model

    def route(self) -> dict[str, Any]:
        return route_dict(self.config.name, self.model, _ms(self.started), self.attempts)

    def _record_failure(self, error: AxonFlowError) -> None:
        account(
            self.caller,
            self.request,
            self.attempts,
            _ms(self.started),
            stream=True,
            error=error,
            config=self.config,
            trace=self.trace,
            model_requested=self.model_requested,
            endpoint=self.endpoint,
        )

    async def chunks(self) -> AsyncIterator[Chunk]:
        usage_seen: Usage | None = None
        attempt = self.attempts[-1]
        try:
            pending = [self.first] if self.first is not None else []
            while True:
                chunk = pending.pop() if pending else await self.rest.__anext__()
                self.text.append(chunk.delta)
                if chunk.tool_calls:
                    self.tool_calls.extend(chunk.tool_calls)
                usage_seen = chunk.usage or usage_seen
                self.finish_reason = chunk.finish_reason or self.finish_reason
                if chunk.model:
                    self.model = chunk.model
                yield chunk
        except StopAsyncIteration:
            pass
        except ProviderError as exc:
            attempt.outcome, attempt.status_code, attempt.error = "stream_error", exc.status_code, exc.message
            breaker.record_attempt(
                self.snapshot.tenant_id, self.config.pk, not provider_at_fault(exc), attempt.latency_ms, exc.message
            )
            error = UpstreamFailed(
                f"{self.config.name} failed in the middle of the stream: {exc.message}",
                {"attempts": [a.as_dict() for a in self.attempts]},
            )
            self._record_failure(error)
            raise StreamFailed(error) from None
        except (GeneratorExit, asyncio.CancelledError):
            # The client went away: the answer was not delivered in full.
            attempt.outcome = CLIENT_CANCELLED
            self._record_failure(CANCELLED)
            raise
        finally:
            await _close(self.rest)
        final = usage_seen or Usage(estimate_prompt_tokens(self.request), max(1, len("".join(self.text)) // 4))
        response = CompletionResponse("".join(self.text), self.answering_model, self.finish_reason, final)
        self.usage, self.cost = final, actual_cost(self.config, final, response.model)
        result = RouteResult(response, self.config, self.attempts, _ms(self.started), self.cost)
        account(
            self.caller,
            self.request,
            self.attempts,
            result.response_time_ms,
            stream=True,
            result=result,
            trace=self.trace,
            model_requested=self.model_requested,
            endpoint=self.endpoint,
        )


async def _close(iterator: AsyncIterator[Chunk]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing a broken upstream must not mask the real outcome
            pass


async def _first_chunk(adapter: Any, request: CompletionRequest) -> tuple[Chunk | None, AsyncIterator[Chunk]]:
    """Open the adapter's stream up to its first chunk (None: it ended at once); the
    stream is closed again if that fails, or if the wait is cancelled."""
    rest = adapter.stream(request).__aiter__()
    try:
        return await rest.__anext__(), rest
    except StopAsyncIteration:
        return None, rest
    except BaseException:
        await _close(rest)
        raise


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
    )
