"""Gemini (generativelanguage v1beta) wire format for the fake upstream:
`models/{model}:generateContent`, `:streamGenerateContent` (SSE with `alt=sse`, else a
JSON array) and `GET /v1beta/models`, as https://ai.google.dev/api/generate-content and
https://ai.google.dev/api/models describe them, with Google's error body
(https://ai.google.dev/gemini-api/docs/troubleshooting).

Like the live API it rejects unknown request fields and roles other than user/model.
A last user message containing BLOCK_MARKER gets the blocked-prompt answer (200,
`promptFeedback.blockReason`, no candidates).
"""

from __future__ import annotations

import json
import re
import zlib

from aiohttp import web

from providers.fake_upstream.core import (
    FakeRequest,
    Route,
    caller_key,
    checked,
    count_tokens,
    generate,
    last_text,
    text_of,
)

BASE_PATH = ""
MODELS = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash")
BLOCK_MARKER = "[[fake:block]]"
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
REQUEST_FIELDS = {
    "contents", "systemInstruction", "system_instruction", "generationConfig", "generation_config",
    "safetySettings", "safety_settings", "tools", "toolConfig", "tool_config", "cachedContent",
    "cached_content", "model", "serviceTier", "service_tier", "store",
}  # fmt: skip
CONFIG_FIELDS = {
    "maxOutputTokens", "temperature", "topP", "topK", "stopSequences", "candidateCount", "seed",
    "responseMimeType", "responseSchema", "responseJsonSchema", "presencePenalty", "frequencyPenalty",
    "responseLogprobs", "logprobs", "thinkingConfig", "responseModalities", "mediaResolution",
}  # fmt: skip


def error_body(status: int, message: str) -> dict:
    error = {"code": status, "message": message, "status": STATUS_NAMES.get(status, "UNKNOWN")}
    if status == 429:
        # https://cloud.google.com/apis/design/errors#error_details
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]
    return {"error": error}


def stream_error_frame(message: str = "An internal error has occurred.") -> str:
    body = json.dumps({"error": {"code": 500, "message": message, "status": "INTERNAL"}}, separators=(",", ":"))
    return f"data: {body}\n\n"


def _invalid(req: FakeRequest, message: str) -> web.Response:
    return req.error(400, message)


def _check(req: FakeRequest) -> web.Response | None:
    """The API's first checks: a key, then the body against GenerateContentRequest."""
    if not caller_key(req.http):
        message = "Method doesn't allow unregistered callers (callers without established identity)."
        return req.error(403, message + " Please use API Key or other form of API consumer identity to call this API.")
    body = req.body
    if not isinstance(body, dict):
        return _invalid(req, "Invalid JSON payload received.")
    unknown = sorted(set(body) - REQUEST_FIELDS)
    unknown += sorted(f"generationConfig.{k}" for k in set(body.get("generationConfig") or {}) - CONFIG_FIELDS)
    if unknown:
        return _invalid(req, f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.')
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return _invalid(req, "* GenerateContentRequest.contents: contents is not specified")
    for content in contents:
        if not isinstance(content, dict) or not isinstance(content.get("parts"), list) or not content["parts"]:
            return _invalid(req, "* GenerateContentRequest.contents: contents.parts must not be empty.")
        if content.get("role", "user") not in ("user", "model"):
            return _invalid(req, "Please use a valid role: user, model.")
    stops = (body.get("generationConfig") or {}).get("stopSequences") or []
    if len(stops) > 5:
        return _invalid(req, "* GenerateContentRequest.generation_config.stop_sequences: at most 5 allowed")
    return None


def _answer(req: FakeRequest, body: dict) -> tuple[list[str], str, dict, str]:
    """(reply pieces, finishReason, usageMetadata, last user text)."""
    contents = body["contents"]
    last = last_text(contents, field="parts", default_role="user")
    config = body.get("generationConfig") or {}
    reply = generate(req.reply_for(last), config.get("stopSequences"), config.get("maxOutputTokens"))
    pieces, reason = reply.pieces, "MAX_TOKENS" if reply.truncated else "STOP"
    system = text_of((body.get("systemInstruction") or {}).get("parts"))
    prompt = count_tokens(system + "\n" + "\n".join(text_of(c.get("parts")) for c in contents))
    completion = count_tokens("".join(pieces))
    prompt, completion, total = req.counts(prompt, completion)
    usage = {"promptTokenCount": prompt, "candidatesTokenCount": completion, "totalTokenCount": total}
    return pieces, reason, usage, last


def _blocked(usage: dict, model: str) -> dict:
    ratings = [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}]
    return {
        "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": ratings},
        "usageMetadata": {"promptTokenCount": usage["promptTokenCount"], "totalTokenCount": usage["promptTokenCount"]},
        "modelVersion": model,
    }


def _response(text: str, reason: str | None, usage: dict, model: str, response_id: str) -> dict:
    candidate: dict = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    if reason:
        candidate["finishReason"] = reason
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": response_id}


@checked(_check)
async def generate_content(req: FakeRequest) -> web.StreamResponse:
    model = req.params["model"]
    pieces, reason, usage, last = _answer(req, req.body)
    if BLOCK_MARKER in last:
        return await req.json(_blocked(usage, model))
    response_id = f"fake{zlib.crc32(req.raw):08x}"
    return await req.json(_response("".join(pieces), reason, usage, model, response_id))


@checked(_check)
async def stream_generate(req: FakeRequest) -> web.StreamResponse:
    model = req.params["model"]
    pieces, reason, usage, last = _answer(req, req.body)
    response_id = f"fake{zlib.crc32(req.raw):08x}"
    if BLOCK_MARKER in last:
        events = [_blocked(usage, model)]
    else:
        # Every chunk carries usage so far; the last one the finishReason and the totals.
        events, sent = [], ""
        for i, piece in enumerate(pieces):
            sent += piece
            so_far = {**usage, "candidatesTokenCount": count_tokens(sent)}
            if req.behaviour.token_counts is None:
                so_far["totalTokenCount"] = so_far["promptTokenCount"] + so_far["candidatesTokenCount"]
            else:
                so_far = usage
            final = reason if i == len(pieces) - 1 else None
            events.append(_response(piece, final, usage if final else so_far, model, response_id))
    if req.http.query.get("alt") != "sse":
        return await req.json(events)
    return await req.sse([(None, event) for event in events])


async def list_models(req: FakeRequest) -> web.StreamResponse:
    if not caller_key(req.http):
        return req.error(403, "Method doesn't allow unregistered callers.")
    models = [
        {
            "name": f"models/{name}",
            "version": "001",
            "displayName": name.replace("-", " ").title(),
            "inputTokenLimit": 1048576,
            "outputTokenLimit": 65536,
            "supportedGenerationMethods": ["generateContent", "countTokens"],
        }
        for name in MODELS
    ]
    return await req.json({"models": models})


MODEL = r"/v1beta/models/(?P<model>[A-Za-z0-9._-]+)"
ROUTES = [
    Route("POST", re.compile(MODEL + ":generateContent"), generate_content, kind="chat"),
    Route("POST", re.compile(MODEL + ":streamGenerateContent"), stream_generate, kind="chat"),
    Route("GET", "/v1beta/models", list_models, kind="probe"),
]
