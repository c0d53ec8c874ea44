"""Gemini (generativelanguage v1beta) wire format for the fake upstream:
`models/{model}:generateContent`, `:streamGenerateContent` (SSE with `alt=sse`, else a
JSON array), `:embedContent`, `:batchEmbedContents` and `GET /v1beta/models`, as
https://ai.google.dev/api/generate-content, https://ai.google.dev/api/embeddings and
https://ai.google.dev/api/models describe them, with Google's error body
(https://ai.google.dev/gemini-api/docs/troubleshooting).

Like the live API it rejects unknown request fields (in parts, function declarations and
their schemas too), roles other than user/model, a part holding two kinds of data or bytes
that are not base64, and an OBJECT parameter schema without properties: the checks are in
gemini_validation.py. Models whose name holds "embedding" only embed, and the others only
generate (404 otherwise).

What it answers (synth.py decides the content): with functions offered and a calling mode
other than NONE, a last turn that is not a functionResponse gets functionCall parts (the
first with a thoughtSignature, as Gemini 3 sends); a functionResponse gets "Tool said: ...";
`responseMimeType` application/json gets JSON shaped by `responseSchema`. A last user
message containing BLOCK_MARKER gets the blocked-prompt answer (200,
`promptFeedback.blockReason`, no candidates).
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from typing import Any

from aiohttp import web

from providers.fake_upstream import gemini_validation, synth
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
EMBEDDING_MODELS = ("gemini-embedding-001",)
BLOCK_MARKER = "[[fake:block]]"
FAKE_SIGNATURE = base64.b64encode(b"fake thought signature").decode()
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


def error_body(status: int, message: str) -> dict:
    error = {"code": status, "message": message, "status": STATUS_NAMES.get(status, "UNKNOWN")}
    if status == 429:
        # https://cloud.google.com/apis/design/errors#error_details
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]
    return {"error": error}


# What "missing_fields" drops: the answer's (and every chunk's) `candidates`, the
# embeddings and the model list.
REQUIRED_FIELDS = frozenset({"candidates", "embedding", "embeddings", "models"})


def is_end(event: str | None, data: object) -> bool:
    # A stream has no terminator event: its last chunk is the one whose candidate carries
    # a finishReason (https://ai.google.dev/api/generate-content#FinishReason: "Output
    # only. The reason why the model stopped generating tokens"; unset while it goes on).
    candidates = data.get("candidates") if isinstance(data, dict) else None
    return isinstance(candidates, list) and any(isinstance(c, dict) and c.get("finishReason") for c in candidates)


def stream_error_frame(message: str = "An internal error has occurred.") -> str:
    body = json.dumps({"error": {"code": 500, "message": message, "status": "INTERNAL"}}, separators=(",", ":"))
    return f"data: {body}\n\n"


# --- request checks ---------------------------------------------------------------------


def _forbidden(req: FakeRequest) -> web.Response | None:
    if caller_key(req.http):
        return None
    message = "Method doesn't allow unregistered callers (callers without established identity)."
    return req.error(403, message + " Please use API Key or other form of API consumer identity to call this API.")


def _not_found(req: FakeRequest, method: str) -> web.Response:
    model = req.params["model"]
    return req.error(404, f"models/{model} is not found for API version v1beta, or is not supported for {method}.")


def _check(req: FakeRequest) -> web.Response | None:
    """The API's first checks: a key, a generating model, then the body."""
    forbidden = _forbidden(req)
    if forbidden or "embedding" in req.params["model"]:
        return forbidden or _not_found(req, "generateContent")
    problem = gemini_validation.body_problem(req.body)
    return req.error(400, problem) if problem else None


# --- answers ------------------------------------------------------------------------------


