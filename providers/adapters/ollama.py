"""Ollama's native chat and embedding APIs.

- Chat: https://docs.ollama.com/api/chat (`POST /api/chat`, body and response fields;
  `tools`, `message.tool_calls` with *object* arguments, `message.images` as base64,
  `format` "json" or a JSON schema)
- Tool calling: https://docs.ollama.com/capabilities/tool-calling
- Structured outputs: https://docs.ollama.com/capabilities/structured-outputs
- Embeddings: https://docs.ollama.com/api/embed (`POST /api/embed`: `embeddings`,
  `prompt_eval_count`)
- Streaming: https://docs.ollama.com/api/streaming (NDJSON, one object a line, the last
  with `done: true`, `done_reason` and the token counts)
- Errors: https://docs.ollama.com/api/errors (`{"error": "..."}`; an error after the
  stream started arrives as one more NDJSON line, the HTTP status stays 200)
- Models: https://docs.ollama.com/api/tags (`GET /api/tags`, used as the health probe)

Ollama needs no key. When a config has one anyway (an authenticating reverse proxy,
or ollama.com's hosted API), it is sent as `Authorization: Bearer`.

Where the shared representation (OpenAI's) says more than Ollama can hear:
- `tool_choice`: Ollama has none. "none" sends no tools; a named function sends only
  that tool; "required" is sent as auto. The model may still answer in text: nothing
  forces a call, and we do not pretend it does.
- Tool calls carry no id on Ollama's wire: answers get stable synthesized ones
  (`call_` + a hash of position, name and arguments); tool results are matched by
  order, as Ollama does. The served spec has no `tool_name` on messages, so none is sent.
- Images go inline only (`data:` URLs); Ollama cannot fetch URLs (no IMAGE_URLS), and
  `parallel_tool_calls`, `logit_bias` and `user` have no Ollama equivalent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from providers.adapters.base import (
    CHAT,
    EMBEDDINGS,
    IMAGES,
    JSON_MODE,
    JSON_SCHEMA,
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
    ProviderError,
    ToolCall,
    ToolCallDelta,
    Usage,
    invalid_setting,
    positive_int_setting,
    present,
    token_count,
)
from providers.adapters.http import BaseProvider, check_setting_names, ndjson

if TYPE_CHECKING:
    from providers.models import ProviderConfig

CHAT_PATH = "/api/chat"
EMBED_PATH = "/api/embed"
TAGS_PATH = "/api/tags"
DEFAULT_BASE_URL = "http://127.0.0.1:11434"
DEFAULT_EMBEDDING_MODEL = "nomic-embed-text"
FEATURES = frozenset({CHAT, STREAMING, TOOLS, IMAGES, JSON_MODE, JSON_SCHEMA, EMBEDDINGS})


@dataclass(frozen=True, slots=True)
class Settings:
    """`config.settings` for ollama: `keep_alive` ("5m", 0…), `num_ctx`, `options`
    (extra model options such as top_k or seed, passed through) and `embedding_model`
    (for embeddings requests that name no model)."""

    keep_alive: str | int | None = None
    num_ctx: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    embedding_model: str = DEFAULT_EMBEDDING_MODEL

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
        embedding_model = raw.get("embedding_model") or DEFAULT_EMBEDDING_MODEL
        if not isinstance(embedding_model, str) or "\n" in embedding_model or "\r" in embedding_model:
            raise invalid_setting("settings.embedding_model must be a single-line string.")
        return cls(keep_alive=keep_alive, num_ctx=num_ctx, options=dict(options), embedding_model=embedding_model)


def to_wire(
    req: CompletionRequest,
    model: str,
    settings: Settings | None = None,
    *,
    stream: bool = False,
    provider: str = "ollama",
) -> dict:
    """The /api/chat body for `req`. Ollama takes the system prompt as a first message.

    Raises a retryable ProviderError for an image by URL (only a provider that fetches
    URLs can serve it; the router does not offer it to this one)."""
    settings = settings or Settings()
    options: dict[str, Any] = {
        **settings.options,
        **present(
            num_ctx=settings.num_ctx,
            temperature=req.temperature,
            top_p=req.top_p,
            num_predict=req.max_tokens,
            stop=req.stop,
            seed=req.seed,
            presence_penalty=req.presence_penalty,
            frequency_penalty=req.frequency_penalty,
        ),
    }
    system = [{"role": "system", "content": req.system}] if req.system else []
    body: dict[str, Any] = {"model": model, "messages": system + [message_to_wire(m, provider) for m in req.messages]}
    tools = _offered_tools(req)
    if tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": t.name, **present(description=t.description), "parameters": t.schema()},
            }
            for t in tools
        ]
    if req.response_format is not None:
        schema = req.response_format.schema if req.response_format.type == "json_schema" else None
        body["format"] = schema if schema is not None else "json"
    body["stream"] = stream
    if options:
        body["options"] = options
    if settings.keep_alive is not None:
        body["keep_alive"] = settings.keep_alive
    return body


def _offered_tools(req: CompletionRequest) -> tuple:
    """The tools to send, given a tool_choice Ollama cannot express (module docstring)."""
    choice = req.tool_choice
    if not req.tools or (choice is not None and choice.mode == "none"):
        return ()
    if choice is not None and choice.mode == "function":
        return tuple(t for t in req.tools if t.name == choice.name) or req.tools
    return req.tools


def message_to_wire(m: Message, provider: str = "ollama") -> dict[str, Any]:
    """One message in Ollama's shape: text content, inline images, object arguments."""
    message: dict[str, Any] = {"role": m.role, "content": m.content}
    images = [p for p in m.parts or () if isinstance(p, ImagePart)]
    if images:
        if any(not image.is_data for image in images):
            raise ProviderError(provider, None, "Ollama takes images only inline (data: URLs)", retryable=True)
        message["images"] = [image.data()[1] for image in images]
    if m.role == "assistant" and m.tool_calls:
        message["tool_calls"] = [{"function": {"name": c.name, "arguments": c.input()}} for c in m.tool_calls]
    return message


