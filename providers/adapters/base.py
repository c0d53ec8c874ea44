"""The provider interface every adapter implements, its normalized request and
response types, and the error tree the router relies on.

A leaf: it imports no other adapter module (BaseProvider, which needs the HTTP layer,
lives in http.py). Adapters never retry: they raise a ProviderError whose `retryable` flag tells the
router whether to fail over (SPEC §2 rule 4).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, runtime_checkable

from axonflow_site.errors import InvalidConfig
from providers import secrets
from providers.adapters.chat import (  # noqa: F401 (re-exported: the wire modules import them from here)
    ALL_FEATURES,
    CHAT,
    EMBEDDINGS,
    IMAGE_URLS,
    IMAGES,
    JSON_MODE,
    JSON_SCHEMA,
    PARALLEL_TOOL_CALLS,
    STREAMING,
    TOOLS,
    EmbeddingRequest,
    EmbeddingResponse,
    ImagePart,
    Part,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
)

log = logging.getLogger("axonflow.adapters")

PLAIN_CHAT, STREAMED_CHAT = frozenset({CHAT}), frozenset({CHAT, STREAMING})
MAX_TOKEN_COUNT = 10_000_000  # more in one request is not a count, it is an upstream bug

# --- normalized request and response -------------------------------------------------


@dataclass(slots=True)
class Message:
    """One turn. `content` is always its text; `parts` keeps text and images in order
    when the client sent images; an assistant turn may carry `tool_calls`, and a
    `tool` turn answers the call `tool_call_id` (chat.py)."""

    role: str  # "user" | "assistant" | "system" | "tool"
    content: str
    parts: tuple[Part, ...] | None = None
    tool_calls: tuple[ToolCall, ...] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def content_parts(self) -> tuple[Part, ...]:
        """The parts to send: the client's, or the text as one part (none when empty)."""
        if self.parts is not None:
            return self.parts
        return (TextPart(self.content),) if self.content else ()


@dataclass(slots=True)
class CompletionRequest:
    messages: list[Message]
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    model: str | None = None  # the upstream model for this attempt; the config's when None
    stream: bool = False
    tools: tuple[Tool, ...] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    def required_features(self) -> frozenset[str]:
        """The capabilities an adapter needs to serve this request (chat.py names)."""
        rich = [m for m in self.messages if m.parts is not None or m.tool_calls or m.role == "tool"]
        if not (rich or self.tools or self.response_format):  # plain text: the hot path
            return STREAMED_CHAT if self.stream else PLAIN_CHAT
        needs = {CHAT, STREAMING} if self.stream else {CHAT}
        if self.tools or any(m.tool_calls or m.role == "tool" for m in rich):
            needs.add(TOOLS)
        if self.parallel_tool_calls is False and self.tools:  # true is every API's default
            needs.add(PARALLEL_TOOL_CALLS)
        images = [p for m in rich if m.parts for p in m.parts if isinstance(p, ImagePart)]
        if images:
            needs.add(IMAGES)
            if any(not image.is_data for image in images):
                needs.add(IMAGE_URLS)
        if self.response_format is not None:
            needs.add(JSON_SCHEMA if self.response_format.type == "json_schema" else JSON_MODE)
        return frozenset(needs)


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


_untrusted_warned_at = -1e9
untrusted_counts_dropped = 0  # token counts token_count() refused since start (for metrics)


def token_count(value: Any, field: str = "tokens") -> int:
    """A token count from an upstream's answer, which is untrusted: an int (or a whole
    float or numeric string) from 0 to MAX_TOKEN_COUNT. Anything else (negative,
    fractional, NaN, infinite, absurd, not a number) counts as 0 and is logged at most
    once a minute. Never raises: a bad count must not fail the request, nor later the
    usage batch that stores it (the columns are unsigned)."""
    if type(value) is int and 0 <= value <= MAX_TOKEN_COUNT:
        return value  # the common case, first
    if value is None:
        return 0
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        return _untrusted(field, value)
    if not math.isfinite(number) or number < 0 or number > MAX_TOKEN_COUNT or number != int(number):
        return _untrusted(field, value)
    return int(number)


def _untrusted(field: str, value: Any) -> int:
    global _untrusted_warned_at, untrusted_counts_dropped
    untrusted_counts_dropped += 1
    now = time.monotonic()
    if now - _untrusted_warned_at > 60:
        _untrusted_warned_at = now
        log.warning("an upstream reported %s = %.40r; counted as 0 (refused since start: %d)",
                    field, value, untrusted_counts_dropped)  # fmt: skip
    return 0


@dataclass(slots=True)
class CompletionResponse:
    """The answer. `finish_reason` uses OpenAI's words (stop, length, tool_calls,
    content_filter); `tool_calls` is None when the model called none."""

    content: str
    model: str
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    id: str | None = None
    tool_calls: list[ToolCall] | None = None


@dataclass(slots=True)
class Chunk:
    """One piece of a stream: a text delta or tool-call deltas, and on the last chunks
    the finish reason and usage."""

    delta: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


