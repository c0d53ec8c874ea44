"""OpenAI Chat Completions and Embeddings.

- Chat: https://platform.openai.com/docs/api-reference/chat/create (`POST {base}/chat/completions`):
  content parts (text, image_url), tools and tool_choice, parallel_tool_calls,
  response_format (json_object, json_schema), seed, penalties, logit_bias, user
- Streaming: https://platform.openai.com/docs/api-reference/chat-streaming (SSE `data:` lines
  holding `chat.completion.chunk` objects, ended by `data: [DONE]`; with
  `stream_options.include_usage` a last chunk with empty `choices` carries the usage)
- Errors: https://platform.openai.com/docs/guides/error-codes (`{"error": {"message",
  "type", "param", "code"}}`; 429 with Retry-After / retry-after-ms)
- Auth: https://platform.openai.com/docs/api-reference/authentication (`Authorization:
  Bearer`, optional `OpenAI-Organization` and `OpenAI-Project`)
- Models: https://platform.openai.com/docs/api-reference/models/list (the health probe)
- Embeddings: https://platform.openai.com/docs/api-reference/embeddings/create (`POST
  {base}/embeddings`; `data[].embedding` ordered by `data[].index`)

`config.base_url` includes the version (`https://api.openai.com/v1`), as the official
client's base_url does, so OpenAI-compatible servers plug in with their own prefix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from providers.adapters.base import (
    CHAT,
    EMBEDDINGS,
    IMAGE_URLS,
    IMAGES,
    JSON_MODE,
    JSON_SCHEMA,
    PARALLEL_TOOL_CALLS,
    STREAMING,
    TOOLS,
    Chunk,
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    HealthProbe,
    ImagePart,
    MalformedResponse,
    Message,
    Part,
    ProviderError,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
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
EMBEDDINGS_PATH = "/embeddings"
DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"
DONE = "[DONE]"
# `max_tokens` is deprecated on Chat Completions and rejected by reasoning models;
# `max_completion_tokens` is its replacement (see the create reference above).
MAX_TOKENS_FIELDS = ("max_completion_tokens", "max_tokens")
# Every feature of chat.py: the reference API the shared representation follows.
FEATURES = frozenset(
    {CHAT, STREAMING, TOOLS, PARALLEL_TOOL_CALLS, IMAGES, IMAGE_URLS, JSON_MODE, JSON_SCHEMA, EMBEDDINGS}
)
# Roles whose messages may carry a participant `name` (tool messages have none).
NAMED_ROLES = ("system", "user", "assistant")


def _text_setting(raw: Mapping[str, Any], name: str) -> str:
    value = raw.get(name) or ""
    if not isinstance(value, str) or "\n" in value or "\r" in value:
        raise invalid_setting(f"settings.{name} must be a single-line string.")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    """`config.settings` for openai: `organization`, `project` (sent as headers),
    `max_tokens_field` (max_completion_tokens | max_tokens), `stream_usage`
    (ask for the usage chunk; default true) and `embedding_model` (for embeddings
    requests that name no model)."""

    organization: str = ""
    project: str = ""
    max_tokens_field: str = "max_completion_tokens"
    stream_usage: bool = True
    embedding_model: str = DEFAULT_EMBEDDING_MODEL

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
            "embedding_model": _text_setting(raw, "embedding_model") or defaults["embedding_model"],
        }


def to_wire(req: CompletionRequest, model: str, settings: Settings | None = None, *, stream: bool = False) -> dict:
    """The Chat Completions body for `req`; the system prompt becomes the first message.

    `tool_choice` and `parallel_tool_calls` go only with tools: the API refuses them
    otherwise ("only allowed when 'tools' are specified")."""
    settings = settings or Settings()
    system = [{"role": "system", "content": req.system}] if req.system else []
    body: dict[str, Any] = {
        "model": model,
        "messages": system + [message_to_wire(m) for m in req.messages],
        **present(temperature=req.temperature, top_p=req.top_p, stop=req.stop),
    }
    if req.max_tokens is not None:
        body[settings.max_tokens_field] = req.max_tokens
    if req.tools:
        body["tools"] = [{"type": "function", "function": tool_to_wire(t)} for t in req.tools]
        choice = req.tool_choice
        if choice is not None:
            named = {"type": "function", "function": {"name": choice.name}}
            body["tool_choice"] = named if choice.mode == "function" else choice.mode
        body.update(present(parallel_tool_calls=req.parallel_tool_calls))
    if req.response_format is not None:
        body["response_format"] = response_format_to_wire(req.response_format)
    bias = req.logit_bias
    if bias is not None:
        # Typed as integers (-100..100) by the API: a whole float is sent as one.
        bias = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in bias.items()}
    body |= present(
        seed=req.seed,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        logit_bias=bias,
        user=req.user,
    )
    if stream:
        body["stream"] = True
        if settings.stream_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def message_to_wire(m: Message) -> dict[str, Any]:
    """One message in the API's shape. Only user messages take image parts (system and
    assistant content is text or text parts), so other roles send their text."""
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content}
    content: Any = m.content
    if m.role == "user" and m.parts:
        content = [part_to_wire(p) for p in m.parts]
    message: dict[str, Any] = {"role": m.role, "content": content}
    if m.role == "assistant" and m.tool_calls:
        # Content is "required unless tool_calls … is specified": null on a call-only turn.
        message["content"] = content or None
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    if m.name and m.role in NAMED_ROLES:
        message["name"] = m.name
    return message


def part_to_wire(part: Part) -> dict[str, Any]:
    if isinstance(part, ImagePart):
        return {"type": "image_url", "image_url": {"url": part.url, **present(detail=part.detail)}}
    return {"type": "text", "text": part.text}


def tool_to_wire(tool: Tool) -> dict[str, Any]:
    return {"name": tool.name, **present(description=tool.description, parameters=tool.parameters, strict=tool.strict)}


def response_format_to_wire(fmt: ResponseFormat) -> dict[str, Any]:
    if fmt.type != "json_schema":
        return {"type": "json_object"}
    # `name` is required by the API; a client that gave none gets a neutral one.
    options = present(schema=fmt.schema, strict=fmt.strict, description=fmt.description)
    return {"type": "json_schema", "json_schema": {"name": fmt.name or "response", **options}}


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
        tool_calls=tool_calls_from(message.get("tool_calls"), provider),
    )


def _text(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) else None


def _calls(raw: Any, provider: str) -> list[tuple[int, dict, dict]]:
    """(position, call, function) of each tool call in a message or delta."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise MalformedResponse(provider, "tool_calls is not a list of objects")
    return [(i, item, item["function"] if isinstance(item.get("function"), dict) else {}) for i, item in enumerate(raw)]


