"""Anthropic wire format for the fake upstream: the Messages API (JSON and SSE) and the
model list, as https://docs.anthropic.com/en/api/messages and
https://docs.anthropic.com/en/docs/build-with-claude/streaming describe them,
faithful enough for the official `anthropic` package to parse.
"""

from __future__ import annotations

import json
import zlib

from aiohttp import web

from providers.fake_upstream.core import FakeRequest, Route, checked, count_tokens, generate, last_text, text_of

BASE_PATH = ""
TEXT_BLOCK = {"type": "text", "text": ""}
MODELS = (
    ("claude-sonnet-4-20250514", "Claude Sonnet 4", "2025-05-22T00:00:00Z"),
    ("claude-3-5-haiku-20241022", "Claude Haiku 3.5", "2024-10-22T00:00:00Z"),
)

# https://docs.anthropic.com/en/api/errors
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str) -> dict:
    kind = _ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake0001"}


def stream_error_frame(message: str = "Overloaded") -> str:
    # "We may occasionally send errors in the event stream", e.g. overloaded_error
    # (https://docs.anthropic.com/en/docs/build-with-claude/streaming#error-events).
    data = {"type": "error", "error": {"type": "overloaded_error", "message": message}}
    return f"event: error\ndata: {json.dumps(data)}\n\n"


def _unauthenticated(req: FakeRequest) -> bool:
    # x-api-key is the documented header; newer SDKs send the key as a bearer token.
    bearer = req.headers.get("Authorization", "").startswith("Bearer ")
    return req.behaviour.require_auth and not (req.headers.get("x-api-key") or bearer)


def _check(req: FakeRequest) -> web.Response | None:
    """The API's first checks: a key, anthropic-version, then the body's required fields."""
    if _unauthenticated(req):
        return req.error(401, "x-api-key header is required")
    if not req.headers.get("anthropic-version"):
        return req.error(400, "anthropic-version: header is required")
    body = req.body
    if not isinstance(body, dict):
        return req.error(400, "There was an issue with your request body: invalid JSON")
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            return req.error(400, f"{name}: Field required")
    for m in body["messages"] if isinstance(body["messages"], list) else []:
        if isinstance(m, dict) and m.get("role") not in ("user", "assistant"):
            return req.error(
                400,
                f'messages: Unexpected role "{m.get("role")}". The Messages API accepts a top-level '
                '`system` parameter, not "system" as an input message role.',
            )
    return None


def answer(req: FakeRequest, body: dict) -> tuple[list[str], str, str | None, int, int]:
    """(pieces, stop_reason, stop_sequence, input_tokens, output_tokens)."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    reply = generate(req.reply_for(last_text(messages)), body.get("stop_sequences"), body.get("max_tokens"))
    pieces, stop_sequence = reply.pieces, reply.stop
    stop_reason = "max_tokens" if reply.truncated else "stop_sequence" if stop_sequence else "end_turn"
    prompt = text_of(body.get("system")) + "".join(text_of(m.get("content")) for m in messages)
    input_tokens, output_tokens, _total = req.counts(count_tokens(prompt), count_tokens("".join(pieces)))
    return pieces, stop_reason, stop_sequence, input_tokens, output_tokens


@checked(_check)
async def messages(req: FakeRequest) -> web.StreamResponse:
    body = req.body
    pieces, stop_reason, stop_sequence, input_tokens, output_tokens = answer(req, body)
    msg_id = f"msg_{zlib.crc32(repr(body.get('messages')).encode()):08x}fake"
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    head = {"id": msg_id, "type": "message", "role": "assistant", "model": body["model"]}
    if not body.get("stream"):
        return await req.json(
            {
                **head,
                "content": [{"type": "text", "text": "".join(pieces)}],
                "stop_reason": stop_reason,
                "stop_sequence": stop_sequence,
                "usage": usage,
            }
        )
    start = {**head, "content": [], "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}
    events = [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": TEXT_BLOCK}),
        ("ping", {"type": "ping"}),
    ]
    events += [
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})
        for p in pieces
    ]
    delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": delta, "usage": {"output_tokens": output_tokens}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return await req.sse(events, headers={"request-id": "req_fake0001"})


async def list_models(req: FakeRequest) -> web.StreamResponse:
    if _unauthenticated(req):
        return req.error(401, "x-api-key header is required")
    data = [{"type": "model", "id": i, "display_name": n, "created_at": c} for i, n, c in MODELS]
    return await req.json({"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]})


# Both Anthropic and OpenAI serve GET /v1/models; Anthropic's callers always send
# anthropic-version, which tells the two apart.
ROUTES = [
    Route("POST", "/v1/messages", messages, kind="chat"),
    Route("GET", "/v1/models", list_models, kind="probe", header="anthropic-version"),
]