@dataclass(slots=True)
class HealthProbe:
    ok: bool
    latency_ms: float
    error: str = ""
    status_code: int | None = None


@dataclass(slots=True)
class CostEstimate:
    input_cost_per_1k: Decimal
    output_cost_per_1k: Decimal
    total_estimate: Decimal
    currency: str = "USD"


@dataclass(slots=True)
class Capabilities:
    """What an adapter can do. `features` holds chat.py's capability names; a request
    whose `required_features()` are not all in it is not routed to the adapter."""

    streaming: bool = True
    system_prompt: bool = True
    stop_sequences: bool = True
    max_stop_sequences: int | None = None
    features: frozenset[str] = frozenset({CHAT, STREAMING})

    def missing(self, needs: frozenset[str]) -> frozenset[str]:
        return needs - self.features


# --- request shaping shared by the wire modules ---------------------------------------------


def present(**fields: Any) -> dict[str, Any]:
    """The keyword arguments that are not None, in order (optional wire fields)."""
    return {name: value for name, value in fields.items() if value is not None}


# --- errors --------------------------------------------------------------------------


class ProviderError(Exception):
    """An upstream failure. `message` is scrubbed of keys before it is stored."""

    def __init__(
        self,
        provider: str,
        status_code: int | None,
        message: str,
        retryable: bool,
        retry_after: float | None = None,
    ):
        self.provider = provider
        self.status_code = status_code
        self.message = secrets.scrub(message)[:500]
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(f"{provider}: {self.message}")

    @property
    def outcome(self) -> str:
        """Short label for the attempt log: http_429, timeout, connect_error, malformed…"""
        return f"http_{self.status_code}" if self.status_code else "error"


class ProviderConnectError(ProviderError):
    def __init__(self, provider: str, message: str):
        super().__init__(provider, None, message, retryable=True)

    @property
    def outcome(self) -> str:
        return "connect_error"


class ProviderTimeout(ProviderError):
    def __init__(self, provider: str, message: str):
        super().__init__(provider, None, message, retryable=True)

    @property
    def outcome(self) -> str:
        return "timeout"


class MalformedResponse(ProviderError):
    def __init__(self, provider: str, message: str, status_code: int | None = None):
        super().__init__(provider, status_code, message, retryable=True)

    @property
    def outcome(self) -> str:
        return "malformed"


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or HTTP date); None if absent."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import datetime, timezone

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


def is_retryable_status(status: int) -> bool:
    """429, 408, 409 (lock timeouts) and every 5xx are retried elsewhere, and so are 401
    and 403: the upstream refusing the provider's own key is the provider's fault, not
    the request's (SPEC §2 rule 4); other 4xx are final."""
    return status in (401, 403, 408, 409, 429) or status >= 500


def credentials_rejected(error: ProviderError) -> bool:
    """The upstream refused the provider's key (revoked, expired, wrong account)."""
    return error.status_code in (401, 403)


def classify(provider: str, status: int, message: str, headers: Mapping[str, str] | None = None) -> ProviderError:
    """The ProviderError for an upstream HTTP error response."""
    headers = headers or {}
    return ProviderError(
        provider,
        status,
        message or f"HTTP {status}",
        retryable=is_retryable_status(status),
        retry_after=parse_retry_after(headers) if status == 429 or status >= 500 else None,
    )


def invalid_setting(message: str) -> InvalidConfig:
    """The InvalidConfig every adapter's Settings.parse raises for a bad `settings` entry."""
    return InvalidConfig(message, {"field": "settings"})


def positive_int_setting(value: Any, name: str) -> int:
    """`value` when it is a positive int (not a bool); raises invalid_setting otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise invalid_setting(f"settings.{name} must be a positive integer.")
    return value


async def timed_probe(check: Callable[[], Awaitable[Any]]) -> HealthProbe:
    """Run one health check and time it.

    ok (status 200) when `check` returns; not ok, with the error's scrubbed message and
    status, when it raises a ProviderError. Anything else propagates (the monitor turns
    it into a failed probe and logs it as an adapter bug)."""
    started = time.monotonic()
    try:
        await check()
    except ProviderError as exc:
        return HealthProbe(False, (time.monotonic() - started) * 1000, exc.message, exc.status_code)
    return HealthProbe(True, (time.monotonic() - started) * 1000, status_code=200)


def require_list(body: Any, key: str, provider: str, message: str, *, optional: bool = False) -> None:
    """Raise MalformedResponse(message, 200) unless `body` is an object with a list
    under `key` (or, when `optional`, without `key` at all)."""
    if not isinstance(body, dict) or not isinstance(body.get(key, [] if optional else None), list):
        raise MalformedResponse(provider, message, 200)


# --- the interface ---------------------------------------------------------------------


@runtime_checkable
class Provider(Protocol):
    name: str
    type: str
    supports_streaming: bool

    def capabilities(self) -> Capabilities: ...

    async def complete(self, request: CompletionRequest) -> CompletionResponse: ...

    def stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]: ...

    async def health_check(self) -> HealthProbe: ...

    def estimate_cost(self, request: CompletionRequest) -> CostEstimate: ...

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse: ...