def tool_calls_from(raw: Any, provider: str = "openai") -> list[ToolCall] | None:
    """A response message's function calls (None when it made none). A compatible
    server that gives no id gets `call_<position>`, so results can still refer to it."""
    calls = []
    for i, call, function in _calls(raw, provider):
        if _text(function, "name") is None:
            raise MalformedResponse(provider, "a tool call has no function name")
        calls.append(ToolCall(_text(call, "id") or f"call_{i}", function["name"], _text(function, "arguments") or ""))
    return calls or None


def tool_call_deltas(raw: Any, provider: str = "openai") -> list[ToolCallDelta] | None:
    """A stream delta's tool-call pieces as they came: index, and id and name on a
    call's first piece, a fragment of the arguments on every piece."""
    deltas = [
        ToolCallDelta(
            index=call["index"] if type(call.get("index")) is int else i,
            id=_text(call, "id"),
            name=_text(function, "name"),
            arguments=_text(function, "arguments") or "",
        )
        for i, call, function in _calls(raw, provider)
    ]
    return deltas or None


async def parse_stream(events: AsyncIterator[tuple[str, str]], provider: str = "openai") -> AsyncIterator[Chunk]:
    """Chunks from the SSE events of a streamed completion.

    Text and tool-call deltas come as they arrive; one last chunk carries the finish
    reason and the usage (which follows the finish chunk when include_usage is on).
    A stream that ends without `[DONE]`, the API's end marker, raises MalformedResponse
    after the chunks received, even after a finish reason: what was cut may be the usage
    chunk, and a truncated answer is never passed off as complete. So does a chunk
    without its required `choices` list (empty in the usage chunk)."""
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
        choices = obj.get("choices")
        if not isinstance(choices, list):
            raise MalformedResponse(provider, "stream chunk has no choices")
        model = obj.get("model") or model
        usage = usage_from(obj.get("usage")) or usage
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            text, calls = _text(delta, "content") or "", tool_call_deltas(delta.get("tool_calls"), provider)
            if text or calls:
                yield Chunk(delta=text, model=model, tool_calls=calls)
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
    if not done:
        # https://platform.openai.com/docs/api-reference/chat/create#chat-create-stream:
        # the stream is "terminated by a `data: [DONE]` message".
        raise MalformedResponse(provider, "stream ended before [DONE]")
    yield Chunk(finish_reason=finish or "stop", usage=usage, model=model)


def embeddings_to_wire(req: EmbeddingRequest, model: str) -> dict[str, Any]:
    """The /embeddings body: always a list of inputs, and float vectors."""
    options = present(dimensions=req.dimensions, user=req.user)
    return {"model": model, "input": list(req.inputs), **options, "encoding_format": "float"}


def embeddings_from_wire(body: Any, provider: str = "openai", expected: int | None = None) -> EmbeddingResponse:
    """The vectors of an embeddings list, ordered by `index`. Raises MalformedResponse
    when the body is not one (or holds another number of vectors than `expected`)."""
    if not isinstance(body, dict):
        raise MalformedResponse(provider, "response is not a JSON object")
    _raise_in_band_error(body, provider)
    data = body.get("data")
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise MalformedResponse(provider, "embeddings response has no data list")
    if expected is not None and len(data) != expected:
        raise MalformedResponse(provider, f"expected {expected} embeddings, got {len(data)}")
    vectors: list[list[float]] = []
    for item in sorted(data, key=lambda item: item.get("index") if type(item.get("index")) is int else 0):
        vector = item.get("embedding")
        if not isinstance(vector, list) or not all(type(v) in (int, float) for v in vector):
            raise MalformedResponse(provider, "an embedding is not a list of numbers")
        vectors.append([float(v) for v in vector])
    usage = body["usage"] if isinstance(body.get("usage"), dict) else {}
    prompt_tokens = token_count(usage.get("prompt_tokens"), "prompt_tokens")
    return EmbeddingResponse(vectors=vectors, model=str(body.get("model") or ""), prompt_tokens=prompt_tokens)


class OpenAIProvider(BaseProvider):
    """Adapter for the OpenAI API (and, through CustomProvider, compatible servers)."""

    type = "openai"
    features = FEATURES
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

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """POST {base}/embeddings; the vectors in input order. Raises ProviderError."""
        body = embeddings_to_wire(request, request.model or self.settings.embedding_model)
        url = self.base_url + EMBEDDINGS_PATH
        data = await self._call().request_json("POST", url, self.headers(), json_body=body)
        response = embeddings_from_wire(data, self.name, len(request.inputs))
        response.model = response.model or body["model"]
        return response

    async def health_check(self) -> HealthProbe:
        """GET {base}/models: cheap, authenticated, and generates nothing."""
        url, headers = self.base_url + self.models_path, self.headers()
        return await self.probe_list(url, headers, "data", "the model list is not a list")
