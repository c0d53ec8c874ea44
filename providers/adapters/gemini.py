"""Google Gemini API (generativelanguage v1beta).

- Generate: https://ai.google.dev/api/generate-content (`models/{model}:generateContent`;
  `:streamGenerateContent?alt=sse` streams SSE `data:` lines, each a whole response)
- Function calling: https://ai.google.dev/gemini-api/docs/function-calling and
  https://ai.google.dev/api/caching#Tool (`tools[].functionDeclarations` {name, description,
  parameters}; `toolConfig.functionCallingConfig` mode AUTO / NONE / ANY, with
  `allowedFunctionNames`; the model answers whole `functionCall` parts {name, args} and a
  STOP, so a stream gives one ToolCallDelta per call; results go back as `functionResponse`
  parts {name, response: object} in a user turn)
- Schemas: https://ai.google.dev/api/caching#Schema (`parameters` and `responseSchema` take
  an OpenAPI 3.0 subset; see gemini_schema)
- Thought signatures: https://ai.google.dev/gemini-api/docs/thought-signatures (see
  SKIP_SIGNATURE)
- Images: https://ai.google.dev/gemini-api/docs/image-understanding (`inlineData` {mimeType,
  data}; Gemini fetches no https URL, so chat.IMAGE_URLS is not declared)
- Structured output: https://ai.google.dev/gemini-api/docs/structured-output
  (`generationConfig.responseMimeType` "application/json", and `responseSchema`)
- Embeddings: https://ai.google.dev/api/embeddings (`models/{model}:batchEmbedContents`,
  every request naming that model; `outputDimensionality`) and
  https://ai.google.dev/gemini-api/docs/embeddings (only full-size vectors are normalized)
- Auth: https://ai.google.dev/gemini-api/docs/api-key (the key goes in `x-goog-api-key`,
  never in the `?key=` query, so it cannot land in access logs or error messages)
- Errors: https://ai.google.dev/gemini-api/docs/troubleshooting (body
  `{"error": {"code", "message", "status", "details"}}`; 429 RESOURCE_EXHAUSTED and
  500/503/504 are retried, 400 INVALID_ARGUMENT / FAILED_PRECONDITION, 403, 404 are final)
- Safety: https://ai.google.dev/gemini-api/docs/safety-settings (a blocked prompt returns
  200 with `promptFeedback.blockReason` and no candidates)

Dropped, for want of a Gemini counterpart: `logit_bias`, `user`, an image's `detail`, a
JSON schema's name and strictness. Gemini has no switch for parallel function calls, so
PARALLEL_TOOL_CALLS is not declared.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from providers.adapters.base import (
    CHAT,
    EMBEDDINGS,
    IMAGES,
    JSON_MODE,
    JSON_SCHEMA,
    STREAMING,
    TOOLS,
    Capabilities,
    Chunk,
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    HealthProbe,
    MalformedResponse,
    Message,
    Part,
    ProviderError,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
    classify,
    invalid_setting,
    present,
    token_count,
)
from providers.adapters.http import BaseProvider, Call, check_setting_names, json_object, sse_events

if TYPE_CHECKING:
    from providers.models import ProviderConfig

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
API_VERSION = "v1beta"
GENERATE = "/{version}/models/{model}:generateContent"
STREAM = "/{version}/models/{model}:streamGenerateContent?alt=sse"
EMBED = "/{version}/models/{model}:batchEmbedContents"
MODELS = "/{version}/models"
KEY_HEADER = "x-goog-api-key"
FEATURES = frozenset({CHAT, STREAMING, TOOLS, IMAGES, JSON_MODE, JSON_SCHEMA, EMBEDDINGS})
# The model the embeddings reference above uses (text-embedding-004, an older default, is retired).
DEFAULT_EMBEDDING_MODEL = "gemini-embedding-001"
# More requests in one batch are refused: "BatchEmbedContentsRequest.requests: at most 100
# requests can be in one batch" (not in the reference; langchain-ai/langchainjs#4491).
MAX_EMBED_BATCH = 100
MAX_STOP_SEQUENCES = 5
JSON_MIME = "application/json"
TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY", "function": "ANY"}
# The documented stand-in for a thought signature we cannot replay (we keep none: a tool
# call id crosses providers, and OpenAI's are at most 40 characters). Without one, Gemini 3
# refuses the first function call of a step: thought-signatures#faqs in the docs above.
SKIP_SIGNATURE = "skip_thought_signature_validator"
# What Gemini's Schema takes besides type, properties, items and anyOf (the API rejects
# unknown keys such as additionalProperties, $schema, strict or default).
SCHEMA_KEYS = frozenset(
    {"format", "title", "description", "nullable", "enum", "required", "minimum", "maximum", "pattern", "example",
     "propertyOrdering"}
)  # fmt: skip
COUNT_KEYS = frozenset({"minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties"})
MAX_SCHEMA_DEPTH = 32
# https://ai.google.dev/api/generate-content#FinishReason, in the OpenAI vocabulary the
# gateway returns; anything unlisted is passed through lower-cased.
FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")
_MODEL_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


@dataclass(frozen=True, slots=True)
class Settings:
    """`config.settings` for gemini: `api_version` (default v1beta), `safety_settings`
    (a list of {category, threshold}, passed through as `safetySettings`) and
    `embedding_model` (for embeddings whose route names no model)."""

    api_version: str = API_VERSION
    safety_settings: tuple[dict, ...] = ()
    embedding_model: str = DEFAULT_EMBEDDING_MODEL

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Settings:
        """Raises InvalidConfig naming the bad field (or a key it does not know)."""
        check_setting_names(raw, {f.name for f in fields(cls)})
        version = raw.get("api_version", API_VERSION)
        if not isinstance(version, str) or not re.fullmatch(r"v\d+(alpha|beta)?\d*", version):
            raise invalid_setting("settings.api_version must look like v1beta or v1.")
        safety = raw.get("safety_settings")
        safety = [] if safety is None else safety
        if not isinstance(safety, list) or not all(isinstance(s, dict) for s in safety):
            raise invalid_setting("settings.safety_settings must be a list of objects.")
        embedding_model = raw.get("embedding_model", DEFAULT_EMBEDDING_MODEL)
        if not isinstance(embedding_model, str) or not _MODEL_NAME.fullmatch(embedding_model):
            raise invalid_setting("settings.embedding_model must be a model name such as gemini-embedding-001.")
        return cls(api_version=version, safety_settings=tuple(safety), embedding_model=embedding_model)


# --- request ----------------------------------------------------------------------------


def to_wire(req: CompletionRequest, settings: Settings | None = None) -> dict:
    """The GenerateContentRequest body for `req` (the model goes in the URL).

    Consecutive turns of one role are merged into one Content with several parts, since
    Gemini expects user and model turns to alternate. Raises ValueError for an image that
    is not a base64 data URL."""
    settings = settings or Settings()
    contents, system = _contents(req.messages, req.system)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    if req.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(tool) for tool in req.tools]}]
        if req.tool_choice:
            body["toolConfig"] = {"functionCallingConfig": _calling_config(req.tool_choice)}
    config = present(
        maxOutputTokens=req.max_tokens,
        temperature=req.temperature,
        topP=req.top_p,
        stopSequences=req.stop,
        seed=req.seed,
        presencePenalty=req.presence_penalty,
        frequencyPenalty=req.frequency_penalty,
    )
    config.update(_output_format(req.response_format))
    if config:
        body["generationConfig"] = config
    if settings.safety_settings:
        body["safetySettings"] = list(settings.safety_settings)
    return body


def _contents(messages: list[Message], system_prompt: str | None) -> tuple[list[dict], list[str]]:
    """(contents, system texts): system messages join the system instruction; tool
    results are user turns, as Gemini has no tool role."""
    system = [system_prompt] if system_prompt else []
    contents: list[dict] = []
    names: dict[str, str] = {}  # tool call id -> function name: a functionResponse needs the name
    for message in messages:
        if message.role == "system":
            system.append(message.content)
            continue
        role = "model" if message.role == "assistant" else "user"
        parts = [_function_response(message, names)] if message.role == "tool" else _parts(message, names)
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return contents, system


def _parts(message: Message, names: dict[str, str]) -> list[dict]:
    parts = [_part(part) for part in message.content_parts()]
    for index, call in enumerate(message.tool_calls or ()):
        names[call.id] = call.name
        part: dict[str, Any] = {"functionCall": {"name": call.name, "args": call.input()}}
        if index == 0:  # of parallel calls, only the first carries the signature
            part["thoughtSignature"] = SKIP_SIGNATURE
        parts.append(part)
    return parts or [{"text": ""}]


def _part(part: Part) -> dict:
    if isinstance(part, TextPart):
        return {"text": part.text}
    mime_type, data = part.data()  # ValueError for an https URL: Gemini takes inline bytes
    return {"inlineData": {"mimeType": mime_type, "data": data}}


def _function_response(message: Message, names: Mapping[str, str]) -> dict:
    name = names.get(message.tool_call_id or "") or message.name or "unknown"
    # `response` must be an object: a JSON object result as it is, anything else wrapped.
    try:
        result = json.loads(message.content)
    except ValueError:
        result = None
    response = result if isinstance(result, dict) else {"result": message.content}
    return {"functionResponse": {"name": name, "response": response}}


def _declaration(tool: Tool) -> dict:
    declaration = {"name": tool.name, **present(description=tool.description)}
    parameters = gemini_schema(tool.parameters)
    # An OBJECT without properties is refused ("should be non-empty for OBJECT type"): a
    # function without arguments declares no parameters at all.
    if parameters.get("properties"):
        declaration["parameters"] = parameters
    return declaration


def _calling_config(choice: ToolChoice) -> dict:
    config: dict[str, Any] = {"mode": TOOL_MODES.get(choice.mode, "AUTO")}
    if choice.mode == "function" and choice.name:
        config["allowedFunctionNames"] = [choice.name]
    return config


def _output_format(fmt: ResponseFormat | None) -> dict:
    if fmt is None:
        return {}
    if fmt.type == "json_schema" and fmt.schema is not None:
        return {"responseMimeType": JSON_MIME, "responseSchema": gemini_schema(fmt.schema, ordered=True)}
    return {"responseMimeType": JSON_MIME}


def gemini_schema(schema: Any, *, ordered: bool = False, defs: Mapping[str, Any] | None = None, depth: int = 0) -> dict:
    """A JSON Schema in the OpenAPI subset Gemini's Schema takes: upper-case types, int64
    counts as strings, local `$ref`s inlined, `anyOf`/`oneOf` with "null" turned into
    `nullable`, a one-member `allOf` merged, and every key Gemini lacks dropped.

    `ordered` adds `propertyOrdering`, so structured output keeps the client's key order
    (Gemini orders keys alphabetically otherwise)."""
    if not isinstance(schema, dict) or depth > MAX_SCHEMA_DEPTH:
        return {}
    if defs is None:
        defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    inner = functools.partial(gemini_schema, ordered=ordered, defs=defs, depth=depth + 1)
    out: dict[str, Any] = {}
    if isinstance(schema.get("$ref"), str):
        out.update(inner(defs.get(schema["$ref"].rsplit("/", 1)[-1])))
    members = [m for m in schema.get("anyOf") or schema.get("oneOf") or () if isinstance(m, dict)]
    others = [m for m in members if m.get("type") != "null"]
    if len(others) == 1:
        out.update(inner(others[0]))
    elif others:
        out["anyOf"] = [inner(m) for m in others]
    if len(others) < len(members):
        out["nullable"] = True
    if isinstance(schema.get("allOf"), list) and len(schema["allOf"]) == 1:
        out.update(inner(schema["allOf"][0]))
    out.update(_schema_keywords(schema, inner, ordered))
    return out


def _schema_keywords(schema: Mapping[str, Any], inner: Callable[[Any], dict], ordered: bool) -> dict:
    out = {key: value for key, value in schema.items() if key in SCHEMA_KEYS}
    out.update({key: str(value) for key, value in schema.items() if key in COUNT_KEYS and type(value) is int})
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]
        if "null" in kind:
            out["nullable"] = True
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        out["type"] = kind.upper()
    if isinstance(schema.get("const"), str):
        out["enum"] = [schema["const"]]
    if "enum" in out and not (isinstance(out["enum"], list) and all(isinstance(v, str) for v in out["enum"])):
        del out["enum"]  # Gemini's enums are strings only
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {name: inner(sub) for name, sub in schema["properties"].items()}
        if ordered:
            out.setdefault("propertyOrdering", list(schema["properties"]))
    if isinstance(schema.get("items"), dict):
        out["items"] = inner(schema["items"])
    return out


# --- answer -----------------------------------------------------------------------------


def usage_from(metadata: Any) -> Usage:
    metadata = metadata if isinstance(metadata, dict) else {}
    # thoughtsTokenCount is billed as output on thinking models.
    completion = token_count(metadata.get("candidatesTokenCount"), "candidatesTokenCount") + token_count(
        metadata.get("thoughtsTokenCount"), "thoughtsTokenCount"
    )
    return Usage(token_count(metadata.get("promptTokenCount"), "promptTokenCount"), completion)


def _parts_of(candidate: Mapping[str, Any]) -> list[dict]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [part for part in parts if isinstance(part, dict)] if isinstance(parts, list) else []


def _text(parts: list[dict]) -> str:
    # Thought summaries (`thought: true`) are not part of the answer.
    return "".join(p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought"))


def _calls(parts: list[dict], response_id: Any, first: int = 0) -> list[ToolCall]:
    """The functionCall parts as tool calls, numbered from `first` (a stream's count so far)."""
    calls: list[ToolCall] = []
    for part in parts:
        call = part.get("functionCall")
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            continue
        args = call.get("args") if isinstance(call.get("args"), dict) else {}
        given = call.get("id") if isinstance(call.get("id"), str) else ""
        call_id = given or synthesized_id(response_id, first + len(calls))
        calls.append(ToolCall(call_id, call["name"], json.dumps(args)))
    return calls


def synthesized_id(response_id: Any, index: int) -> str:
    """An id for a call Gemini sent without one: the same for the same answer (stream or
    not), and distinct across the answers of a conversation, since clients match tool
    results to calls by id."""
    if not isinstance(response_id, str) or not response_id:
        return f"call_{index}"
    return "call_" + hashlib.sha256(f"{response_id}:{index}".encode()).hexdigest()[:24]


def blocked(body: Mapping[str, Any], provider: str) -> ProviderError | None:
    """The final error for a prompt Gemini refused to answer, or None."""
    feedback = body.get("promptFeedback") or {}
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if reason and not body.get("candidates"):
        return ProviderError(
            provider, None, f"Gemini blocked the prompt ({reason}); rephrase it or adjust safety_settings.", False
        )
    return None


def finish_reason(raw: str | None, called: bool = False) -> str | None:
    reason = FINISH_REASONS.get(raw, raw.lower()) if raw else None
    # Gemini ends a turn of function calls with STOP; OpenAI's word for that is tool_calls.
    return "tool_calls" if called and reason == "stop" else reason


def from_wire(body: Any, provider: str = "gemini") -> CompletionResponse:
    """The normalized response for a GenerateContentResponse.

    Raises a final ProviderError for a blocked prompt, MalformedResponse otherwise
    when there is no candidate."""
    if not isinstance(body, dict):
        raise MalformedResponse(provider, "response is not a JSON object")
    error = blocked(body, provider)
    if error:
        raise error
    candidates = body.get("candidates")
    if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
        raise MalformedResponse(provider, "response has no candidates")
    parts = _parts_of(candidates[0])
    calls = _calls(parts, body.get("responseId"))
    return CompletionResponse(
        content=_text(parts),
        model=str(body.get("modelVersion") or ""),
        finish_reason=finish_reason(candidates[0].get("finishReason"), bool(calls)),
        usage=usage_from(body.get("usageMetadata")),
        id=body.get("responseId"),
        tool_calls=calls or None,
    )


def error_from(provider: str, status: int, body: Any, headers: Mapping[str, str] | None = None) -> ProviderError:
    """A ProviderError for Google's error body: the status name joins the message and a
    RetryInfo detail (https://cloud.google.com/apis/design/errors#error_details) sets
    retry_after when no Retry-After header does."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return classify(provider, status, str(body)[:500] if body else "", headers)
    message = str(error.get("message") or "")
    if error.get("status"):
        message = f"{error['status']}: {message}"
    result = classify(provider, status, message, headers)
    for detail in error.get("details") or []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        match = _DURATION.match(delay) if isinstance(delay, str) else None
        if match and result.retryable and result.retry_after is None:
            result.retry_after = float(match.group(1))
    return result


async def parse_stream(events: AsyncIterator[tuple[str, str]], provider: str = "gemini") -> AsyncIterator[Chunk]:
    """Chunks from SSE events whose data is a GenerateContentResponse each.

    Usage metadata is cumulative, so the last one seen is reported with the finish
    reason on the final chunk. Each function call arrives whole: one ToolCallDelta,
    indexed across the stream. A stream without a finishReason is truncated and raises
    MalformedResponse; an `{"error": …}` event raises the matching ProviderError."""
    reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    called = 0
    async for _event, data in events:
        body = json_object(data, provider)
        if "error" in body:
            code = body["error"].get("code") if isinstance(body["error"], dict) else None
            raise error_from(provider, code if isinstance(code, int) else 500, body)
        error = blocked(body, provider)
        if error:
            raise error
        model = body.get("modelVersion") or model
        if body.get("usageMetadata"):
            usage = usage_from(body["usageMetadata"])
        candidates = body.get("candidates")
        candidate = candidates[0] if isinstance(candidates, list) and candidates else {}
        if not isinstance(candidate, dict):
            raise MalformedResponse(provider, "stream event candidate is not an object")
        parts = _parts_of(candidate)
        delta, calls = _text(parts), _calls(parts, body.get("responseId"), called)
        deltas = [ToolCallDelta(called + i, call.id, call.name, call.arguments) for i, call in enumerate(calls)]
        called += len(calls)
        if delta or deltas:
            yield Chunk(delta=delta, model=model, tool_calls=deltas or None)
        if candidate.get("finishReason"):
            reason = candidate["finishReason"]
    if reason is None:
        raise MalformedResponse(provider, "stream ended without a finishReason")
    yield Chunk(finish_reason=finish_reason(reason, called > 0), usage=usage or Usage(), model=model)


# --- embeddings ---------------------------------------------------------------------------


def embeddings_to_wire(texts: list[str], model: str, dimensions: int | None = None) -> dict:
    """The BatchEmbedContentsRequest for `texts`: one EmbedContentRequest each, naming
    the model of the URL (the API requires that they match)."""
    options = present(outputDimensionality=dimensions)
    return {"requests": [{"model": f"models/{model}", "content": {"parts": [{"text": t}]}, **options} for t in texts]}


def embeddings_from_wire(body: Any, texts: list[str], provider: str = "gemini") -> EmbeddingResponse:
    """The vectors of a BatchEmbedContentsResponse for `texts`, in their order.

    Gemini has reported no token usage for embeddings (a `usageMetadata` is read when
    one comes), so the count is estimated: a token per 4 characters, at least 1 a text.
    Raises MalformedResponse unless there is one list of numbers per text."""
    items = body.get("embeddings") if isinstance(body, dict) else None
    if not isinstance(items, list) or len(items) != len(texts):
        raise MalformedResponse(provider, f"expected {len(texts)} embeddings in the response")
    vectors = []
    for item in items:
        values = item.get("values") if isinstance(item, dict) else None
        if not isinstance(values, list) or not all(type(v) in (int, float) for v in values):
            raise MalformedResponse(provider, "an embedding is not a list of numbers")
        vectors.append([float(v) for v in values])
    usage = body.get("usageMetadata")
    if isinstance(usage, dict) and "promptTokenCount" in usage:
        tokens = token_count(usage["promptTokenCount"], "promptTokenCount")
    else:
        tokens = sum(max(1, len(text) // 4) for text in texts)
    return EmbeddingResponse(vectors=vectors, model="", prompt_tokens=tokens)


def unit(vector: list[float]) -> list[float]:
    """`vector` scaled to length 1 (a shortened Gemini embedding is not)."""
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm else vector


# --- the adapter ----------------------------------------------------------------------------


class GeminiCall(Call):
    """Reads Google's error body shape (see error_from)."""

    def error_for(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        try:
            data = json.loads(body[:8000])
        except ValueError:
            data = body[:500].decode("utf-8", "replace")
        return error_from(self.provider, status, data, headers)


class GeminiProvider(BaseProvider):
    """Adapter for the Gemini API with an API key (Google AI Studio)."""

    type = "gemini"
    features = FEATURES
    settings_class = Settings
    call_class = GeminiCall

    def __init__(self, config: ProviderConfig):
        super().__init__(config)
        self.base_url = self.base_url_or(DEFAULT_BASE_URL)

    def capabilities(self) -> Capabilities:
        return Capabilities(streaming=True, max_stop_sequences=MAX_STOP_SEQUENCES, features=self.features)

    def _url(self, template: str, model: str = "") -> str:
        # Model names are path segments (`gemini-2.5-flash`, `tunedModels/x` is not routed here).
        return self.base_url + template.format(version=self.settings.api_version, model=quote(model, safe=""))

    def _headers(self, accept: str = "application/json") -> dict[str, str]:
        return {"Content-Type": "application/json", "Accept": accept, KEY_HEADER: self.api_key}

    def _body(self, request: CompletionRequest) -> dict:
        try:
            return to_wire(request, self.settings)
        except ValueError as exc:
            # Not routed here (chat.IMAGE_URLS is not declared); another provider may take it.
            raise ProviderError(self.name, None, f"Gemini cannot take this request: {exc}", retryable=True) from None

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        model = self.model_for(request)
        return await self.post_json(self._url(GENERATE, model), self._headers(), self._body(request), from_wire, model)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        url = self._url(STREAM, self.model_for(request))
        lines = await self.open_lines(url, self._headers("text/event-stream"), self._body(request))
        async for chunk in parse_stream(sse_events(lines), self.name):
            yield chunk

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """POST models/{model}:batchEmbedContents, MAX_EMBED_BATCH texts at a time under
        one deadline; the vectors in input order (of unit length when `dimensions` shortened
        them, as OpenAI's are). Raises ProviderError."""
        model = request.model or self.settings.embedding_model
        call, url, headers = self._call(), self._url(EMBED, model), self._headers()
        vectors: list[list[float]] = []
        tokens = 0
        for start in range(0, len(request.inputs), MAX_EMBED_BATCH):
            texts = request.inputs[start : start + MAX_EMBED_BATCH]
            body = embeddings_to_wire(texts, model, request.dimensions)
            data = await call.request_json("POST", url, headers, json_body=body)
            batch = embeddings_from_wire(data, texts, self.name)
            vectors += batch.vectors
            tokens += batch.prompt_tokens
        if request.dimensions:
            vectors = [unit(vector) for vector in vectors]
        return EmbeddingResponse(vectors=vectors, model=model, prompt_tokens=tokens)

    async def health_check(self) -> HealthProbe:
        """GET /v1beta/models with the key: proves the key is valid and the API reachable."""
        message = "the model list is not a JSON object"
        return await self.probe_list(self._url(MODELS), self._headers(), "models", message, optional=True)
