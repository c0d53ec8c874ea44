"""A routed stream: opening it up to its first chunk (`first_chunk`), then relaying the
rest (RouteStream), recording usage at its end, and turning an upstream failure midway
into StreamFailed (SPEC §2 rule 7)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from axonflow_site import metrics
from axonflow_site.errors import AxonFlowError, UpstreamFailed
from providers.adapters.base import Chunk, CompletionRequest, CompletionResponse, ProviderError, Usage
from providers.pricing import actual_cost, estimate_prompt_tokens
from routing.attempts import CANCELLED, CLIENT_CANCELLED, _ms, account, provider_at_fault
from routing.health import breaker
from routing.route import Attempt, Caller, RouteResult, route_dict

if TYPE_CHECKING:
    from providers.models import ProviderConfig
    from routing.cache import TenantSnapshot


open_streams = 0  # streams being relayed now (axonflow_in_flight_streams)
metrics.sample(metrics.IN_FLIGHT_STREAMS, lambda: open_streams)


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
    ttft_ms: float | None = None  # routing to the first chunk (metrics)

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
        """The usage of a stream that broke or was cut: an error, at the cost of what
        reached the client (the text so far; the prompt as estimated)."""
        delivered = Usage(estimate_prompt_tokens(self.request), len("".join(self.text)) // 4) if self.text else None
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
            ttft_ms=self.ttft_ms,
            delivered=delivered,
        )

    async def chunks(self) -> AsyncIterator[Chunk]:
        global open_streams
        usage_seen: Usage | None = None
        attempt = self.attempts[-1]
        open_streams += 1
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
            open_streams -= 1
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
            ttft_ms=self.ttft_ms,
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
