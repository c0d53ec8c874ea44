"""One request's failover loop (`Attempts`), shared by every kind of request, and the
router's one exit to usage (`account`). routing/router.py drives it; routing/retry.py
is its policy."""

from __future__ import annotations

import asyncio
import functools
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings

from axonflow_site import tracing
from axonflow_site.context import set_provider
from axonflow_site.errors import AxonFlowError, NoHealthyProvider, RateLimited, UpstreamFailed
from providers.adapters.base import CompletionRequest, ProviderError, ProviderTimeout, Usage, credentials_rejected
from providers.pricing import actual_cost, estimate_prompt_tokens, prices_for
from routing import pool as pools
from routing import retry, token_limits, trace
from routing.candidates import CHAT_ONLY, candidates_of, check_features
from routing.health import breaker
from routing.ratelimit import Limiter
from routing.route import Attempt, Caller, RouteResult
from routing.selection import Candidate, Draw, RoutingOptions, attempts
from usage import holds
from usage.budgets import to_units
from usage.entry import Entry, prompt_text
from usage.writer import writer as usage_writer

if TYPE_CHECKING:
    from providers.models import ProviderConfig
    from routing.cache import TenantSnapshot

CLIENT_CANCELLED = "client_cancelled"  # the attempt's outcome and the usage record's error code


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
    ttft_ms: float | None = None,
    delivered: Usage | None = None,
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
        tenant=caller.tenant,
        ttft_ms=ttft_ms,
    )
    if caller.received and not stream:
        entry.elapsed_ms = (time.perf_counter() - caller.received) * 1000
    if tracing.tracer is not None and trace is not None:
        entry.trace = trace()  # built once, here, for the span event too
        tracing.event("axonflow.routing.decision", decision(entry.trace, attempts))
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
        set_provider(entry.provider_name)
        if delivered is not None and config is not None:  # a stream cut short: what reached the client
            entry.prompt_tokens, entry.completion_tokens = delivered.prompt_tokens, delivered.completion_tokens
            entry.cost = actual_cost(config, delivered, entry.model or config.model)
    if caller.tpm_estimate:
        token_limits.settle_tokens(caller, entry.prompt_tokens + entry.completion_tokens)
    hold = caller.hold
    if hold is not None:
        entry.budgets = [(rule.id, start) for rule, start in hold.keys]
        holds.settle_soon(hold, entry.cost, entry.prompt_tokens + entry.completion_tokens)
    usage_writer.add(entry)


def decision(built: dict, attempts: list[Attempt]) -> dict[str, Any]:
    """The routing trace as span event attributes (names, reasons and outcomes only)."""
    rows = built.get("candidates", [])
    draw = built.get("draw") or {}
    return {
        "axonflow.pool": built.get("pool"),
        "axonflow.candidates": [r["provider"] for r in rows if not r["excluded"]],
        "axonflow.excluded": [f"{r['provider']}: {r['excluded']}" for r in rows if r["excluded"]],
        "axonflow.draw.method": draw.get("method"),
        "axonflow.draw.chosen": draw.get("chosen"),
        "axonflow.attempts": [f"{a.provider}: {a.outcome}" for a in attempts],
    }


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
        self.endpoint = "chat"  # chat, messages or embeddings: set by answer()
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
                attempt = self._bounded(call, config, model, left)
                if tracing.tracer is None:
                    answer = await attempt
                else:
                    retried = self.waited is not None
                    answer = await tracing.traced(attempt, config, self.model, self.endpoint, retried)
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

    def _bounded(self, call, config: ProviderConfig, model: str | None, left: float) -> Awaitable[Any]:
        """The attempt, bounded by what is left of the request's deadline when that is
        shorter than the adapter's own clocks (else the call itself: no extra frame)."""
        if left >= config.timeout_seconds:
            return call(self.snapshot.adapter(config), model)
        return self._within(call, config, model, left)

    async def _within(self, call, config: ProviderConfig, model: str | None, left: float) -> Any:
        try:
            async with asyncio.timeout(left):
                return await call(self.snapshot.adapter(config), model)
        except TimeoutError:
            raise ProviderTimeout(
                config.name, f"the request's deadline of {self.policy.deadline_seconds:g} s passed"
            ) from None

    async def answer(
        self,
        call: Callable[[Any, str | None], Awaitable[Any]],
        caller: Caller,
        request: CompletionRequest | str | None,
        *,
        stream: bool,
        endpoint: str,
        tokens: tuple[int, int] | None = None,
    ) -> tuple[ProviderConfig, str | None, Any]:
        """`first_answer`, with the usage record of every way it can end but an answer:
        raises the error of a request that ran out of providers, and re-raises the
        cancellation of one whose client left (client_cancelled)."""
        self.endpoint = endpoint
        if self.snapshot.budgets:
            try:
                await self.hold_budget(caller, request, tokens)
            except AxonFlowError as refused:  # budget_exceeded (or unavailable): nothing was sent
                self.account(caller, request, _ms(self.started), stream=stream, error=refused, endpoint=endpoint)
                raise
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

    async def hold_budget(self, caller: Caller, request: Any, tokens: tuple[int, int] | None) -> None:
        """Reserve the request's worst case on its budgets (usage/holds.py) before any
        upstream call: (prompt, output) tokens, `tokens` or estimated from the request
        (its max_tokens, else AXONFLOW_BUDGET_DEFAULT_MAX_TOKENS), priced for the most
        expensive candidate it may be sent to. Raises BudgetExceeded."""
        if tokens is None:
            cap = getattr(request, "max_tokens", None) or settings.AXONFLOW_BUDGET_DEFAULT_MAX_TOKENS
            tokens = (estimate_prompt_tokens(request), cap) if isinstance(request, CompletionRequest) else (0, cap)
        prompt, output = tokens
        worst = Decimal(0)
        for candidate in self.candidates:
            config = self.snapshot.by_name[candidate.name]
            price_in, price_out = prices_for(config, candidate.model or config.model)
            worst = max(worst, (price_in * prompt + price_out * output) / 1000)
        hold = holds.new_hold(
            self.snapshot.budgets, caller.token_id, to_units(worst), prompt + output, caller.request_id
        )
        if hold is not None:
            await holds.reserve(hold)
            caller.hold = hold

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
        set_provider(config.name)
        breaker.record_attempt(self.snapshot.tenant_id, config.pk, True, latency, "")

    def exhausted(self) -> AxonFlowError:
        """The error for a request that ran out of providers: 502 after failed
        attempts, 429 when every provider tried or left asked for quiet (rate limits,
        upstream 429s, Retry-After), 503 when none was eligible."""
        attempts = [a.as_dict() for a in self.attempts]
        tried = [a for a in self.attempts if a.outcome != "rate_limited"]
        now = retry.clock()
        quiet = list(self.limited.values())
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


class ClientCancelled(AxonFlowError):
    """Usage only: the client left before its answer was delivered in full, streaming
    or not (nginx's 499); the upstream call was cancelled with it."""

    code = CLIENT_CANCELLED
    http_status = 499


CANCELLED = ClientCancelled("The client closed the connection before the answer was delivered.")
