"""OpenAI wire format for the fake upstream: Chat Completions (JSON and SSE, with tool
calls and JSON output as synth.py decides them), Embeddings and the model list, shaped
as https://platform.openai.com/docs/api-reference/chat and
https://platform.openai.com/docs/api-reference/embeddings describe them, faithful
enough for the official `openai` package to parse. Also serves every OpenAI-compatible
`custom` provider.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import zlib

from aiohttp import web

from providers.fake_upstream import synth
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


# What "missing_fields" drops: a completion's (and every chunk's) `choices`, the
# embeddings' and the model list's `data`; the API reference marks each required.
REQUIRED_FIELDS = frozenset({"choices", "data"})


def is_end(event: str | None, data: object) -> bool:
    # The stream is "terminated by a `data: [DONE]` message"
    # (https://platform.openai.com/docs/api-reference/chat/create#chat-create-stream).
    return data == "[DONE]"


def _completion_id(body: dict) -> str:
    return f"chatcmpl-{zlib.crc32(repr(body.get('messages')).encode()):08x}fake"


def _usage(req: FakeRequest, messages: list, completion: str) -> dict:
    prompt_tokens = count_tokens("\n".join(text_of(m.get("content")) for m in messages if isinstance(m, dict)))
    prompt_tokens, completion_tokens, total_tokens = req.counts(prompt_tokens, count_tokens(completion))
    return {
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


def tool_calls(body: dict) -> list[dict]:
    """The calls the fake model makes (synth.py rules), as response `tool_calls`."""
    messages = body.get("messages") or []
    choice = body.get("tool_choice")
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    functions = [t["function"] for t in body.get("tools") or [] if isinstance(t, dict) and "function" in t]
    if not functions or choice == "none" or last.get("role") == "tool":
        return []
    forced = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    prompt = last_text(messages)
    parallel = body.get("parallel_tool_calls", True) is not False
    schemas = {f.get("name"): f.get("parameters") for f in functions}
    return [
        {
            "id": synth.call_id("call_", name, i, prompt),
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(synth.tool_arguments(schemas.get(name), prompt))},
        }
        for i, name in enumerate(synth.pick_tools(list(schemas), forced, prompt, parallel))
    ]


def reply_text(req: FakeRequest, body: dict) -> str:
    """The text answered: a tool result's echo, JSON for a response_format, or the reply."""
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    if last.get("role") == "tool":
        return synth.tool_result_reply(text_of(last.get("content")))
    fmt = body.get("response_format") if isinstance(body.get("response_format"), dict) else {}
    if fmt.get("type") == "json_object":
        return synth.json_reply(last_text(messages))
    if fmt.get("type") == "json_schema":
        return synth.json_reply(last_text(messages), (fmt.get("json_schema") or {}).get("schema") or {})
    return req.reply_for(last_text(messages))


def answer(req: FakeRequest, body: dict) -> tuple[list[str], str, dict]:
    """(reply pieces, finish_reason, usage) honouring max_tokens and stop like the real API."""
    messages = body.get("messages") or []
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    reply = generate(reply_text(req, body), body.get("stop"), limit)
    return reply.pieces, "length" if reply.truncated else "stop", _usage(req, messages, "".join(reply.pieces))


def fragments(text: str) -> list[str]:
    """`text` in three pieces at most (two at least when it has two characters), as
    the API streams a call's arguments a few tokens at a time."""
    size = max(1, -(-len(text) // 3))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


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
    for name in ("tool_choice", "parallel_tool_calls"):
        if name in body and not body.get("tools"):
            return req.error(400, f"Invalid value for '{name}': '{name}' is only allowed when 'tools' are specified.")
    for message in body["messages"]:
        if isinstance(message, dict) and message.get("role") == "tool" and not message.get("tool_call_id"):
            return req.error(400, "Missing required parameter: 'messages[].tool_call_id'.")
    return None


@checked(_check)
async def chat_completions(req: FakeRequest) -> web.StreamResponse:
    body = req.body
    calls = tool_calls(body)
    if calls:
        pieces, finish = [], "tool_calls"
        usage = _usage(req, body["messages"], "".join(c["function"]["arguments"] for c in calls))
    else:
        pieces, finish, usage = answer(req, body)
    created = int(time.time())
    base = {"id": _completion_id(body), "created": created, "model": body["model"], "system_fingerprint": FINGERPRINT}
    if not body.get("stream"):
        content = None if calls else "".join(pieces)
        message = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
        if calls:
            message["tool_calls"] = calls
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
    # deltas, a finish chunk, then (include_usage) a usage chunk with empty choices. A
    # tool call streams as its first piece (index, id, type, name, empty arguments) in
    # the role chunk or its own, then argument fragments under the same index.
    role = {"role": "assistant", "content": None if calls else "", "refusal": None}
    deltas = [{"content": piece} for piece in pieces]
    for index, call in enumerate(calls):
        head = {**call, "index": index, "function": {"name": call["function"]["name"], "arguments": ""}}
        deltas.append({"tool_calls": [head]})
        args = fragments(call["function"]["arguments"])
        deltas += [{"tool_calls": [{"index": index, "function": {"arguments": a}}]} for a in args]
    if calls:
        role, deltas = {**role, **deltas[0]}, deltas[1:]
    events = [(None, chunk(role))]
    events += [(None, chunk(delta)) for delta in deltas]
    events.append((None, chunk({}, finish)))
    if include_usage:
        events.append((None, {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}))
    events.append((None, "[DONE]"))
    return await req.sse(events)


def _embedding_check(req: FakeRequest) -> web.Response | None:
    """The embeddings endpoint's first checks, with the API's messages."""
    if _unauthenticated(req):
        return req.error(401, NO_KEY_MESSAGE)
    body = req.body
    if not isinstance(body, dict):
        return req.error(400, "We could not parse the JSON body of your request.")
    if not body.get("model"):
        return req.error(400, "you must provide a model parameter")
    inputs = body.get("input")
    inputs = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) and i for i in inputs):
        return req.error(400, "'$.input' is invalid. Please check the API reference.")
    dimensions = body.get("dimensions")
    if dimensions is not None and (type(dimensions) is not int or dimensions < 1):
        return req.error(400, "Invalid 'dimensions': integer below minimum value.")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        return req.error(400, "Invalid value for 'encoding_format': expected 'float' or 'base64'.")
    return None


@checked(_embedding_check)
async def embeddings(req: FakeRequest) -> web.StreamResponse:
    body = req.body
    inputs = [body["input"]] if isinstance(body["input"], str) else body["input"]
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(inputs):
        vector: list[float] | str = synth.embedding(text, body.get("dimensions"))
        if as_base64:  # little-endian float32, as the API (and openai-python's decoder) has it
            vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens, _completion, _total = req.counts(sum(count_tokens(t) for t in inputs), 0)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return await req.json({"object": "list", "data": data, "model": body["model"], "usage": usage})


async def list_models(req: FakeRequest) -> web.StreamResponse:
    if _unauthenticated(req):
        return req.error(401, "You didn't provide an API key.")
    data = [{"id": m, "object": "model", "created": 1715367049, "owned_by": "system"} for m in MODELS]
    return await req.json({"object": "list", "data": data})


ROUTES = [
    Route("POST", "/v1/chat/completions", chat_completions, kind="chat"),
    Route("POST", "/v1/embeddings", embeddings, kind="embeddings"),
    Route("GET", "/v1/models", list_models, kind="probe"),
]