def call_id(index: int, name: str, arguments: str) -> str:
    """A stable id for a tool call Ollama gave none."""
    return "call_" + hashlib.sha1(f"{index}:{name}:{arguments}".encode()).hexdigest()[:16]


def tool_calls_from(raw: Any, provider: str = "ollama", first_index: int = 0) -> list[ToolCall]:
    """Calls from a `message.tool_calls` list: arguments as JSON text, an id when
    Ollama gave none. Raises MalformedResponse for a call without a function name."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise MalformedResponse(provider, "tool_calls is not a list")
    calls = []
    for index, item in enumerate(raw, first_index):
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise MalformedResponse(provider, "a tool call has no function name")
        arguments = function.get("arguments")
        # Objects per the API; a string is taken as the JSON text it already is.
        text = arguments if isinstance(arguments, str) else json.dumps({} if arguments is None else arguments)
        given = item.get("id")
        ident = given if isinstance(given, str) and given else call_id(index, function["name"], text)
        calls.append(ToolCall(ident, function["name"], text))
    return calls


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
    calls = tool_calls_from(message.get("tool_calls"), provider)
    finish = body.get("done_reason") or ("stop" if body.get("done") else None)
    return CompletionResponse(
        content=message.get("content") or "",
        model=str(body.get("model") or ""),
        # Ollama says "stop" after tool calls; the caller's word for it is tool_calls.
        finish_reason="tool_calls" if calls else finish,
        usage=usage_from(body),
        tool_calls=calls or None,
    )


async def parse_stream(events: AsyncIterator[dict], provider: str = "ollama") -> AsyncIterator[Chunk]:
    """Chunks from decoded NDJSON objects; the last carries finish reason and usage.

    Ollama sends each tool call whole, in one line: it becomes one ToolCallDelta with
    index, id, name and all the arguments (indexes count on across lines).

    An `{"error": ...}` line (the upstream failed after the stream started) raises a
    retryable ProviderError; a line before the last without its `message`, or a stream
    that ends before `done: true`, raises MalformedResponse, so a truncated answer is
    never passed off as complete."""
    called = 0
    async for event in events:
        if "error" in event:
            raise ProviderError(provider, None, f"stream failed: {event['error']}", retryable=True)
        message = event.get("message")
        if not isinstance(message, dict):
            if not event.get("done"):  # the final line's message is empty anyway
                raise MalformedResponse(provider, "stream line has no message")
            message = {}
        delta = message.get("content") if isinstance(message.get("content"), str) else ""
        first, calls = called, tool_calls_from(message.get("tool_calls"), provider, called)
        called += len(calls)
        model = event.get("model")
        if delta or calls:
            deltas = [ToolCallDelta(first + i, c.id, c.name, c.arguments) for i, c in enumerate(calls)]
            yield Chunk(delta=delta, model=model, tool_calls=deltas or None)
        if event.get("done"):
            finish = "tool_calls" if called else event.get("done_reason") or "stop"
            yield Chunk(finish_reason=finish, usage=usage_from(event), model=model)
            return
    raise MalformedResponse(provider, "stream ended before the final done line")


def embed_to_wire(req: EmbeddingRequest, model: str, settings: Settings | None = None) -> dict[str, Any]:
    """The /api/embed body. Its keep_alive is a duration string: seconds get an "s"."""
    keep_alive = settings.keep_alive if settings else None
    if isinstance(keep_alive, int):
        keep_alive = f"{keep_alive}s"
    return {"model": model, "input": list(req.inputs), **present(dimensions=req.dimensions, keep_alive=keep_alive)}


def embed_from_wire(body: Any, provider: str = "ollama", expected: int | None = None) -> EmbeddingResponse:
    """The vectors of an /api/embed answer. Raises MalformedResponse when it is not
    one (or holds another number of vectors than `expected`)."""
    if not isinstance(body, dict):
        raise MalformedResponse(provider, "response is not a JSON object")
    if "error" in body:
        raise ProviderError(provider, None, str(body["error"]), retryable=True)
    vectors = body.get("embeddings")
    if not isinstance(vectors, list) or not all(
        isinstance(v, list) and all(type(x) in (int, float) for x in v) for v in vectors
    ):
        raise MalformedResponse(provider, "embeddings is not a list of vectors")
    if expected is not None and len(vectors) != expected:
        raise MalformedResponse(provider, f"expected {expected} embeddings, got {len(vectors)}")
    return EmbeddingResponse(
        vectors=[[float(x) for x in v] for v in vectors],
        model=str(body.get("model") or ""),
        prompt_tokens=token_count(body.get("prompt_eval_count"), "prompt_eval_count"),
    )


class OllamaProvider(BaseProvider):
    """Adapter for an Ollama server (or an Ollama-compatible proxy)."""

    type = "ollama"
    features = FEATURES
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
        body = to_wire(request, self.model_for(request), self.settings, stream=False, provider=self.name)
        return await self.post_json(self.base_url + CHAT_PATH, self._headers(), body, from_wire, body["model"])

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        body = to_wire(request, self.model_for(request), self.settings, stream=True, provider=self.name)
        lines = await self.open_lines(self.base_url + CHAT_PATH, self._headers("application/x-ndjson"), body)
        async for chunk in parse_stream(ndjson(lines, self.name), self.name):
            yield chunk

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """POST /api/embed; the vectors in input order. Raises ProviderError."""
        body = embed_to_wire(request, request.model or self.settings.embedding_model, self.settings)
        data = await self._call().request_json("POST", self.base_url + EMBED_PATH, self._headers(), json_body=body)
        response = embed_from_wire(data, self.name, len(request.inputs))
        response.model = response.model or body["model"]
        return response

    async def health_check(self) -> HealthProbe:
        """GET /api/tags: the server answers with its model list (no model is loaded)."""
        url = self.base_url + TAGS_PATH
        return await self.probe_list(url, self._headers(), "models", "/api/tags did not return a model list")
