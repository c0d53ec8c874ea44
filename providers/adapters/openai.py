"""OpenAI Chat Completions.

- Chat: https://platform.openai.com/docs/api-reference/chat/create (`POST {base}/chat/completions`)
- Streaming: https://platform.openai.com/docs/api-reference/chat-streaming (SSE `data:` lines
  holding `chat.completion.chunk` objects, ended by `data: [DONE]`; with
  `stream_options.include_usage` a last chunk with empty `choices` carries the usage)
- Errors: https://platform.openai.com/docs/guides/error-codes (`{"error": {"message",
  "type", "param", "code"}}`; 429 with Retry-After / retry-after-ms)
- Auth: https://platform.openai.com/docs/api-reference/authentication (`Authorization:
  Bearer`, optional `OpenAI-Organization` and `OpenAI-Project`)
- Models: https://platform.openai.com/docs/api-reference/models/list (the health probe)

`config.base_url` includes the version (`https://api.openai.com/v1`), as the official
client's base_url does, so OpenAI-compatible servers plug in with their own prefix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, fields
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
    present,
    token_count,
)
from providers.adapters.http import BaseProvider, check_setting_names, json_object, sse_events

if TYPE_CHECKING:
    from providers.models import ProviderConfig

DEFAULT_BASE_URL = "https://api.openai.com/v1"
CHAT_PATH = "/chat/completions"
MODELS_PATH = "/models"
DONE = "[DONE]"
# `max_tokens` is deprecated on Chat Completions and rejected by reasoning models;
# `max_completion_tokens` is its replacement (see the create reference above).
MAX_TOKENS_FIELDS = ("max_completion_tokens", "max_tokens")


def _text_setting(raw: Mapping[str, Any], name: str) -> str:
    value = raw.get(name) or ""
    if not isinstance(value, str) or "\n" in value or "\r" in value:
        raise invalid_setting(f"settings.{name} must be a single-line string.")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    """`config.settings` for openai: `organization`, `project` (sent as headers),
    `max_tokens_field` (max_completion_tokens | max_tokens) and `stream_usage`
    (ask for the usage chunk; default true)."""

    organization: str = ""
    project: str = ""
    max_tokens_field: str = "max_completion_tokens"
    stream_usage: bool = True

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Settings:
        """Raises InvalidConfig naming the bad field (or a key it does not know)."""
        check_setting_names(raw, {f.name for f in fields(cls)})
        return cls(**cls.parse_fields(raw))

    @classmethod
    def parse_fields(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        defaults = {f.name: f.default for f in fields(cls)}
        field_name = raw.get("max_tokens_field", defaults["max_tokens_field"])
        if field_name not in MAX_TOKENS_FIELDS:
            raise invalid_setting(f"settings.max_tokens_field must be one of {', '.join(MAX_TOKENS_FIELDS)}.")
        stream_usage = raw.get("stream_usage", defaults["stream_usage"])
        if not isinstance(stream_usage, bool):
            raise invalid_setting("settings.stream_usage must be true or false.")
        return {
            "organization": _text_setting(raw, "organization"),
            "project": _text_setting(raw, "project"),
            "max_tokens_field": field_name,
            "stream_usage": stream_usage,
        }


def to_wire(req: CompletionRequest, model: str, settings: Settings | None = None, *, stream: bool = False) -> dict:
    """The Chat Completions body for `req`; the system prompt becomes the first message."""
    settings = settings or Settings()
    body: dict[str, Any] = {
        "model": model,
        "messages": chat_messages(req),
        **present(temperature=req.temperature, top_p=req.top_p, stop=req.stop),
    }
    if req.max_tokens is not None:
        body[settings.max_tokens_field] = req.max_tokens
    if stream:
        body["stream"] = True
        if settings.stream_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def usage_from(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    prompt, completion = data.get("prompt_tokens"), data.get("completion_tokens")
    return Usage(token_count(prompt, "prompt_tokens"), token_count(completion, "completion_tokens"))


def _raise_in_band_error(body: Mapping[str, Any], provider: str) -> None:
    # Some OpenAI-compatible servers answer 200 with an error object, and a failure
    # after a stream started arrives as a chunk holding "error" (openai-python
    # _streaming.py raises APIError for it). Either way this attempt failed upstream.
    error = body.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise ProviderError(provider, None, f"upstream error: {message}", retryable=True)


def from_wire(body: Any, provider: str = "openai") -> CompletionResponse:
    """The normalized response for a `chat.completion` object.

    Raises MalformedResponse when the body is not one, ProviderError for an in-band error."""
    if not isinstance(body, dict):
        raise MalformedResponse(provider, "response is not a JSON object")
    _raise_in_band_error(body, provider)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponse(provider, "response has no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise MalformedResponse(provider, "response choice has no message")
    content = message.get("content")
    if content is None:
        # A refusal comes back with content null and the explanation in `refusal`.
        content = message.get("refusal") or ""
    if not isinstance(content, str):
        raise MalformedResponse(provider, "response content is not text")
    return CompletionResponse(
        content=content,
        model=str(body.get("model") or ""),
        finish_reason=choices[0].get("finish_reason"),
        usage=usage_from(body.get("usage")) or Usage(),
        id=body.get("id"),
    )


async def parse_stream(events: AsyncIterator[tuple[str, str]], provider: str = "openai") -> AsyncIterator[Chunk]:
    """Chunks from the SSE events of a streamed completion.

    Text deltas come as they arrive; one last chunk carries the finish reason and the
    usage (which follows the finish chunk when include_usage is on). A stream that ends
    without `[DONE]` or a finish reason raises MalformedResponse, so a truncated answer
    is never passed off as complete."""
    finish: str | None = None
    usage: Usage | None = None
    model: str | None = None
    done = False
    async for _event, data in events:
        if data.strip() == DONE:
            done = True
            break
        obj = json_object(data, provider)
        _raise_in_band_error(obj, provider)
        model = obj.get("model") or model
        usage = usage_from(obj.get("usage")) or usage
        for choice in obj.get("choices") or []:
            delta = (choice.get("delta") or {}).get("content") if isinstance(choice, dict) else None
            if delta:
                yield Chunk(delta=delta, model=model)
            if isinstance(choice, dict) and choice.get("finish_reason"):
                finish = choice["finish_reason"]
    if not done and finish is None:
        raise MalformedResponse(provider, "stream ended before [DONE]")
    yield Chunk(finish_reason=finish or "stop", usage=usage, model=model)


class OpenAIProvider(BaseProvider):
    """Adapter for the OpenAI API (and, through CustomProvider, compatible servers)."""

    type = "openai"
    settings_class: type[Settings] = Settings
    default_base_url: str | None = DEFAULT_BASE_URL

    def __init__(self, config: ProviderConfig):
        super().__init__(config)
        self.base_url = self.base_url_or(self.default_base_url)

    def headers(self, accept: str = "application/json") -> dict[str, str]:
        """Request headers: content type, extra headers, organization and project, then
        the key last, so that nothing can replace the credential header."""
        headers = {"Content-Type": "application/json", "Accept": accept, **self.extra_headers()}
        if self.settings.organization:
            headers["OpenAI-Organization"] = self.settings.organization
        if self.settings.project:
            headers["OpenAI-Project"] = self.settings.project
        key = self.api_key
        if key:
            name, value = self.credential_header(key)
            headers[name] = value
        return headers

    def extra_headers(self) -> dict[str, str]:
        return {}

    def credential_header(self, key: str) -> tuple[str, str]:
        return "Authorization", f"Bearer {key}"

    @property
    def models_path(self) -> str:
        return MODELS_PATH

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        body = to_wire(request, self.model_for(request), self.settings)
        return await self.post_json(self.base_url + CHAT_PATH, self.headers(), body, from_wire, body["model"])

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        body = to_wire(request, self.model_for(request), self.settings, stream=True)
        lines = await self.open_lines(self.base_url + CHAT_PATH, self.headers("text/event-stream"), body)
        async for chunk in parse_stream(sse_events(lines), self.name):
            yield chunk

    async def health_check(self) -> HealthProbe:
        """GET {base}/models: cheap, authenticated, and generates nothing."""
        url, headers = self.base_url + self.models_path, self.headers()
        return await self.probe_list(url, headers, "data", "the model list is not a list")
