"""Google Gemini API (generativelanguage v1beta).

- Generate: https://ai.google.dev/api/generate-content (`models/{model}:generateContent`;
  `:streamGenerateContent?alt=sse` streams SSE `data:` lines, each a whole response)
- Function calling, answered: https://ai.google.dev/gemini-api/docs/function-calling (the
  model answers whole `functionCall` parts {name, args} and a STOP, so a stream gives one
  ToolCallDelta per call, and a call without an id gets one, see synthesized_id)
- The request (contents, function declarations and tool config, images, structured output,
  thought signatures): providers/adapters/gemini_request.py, with JSON Schemas cleaned by
  providers/adapters/gemini_schema.py
- Embeddings (batchEmbedContents): providers/adapters/gemini_embed.py
- Auth: https://ai.google.dev/gemini-api/docs/api-key (the key goes in `x-goog-api-key`,
  never in the `?key=` query, so it cannot land in access logs or error messages)
- Errors: https://ai.google.dev/gemini-api/docs/troubleshooting (body
  `{"error": {"code", "message", "status", "details"}}`; 429 RESOURCE_EXHAUSTED and
  500/503/504 are retried, 403 PERMISSION_DENIED (the key) fails over, 400 INVALID_ARGUMENT /
  FAILED_PRECONDITION and 404 are final)
- Safety: https://ai.google.dev/gemini-api/docs/safety-settings (a blocked prompt returns
  200 with `promptFeedback.blockReason` and no candidates)

Dropped, for want of a Gemini counterpart: `logit_bias`, `user`, an image's `detail`, a
JSON schema's name and strictness. Gemini has no switch for parallel function calls, so
PARALLEL_TOOL_CALLS is not declared.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from providers.adapters import gemini_embed, gemini_request
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
    ProviderError,
    ToolCall,
    ToolCallDelta,
    Usage,
    classify,
    invalid_setting,
    token_count,
)
from providers.adapters.http import BaseProvider, Call, check_setting_names, json_object, sse_events

if TYPE_CHECKING:
    from providers.models import ProviderConfig

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
API_VERSION = "v1beta"
GENERATE = "/{version}/models/{model}:generateContent"
STREAM = "/{version}/models/{model}:streamGenerateContent?alt=sse"
MODELS = "/{version}/models"
KEY_HEADER = "x-goog-api-key"
FEATURES = frozenset({CHAT, STREAMING, TOOLS, IMAGES, JSON_MODE, JSON_SCHEMA, EMBEDDINGS})
# The model the embeddings reference (gemini_embed.py) uses (text-embedding-004, an older default, is retired).
DEFAULT_EMBEDDING_MODEL = "gemini-embedding-001"
MAX_STOP_SEQUENCES = 5
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
    answered = False  # whether any event had a candidate (for the error's message)
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
        answered = answered or bool(candidate)
        parts = _parts_of(candidate)
        delta, calls = _text(parts), _calls(parts, body.get("responseId"), called)
        deltas = [ToolCallDelta(called + i, call.id, call.name, call.arguments) for i, call in enumerate(calls)]
        called += len(calls)
        if delta or deltas:
            yield Chunk(delta=delta, model=model, tool_calls=deltas or None)
        if candidate.get("finishReason"):
            reason = candidate["finishReason"]
    if reason is None:
        # No end event exists: the chunk carrying finishReason is the last one
        # (https://ai.google.dev/api/generate-content#FinishReason).
        missing = "a finishReason" if answered else "any candidates"
        raise MalformedResponse(provider, f"stream ended without {missing}")
    yield Chunk(finish_reason=finish_reason(reason, called > 0), usage=usage or Usage(), model=model)


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
            return gemini_request.to_wire(request, self.settings.safety_settings)
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
        """POST models/{model}:batchEmbedContents (gemini_embed.embed: batched, under one
        deadline). Raises ProviderError."""
        model = request.model or self.settings.embedding_model
        call, url, headers = self._call(), self._url(gemini_embed.EMBED, model), self._headers()

        async def post(body: dict) -> Any:
            return await call.request_json("POST", url, headers, json_body=body)

        return await gemini_embed.embed(request, model, post, self.name)

    async def health_check(self) -> HealthProbe:
        """GET /v1beta/models with the key: proves the key is valid and the API reachable."""
        message = "the model list is not a JSON object"
        return await self.probe_list(self._url(MODELS), self._headers(), "models", message, optional=True)
