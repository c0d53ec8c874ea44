"""OpenAI wire format for the fake upstream: Chat Completions (JSON and SSE) and the
model list, shaped as https://platform.openai.com/docs/api-reference/chat describes
them, faithful enough for the official `openai` package to parse. Also serves every
OpenAI-compatible `custom` provider.
"""

from __future__ import annotations

import json
import time
import zlib

from aiohttp import web

from providers.fake_upstream.core import FakeRequest, Route, checked, count_tokens, generate, last_text, text_of

BASE_PATH = "/v1"
FINGERPRINT = "fp_fake0001"
MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")
NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)

# https://platform.openai.com/docs/guides/error-codes
_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def error_body(status: int, message: str) -> dict:
    kind, code = _ERROR_TYPES.get(status, ("server_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _completion_id(body: dict) -> str:
    return f"chatcmpl-{zlib.crc32(repr(body.get('messages')).encode()):08x}fake"


def answer(req: FakeRequest, body: dict) -> tuple[list[str], str, dict]:
    """(reply pieces, finish_reason, usage) honouring max_tokens and stop like the real API."""
    messages = body.get("messages") or []
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    reply = generate(req.reply_for(last_text(messages)), body.get("stop"), limit)
    pieces, finish = reply.pieces, "length" if reply.truncated else "stop"
    prompt_tokens = count_tokens("\n".join(text_of(m.get("content")) for m in messages if isinstance(m, dict)))
    completion_tokens = count_tokens("".join(pieces))
    prompt_tokens, completion_tokens, total_tokens = req.counts(prompt_tokens, completion_tokens)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": total_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    return pieces, finish, usage


def _unauthenticated(req: FakeRequest) -> bool:
    auth = req.headers.get("Authorization", "")
    return req.behaviour.require_auth and (not auth.startswith("Bearer ") or len(auth) <= 7)


def stream_error_frame(message: str = "The server had an error while processing your request.") -> str:
    # Mid-stream failures arrive as a data line holding an error object (openai-python
    # _streaming.py raises APIError when a chunk has "error").
    error = error_body(500, message)
    return f"data: {json.dumps(error)}\n\n"


def _check(req: FakeRequest) -> web.Response | None:
    """The checks the real API makes first: a bearer key, then a sane body."""
    if _unauthenticated(req):
        return req.error(401, NO_KEY_MESSAGE)
    body = req.body
    if not isinstance(body, dict):
        return req.error(400, "We could not parse the JSON body of your request.")
    if not body.get("model"):
        return req.error(400, "you must provide a model parameter")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return req.error(400, "Invalid 'messages': empty array. Expected an array with minimum length 1.")
    return None


@checked(_check)
async def chat_completions(req: FakeRequest) -> web.StreamResponse:
    body = req.body
    pieces, finish, usage = answer(req, body)
    created = int(time.time())
    base = {"id": _completion_id(body), "created": created, "model": body["model"], "system_fingerprint": FINGERPRINT}
    if not body.get("stream"):
        message = {"role": "assistant", "content": "".join(pieces), "refusal": None, "annotations": []}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        return await req.json(
            {**base, "object": "chat.completion", "choices": [choice], "usage": usage, "service_tier": "default"}
        )
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict, finish_reason: str | None = None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**base, "object": "chat.completion.chunk", "service_tier": "default", "choices": [choice], **extra}

    # https://platform.openai.com/docs/api-reference/chat-streaming: a role chunk, content
    # deltas, a finish chunk, then (include_usage) a usage chunk with empty choices.
    events = [(None, chunk({"role": "assistant", "content": "", "refusal": None}))]
    events += [(None, chunk({"content": piece})) for piece in pieces]
    events.append((None, chunk({}, finish)))
    if include_usage:
        events.append((None, {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}))
    events.append((None, "[DONE]"))
    return await req.sse(events)


async def list_models(req: FakeRequest) -> web.StreamResponse:
    if _unauthenticated(req):
        return req.error(401, "You didn't provide an API key.")
    data = [{"id": m, "object": "model", "created": 1715367049, "owned_by": "system"} for m in MODELS]
    return await req.json({"object": "list", "data": data})


ROUTES = [
    Route("POST", "/v1/chat/completions", chat_completions, kind="chat"),
    Route("GET", "/v1/models", list_models, kind="probe"),
]
