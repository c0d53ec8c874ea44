"""Ollama's native chat API.

- Chat: https://docs.ollama.com/api/chat (`POST /api/chat`, body and response fields)
- Streaming: https://docs.ollama.com/api/streaming (NDJSON, one object a line, the last
  with `done: true`, `done_reason` and the token counts)
- Errors: https://docs.ollama.com/api/errors (`{"error": "..."}`; an error after the
  stream started arrives as one more NDJSON line, the HTTP status stays 200)
- Models: https://docs.ollama.com/api/tags (`GET /api/tags`, used as the health probe)

Ollama needs no key. When a config has one anyway (an authenticating reverse proxy,
or ollama.com's hosted API), it is sent as `Authorization: Bearer`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from providers.adapters.base import (
    Chunk,
    CompletionRequest,
    CompletionResponse,
    HealthProbe,
    MalformedResponse,
    ProviderError,
    Usage,
    chat_messages,
    invalid_setting,
    positive_int_setting,
    present,
    token_count,
)
from providers.adapters.http import BaseProvider, check_setting_names, ndjson

if TYPE_CHECKING:
    from providers.models import ProviderConfig

CHAT_PATH = "/api/chat"
TAGS_PATH = "/api/tags"
DEFAULT_BASE_URL = "http://127.0.0.1:11434"


@dataclass(frozen=True, slots=True)
class Settings:
    """`config.settings` for ollama: `keep_alive` ("5m", 0…), `num_ctx`, and `options`
    (extra model options such as top_k or seed, passed through)."""

    keep_alive: str | int | None = None
    num_ctx: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Settings:
        """Raises InvalidConfig naming the bad field (or a key it does not know)."""
        check_setting_names(raw, {f.name for f in fields(cls)})
        keep_alive = raw.get("keep_alive")
        if keep_alive is not None and (isinstance(keep_alive, bool) or not isinstance(keep_alive, str | int)):
            raise invalid_setting("settings.keep_alive must be a duration string or seconds.")
        num_ctx = raw.get("num_ctx")
        if num_ctx is not None:
            positive_int_setting(num_ctx, "num_ctx")
        options = raw.get("options")
        options = {} if options is None else options
        if not isinstance(options, dict):
            raise invalid_setting("settings.options must be an object.")
        return cls(keep_alive=keep_alive, num_ctx=num_ctx, options=dict(options))


def to_wire(req: CompletionRequest, model: str, settings: Settings | None = None, *, stream: bool = False) -> dict:
    """The /api/chat body for `req`. Ollama takes the system prompt as a first message."""
    settings = settings or Settings()
    options: dict[str, Any] = {
        **settings.options,
        **present(
            num_ctx=settings.num_ctx,
            temperature=req.temperature,
            top_p=req.top_p,
            num_predict=req.max_tokens,
            stop=req.stop,
        ),
    }
    body: dict[str, Any] = {"model": model, "messages": chat_messages(req), "stream": stream}
    if options:
        body["options"] = options
    if settings.keep_alive is not None:
        body["keep_alive"] = settings.keep_alive
    return body


def usage_from(body: Mapping[str, Any]) -> Usage:
    return Usage(
        prompt_tokens=token_count(body.get("prompt_eval_count"), "prompt_eval_count"),
        completion_tokens=token_count(body.get("eval_count"), "eval_count"),
    )


def from_wire(body: Any, provider: str = "ollama") -> CompletionResponse:
    """The normalized response for a non-streamed /api/chat body.

    Raises MalformedResponse when the body is not a chat response."""
    if not isinstance(body, dict):
        raise MalformedResponse(provider, "response is not a JSON object")
    if "error" in body:
        raise ProviderError(provider, None, str(body["error"]), retryable=True)
    message = body.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content", ""), str):
        raise MalformedResponse(provider, "response has no message")
    return CompletionResponse(
        content=message.get("content") or "",
        model=str(body.get("model") or ""),
        finish_reason=body.get("done_reason") or ("stop" if body.get("done") else None),
        usage=usage_from(body),
    )


async def parse_stream(events: AsyncIterator[dict], provider: str = "ollama") -> AsyncIterator[Chunk]:
    """Chunks from decoded NDJSON objects; the last carries finish reason and usage.

    An `{"error": ...}` line (the upstream failed after the stream started) raises a
    retryable ProviderError; a stream that ends before `done: true` raises
    MalformedResponse, so a truncated answer is never passed off as complete."""
    async for event in events:
        if "error" in event:
            raise ProviderError(provider, None, f"stream failed: {event['error']}", retryable=True)
        message = event.get("message") or {}
        delta = message.get("content") if isinstance(message, dict) else None
        model = event.get("model")
        if event.get("done"):
            if delta:
                yield Chunk(delta=delta, model=model)
            yield Chunk(finish_reason=event.get("done_reason") or "stop", usage=usage_from(event), model=model)
            return
        if delta:
            yield Chunk(delta=delta, model=model)
    raise MalformedResponse(provider, "stream ended before the final done line")


class OllamaProvider(BaseProvider):
    """Adapter for an Ollama server (or an Ollama-compatible proxy)."""

    type = "ollama"
    settings_class = Settings

    def __init__(self, config: ProviderConfig):
        super().__init__(config)
        self.base_url = self.base_url_or(DEFAULT_BASE_URL)

    def _headers(self, accept: str = "application/json") -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": accept}
        key = self.api_key
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        body = to_wire(request, self.model_for(request), self.settings, stream=False)
        return await self.post_json(self.base_url + CHAT_PATH, self._headers(), body, from_wire, body["model"])

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        body = to_wire(request, self.model_for(request), self.settings, stream=True)
        lines = await self.open_lines(self.base_url + CHAT_PATH, self._headers("application/x-ndjson"), body)
        async for chunk in parse_stream(ndjson(lines, self.name), self.name):
            yield chunk

    async def health_check(self) -> HealthProbe:
        """GET /api/tags: the server answers with its model list (no model is loaded)."""
        url = self.base_url + TAGS_PATH
        return await self.probe_list(url, self._headers(), "models", "/api/tags did not return a model list")
