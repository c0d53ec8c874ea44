"""Anthropic Messages API.

- Messages: https://docs.anthropic.com/en/api/messages (`POST /v1/messages`; `system` is a
  top-level field, `max_tokens` is required, turns alternate user/assistant)
- Versioning: https://docs.anthropic.com/en/api/versioning (`anthropic-version: 2023-06-01`)
- Streaming: https://docs.anthropic.com/en/docs/build-with-claude/streaming (SSE events
  message_start, content_block_start/delta/stop, message_delta, message_stop, ping, and
  `error` events mid-stream)
- Errors: https://docs.anthropic.com/en/api/errors (`{"type": "error", "error": {"type",
  "message"}}`; 529 overloaded_error)
- Models: https://docs.anthropic.com/en/api/models-list (the health probe)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from providers.adapters.base import (
    Capabilities,
    Chunk,
    CompletionRequest,
    CompletionResponse,
    HealthProbe,
    MalformedResponse,
    ProviderError,
    Usage,
    alternating_turns,
    classify,
    invalid_setting,
    positive_int_setting,
    token_count,
)
from providers.adapters.http import BaseProvider, Call, check_setting_names, error_message, json_object, sse_events

if TYPE_CHECKING:
    from providers.models import ProviderConfig

DEFAULT_BASE_URL = "https://api.anthropic.com"
MESSAGES_PATH = "/v1/messages"
MODELS_PATH = "/v1/models"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
# The normalized finish reasons follow OpenAI's vocabulary (the /v1 surface returns them).
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}


@dataclass(frozen=True, slots=True)
class Settings:
    """`config.settings` for anthropic: `anthropic_version`, `beta` (list of
    anthropic-beta flags) and `max_tokens` (sent when a request gives none)."""

    anthropic_version: str = API_VERSION
    beta: tuple[str, ...] = ()
    max_tokens: int = DEFAULT_MAX_TOKENS

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Settings:
        """Raises InvalidConfig naming the bad field (or a key it does not know)."""
        check_setting_names(raw, {f.name for f in fields(cls)})
        version = raw.get("anthropic_version")
        version = API_VERSION if version is None else version
        if not isinstance(version, str) or not version.replace("-", "").isdigit():
            raise invalid_setting("settings.anthropic_version must look like 2023-06-01.")
        beta = raw.get("beta")
        beta = [] if beta is None else beta
        if isinstance(beta, str):
            beta = [beta]
        if not isinstance(beta, list) or not all(isinstance(b, str) and b and "," not in b for b in beta):
            raise invalid_setting("settings.beta must be a list of beta flag names.")
        max_tokens = positive_int_setting(raw.get("max_tokens", DEFAULT_MAX_TOKENS), "max_tokens")
        return cls(anthropic_version=version, beta=tuple(beta), max_tokens=max_tokens)


def _turns(req: CompletionRequest) -> tuple[list[dict], list[str]]:
    """(alternating turns, system texts). System-role messages join the system prompt;
    consecutive same-role messages become one turn of several text blocks, which is
    what the API itself does with them. A one-message turn stays a plain string."""
    turns, system = alternating_turns(req)
    wire = [
        {"role": role, "content": texts[0] if len(texts) == 1 else [{"type": "text", "text": t} for t in texts]}
        for role, texts in turns
    ]
    return wire, system


def to_wire(req: CompletionRequest, model: str, settings: Settings | None = None, *, stream: bool = False) -> dict:
    """The Messages API body for `req`."""
    settings = settings or Settings()
    turns, system = _turns(req)
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": req.max_tokens or settings.max_tokens,
        "messages": turns,
    }
    if system:
        body["system"] = "\n\n".join(system)
    if req.temperature is not None:
        # Anthropic's range is 0..1 where OpenAI's is 0..2.
        body["temperature"] = min(1.0, max(0.0, req.temperature))
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.stop:
        body["stop_sequences"] = list(req.stop)
    if stream:
        body["stream"] = True
    return body


def usage_from(data: Any) -> Usage:
    """Prompt tokens include cache writes and reads: all of them are billed input."""
    if not isinstance(data, dict):
        return Usage()
    inputs = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    prompt = sum(token_count(data.get(k), k) for k in inputs)
    return Usage(prompt, token_count(data.get("output_tokens"), "output_tokens"))


def from_wire(body: Any, provider: str = "anthropic") -> CompletionResponse:
    """The normalized response for a `message` object. Raises MalformedResponse."""
    if not isinstance(body, dict):
        raise MalformedResponse(provider, "response is not a JSON object")
    if body.get("type") == "error":
        raise _stream_error(body, provider)
    content = body.get("content")
    if body.get("type") != "message" or not isinstance(content, list):
        raise MalformedResponse(provider, "response is not a message")
    text = "".join(b.get("text") or "" for b in content if isinstance(b, dict) and b.get("type") == "text")
    stop = body.get("stop_reason")
    return CompletionResponse(
        content=text,
        model=str(body.get("model") or ""),
        finish_reason=FINISH_REASONS.get(stop, stop),
        usage=usage_from(body.get("usage")),
        id=body.get("id"),
    )


def _stream_error(obj: Mapping[str, Any], provider: str) -> ProviderError:
    # Errors after the 200 (overloaded_error, api_error) arrive as an `error` event; the
    # attempt failed upstream, so the router may try elsewhere if nothing was sent yet.
    err = obj.get("error") if isinstance(obj.get("error"), dict) else {}
    return ProviderError(provider, None, f"{err.get('type', 'error')}: {err.get('message', '')}", retryable=True)


async def parse_stream(events: AsyncIterator[tuple[str, str]], provider: str = "anthropic") -> AsyncIterator[Chunk]:
    """Chunks from the SSE events of a streamed message: text deltas, then one final
    chunk with finish reason and usage at message_stop. Unknown event types are
    skipped (the docs reserve the right to add them); a stream ending before
    message_stop raises MalformedResponse."""
    model: str | None = None
    usage = Usage()
    stop: str | None = None
    async for event, data in events:
        if event == "ping":
            continue
        obj = json_object(data, provider, f"stream event {event!r}")
        kind = obj.get("type", event)
        if kind == "error":
            raise _stream_error(obj, provider)
        if kind == "message_start":
            message = obj.get("message") or {}
            model = message.get("model") or model
            usage = usage_from(message.get("usage"))
        elif kind == "content_block_delta":
            delta = obj.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                yield Chunk(delta=delta["text"], model=model)
        elif kind == "message_delta":
            stop = (obj.get("delta") or {}).get("stop_reason") or stop
            # message_delta's output_tokens is cumulative for the whole message.
            delta_usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
            usage = Usage(usage.prompt_tokens, token_count(delta_usage.get("output_tokens"), "output_tokens"))
        elif kind == "message_stop":
            yield Chunk(finish_reason=FINISH_REASONS.get(stop, stop or "stop"), usage=usage, model=model)
            return
    raise MalformedResponse(provider, "stream ended before message_stop")


class AnthropicCall(Call):
    def error_for(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        # https://docs.anthropic.com/en/api/errors: keep the error type next to the
        # message (overloaded_error, rate_limit_error…); 529 is retryable like any 5xx.
        try:
            kind = (json.loads(body).get("error") or {}).get("type")
        except (ValueError, AttributeError):
            kind = None
        message = error_message(body)
        return classify(self.provider, status, f"{kind}: {message}" if kind else message, headers)


class AnthropicProvider(BaseProvider):
    """Adapter for the Anthropic API."""

    type = "anthropic"
    settings_class = Settings
    call_class = AnthropicCall

    def __init__(self, config: ProviderConfig):
        super().__init__(config)
        self.base_url = self.base_url_or(DEFAULT_BASE_URL)

    def capabilities(self) -> Capabilities:
        return Capabilities(streaming=True, system_prompt=True, stop_sequences=True, features=self.features)

    def headers(self, accept: str = "application/json") -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": accept,
            "x-api-key": self.api_key,
            "anthropic-version": self.settings.anthropic_version,
        }
        if self.settings.beta:
            headers["anthropic-beta"] = ",".join(self.settings.beta)
        return headers

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        body = to_wire(request, self.model_for(request), self.settings)
        return await self.post_json(self.base_url + MESSAGES_PATH, self.headers(), body, from_wire, body["model"])

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        body = to_wire(request, self.model_for(request), self.settings, stream=True)
        lines = await self.open_lines(self.base_url + MESSAGES_PATH, self.headers("text/event-stream"), body)
        async for chunk in parse_stream(sse_events(lines), self.name):
            yield chunk

    async def health_check(self) -> HealthProbe:
        """GET /v1/models?limit=1: authenticated, generates nothing, costs nothing."""
        url = f"{self.base_url}{MODELS_PATH}?limit=1"
        return await self.probe_list(url, self.headers(), "data", "the model list is not a list")
