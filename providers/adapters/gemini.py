"""Google Gemini API (generativelanguage v1beta).

- Generate: https://ai.google.dev/api/generate-content (`models/{model}:generateContent`,
  GenerateContentRequest / GenerateContentResponse)
- Streaming: https://ai.google.dev/api/generate-content#method:-models.streamgeneratecontent
  (`:streamGenerateContent?alt=sse`: SSE `data:` lines, each a whole GenerateContentResponse)
- Auth: https://ai.google.dev/gemini-api/docs/api-key (the key goes in `x-goog-api-key`;
  never in the `?key=` query, so it cannot land in access logs or error messages)
- Errors: https://ai.google.dev/gemini-api/docs/troubleshooting (body
  `{"error": {"code", "message", "status", "details"}}`; 429 RESOURCE_EXHAUSTED and
  500/503/504 are retried, 400 INVALID_ARGUMENT / FAILED_PRECONDITION, 403, 404 are final)
- Safety: https://ai.google.dev/gemini-api/docs/safety-settings (a blocked prompt returns
  200 with `promptFeedback.blockReason` and no candidates)
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

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
MODELS = "/{version}/models"
KEY_HEADER = "x-goog-api-key"
ROLES = {"user": "user", "assistant": "model"}
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


@dataclass(frozen=True, slots=True)
class Settings:
    """`config.settings` for gemini: `api_version` (default v1beta) and `safety_settings`
    (a list of {category, threshold}, passed through as `safetySettings`)."""

    api_version: str = API_VERSION
    safety_settings: tuple[dict, ...] = ()

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
        return cls(api_version=version, safety_settings=tuple(safety))


def to_wire(req: CompletionRequest, settings: Settings | None = None) -> dict:
    """The GenerateContentRequest body for `req` (the model goes in the URL).

    Consecutive turns of one role are merged into one Content with several parts,
    since Gemini expects user and model turns to alternate."""
    settings = settings or Settings()
    turns, system = alternating_turns(req)
    body: dict[str, Any] = {
        "contents": [{"role": ROLES[role], "parts": [{"text": text} for text in texts]} for role, texts in turns]
    }
    if system:
        body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    config = present(
        maxOutputTokens=req.max_tokens, temperature=req.temperature, topP=req.top_p, stopSequences=req.stop
    )
    if config:
        body["generationConfig"] = config
    if settings.safety_settings:
        body["safetySettings"] = list(settings.safety_settings)
    return body


def usage_from(metadata: Any) -> Usage:
    metadata = metadata if isinstance(metadata, dict) else {}
    # thoughtsTokenCount is billed as output on thinking models.
    completion = token_count(metadata.get("candidatesTokenCount"), "candidatesTokenCount") + token_count(
        metadata.get("thoughtsTokenCount"), "thoughtsTokenCount"
    )
    return Usage(token_count(metadata.get("promptTokenCount"), "promptTokenCount"), completion)


def _text(candidate: Mapping[str, Any]) -> str:
    parts = (candidate.get("content") or {}).get("parts") or []
    # Thought summaries (`thought: true`) are not part of the answer.
    return "".join(p.get("text", "") for p in parts if isinstance(p, dict) and not p.get("thought"))


def blocked(body: Mapping[str, Any], provider: str) -> ProviderError | None:
    """The final error for a prompt Gemini refused to answer, or None."""
    feedback = body.get("promptFeedback") or {}
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if reason and not body.get("candidates"):
        return ProviderError(
            provider, None, f"Gemini blocked the prompt ({reason}); rephrase it or adjust safety_settings.", False
        )
    return None


def finish_reason(raw: str | None) -> str | None:
    return FINISH_REASONS.get(raw, raw.lower()) if raw else None


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
    candidate = candidates[0]
    return CompletionResponse(
        content=_text(candidate),
        model=str(body.get("modelVersion") or ""),
        finish_reason=finish_reason(candidate.get("finishReason")),
        usage=usage_from(body.get("usageMetadata")),
        id=body.get("responseId"),
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
    reason on the final chunk. A stream without a finishReason is truncated and raises
    MalformedResponse; an `{"error": …}` event raises the matching ProviderError."""
    reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
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
        delta = _text(candidate)
        if delta:
            yield Chunk(delta=delta, model=model)
        if candidate.get("finishReason"):
            reason = finish_reason(candidate["finishReason"])
    if reason is None:
        raise MalformedResponse(provider, "stream ended without a finishReason")
    yield Chunk(finish_reason=reason, usage=usage or Usage(), model=model)


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

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        model = self.model_for(request)
        url = self._url(GENERATE, model)
        return await self.post_json(url, self._headers(), to_wire(request, self.settings), from_wire, model)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        url = self._url(STREAM, self.model_for(request))
        lines = await self.open_lines(url, self._headers("text/event-stream"), to_wire(request, self.settings))
        async for chunk in parse_stream(sse_events(lines), self.name):
            yield chunk

    async def health_check(self) -> HealthProbe:
        """GET /v1beta/models with the key: proves the key is valid and the API reachable."""
        message = "the model list is not a JSON object"
        return await self.probe_list(self._url(MODELS), self._headers(), "models", message, optional=True)