def _json_schema(schema: Any) -> Any:
    """Gemini's OpenAPI-style schema as the JSON Schema synth reads (lower-case types)."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if isinstance(out.get("type"), str):
        out["type"] = out["type"].lower()
    if isinstance(out.get("properties"), dict):
        out["properties"] = {name: _json_schema(sub) for name, sub in out["properties"].items()}
    if "items" in out:
        out["items"] = _json_schema(out["items"])
    return out


def _function_calls(body: dict, prompt: str) -> list[dict]:
    """The functionCall parts the fake model answers with (none when no function is
    offered or the mode is NONE)."""
    declarations = [d for tool in body.get("tools") or [] for d in tool.get("functionDeclarations") or []]
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    mode = str(config.get("mode") or "AUTO")
    if not declarations or mode == "NONE":
        return []
    allowed = config.get("allowedFunctionNames") or []
    forced = allowed[0] if mode == "ANY" and allowed else None
    schemas = {d["name"]: _json_schema(d.get("parameters") or d.get("parametersJsonSchema")) for d in declarations}
    names = synth.pick_tools(list(schemas), forced, prompt)
    parts: list[dict] = [
        {"functionCall": {"name": name, "args": synth.tool_arguments(schemas.get(name), prompt)}} for name in names
    ]
    parts[0]["thoughtSignature"] = FAKE_SIGNATURE
    return parts


def _result_text(response: dict) -> str:
    result = response.get("result")
    return result if set(response) == {"result"} and isinstance(result, str) else json.dumps(response)


def _reply_text(req: FakeRequest, body: dict, last: str) -> str:
    results = [p["functionResponse"] for p in body["contents"][-1]["parts"] if "functionResponse" in p]
    if results:
        return synth.tool_result_reply("\n".join(_result_text(r["response"]) for r in results))
    config = body.get("generationConfig") or {}
    if config.get("responseMimeType") == "application/json":
        return synth.json_reply(last, _json_schema(config.get("responseSchema") or config.get("responseJsonSchema")))
    return req.reply_for(last)


def _answer(req: FakeRequest, body: dict) -> tuple[list[dict], list[str], str, dict, str]:
    """(functionCall parts, reply pieces, finishReason, usageMetadata, last user text)."""
    contents = body["contents"]
    last = last_text(contents, field="parts", default_role="user")
    answers_results = any("functionResponse" in p for p in contents[-1]["parts"])
    calls = [] if answers_results else _function_calls(body, last)
    config = body.get("generationConfig") or {}
    reply = generate(
        "" if calls else _reply_text(req, body, last), config.get("stopSequences"), config.get("maxOutputTokens")
    )
    pieces, reason = reply.pieces, "MAX_TOKENS" if reply.truncated else "STOP"
    system = text_of((body.get("systemInstruction") or {}).get("parts"))
    prompt = count_tokens(system + "\n" + "\n".join(text_of(c.get("parts")) for c in contents))
    completion = count_tokens(json.dumps([c["functionCall"] for c in calls]) if calls else "".join(pieces))
    prompt, completion, total = req.counts(prompt, completion)
    usage = {"promptTokenCount": prompt, "candidatesTokenCount": completion, "totalTokenCount": total}
    return calls, pieces, reason, usage, last


def _blocked(usage: dict, model: str) -> dict:
    ratings = [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}]
    return {
        "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": ratings},
        "usageMetadata": {"promptTokenCount": usage["promptTokenCount"], "totalTokenCount": usage["promptTokenCount"]},
        "modelVersion": model,
    }


def _response(parts: list[dict], reason: str | None, usage: dict, model: str, response_id: str) -> dict:
    candidate: dict = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if reason:
        candidate["finishReason"] = reason
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": response_id}


@checked(_check)
async def generate_content(req: FakeRequest) -> web.StreamResponse:
    model = req.params["model"]
    calls, pieces, reason, usage, last = _answer(req, req.body)
    if BLOCK_MARKER in last:
        return await req.json(_blocked(usage, model))
    response_id = f"fake{zlib.crc32(req.raw):08x}"
    return await req.json(_response(calls or [{"text": "".join(pieces)}], reason, usage, model, response_id))


@checked(_check)
async def stream_generate(req: FakeRequest) -> web.StreamResponse:
    model = req.params["model"]
    calls, pieces, reason, usage, last = _answer(req, req.body)
    response_id = f"fake{zlib.crc32(req.raw):08x}"
    if BLOCK_MARKER in last:
        events = [_blocked(usage, model)]
    elif calls:  # function calls come whole, in one event
        events = [_response(calls, reason, usage, model, response_id)]
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
            events.append(_response([{"text": piece}], final, usage if final else so_far, model, response_id))
    if req.http.query.get("alt") != "sse":
        return await req.json(events)
    return await req.sse([(None, event) for event in events])


# --- embeddings ---------------------------------------------------------------------------


def _dimensions(request: dict) -> Any:
    return (request.get("embedContentConfig") or {}).get("outputDimensionality") or request.get("outputDimensionality")


def _embedding(request: dict) -> dict:
    return {"values": synth.embedding(text_of(request["content"]["parts"]), _dimensions(request))}


def _embed_check(req: FakeRequest) -> web.Response | None:
    forbidden = _forbidden(req)
    method = "batchEmbedContents" if req.http.path.endswith("batchEmbedContents") else "embedContent"
    if forbidden or "embedding" not in req.params["model"]:
        return forbidden or _not_found(req, method)
    problem = gemini_validation.embed_problem(req.body, req.params["model"], method)
    return req.error(400, problem) if problem else None


@checked(_embed_check)
async def embed_content(req: FakeRequest) -> web.StreamResponse:
    return await req.json({"embedding": _embedding(req.body)})


@checked(_embed_check)
async def batch_embed_contents(req: FakeRequest) -> web.StreamResponse:
    return await req.json({"embeddings": [_embedding(request) for request in req.body["requests"]]})


async def list_models(req: FakeRequest) -> web.StreamResponse:
    if not caller_key(req.http):
        return req.error(403, "Method doesn't allow unregistered callers.")
    methods = {name: ["generateContent", "countTokens"] for name in MODELS}
    methods.update({name: ["embedContent", "batchEmbedContents"] for name in EMBEDDING_MODELS})
    models = [
        {
            "name": f"models/{name}",
            "version": "001",
            "displayName": name.replace("-", " ").title(),
            "inputTokenLimit": 1048576 if name in MODELS else 2048,
            "outputTokenLimit": 65536 if name in MODELS else 1,
            "supportedGenerationMethods": supported,
        }
        for name, supported in methods.items()
    ]
    return await req.json({"models": models})


MODEL = r"/v1beta/models/(?P<model>[A-Za-z0-9._-]+)"
ROUTES = [
    Route("POST", re.compile(MODEL + ":generateContent"), generate_content, kind="chat"),
    Route("POST", re.compile(MODEL + ":streamGenerateContent"), stream_generate, kind="chat"),
    Route("POST", re.compile(MODEL + ":embedContent"), embed_content, kind="embeddings"),
    Route("POST", re.compile(MODEL + ":batchEmbedContents"), batch_embed_contents, kind="embeddings"),
    Route("GET", "/v1beta/models", list_models, kind="probe"),
]
